//! `deep-coral export --torchscript`: a kept network as a TorchScript module traced by libtorch
//! (tch's `CModule::create_by_tracing`) in eval mode. Input `[N, 3, crop, crop]` float32 in the
//! model's input convention (its card's `input`: channel order, scale, mean, std), output the
//! class scores `[N, classes]`. `torch.jit.load` reads it in Python and `torch::jit::load` in C++;
//! `tests/adapted_model.rs` checks its scores against deep-coral's.

use std::path::Path;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use crate::files;
use crate::infer::loaded::Loaded;

/// Traces `model` (on the CPU) and writes the module to `out`, atomically.
pub fn torchscript(model: &Loaded, out: &Path) -> Result<()> {
    let crop = model.card.input.crop as i64;
    let example = Tensor::zeros([2, 3, crop, crop], (Kind::Float, Device::Cpu));
    let module = tch::no_grad(|| {
        tch::CModule::create_by_tracing("DeepCoral", "forward", &[example], &mut |inputs| {
            vec![model.net.forward_t(&inputs[0], false)]
        })
    })
    .context("tracing the network")?;
    files::write_atomic_with(out, |tmp| module.save(tmp).with_context(|| format!("writing {}", tmp.display())))
}
