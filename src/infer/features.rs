//! A loaded network over every image of a decoded domain, in eval mode: the class scores and
//! the penultimate features (what fc8 receives: fc7 for AlexNet and CaffeNet, the pooled last
//! Fire module for SqueezeNet; `model::backbone::Taps::fc7`), from the centre crop, mirrored
//! where asked, in the arithmetic the network trained in.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::data::inputs::Inputs;
use crate::infer::loaded::Loaded;
use crate::model::backbone::Finetune;
use crate::train::precision::Autocast;

/// Images per forward pass.
const CHUNK: usize = 64;

/// What a network gives for a domain.
pub struct Outputs {
    /// `[n, classes]`, float32, on the CPU.
    pub logits: Tensor,
    /// `[n, width]`, float32, on the CPU (width 4096 for AlexNet/CaffeNet, 512 for SqueezeNet).
    pub features: Tensor,
}

/// Runs `model` over all of `set`: the centre crop of each image, mirrored where `mirrors`
/// says (one flag per image), `CHUNK` images at a time.
pub fn outputs(model: &Loaded, set: &Inputs, mirrors: &[bool], device: Device) -> Result<Outputs> {
    let card = &model.card;
    let all: Vec<usize> = (0..set.len()).collect();
    let (mut logits, mut features) = (Vec::new(), Vec::new());
    tch::no_grad(|| -> Result<()> {
        let _region = Autocast::enter(card.precision, device)?;
        for (idx, mirror) in all.chunks(CHUNK).zip(mirrors.chunks(CHUNK)) {
            let xs = set.eval_batch(idx, mirror, &card.input, card.config.channels_last, device);
            let taps = model.net.head_taps(&xs, Finetune::All, false, true);
            logits.push(taps.logits.to_kind(Kind::Float).to_device(Device::Cpu));
            features.push(taps.fc7.expect("fc7 asked for").to_kind(Kind::Float).to_device(Device::Cpu));
        }
        Ok(())
    })?;
    Ok(Outputs { logits: Tensor::cat(&logits, 0), features: Tensor::cat(&features, 0) })
}
