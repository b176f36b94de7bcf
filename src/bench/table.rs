//! The text table `bench` prints: one row per cell, then bf16 against fp32 and channels-last
//! against contiguous, each ratio between cells of the same run.

use crate::config::Precision;
use crate::model::backbone::Backbone;

use super::measure::median;
use super::{layout_name, BackboneBench, BenchReport};

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64))
}

/// The layout of a measurement: its own, or the report's in reports from before layouts were
/// compared (channels-last, the default then).
fn layout_of(r: &BenchReport, b: &BackboneBench) -> bool {
    b.channels_last.or(r.channels_last).unwrap_or(true)
}

/// The report as the text table `bench` prints.
pub fn table(r: &BenchReport) -> String {
    let d = &r.data;
    let mut s = format!(
        "deep-coral bench: {}, {} threads, batch {} source + {} target, lambda {}, {} timed iterations after {} warm-up ({} per figure){}\n",
        r.device,
        r.threads,
        r.batch_size,
        r.batch_size,
        r.lambda,
        r.iterations,
        r.warmup,
        if r.median { "median" } else { "mean" },
        if r.process_per_cell { ", each cell in a process of its own" } else { "" }
    );
    s += &format!(
        "allocator: freed memory {} (runtime::keep_freed_memory; DEEP_CORAL_RELEASE_MEMORY=1 turns it off)\n",
        if r.keep_freed_memory { "kept in the heap (on)" } else { "returned to the kernel (off)" }
    );
    s += &format!(
        "data: {} + {}: {} images ({:.0} MiB) decoded into memory in {:.2} s = {:.0} img/s; peak RSS then {}\n\n",
        d.source,
        d.target,
        d.images,
        d.bytes as f64 / (1u64 << 20) as f64,
        d.build_s,
        d.decode_img_per_s,
        mib(d.peak_rss_bytes)
    );
    s += &format!(
        "{:<14} {:<9} {:<13} {:<10} {:>12} {:>9} {:>11} {:>12} {:>12} {:>10} {:>13} {:>13} {:>16} {:>14} {:>10}\n",
        "backbone",
        "precision",
        "layout",
        "weights",
        "limit img/s",
        "batch ms",
        "batch/step",
        "train img/s",
        "train/limit",
        "min-max",
        "inline/limit",
        "ahead/inline",
        "train img/s λ=0",
        "time λ=0/λ>0",
        "peak RSS"
    );
    for b in &r.backbones {
        let opt = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
        // The round's own ratios where the report has rounds; else ratios of the medians.
        let inline = b.train_inline.map(|t| t.img_per_s);
        let (inline_over_limit, ahead_over_inline, spread) = match &b.rounds {
            Some(r) => {
                (Some(median(&r.inline_over_limit)), Some(median(&r.ahead_over_inline)), min_max(&r.train_over_limit))
            }
            None => (inline.map(|i| i / b.limit.img_per_s), inline.map(|i| b.train.img_per_s / i), "-".into()),
        };
        s += &format!(
            "{:<14} {:<9} {:<13} {:<10} {:>12.1} {:>9} {:>11} {:>12.1} {:>12.2} {:>10} {:>13} {:>13} {:>16.1} {:>14.2} {:>10}\n",
            b.backbone.name(),
            b.precision.name(),
            layout_name(layout_of(r, b)),
            if b.weights.is_some() { "pretrained" } else { "random" },
            b.limit.img_per_s,
            b.batch.map_or("-".to_string(), |t| format!("{:.0}", 1000.0 * t.s_per_iter)),
            b.batch.map_or("-".to_string(), |t| format!("{:.1}%", 100.0 * t.s_per_iter / b.limit.s_per_iter)),
            b.train.img_per_s,
            b.train_over_limit,
            spread,
            opt(inline_over_limit),
            opt(ahead_over_inline),
            b.train_lambda0.img_per_s,
            b.lambda0_over_lambda_time,
            mib(b.peak_rss_bytes)
        );
    }
    s += &precision_ratios(r);
    s += &layout_ratios(r);
    s += "\nimg/s counts source + target images. limit: train::update (forward both branches, class + \
          lambda * CORAL, backward, SGD) on one batch already in tensors. batch ms: making one batch (source + target: sampling, crops, \
          mirrors, tensors) alone on the loop's thread; batch/step: its time against limit's. train: the loop's iteration on the \
          decoded images (sampling, crops, mirrors, tensors made one iteration ahead on a second thread, then \
          update); inline: the same with the batch made before each update (prefetch: false); ahead/inline: \
          the gain of prefetching. Every update runs at learning rate 0: the same arithmetic, the weights \
          kept as loaded.\n";
    if r.backbones.iter().any(|b| b.rounds.is_some()) {
        s += "rounds: limit, train, train at λ = 0 and inline run one iteration each per round, back to back, \
              in an order that rotates; each ratio (train/limit, inline/limit, ahead/inline, time λ=0/λ>0) is the \
              median over rounds of that round's own ratio, so a drift of the machine's speed between rounds \
              leaves it alone; min-max: the lowest and highest round's train/limit.\n";
    }
    if r.backbones.iter().any(|b| b.weights.is_none()) {
        s += "random: no weights file for that backbone (see --weights): random initialisation; the work per \
              iteration is the same.\n";
    }
    if !r.peak_rss_per_backbone {
        s += "peak RSS could not be reset between backbones: each includes the backbones before it.\n";
    }
    s
}

