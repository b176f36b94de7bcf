//! One source->target run, top to bottom: images -> tensors -> backbone -> fc8 ->
//! `class + lambda * CORAL` -> Caffe SGD -> a CSV row every `eval_every` iterations.
//!
//! Outputs in the run folder: `metrics.csv` (whole rows, flushed per row), `run.json` (the
//! effective config and status, rewritten atomically; `"status": "done"` is written last), and
//! `checkpoint/` while a run is resumable (removed when it is done).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Device, Kind, Tensor};

use crate::backbone::{Finetune, InputConvention, Network};
use crate::batches::{self, EpochSampler, Inputs};
use crate::config::TrainConfig;
use crate::coral;
use crate::domain::Domain;
use crate::eval;
use crate::features;
use crate::images::{self, SkippedImage};
use crate::metrics::{ImageCounts, MetricsLog, MetricsRow, RunRecord, Status, StepMeans, StepStats, Versions};
use crate::optim::CaffeSgd;
use crate::runtime::{self, Stream};
use crate::weights;

/// Images per forward pass during evaluation.
const EVAL_CHUNK: usize = 128;

/// Everything besides the weights that a resumed run needs to continue exactly.
#[derive(Serialize, Deserialize)]
struct LoopState {
    /// Iterations completed when the checkpoint was taken.
    iteration: usize,
    /// Rows of metrics.csv written before that (those of iterations < `iteration`, and the row
    /// of `iteration` itself when `evaluated`).
    rows: usize,
    /// The row of `iteration` is already written: a checkpoint taken on interruption, after
    /// that row. A resumed run does not write it again.
    #[serde(default)]
    evaluated: bool,
    source: EpochSampler,
    target: EpochSampler,
    augment: ChaCha8Rng,
    means: StepMeans,
    elapsed_s: f64,
    final_target_acc: Option<f64>,
    best_target_acc: Option<f64>,
}

/// The training data of a run, decoded (or its features computed) once.
pub struct Data {
    pub classes: Vec<String>,
    pub source: Inputs,
    pub target: Inputs,
    /// Files that failed to decode and were skipped (`skip_bad_images`), both domains.
    pub skipped: Vec<SkippedImage>,
}

/// The source and target domains on disk, checked to share their classes.
pub fn scan(cfg: &TrainConfig) -> Result<(Domain, Domain)> {
    let source = Domain::scan(&cfg.data_root, &cfg.source)?;
    let target = Domain::scan(&cfg.data_root, &cfg.target)?;
    Domain::check_same_classes(&source, &target)?;
    Ok((source, target))
}

/// Decodes both domains into memory (on `device` when it is a GPU and they fit).
pub fn load_images(cfg: &TrainConfig, source: &Domain, target: &Domain, device: Device) -> Result<Data> {
    let s = images::decode_all(&source.files, &cfg.source, cfg.skip_bad_images)?;
    let t = images::decode_all(&target.files, &cfg.target, cfg.skip_bad_images)?;
    let skipped = s.skipped.iter().chain(&t.skipped).cloned().collect();
    Ok(Data {
        classes: source.classes.clone(),
        source: Inputs::images(s, device),
        target: Inputs::images(t, device),
        skipped,
    })
}

/// What `cfg.finetune` trains on: decoded images under `all`; under `fc` and `last`, the
/// features of `net`'s frozen trunk from the feature cache (built on the first use).
pub fn load_data(
    cfg: &TrainConfig,
    source: &Domain,
    target: &Domain,
    net: &dyn Network,
    device: Device,
) -> Result<Data> {
    if cfg.finetune == Finetune::All {
        return load_images(cfg, source, target, device);
    }
    let s = features::load_or_build(cfg, source, net, device)?;
    let t = features::load_or_build(cfg, target, net, device)?;
    let skipped = s.skipped.iter().chain(&t.skipped).cloned().collect();
    Ok(Data { classes: source.classes.clone(), source: Inputs::Features(s), target: Inputs::Features(t), skipped })
}

