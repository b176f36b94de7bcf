//! A loaded network over every image of a decoded domain, in eval mode: the class scores and
//! the penultimate features (what fc8 receives: fc7 for AlexNet and CaffeNet, the pooled last
//! Fire module for SqueezeNet; `model::backbone::Taps::fc7`), from the centre crop, mirrored
//! where asked, in the arithmetic the network trained in.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::config::Precision;
use crate::data::inputs::Inputs;
use crate::infer::loaded::Loaded;
use crate::model::backbone::Finetune;
use crate::train::precision::Autocast;

/// How a pass runs: images per forward pass (memory, not results: every image is computed on
/// its own in eval mode, so the scores do not depend on it beyond float rounding) and the
/// arithmetic, by default the one the network trained in.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    pub batch: usize,
    pub precision: Precision,
}

impl Pass {
    /// 64 images at a time, in the network's own precision.
    pub fn of(model: &Loaded) -> Pass {
        Pass { batch: 64, precision: model.card.precision }
    }
}

/// What a network gives for a domain.
pub struct Outputs {
    /// `[n, classes]`, float32, on the CPU.
    pub logits: Tensor,
    /// `[n, width]`, float32, on the CPU (width 4096 for AlexNet/CaffeNet, 512 for SqueezeNet).
    pub features: Tensor,
}

/// Runs `model` over all of `set`: the centre crop of each image, mirrored where `mirrors`
/// says (one flag per image), as [`Pass::of`] the model says.
pub fn outputs(model: &Loaded, set: &Inputs, mirrors: &[bool], device: Device) -> Result<Outputs> {
    outputs_in(model, set, mirrors, device, Pass::of(model))
}

/// [`outputs`] with the batch and precision of `pass`.
pub fn outputs_in(model: &Loaded, set: &Inputs, mirrors: &[bool], device: Device, pass: Pass) -> Result<Outputs> {
    let card = &model.card;
    let batch = pass.batch.max(1);
    let all: Vec<usize> = (0..set.len()).collect();
    let (mut logits, mut features) = (Vec::new(), Vec::new());
    tch::no_grad(|| -> Result<()> {
        let _region = Autocast::enter(pass.precision, device)?;
        for (idx, mirror) in all.chunks(batch).zip(mirrors.chunks(batch)) {
            let xs = set.eval_batch(idx, mirror, &card.input, card.config.channels_last, device);
            let taps = model.net.head_taps(&xs, Finetune::All, false, true);
            logits.push(taps.logits.to_kind(Kind::Float).to_device(Device::Cpu));
            features.push(taps.fc7.expect("fc7 asked for").to_kind(Kind::Float).to_device(Device::Cpu));
        }
        Ok(())
    })?;
    Ok(Outputs { logits: Tensor::cat(&logits, 0), features: Tensor::cat(&features, 0) })
}