/// "lo-hi" of a round's ratios.
fn min_max(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.2}-{hi:.2}")
}

/// The measurement of `backbone` in `precision` and layout `channels_last`, if there is one.
fn find<'r>(
    r: &'r BenchReport,
    backbone: Backbone,
    precision: Precision,
    channels_last: bool,
) -> Option<&'r BackboneBench> {
    r.backbones.iter().find(|b| b.backbone == backbone && b.precision == precision && layout_of(r, b) == channels_last)
}

/// bf16 against fp32 per backbone and layout measured in both: speed ratios and memory, in
/// this run.
fn precision_ratios(r: &BenchReport) -> String {
    let mut rows = String::new();
    let mut seen = Vec::new();
    for b in &r.backbones {
        let key = (b.backbone, layout_of(r, b));
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let (Some(fp32), Some(bf16)) = (find(r, key.0, Precision::Fp32, key.1), find(r, key.0, Precision::Bf16, key.1))
        else {
            continue;
        };
        rows += &format!(
            "{:<14} {:<13} {:>18.2} {:>18.2} {:>18.2} {:>22}\n",
            b.backbone.name(),
            layout_name(key.1),
            bf16.limit.img_per_s / fp32.limit.img_per_s,
            bf16.train.img_per_s / fp32.train.img_per_s,
            bf16.train_lambda0.img_per_s / fp32.train_lambda0.img_per_s,
            format!("{} / {}", mib(bf16.peak_rss_bytes), mib(fp32.peak_rss_bytes)),
        );
    }
    if rows.is_empty() {
        return rows;
    }
    format!(
        "\nbf16 / fp32 (img/s ratios; the same run, batch and images):\n{:<14} {:<13} {:>18} {:>18} {:>18} {:>22}\n{rows}",
        "backbone", "layout", "limit bf16/fp32", "train bf16/fp32", "train λ=0 bf16/fp32", "peak RSS bf16 / fp32"
    )
}

/// Channels-last against contiguous per backbone and precision measured in both, and which
/// is faster for the full iteration.
fn layout_ratios(r: &BenchReport) -> String {
    let mut rows = String::new();
    let mut seen = Vec::new();
    for b in &r.backbones {
        let key = (b.backbone, b.precision);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let (Some(cl), Some(nchw)) = (find(r, key.0, key.1, true), find(r, key.0, key.1, false)) else {
            continue;
        };
        let train = cl.train.img_per_s / nchw.train.img_per_s;
        rows += &format!(
            "{:<14} {:<9} {:>22.2} {:>22.2} {:>10}\n",
            b.backbone.name(),
            b.precision.name(),
            cl.limit.img_per_s / nchw.limit.img_per_s,
            train,
            layout_name(train >= 1.0),
        );
    }
    if rows.is_empty() {
        return rows;
    }
    format!(
        "\nchannels-last / contiguous (img/s ratios; the same run, batch and images):\n{:<14} {:<9} {:>22} {:>22} {:>10}\n{rows}",
        "backbone", "precision", "limit last/contiguous", "train last/contiguous", "faster"
    )
}
