//! Resumable checkpoints: model weights, momentum buffers and the loop state (iteration, rows
//! written, random streams, running means), so a resumed run continues exactly where it
//! stopped and ends with the metrics.csv of an uninterrupted one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::config::TrainConfig;
use crate::data::batches::EpochSampler;
use crate::data::transfer::Data;
use crate::files::{write_atomic, write_atomic_with};
use crate::train::metrics::StepMeans;
use crate::train::model::Model;
use crate::train::runtime::{self, Stream};

/// Everything besides the weights that a resumed run needs to continue exactly.
#[derive(Serialize, Deserialize)]
pub struct LoopState {
    /// Iterations completed when the checkpoint was taken.
    pub iteration: usize,
    /// Rows of metrics.csv written before that (those of iterations < `iteration`, and the row
    /// of `iteration` itself when `evaluated`).
    pub rows: usize,
    /// The row of `iteration` is already written: a checkpoint taken on interruption, after
    /// that row. A resumed run does not write it again.
    #[serde(default)]
    pub evaluated: bool,
    /// The random streams, at `iteration`.
    pub streams: Streams,
    /// Running sums of the steps since the last row.
    pub means: StepMeans,
    /// Seconds in the training loop so far.
    pub elapsed_s: f64,
    pub final_target_acc: Option<f64>,
    pub best_target_acc: Option<f64>,
}

impl LoopState {
    /// The state before the first iteration of a new run.
    pub fn fresh(cfg: &TrainConfig, data: &Data) -> LoopState {
        LoopState {
            iteration: 0,
            rows: 0,
            evaluated: false,
            streams: Streams::fresh(cfg, data),
            means: StepMeans::default(),
            elapsed_s: 0.0,
            final_target_acc: None,
            best_target_acc: None,
        }
    }
}

/// The random streams of a run: the order of each domain and the crops and mirrors.
#[derive(Clone, Serialize, Deserialize)]
pub struct Streams {
    pub source: EpochSampler,
    pub target: EpochSampler,
    pub augment: ChaCha8Rng,
}

impl Streams {
    /// The streams of a run's first iteration, from its seed.
    pub fn fresh(cfg: &TrainConfig, data: &Data) -> Streams {
        Streams {
            source: EpochSampler::new(data.source.len(), runtime::rng(cfg.seed, Stream::SourceOrder)),
            target: EpochSampler::new(data.target.len(), runtime::rng(cfg.seed, Stream::TargetOrder)),
            augment: runtime::rng(cfg.seed, Stream::Augment),
        }
    }
}

/// The checkpoint's tensor files of iteration `it`: model weights and momentum buffers.
fn tensor_files(it: usize) -> [String; 2] {
    [format!("model-{it}.safetensors"), format!("optimizer-{it}.safetensors")]
}

/// Writes model, momentum buffers and loop state into `dir`, each file atomically. The tensor
/// files are named by iteration and `state.json`, written last, names the iteration, so a
/// process killed at any point leaves the previous checkpoint whole; older files go after.
pub fn save(dir: &Path, model: &Model, state: &LoopState) -> Result<()> {
    crate::files::create_own_dir(dir)?;
    let write_tensors = |name: &str, tensors: Vec<(String, Tensor)>| -> Result<()> {
        // safetensors holds row-major data only; channels-last variables are copied out.
        let tensors: Vec<(String, Tensor)> = tensors.into_iter().map(|(k, t)| (k, t.contiguous())).collect();
        write_atomic_with(&dir.join(name), |tmp| {
            Tensor::write_safetensors(&tensors, tmp).with_context(|| format!("writing {}", tmp.display()))
        })
    };
    let [model_file, optimizer_file] = tensor_files(state.iteration);
    write_tensors(&model_file, model.vs.variables().into_iter().collect())?;
    write_tensors(&optimizer_file, model.opt.velocities())?;
    write_atomic(&dir.join("state.json"), serde_json::to_string(state)?.as_bytes())?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") && name != model_file && name != optimizer_file {
            std::fs::remove_file(entry.path()).ok();
        }
    }
    Ok(())
}