/// The random streams of a run's first iteration, from its seed: source order, target order,
/// crops and mirrors.
pub fn fresh_streams(cfg: &TrainConfig, data: &Data) -> (EpochSampler, EpochSampler, ChaCha8Rng) {
    (
        EpochSampler::new(data.source.len(), runtime::rng(cfg.seed, Stream::SourceOrder)),
        EpochSampler::new(data.target.len(), runtime::rng(cfg.seed, Stream::TargetOrder)),
        runtime::rng(cfg.seed, Stream::Augment),
    )
}

/// The network, its optimiser and the input convention, on `device`.
pub struct Model {
    pub vs: nn::VarStore,
    pub net: Box<dyn Network>,
    pub opt: CaffeSgd,
    pub input: InputConvention,
}

impl Model {
    /// Builds the backbone with a fresh `num_classes`-way last layer (seeded by `cfg.seed`),
    /// loads the pretrained weights and freezes what `cfg.finetune` does not train.
    pub fn new(cfg: &TrainConfig, num_classes: usize, device: Device) -> Result<Model> {
        Self::build(cfg, num_classes, device, true)
    }

    /// The same network as `new`, left at its random initialisation (no weights file is read):
    /// for timing a backbone whose pretrained weights are not at hand (`deep-coral bench`).
    pub fn with_random_weights(cfg: &TrainConfig, num_classes: usize, device: Device) -> Model {
        Self::build(cfg, num_classes, device, false).expect("nothing fallible without loading weights")
    }

    fn build(cfg: &TrainConfig, num_classes: usize, device: Device, load_weights: bool) -> Result<Model> {
        tch::manual_seed(cfg.seed as i64);
        let mut vs = nn::VarStore::new(device);
        let net = cfg.backbone.build(&vs.root(), num_classes as i64);
        if load_weights {
            weights::load_pretrained(&mut vs, &cfg.weights, cfg.backbone)?;
        }
        if cfg.channels_last {
            tch::no_grad(|| {
                for (_, mut var) in vs.variables().into_iter().filter(|(_, v)| v.dim() == 4) {
                    var.set_data(&batches::channels_last(&var));
                }
            });
        }
        for (name, var) in vs.variables() {
            if !cfg.backbone.trains(cfg.finetune, &name) {
                let _ = var.set_requires_grad(false);
            }
        }
        // Holds (and decays) the trained parameters only.
        let opt = CaffeSgd::new(&vs, cfg.backbone, cfg.momentum, cfg.weight_decay);
        Ok(Model { vs, net, opt, input: cfg.backbone.input() })
    }
}

/// One SGD iteration on a source batch (labelled) and a target batch (unlabelled): `next_batch`
/// then `update`.
#[allow(clippy::too_many_arguments)]
pub fn step(
    model: &mut Model,
    data: &Data,
    cfg: &TrainConfig,
    source: &mut EpochSampler,
    target: &mut EpochSampler,
    augment: &mut ChaCha8Rng,
    iteration: usize,
    device: Device,
) -> Result<StepStats> {
    let batch = next_batch(data, cfg, &model.input, source, target, augment, device);
    update(model, cfg, &batch, iteration)
}

/// The tensors of one iteration: `batch_size` source inputs, their labels, and as many target
/// inputs. Inputs are images under `finetune` `all`, else the cached features at the cut.
pub struct Batch {
    /// `[n, 3, crop, crop]` images normalised by the backbone's input convention, or features.
    pub source: Tensor,
    /// `[n]` class indices of the source images.
    pub labels: Tensor,
    /// Like `source`, unlabelled.
    pub target: Tensor,
}

/// Draws the next images of each domain, picks a random view of each (a crop and mirror, or
/// one of the cached views; source first), and makes tensors of them on `device`.
pub fn next_batch(
    data: &Data,
    cfg: &TrainConfig,
    input: &InputConvention,
    source: &mut EpochSampler,
    target: &mut EpochSampler,
    augment: &mut ChaCha8Rng,
    device: Device,
) -> Batch {
    let n = cfg.batch_size;
    let si = source.next(n);
    let ti = target.next(n);
    Batch {
        source: data.source.train_batch(&si, augment, input, cfg.channels_last, device),
        labels: data.source.labels(&si, device),
        target: data.target.train_batch(&ti, augment, input, cfg.channels_last, device),
    }
}

