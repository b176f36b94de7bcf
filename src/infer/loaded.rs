//! A network a run kept, rebuilt on a device from its `model.safetensors`: the backbone and new
//! layers its card names, every variable read back by name (strictly: a missing, unexpected or
//! mis-shaped tensor is an error naming it), in eval mode for every use here.

use anyhow::{bail, Result};
use tch::{nn, Device};

use crate::model::backbone::{Network, NewLayers};
use crate::train::saved_model::{ModelCard, SavedModel};

/// A saved network on a device.
pub struct Loaded {
    pub card: ModelCard,
    /// The file it was read from.
    pub path: std::path::PathBuf,
    pub vs: nn::VarStore,
    pub net: Box<dyn Network>,
}

impl Loaded {
    /// Reads `path` (a model file or a run folder holding one) onto `device`.
    pub fn open(path: &std::path::Path, device: Device) -> Result<Loaded> {
        let saved = SavedModel::read(path)?;
        let card = saved.card;
        let layers = NewLayers { head: card.head, bottleneck: card.config.method.bottleneck() };
        let mut vs = nn::VarStore::new(device);
        let net = card.backbone.build_with(&vs.root(), card.classes.len() as i64, layers);
        let vars = vs.variables();
        let missing: Vec<&String> = vars.keys().filter(|k| !saved.tensors.contains_key(*k)).collect();
        let unexpected: Vec<&String> = saved.tensors.keys().filter(|k| !vars.contains_key(*k)).collect();
        let misshaped: Vec<String> = vars
            .iter()
            .filter_map(|(k, v)| {
                saved.tensors.get(k).filter(|t| t.size() != v.size()).map(|t| format!("{k} {:?}", t.size()))
            })
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() || !misshaped.is_empty() {
            bail!(
                "{} does not fit the {} network its card describes: missing {missing:?}, unexpected {unexpected:?}, wrong \
                 shape {misshaped:?}",
                saved.path.display(),
                card.backbone
            );
        }
        tch::no_grad(|| {
            for (name, var) in &vars {
                let mut var = var.shallow_clone();
                var.copy_(&saved.tensors[name].to_device(device));
            }
        });
        vs.freeze();
        Ok(Loaded { card, path: saved.path, vs, net })
    }
}