/// Reads the checkpoint in `dir` into `model` (every variable, and the momentum buffers) and
/// returns the loop state; a variable the checkpoint lacks, or holds in another shape, is an
/// error naming it.
pub fn load(dir: &Path, model: &mut Model) -> Result<LoopState> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path)
        .with_context(|| format!("reading {} (no checkpoint to resume from)", state_path.display()))?;
    let state: LoopState = serde_json::from_str(&text).with_context(|| format!("parsing {}", state_path.display()))?;
    let read = |name: &str| -> Result<HashMap<String, Tensor>> {
        let p: PathBuf = dir.join(name);
        Ok(Tensor::read_safetensors(&p).with_context(|| format!("reading {}", p.display()))?.into_iter().collect())
    };
    let [model_file, optimizer_file] = tensor_files(state.iteration);
    let saved = read(&model_file)?;
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in model.vs.variables() {
            let t = saved.get(&name).with_context(|| format!("checkpoint {} lacks {name}", dir.display()))?;
            if t.size() != var.size() {
                bail!(
                    "checkpoint {} holds {name} as {:?}, the network has {:?} (another backbone or class count?)",
                    dir.display(),
                    t.size(),
                    var.size()
                );
            }
            var.copy_(&t.to_device(var.device()));
        }
        Ok(())
    })?;
    let velocities: HashMap<String, Tensor> =
        read(&optimizer_file)?.into_iter().map(|(k, v)| (k, v.to_device(model.vs.device()))).collect();
    model.opt.set_velocities(&velocities)?;
    Ok(state)
}

/// The iteration of the whole checkpoint in `dir` (its `state.json`, written last), if any.
pub fn iteration(dir: &Path) -> Option<usize> {
    #[derive(Deserialize)]
    struct IterationOnly {
        iteration: usize,
    }
    let text = std::fs::read_to_string(dir.join("state.json")).ok()?;
    serde_json::from_str::<IterationOnly>(&text).ok().map(|s| s.iteration)
}

/// Whether `name` is a file a checkpoint writes: `state.json`, `model-<it>.safetensors`,
/// `optimizer-<it>.safetensors`, or a temporary copy of one (`<name>.<pid>.tmp`).
fn is_checkpoint_file(name: &str) -> bool {
    let name = name.strip_suffix(".tmp").and_then(|n| n.rsplit_once('.')).map_or(name, |(n, _)| n);
    name == "state.json"
        || ["model-", "optimizer-"].iter().any(|p| {
            name.strip_prefix(p)
                .and_then(|rest| rest.strip_suffix(".safetensors"))
                .is_some_and(|it| !it.is_empty() && it.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// The checkpoint files in `dir` (see `is_checkpoint_file`), sorted; none for no folder.
pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_checkpoint_file(n))
        .collect();
    names.sort();
    names
}

/// Removes the checkpoint in `dir`: only the files a checkpoint writes, then the folder if
/// that left it empty. Anything else a user put there stays, and is named. A `dir` that is a
/// symbolic link is refused: its files belong to whatever it points at.
pub fn remove(dir: &Path) -> Result<()> {
    crate::files::check_own_dir(dir)?;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(crate::files::io_context(e, "reading", dir)),
    };
    let mut kept = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && is_checkpoint_file(&name) {
            std::fs::remove_file(entry.path()).map_err(|e| crate::files::io_context(e, "removing", &entry.path()))?;
        } else {
            kept.push(name);
        }
    }
    if kept.is_empty() {
        std::fs::remove_dir(dir).ok();
    } else {
        eprintln!("note: kept {} in {}: not written by deep-coral", kept.join(", "), dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_its_own_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("checkpoint");
        std::fs::create_dir(&dir).unwrap();
        for name in ["state.json", "model-12.safetensors", "optimizer-12.safetensors", "model-4.safetensors.77.tmp"] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
        std::fs::write(dir.join("model-best.safetensors"), b"mine").unwrap();
        remove(&dir).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["model-best.safetensors", "notes.txt"]);
        std::fs::remove_file(dir.join("notes.txt")).unwrap();
        std::fs::remove_file(dir.join("model-best.safetensors")).unwrap();
        remove(&dir).unwrap();
        assert!(!dir.exists(), "an emptied checkpoint folder goes");
        remove(&dir).unwrap();
    }
}
