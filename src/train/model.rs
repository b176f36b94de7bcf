//! The network of a run with its optimiser: the backbone with a new last layer, pretrained
//! weights loaded by name, the layers `finetune` does not train frozen, Caffe's SGD over the
//! rest.

use anyhow::Result;
use tch::nn;
use tch::Device;

use crate::config::TrainConfig;
use crate::data::batches;
use crate::model::backbone::{InputConvention, Network};
use crate::model::weights;
use crate::train::optim::CaffeSgd;

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
    /// for timing a backbone whose pretrained weights are not at hand (`deep-coral bench`), and
    /// for a resumed run, whose checkpoint then overwrites every variable.
    pub fn with_random_weights(cfg: &TrainConfig, num_classes: usize, device: Device) -> Model {
        Self::build(cfg, num_classes, device, false).expect("nothing fallible without loading weights")
    }

    fn build(cfg: &TrainConfig, num_classes: usize, device: Device, load_weights: bool) -> Result<Model> {
        tch::manual_seed(cfg.seed as i64);
        let mut vs = nn::VarStore::new(device);
        let net = cfg.backbone.build_with(&vs.root(), num_classes as i64, cfg.new_layers());
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
            if !cfg.backbone.trains(cfg.finetune, &name) || cfg.method.freezes(cfg.backbone, &name) {
                let _ = var.set_requires_grad(false);
            }
        }
        // Holds (and decays) the trained parameters only.
        let opt = CaffeSgd::new(&vs, cfg.backbone, cfg.momentum, cfg.weight_decay);
        Ok(Model { vs, net, opt, input: cfg.backbone.input() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::backbone::{Backbone, Finetune};

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
