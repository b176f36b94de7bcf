//! Whole-domain evaluation: every image once, the centre crop (mirrored by a seeded coin under
//! `eval_mirror`, as Caffe's TEST phase with `mirror: true`), eval mode (no dropout), no autograd.

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Reduction};

use crate::config::TrainConfig;
use crate::data::inputs::Inputs;
use crate::model::backbone::{InputConvention, Network};
use crate::train::precision::Autocast;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Fraction of images whose arg-max output is their label.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
}

/// Evaluates `net` on all of `set`, `chunk` images at a time, after `iteration` training
/// steps; `cfg.finetune` says where `set`'s inputs enter the network (images under `all`,
/// cached features under `fc`/`last`), `cfg.precision` in which arithmetic (the logits are
/// cast up before the loss), `cfg.eval_mirror` whether each image is mirrored by a coin.
pub fn evaluate(
    net: &dyn Network,
    cfg: &TrainConfig,
    set: &Inputs,
    input: &InputConvention,
    device: Device,
    chunk: usize,
    iteration: usize,
) -> Result<Evaluation> {
    let mirrors = if cfg.eval_mirror { mirror_coins(cfg.seed, iteration, set.len()) } else { vec![false; set.len()] };
    let mut correct = 0i64;
    let mut loss_sum = 0f64;
    let all: Vec<usize> = (0..set.len()).collect();
    tch::no_grad(|| -> Result<()> {
        let _region = Autocast::enter(cfg.precision, device)?;
        for (idx, mirror) in all.chunks(chunk.max(1)).zip(mirrors.chunks(chunk.max(1))) {
            let xs = set.eval_batch(idx, mirror, input, cfg.channels_last, device);
            let ys = set.labels(idx, device);
            let logits = net.head(&xs, cfg.finetune, false).to_kind(Kind::Float);
            correct += logits.argmax(-1, false).eq_tensor(&ys).sum(Kind::Int64).int64_value(&[]);
            loss_sum += logits
                .log_softmax(-1, Kind::Float)
                .g_nll_loss::<tch::Tensor>(&ys, None, Reduction::Sum, -100)
                .double_value(&[]);
        }
        Ok(())
    })?;
    let n = set.len() as f64;
    Ok(Evaluation { accuracy: correct as f64 / n, loss: loss_sum / n })
}

/// One fair coin per image for the evaluation after `iteration` steps of the run seeded
/// `seed`: a stream of its own (keyed by both), so evaluations neither touch nor depend on the
/// training's random streams, and a resumed run draws the same coins.
pub fn mirror_coins(seed: u64, iteration: usize, n: usize) -> Vec<bool> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(iteration as u64).to_le_bytes());
    key[16..].copy_from_slice(b"deep-coral evalm");
    let mut rng = ChaCha8Rng::from_seed(key);
    (0..n).map(|_| rng.gen_bool(0.5)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_coins_are_seeded_fair_and_differ_per_evaluation() {
        let a = mirror_coins(1, 50, 2000);
        assert_eq!(a, mirror_coins(1, 50, 2000), "same seed and iteration, same coins");
        assert_ne!(a, mirror_coins(1, 100, 2000), "each evaluation draws anew");
        assert_ne!(a, mirror_coins(2, 50, 2000), "each seed draws its own");
        let heads = a.iter().filter(|&&m| m).count();
        assert!((900..1100).contains(&heads), "{heads} of 2000 mirrored: not a fair coin");
    }
}