/// The network's part of an iteration, on a batch already in tensors: both branches (from the
/// cut of `cfg.finetune` to fc8) -> `class + lambda * CORAL` -> backward -> Caffe SGD step.
///
/// Both branches run in training mode (dropout on), source first, so the random draws are the
/// same whatever lambda is; with lambda = 0 the target branch runs without autograd, since no
/// gradient flows from it, and still yields the CORAL distance that is logged.
pub fn update(model: &mut Model, cfg: &TrainConfig, batch: &Batch, iteration: usize) -> Result<StepStats> {
    let Batch { source: xs, labels: ys, target: xt } = batch;
    runtime::seed_torch_for_iteration(cfg.seed, iteration);
    let fs = model.net.head(xs, cfg.finetune, true); // [n, classes]: the fc8 outputs
    let ft = if cfg.lambda > 0.0 {
        model.net.head(xt, cfg.finetune, true)
    } else {
        tch::no_grad(|| model.net.head(xt, cfg.finetune, true))
    };
    let class_loss = fs.cross_entropy_for_logits(ys);
    let coral = coral::coral(&fs, &ft)?;
    let loss = if cfg.lambda > 0.0 { &class_loss + &coral.loss * cfg.lambda } else { class_loss.shallow_clone() };

    model.opt.zero_grad();
    loss.backward();
    // Every logged scalar in one device -> host copy, after the backward pass is queued (on a
    // GPU, the only synchronisation of the iteration).
    let correct = fs.argmax(-1, false).eq_tensor(ys).sum(Kind::Float);
    let parts = [class_loss.detach(), coral.loss.detach(), coral.squared_distance.shallow_clone(), correct];
    let scalars = Vec::<f64>::try_from(Tensor::stack(&parts, 0).to_kind(Kind::Double).to_device(Device::Cpu))?;
    let stats = StepStats {
        class_loss: scalars[0],
        coral_loss: scalars[1],
        coral_distance: scalars[2].sqrt(),
        correct: scalars[3] as usize,
        seen: ys.size()[0] as usize,
    };
    if !(stats.class_loss.is_finite() && stats.coral_loss.is_finite()) {
        return Ok(stats); // the caller stops the run as diverged; no update with a NaN
    }
    model.opt.step(cfg.lr_at(iteration));
    Ok(stats)
}

/// How `run` was asked to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run; refuses a folder that holds a finished run unless `force`.
    Fresh { force: bool },
    /// Continue from `<out>/checkpoint`.
    Resume,
}

