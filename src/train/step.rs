//! One SGD iteration, in two halves: `next_batch` (sampling, crops and mirrors, tensors) and
//! `update` (both branches -> `class + lambda * CORAL` -> backward -> Caffe SGD), which the
//! benchmark also times on its own.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::config::TrainConfig;
use crate::data::transfer::Data;
use crate::model::backbone::InputConvention;
use crate::train::checkpoint::Streams;
use crate::train::coral;
use crate::train::metrics::StepStats;
use crate::train::model::Model;
use crate::train::precision::Autocast;
use crate::train::runtime;

/// One SGD iteration on a source batch (labelled) and a target batch (unlabelled): `next_batch`
/// then `update`.
pub fn step(
    model: &mut Model,
    data: &Data,
    cfg: &TrainConfig,
    streams: &mut Streams,
    iteration: usize,
    device: Device,
) -> Result<StepStats> {
    let batch = next_batch(data, cfg, &model.input, streams, device);
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
    streams: &mut Streams,
    device: Device,
) -> Batch {
    let n = cfg.batch_size;
    let si = streams.source.next(n);
    let ti = streams.target.next(n);
    Batch {
        source: data.source.train_batch(&si, &mut streams.augment, input, cfg.channels_last, device),
        labels: data.source.labels(&si, device),
        target: data.target.train_batch(&ti, &mut streams.augment, input, cfg.channels_last, device),
    }
}

/// The network's part of an iteration, on a batch already in tensors: both branches (from the
/// cut of `cfg.finetune` to fc8) -> `class + lambda * CORAL` -> backward -> Caffe SGD step.
///
/// Both branches run in training mode (dropout on), source first, so the random draws are the
/// same whatever lambda is; with lambda = 0 the target branch runs without autograd, since no
/// gradient flows from it, and still yields the CORAL distance that is logged.
pub fn update(model: &mut Model, cfg: &TrainConfig, batch: &Batch, iteration: usize) -> Result<StepStats> {
    let ys = &batch.labels;
    runtime::seed_torch_for_iteration(cfg.seed, iteration);
    let (fs, ft) = fc8_outputs(model, cfg, batch)?; // [n, classes] each, float32
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

/// The fc8 outputs of both branches, source first, in float32. Under `--precision bf16` the
/// two branches run in one autocast region (each weight is cast to bf16 once for both) and
/// their outputs are cast up before anything else: the cross-entropy and CORAL's covariances,
/// a difference of two nearly equal matrices, are computed in float32 (a no-op under fp32).
pub fn fc8_outputs(model: &Model, cfg: &TrainConfig, batch: &Batch) -> Result<(Tensor, Tensor)> {
    let (fs, ft) = {
        let _region = Autocast::enter(cfg.precision, model.vs.device())?;
        let fs = model.net.head(&batch.source, cfg.finetune, true);
        let ft = if cfg.lambda > 0.0 {
            model.net.head(&batch.target, cfg.finetune, true)
        } else {
            tch::no_grad(|| model.net.head(&batch.target, cfg.finetune, true))
        };
        (fs, ft)
    };
    Ok((fs.to_kind(Kind::Float), ft.to_kind(Kind::Float)))
}
