//! One cell's measurements (backbone, precision, layout), in interleaved rounds.
//!
//! Why rounds: train/limit compares two figures of the same `step::update`, a few percent
//! apart. Measured one after the other, minutes apart, they compared the machine's speed at
//! two moments as much as the two paths: on this project's 2-core machine a cell's limit moved
//! by up to 2x between runs, and a ratio of 0.55 to 1.78 came out of code whose input path is
//! 1-2% of a step (docs/speed.md). So each round runs one iteration of every kind, back to
//! back, in an order that rotates from round to round (no kind always first after a pause),
//! and every ratio is the median over rounds of that round's own ratio: a drift of the
//! machine's speed moves the kinds of one round together and leaves their ratio alone.
//!
//! The kinds share one model. Each loop kind has its own random streams and its own
//! `prefetch::Feed`, so a worker making batches ahead does so during its own kind's step, as
//! in training (one batch ahead, then it waits), never during another kind's.

use std::time::Instant;

use anyhow::{bail, Result};
use tch::Device;

use crate::config::{Precision, TrainConfig};
use crate::data::transfer::Data;
use crate::model::backbone::Backbone;
use crate::train::checkpoint::Streams;
use crate::train::model::Model;
use crate::train::prefetch::Feed;
use crate::train::step;

use super::{config, layout_name, BackboneBench, BenchOptions, RoundRatios, Timing};

pub(super) fn bench_backbone(
    opts: &BenchOptions,
    backbone: Backbone,
    precision: Precision,
    channels_last: bool,
    data: &Data,
    device: Device,
) -> Result<BackboneBench> {
    let mut cfg = config(opts, backbone, precision, channels_last);
    cfg.validate()?;
    let classes = data.classes.len();
    let weights = cfg.weights.is_file().then(|| cfg.weights.clone());
    // Every update at learning rate 0: the same arithmetic (gradients, momentum, decay, the
    // subtraction), while the weights stay the ones loaded. The kinds share one model for
    // 4 x (warm-up + timed) updates, which at the training rate drove a pretrained SqueezeNet
    // to NaN losses within a round at batch 2 (and random weights within a few steps at any
    // batch); a NaN loss skips the update, which would flatter the timing.
    cfg.lr = 0.0;
    let mut model = match weights {
        Some(_) => Model::new(&cfg, classes, device)?,
        None => Model::with_random_weights(&cfg, classes, device),
    };
    let what = format!(
        "{}, {}, {}",
        weights.as_ref().map_or("random weights".to_string(), |p| p.display().to_string()),
        precision.name(),
        layout_name(channels_last)
    );
    let images = 2 * cfg.batch_size;
    let total = opts.warmup + opts.iterations;

    eprintln!("bench {backbone} ({what}): making batches, {total} batches");
    let mut streams = Streams::fresh(&cfg, data);
    let batch = step::next_batch(data, &cfg, &model.input, &mut streams, device);
    let made = time(opts, images, device, |_| {
        step::next_batch(data, &cfg, &model.input, &mut streams, device);
        Ok(())
    })?;

    // The loop kinds, each for the whole measurement: batches made ahead at `lambda`, at 0, and
    // made inline (`prefetch: false`). A round runs the limit (kind 0), then these (kinds 1-3).
    let ahead = TrainConfig { iterations: total, ..cfg.clone() };
    let loops = [ahead.clone(), TrainConfig { lambda: 0.0, ..ahead.clone() }, TrainConfig { prefetch: false, ..ahead }];
    eprintln!(
        "bench {backbone} ({what}): {total} rounds of limit, loop at lambda {} (batches ahead), at 0, and inline",
        cfg.lambda
    );
    let times = std::thread::scope(|scope| -> Result<[Vec<f64>; 4]> {
        let input = model.input;
        let mut streams = loops.each_ref().map(|c| Streams::fresh(c, data));
        let mut feeds: Vec<Feed> =
            loops.iter().zip(&streams).map(|(c, s)| Feed::start(scope, data, c, input, s, 0, device)).collect();
        let mut times: [Vec<f64>; 4] = Default::default(); // per kind
        for round in 0..total {
            for k in 0..times.len() {
                let kind = (round + k) % times.len(); // the order rotates from round to round
                let clock = Instant::now();
                let stats = match kind.checked_sub(1) {
                    None => step::update(&mut model, &cfg, &batch, round)?,
                    Some(l) => {
                        let b = feeds[l].next(data, &loops[l], &input, &mut streams[l], device)?;
                        step::update(&mut model, &loops[l], &b, round)?
                    }
                };
                finite(stats)?;
                sync(device);
                if round >= opts.warmup {
                    times[kind].push(clock.elapsed().as_secs_f64());
                }
            }
        }
        Ok(times)
    })?;
    let [limit, train, train0, train_inline] = &times;
    // Per round: a ratio of two times, as img/s ratios read (the faster kind above 1).
    let per_round = |num: &[f64], den: &[f64]| num.iter().zip(den).map(|(n, d)| n / d).collect::<Vec<f64>>();
    let rounds = RoundRatios {
        train_over_limit: per_round(limit, train),
        inline_over_limit: per_round(limit, train_inline),
        ahead_over_inline: per_round(train_inline, train),
        lambda0_over_lambda_time: per_round(train0, train),
    };
    let timing = |t: &[f64]| {
        let s_per_iter = median(t);
        Timing { s_per_iter, img_per_s: images as f64 / s_per_iter }
    };
    Ok(BackboneBench {
        backbone,
        precision,
        channels_last: Some(channels_last),
        weights,
        lr: cfg.lr,
        limit: timing(limit),
        batch: Some(made),
        train: timing(train),
        train_lambda0: timing(train0),
        train_inline: Some(timing(train_inline)),
        train_over_limit: median(&rounds.train_over_limit),
        lambda0_over_lambda_time: median(&rounds.lambda0_over_lambda_time),
        rounds: Some(rounds),
        peak_rss_bytes: crate::train::runtime::peak_rss_bytes(),
    })
}

/// A step whose loss is not finite skips its update, which would flatter the timing.
fn finite(stats: crate::train::metrics::StepStats) -> Result<()> {
    if !(stats.class_loss.is_finite() && stats.coral_loss.is_finite()) {
        bail!(
            "loss is not finite (class {}, coral {}): the timing would skip updates",
            stats.class_loss,
            stats.coral_loss
        );
    }
    Ok(())
}

/// Runs `opts.warmup` untimed then `opts.iterations` timed calls of `f(iteration)`, each
/// timed to the end of its device work; the figure is their median.
fn time(opts: &BenchOptions, images: usize, device: Device, mut f: impl FnMut(usize) -> Result<()>) -> Result<Timing> {
    for it in 0..opts.warmup {
        f(it)?;
    }
    sync(device);
    let mut times = Vec::with_capacity(opts.iterations);
    for it in opts.warmup..opts.warmup + opts.iterations {
        let clock = Instant::now();
        f(it)?;
        sync(device);
        times.push(clock.elapsed().as_secs_f64());
    }
    let s_per_iter = median(&times);
    Ok(Timing { s_per_iter, img_per_s: images as f64 / s_per_iter })
}

/// The middle value (the mean of the two middle ones for an even count).
pub(super) fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
