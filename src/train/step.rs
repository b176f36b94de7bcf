//! One SGD iteration, in two halves: `next_batch` (sampling, crops and mirrors, tensors) and
//! `update` (both branches -> `class + lambda * align` -> backward -> Caffe SGD), which the
//! benchmark also times on its own. `align` is the run's method's loss (`train::align`); the
//! CORAL loss at fc8 is computed and logged for every method.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::config::TrainConfig;
use crate::data::images::ImageSet;
use crate::data::inputs::{host_train_batch, labels_of};
use crate::data::transfer::Data;
use crate::model::backbone::InputConvention;
use crate::model::backbone::Taps;
use crate::train::align::{self, coral};
use crate::train::checkpoint::Streams;
use crate::train::metrics::StepStats;
use crate::train::model::Model;
use crate::train::precision::Autocast;
use crate::train::runtime;

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

/// [`next_batch`] of two domains of decoded images in host memory, in the same draws: the
/// source's indices, the target's, then a view of each source image and of each target image.
/// It reads host data only, so `train::prefetch` runs it on its own thread.
pub fn host_batch(
    source: &ImageSet,
    target: &ImageSet,
    cfg: &TrainConfig,
    input: &InputConvention,
    streams: &mut Streams,
    device: Device,
) -> Batch {
    let n = cfg.batch_size;
    let si = streams.source.next(n);
    let ti = streams.target.next(n);
    Batch {
        source: host_train_batch(source, &si, &mut streams.augment, input, cfg.channels_last, device),
        labels: labels_of(&source.labels, &si, device),
        target: host_train_batch(target, &ti, &mut streams.augment, input, cfg.channels_last, device),
    }
}

/// The network's part of an iteration, on a batch already in tensors: both branches (from the
/// cut of `cfg.finetune` to fc8) -> `class + lambda * align` -> backward -> Caffe SGD step.
///
/// Both branches run in training mode (dropout on), source first, so the random draws are the
/// same whatever lambda is; with lambda = 0 the target branch runs without autograd, since no
/// gradient flows from it, and still yields the losses that are logged.
pub fn update(model: &mut Model, cfg: &TrainConfig, batch: &Batch, iteration: usize) -> Result<StepStats> {
    let ys = &batch.labels;
    runtime::seed_torch_for_iteration(cfg.seed, iteration);
    let (ts, tt) = branches(model, cfg, batch)?;
    let (fs, ft) = (&ts.logits, &tt.logits); // [n, classes] each, float32
    let class_loss = fs.cross_entropy_for_logits(ys);
    let coral = coral::coral(fs, ft)?;
    let align = align::loss(cfg.method, &ts, &tt, &coral.loss)?;
    let loss = if cfg.lambda > 0.0 { &class_loss + &align * cfg.lambda } else { class_loss.shallow_clone() };

    model.opt.zero_grad();
    loss.backward();
    // Every logged scalar in one device -> host copy, after the backward pass is queued (on a
    // GPU, the only synchronisation of the iteration).
    let correct = fs.argmax(-1, false).eq_tensor(ys).sum(Kind::Float);
    let parts = [
        class_loss.detach(),
        coral.loss.detach(),
        coral.squared_distance.shallow_clone(),
        correct,
        align.detach().to_kind(Kind::Float),
    ];
    let scalars = Vec::<f64>::try_from(Tensor::stack(&parts, 0).to_kind(Kind::Double).to_device(Device::Cpu))?;
    let stats = StepStats {
        class_loss: scalars[0],
        coral_loss: scalars[1],
        coral_distance: scalars[2].sqrt(),
        correct: scalars[3] as usize,
        seen: ys.size()[0] as usize,
        align_loss: scalars[4],
    };
    if !(stats.class_loss.is_finite() && stats.coral_loss.is_finite() && stats.align_loss.is_finite()) {
        return Ok(stats); // the caller stops the run as diverged; no update with a NaN
    }
    model.opt.step(cfg.lr_at(iteration));
    Ok(stats)
}

/// The fc8 outputs of both branches, source first, in float32 (`branches`' logits).
pub fn fc8_outputs(model: &Model, cfg: &TrainConfig, batch: &Batch) -> Result<(Tensor, Tensor)> {
    let (s, t) = branches(model, cfg, batch)?;
    Ok((s.logits, t.logits))
}

/// Both branches' forward passes, source first, with the taps the run's method reads, every
/// tensor in float32. Under `--precision bf16` the two branches run in one autocast region
/// (each weight is cast to bf16 once for both) and their outputs are cast up before anything
/// else: the cross-entropy and the alignment losses (CORAL's covariances, a difference of two
/// nearly equal matrices) are computed in float32 (a no-op under fp32).
pub fn branches(model: &Model, cfg: &TrainConfig, batch: &Batch) -> Result<(Taps, Taps)> {
    let fc67 = align::wants_fc67(cfg.method);
    let (s, t) = {
        let _region = Autocast::enter(cfg.precision, model.vs.device())?;
        let s = model.net.head_taps(&batch.source, cfg.finetune, true, fc67);
        let t = if cfg.lambda > 0.0 {
            model.net.head_taps(&batch.target, cfg.finetune, true, fc67)
        } else {
            tch::no_grad(|| model.net.head_taps(&batch.target, cfg.finetune, true, fc67))
        };
        (s, t)
    };
    let up = |x: Taps| {
        let f = |t: Tensor| t.to_kind(Kind::Float);
        Taps { fc6: x.fc6.map(f), fc7: x.fc7.map(f), bottleneck: x.bottleneck.map(f), logits: f(x.logits) }
    };
    Ok((up(s), up(t)))
}