/// Runs training into `out` and returns the final record (also in `out/run.json`).
pub fn run(cfg: &TrainConfig, out: &Path, start: Start, stop: &AtomicBool) -> Result<RunRecord> {
    cfg.validate()?;
    let record_path = out.join("run.json");
    if let Ok(old) = RunRecord::read(&record_path) {
        if old.status == Status::Done {
            match start {
                Start::Fresh { force: false } => {
                    bail!("{} holds a finished run; choose another --out, or pass --force to replace it", out.display())
                }
                Start::Resume => bail!("{} holds a finished run; there is nothing to resume", out.display()),
                Start::Fresh { force: true } => {}
            }
        }
    }
    let device = runtime::device(cfg.device)?;
    let threads = runtime::set_threads(cfg.threads);
    let setup = Instant::now();
    let (source, target) = scan(cfg)?;
    let mut model = Model::new(cfg, source.classes.len(), device)?;
    let data = load_data(cfg, &source, &target, model.net.as_ref(), device)?;
    let setup_time_s = setup.elapsed().as_secs_f64();
    // Created only once the data and weights are known to be usable: bad input leaves no folder.
    std::fs::create_dir_all(out).with_context(|| format!("creating output folder {}", out.display()))?;

    let mut record = RunRecord {
        config: cfg.clone(),
        status: Status::Running,
        versions: Versions::default(),
        device: runtime::device_name(device),
        threads,
        classes: data.classes.clone(),
        images: ImageCounts { source: data.source.len(), target: data.target.len() },
        skipped_images: data.skipped.clone(),
        iterations_done: 0,
        final_target_acc: None,
        best_target_acc: None,
        diverged_at: None,
        error: None,
        wall_time_s: 0.0,
        setup_time_s,
        started: now_utc(),
    };

    let checkpoint_dir = out.join("checkpoint");
    let metrics_path = out.join("metrics.csv");
    let (mut state, mut log) = match start {
        Start::Resume => {
            let state = load_checkpoint(&checkpoint_dir, &mut model)?;
            record.started = RunRecord::read(&record_path).map(|r| r.started).unwrap_or(record.started);
            let log = MetricsLog::resume(&metrics_path, state.rows)?;
            eprintln!("resuming {} at iteration {}", out.display(), state.iteration);
            (state, log)
        }
        Start::Fresh { .. } => {
            let (source, target, augment) = fresh_streams(cfg, &data);
            let state = LoopState {
                iteration: 0,
                rows: 0,
                evaluated: false,
                source,
                target,
                augment,
                means: StepMeans::default(),
                elapsed_s: 0.0,
                final_target_acc: None,
                best_target_acc: None,
            };
            if checkpoint_dir.exists() {
                std::fs::remove_dir_all(&checkpoint_dir).ok();
            }
            (state, MetricsLog::create(&metrics_path)?)
        }
    };
    record.write(&record_path)?;

    let result = train_loop(cfg, &mut model, &data, &mut state, &mut log, &checkpoint_dir, device, stop);
    record.iterations_done = state.iteration;
    record.final_target_acc = state.final_target_acc;
    record.best_target_acc = state.best_target_acc;
    record.wall_time_s = state.elapsed_s;
    match result {
        Ok(status) => {
            record.status = status;
            if status == Status::Diverged {
                record.diverged_at = Some(state.iteration);
            }
            if status == Status::Interrupted {
                save_checkpoint(&checkpoint_dir, &model, &state)?;
            }
            if status == Status::Done && checkpoint_dir.exists() {
                std::fs::remove_dir_all(&checkpoint_dir).ok();
            }
            record.write(&record_path)?;
            Ok(record)
        }
        Err(e) => {
            record.status = Status::Failed;
            record.error = Some(format!("{e:#}"));
            record.write(&record_path)?;
            Err(e)
        }
    }
}

