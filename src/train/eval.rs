//! Whole-domain evaluation: every image once, centre crop, eval mode (no dropout), no autograd.

use tch::{Device, Kind, Reduction};

use crate::data::inputs::Inputs;
use crate::model::backbone::{Finetune, InputConvention, Network};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Fraction of images whose arg-max output is their label.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
}

/// Evaluates `net` on all of `set`, `chunk` images at a time; `cut` says where `set`'s inputs
/// enter the network (images under `all`, cached centre-crop features under `fc`/`last`).
pub fn evaluate(
    net: &dyn Network,
    cut: Finetune,
    set: &Inputs,
    input: &InputConvention,
    channels_last: bool,
    device: Device,
    chunk: usize,
) -> Evaluation {
    let mut correct = 0i64;
    let mut loss_sum = 0f64;
    let all: Vec<usize> = (0..set.len()).collect();
    tch::no_grad(|| {
        for idx in all.chunks(chunk.max(1)) {
            let xs = set.eval_batch(idx, input, channels_last, device);
            let ys = set.labels(idx, device);
            let logits = net.head(&xs, cut, false);
            correct += logits.argmax(-1, false).eq_tensor(&ys).sum(Kind::Int64).int64_value(&[]);
            loss_sum += logits
                .log_softmax(-1, Kind::Float)
                .g_nll_loss::<tch::Tensor>(&ys, None, Reduction::Sum, -100)
                .double_value(&[]);
        }
    });
    let n = set.len() as f64;
    Evaluation { accuracy: correct as f64 / n, loss: loss_sum / n }
}
