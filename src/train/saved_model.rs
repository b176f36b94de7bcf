//! The network a run keeps: `model.safetensors` in the run folder, written when the run ends
//! (done, diverged or interrupted), so the adapted model outlives the run for prediction,
//! evaluation and export. The tensors carry the backbone's own names (torchvision's `features.N`
//! / `classifier.N`, Caffe's `conv1`..`fc8`) with the new head; the file's safetensors
//! metadata holds a [`ModelCard`] as JSON under `deep_coral`: everything a reader needs to use
//! the network without the run (classes in label order, the input convention, the resize
//! filter, the precision it trained in) and where it came from.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::{Precision, ResizeFilter, TrainConfig};
use crate::files;
use crate::model::backbone::{Backbone, Head, InputConvention};
use crate::train::metrics::{Status, Versions};

/// The file name of a run's network inside its folder.
pub const FILE: &str = "model.safetensors";
/// The safetensors metadata key of the card.
const KEY: &str = "deep_coral";
/// Changes whenever the meaning of a model file changes.
const FORMAT: &str = "deep-coral model v1";

/// What a model file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub backbone: Backbone,
    pub head: Head,
    /// Class names, in the order of the network's outputs.
    pub classes: Vec<String>,
    /// How to turn a 0-255 image into the network's input: channel order, scale, mean, std,
    /// crop side (from images resized to 256x256 with `resize`).
    pub input: InputConvention,
    pub resize: ResizeFilter,
    /// The arithmetic it trained in (its weights are float32 either way).
    pub precision: Precision,
    /// How the run ended: `done`, or `diverged` / `interrupted` (the weights at that point).
    pub status: Status,
    /// Iterations trained.
    pub iteration: usize,
    /// The run folder it was written into, and the run's full config.
    pub run: PathBuf,
    pub config: TrainConfig,
    pub versions: Versions,
}

impl ModelCard {
    /// The card of the network a run of `cfg` (in `run`, on `classes`) ends with.
    pub fn of_run(cfg: &TrainConfig, classes: &[String], run: &Path, status: Status, iteration: usize) -> ModelCard {
        ModelCard {
            format: FORMAT.into(),
            backbone: cfg.backbone,
            head: cfg.head,
            classes: classes.to_vec(),
            input: cfg.backbone.input(),
            resize: cfg.resize,
            precision: cfg.precision,
            status,
            iteration,
            run: std::path::absolute(run).unwrap_or_else(|_| run.to_path_buf()),
            config: cfg.clone(),
            versions: Versions::default(),
        }
    }
}

/// Writes `vars` (every variable of the network, any layout or device) as float32 row-major
/// tensors to `path`, atomically, with `card` in the metadata.
pub fn save(path: &Path, vars: &[(String, Tensor)], card: &ModelCard) -> Result<()> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = vars
        .iter()
        .map(|(name, t)| {
            let t = t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous();
            let shape = t.size().iter().map(|&d| d as usize).collect();
            let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
            Ok((name.clone(), shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        })
        .collect::<Result<_>>()?;
    let mut views = Vec::with_capacity(data.len());
    for (name, shape, bytes) in &data {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
            .with_context(|| format!("{}: tensor {name}", path.display()))?;
        views.push((name.clone(), view));
    }
    let metadata = HashMap::from([(KEY.to_string(), serde_json::to_string(card)?)]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| anyhow::anyhow!("{}: serializing the network: {e}", path.display()))?;
    files::write_atomic_with(path, |tmp| {
        let mut f = files::create_nofollow(tmp)?;
        f.write_all(&bytes).map_err(|e| files::io_context(e, "writing", path))?;
        f.sync_all().map_err(|e| files::io_context(e, "writing", path))
    })
}

/// A model file read back: its card and its tensors by name.
pub struct SavedModel {
    pub path: PathBuf,
    pub card: ModelCard,
    pub tensors: HashMap<String, Tensor>,
}

impl SavedModel {
    /// Reads `path`, a model file or a run folder holding one. A run folder without one (runs
    /// made before runs kept their network, or with `save_model` off) is an error saying so.
    pub fn read(path: &Path) -> Result<SavedModel> {
        let file = if path.is_dir() { path.join(FILE) } else { path.to_path_buf() };
        if !file.is_file() {
            if path.is_dir() {
                bail!(
                    "{} holds no {FILE}: the run did not keep its network (runs made before deep-coral kept them, or \
                     trained with --save-model false)",
                    path.display()
                );
            }
            bail!("model file {} does not exist", file.display());
        }
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a valid .safetensors file: {e}", file.display()))?;
        let Some(text) = meta.metadata().as_ref().and_then(|m| m.get(KEY)) else {
            bail!(
                "{} is a .safetensors file without deep-coral's model card (pretrained weights, not a run's network?)",
                file.display()
            );
        };
        let card: ModelCard =
            serde_json::from_str(text).with_context(|| format!("{}: reading its model card", file.display()))?;
        if card.format != FORMAT {
            bail!("{}: model format {:?}, this deep-coral reads {FORMAT:?}", file.display(), card.format);
        }
        drop(bytes);
        let tensors = Tensor::read_safetensors(&file)
            .with_context(|| format!("loading tensors from {}", file.display()))?
            .into_iter()
            .collect();
        Ok(SavedModel { path: file, card, tensors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    #[test]
    fn a_saved_network_reads_back_with_its_card() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = TrainConfig { backbone: Backbone::Squeezenet1_1, ..TrainConfig::default() };
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _net = cfg.backbone.build(&vs.root(), 3);
        // One variable channels-last, as training keeps them: saved row-major all the same.
        let vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(k, v)| if v.dim() == 4 { (k, crate::data::batches::channels_last(&v)) } else { (k, v) })
            .collect();
        let classes = vec!["a".to_string(), "b".into(), "c".into()];
        let card = ModelCard::of_run(&cfg, &classes, tmp.path(), Status::Done, 7);
        save(&tmp.path().join(FILE), &vars, &card).unwrap();
        let back = SavedModel::read(tmp.path()).unwrap();
        assert_eq!(back.card, card);
        assert_eq!(back.tensors.len(), vars.len());
        for (name, v) in &vars {
            assert!(back.tensors[name].equal(&v.contiguous()), "{name}");
        }
        // Pretrained weights have no card; a folder without a model says why.
        let err = SavedModel::read(&tmp.path().join("nothing")).err().unwrap().to_string();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::remove_file(tmp.path().join(FILE)).unwrap();
        let err = SavedModel::read(tmp.path()).err().unwrap().to_string();
        assert!(err.contains("did not keep its network"), "{err}");
    }
}