/// The loop itself; returns how it ended.
#[allow(clippy::too_many_arguments)]
fn train_loop(
    cfg: &TrainConfig,
    model: &mut Model,
    data: &Data,
    state: &mut LoopState,
    log: &mut MetricsLog,
    checkpoint_dir: &Path,
    device: Device,
    stop: &AtomicBool,
) -> Result<Status> {
    let bar = ProgressBar::new(cfg.iterations as u64).with_style(
        ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_position(state.iteration as u64);
    let clock = Instant::now();
    let elapsed_before = state.elapsed_s;
    loop {
        let it = state.iteration;
        state.elapsed_s = elapsed_before + clock.elapsed().as_secs_f64();
        if (it.is_multiple_of(cfg.eval_every) || it == cfg.iterations) && !state.evaluated {
            let ev = eval::evaluate(
                model.net.as_ref(),
                cfg.finetune,
                &data.target,
                &model.input,
                cfg.channels_last,
                device,
                EVAL_CHUNK,
            );
            let (class_loss, coral_loss, coral_distance, source_acc) = state.means.means();
            let row = MetricsRow {
                iteration: it,
                epoch: state.source.epoch(),
                lr: cfg.lr_at(it.saturating_sub(1)),
                class_loss,
                coral_loss,
                weighted_coral_loss: cfg.lambda * coral_loss,
                coral_distance,
                source_acc,
                target_acc: ev.accuracy,
                target_loss: ev.loss,
                elapsed_s: elapsed_before + clock.elapsed().as_secs_f64(),
            };
            log.append(&row)?;
            state.rows += 1;
            state.evaluated = true;
            state.means = StepMeans::default();
            state.final_target_acc = Some(ev.accuracy);
            state.best_target_acc = Some(state.best_target_acc.map_or(ev.accuracy, |b| b.max(ev.accuracy)));
            bar.set_message(format!("target acc {:.3}", ev.accuracy));
            let line = format!(
                "iter {it:>5} lr {:.1e} class {class_loss:.4} coral {coral_loss:.3e} dist {coral_distance:.3e} \
                 source acc {source_acc:.3} target acc {:.4} loss {:.4}",
                row.lr, ev.accuracy, ev.loss
            );
            // A hidden bar (stderr is not a terminal: a sweep's train.log) prints nothing itself.
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
        if it == cfg.iterations {
            bar.finish_and_clear();
            return Ok(Status::Done);
        }
        if runtime::stopped(stop) {
            bar.abandon_with_message("interrupted");
            return Ok(Status::Interrupted);
        }
        let stats = step(model, data, cfg, &mut state.source, &mut state.target, &mut state.augment, it, device)?;
        if !(stats.class_loss.is_finite() && stats.coral_loss.is_finite()) {
            bar.abandon_with_message("diverged");
            eprintln!(
                "iteration {it}: loss is not finite (class {}, coral {}); stopping the run as diverged",
                stats.class_loss, stats.coral_loss
            );
            return Ok(Status::Diverged);
        }
        state.means.add(stats);
        state.iteration += 1;
        state.evaluated = false;
        bar.inc(1);
        if cfg.checkpoint_every > 0
            && state.iteration.is_multiple_of(cfg.checkpoint_every)
            && state.iteration < cfg.iterations
        {
            state.elapsed_s = elapsed_before + clock.elapsed().as_secs_f64();
            save_checkpoint(checkpoint_dir, model, state)?;
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
fn save_checkpoint(dir: &Path, model: &Model, state: &LoopState) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write_tensors = |name: &str, tensors: Vec<(String, Tensor)>| -> Result<()> {
        // safetensors holds row-major data only; channels-last variables are copied out.
        let tensors: Vec<(String, Tensor)> = tensors.into_iter().map(|(k, t)| (k, t.contiguous())).collect();
        crate::metrics::write_atomic_with(&dir.join(name), |tmp| {
            Tensor::write_safetensors(&tensors, tmp).with_context(|| format!("writing {}", tmp.display()))
        })
    };
    let [model_file, optimizer_file] = tensor_files(state.iteration);
    write_tensors(&model_file, model.vs.variables().into_iter().collect())?;
    write_tensors(&optimizer_file, model.opt.velocities())?;
    crate::metrics::write_atomic(&dir.join("state.json"), serde_json::to_string(state)?.as_bytes())?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") && name != model_file && name != optimizer_file {
            std::fs::remove_file(entry.path()).ok();
        }
    }
    Ok(())
}

fn load_checkpoint(dir: &Path, model: &mut Model) -> Result<LoopState> {
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
            var.copy_(&t.to_device(var.device()));
        }
        Ok(())
    })?;
    let velocities: HashMap<String, Tensor> =
        read(&optimizer_file)?.into_iter().map(|(k, v)| (k, v.to_device(model.vs.device()))).collect();
    model.opt.set_velocities(&velocities)?;
    Ok(state)
}

/// Seconds since the Unix epoch, as text (no time-zone database needed).
fn now_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("unix:{secs}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::Backbone;

    /// Only the layers after the cut reach the optimiser; the rest no longer needs gradients.
    #[test]
    fn finetune_freezes_everything_before_its_cut() {
        for (backbone, finetune, trained) in [
            (Backbone::Alexnet, Finetune::All, 16),
            (Backbone::Alexnet, Finetune::Fc, 6),
            (Backbone::Caffenet, Finetune::Fc, 6),
            (Backbone::Squeezenet1_1, Finetune::Last, 2),
        ] {
            let cfg = TrainConfig { backbone, finetune, ..TrainConfig::default() };
            let model = Model::with_random_weights(&cfg, 4, Device::Cpu);
            assert_eq!(model.opt.velocities().len(), trained, "{backbone} {finetune:?}");
            let frozen = model.vs.variables().values().filter(|v| !v.requires_grad()).count();
            assert_eq!(frozen + trained, model.vs.variables().len(), "{backbone} {finetune:?}");
        }
    }
}
