//! `deep-coral bench`: how fast training runs, and where the time goes, per backbone.
//!
//! Everything timed here is the training code itself, never a copy of it:
//!
//! 1. **limit**: `step::update` (both branches with autograd, `class + lambda * CORAL`,
//!    backward, Caffe SGD) on one batch already in tensors: the network's share of an
//!    iteration, without sampling, crops, mirrors or tensor making; **batch**: making one batch
//!    alone (sampling, crops, mirrors, tensors), the work the loop adds to the limit;
//! 2. **train**: the loop's own iteration on the decoded images: the next batch from
//!    `prefetch::Feed` (sampling, augmentation, tensors, made one iteration ahead on a second
//!    thread) then `step::update`, at `lambda` and at 0 (target branch without autograd;
//!    expected about 2/3 of the time); and at `lambda` with the batch made inline
//!    (`prefetch: false`), so the gain of prefetching is measured in the same run. The limit
//!    and the three loop kinds run interleaved, one iteration of each per round
//!    ([`measure`]), and each ratio is the median of the rounds' own ratios;
//! 3. **data**: `transfer::scan` + `transfer::load_images`, which scan and decode both domains into memory;
//! 4. **memory**: peak resident memory (`VmHWM`) of the process, reset once the images are
//!    decoded (after handing the heap's free memory back), so the peak includes the decoded
//!    images.
//!
//! Each backbone is measured in each `--precision` (fp32 and bf16 by default) and each memory
//! layout (`--channels-last true,false`: channels-last and contiguous NCHW by default), with
//! the same batch, the same images and the same model built anew, so the table's bf16/fp32
//! and layout ratios are measured in one run, on one machine, minutes apart. Each such cell
//! runs in a process of its own ([`cells`]): in one process a cell's figures depended on the
//! cells before it.
//!
//! The `TrainConfig` and `Model` are built as `train` builds them, updated at learning rate 0
//! (the same arithmetic; the weights stay as loaded); a backbone whose weights file is not at
//! hand keeps its random initialisation (speed does not depend on the values).
//! Images per second count source and target images alike (2 x batch per iteration). Each
//! figure is the median of its timed iterations, which one iteration disturbed by something
//! else on the machine does not move.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{DeviceChoice, Precision, TrainConfig};
use crate::data::transfer;
use crate::model::backbone::Backbone;
use crate::train::runtime;

mod cells;
mod measure;
mod table;

pub use table::table;

/// What to measure and how (the flags of `deep-coral bench`).
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub backbones: Vec<Backbone>,
    /// Each backbone is measured once per precision.
    pub precisions: Vec<Precision>,
    /// Weights files that replace `default_weights` for some backbones.
    pub weights: Vec<(Backbone, PathBuf)>,
    pub batch_size: usize,
    /// Timed iterations per measurement.
    pub iterations: usize,
    /// Untimed iterations before each measurement.
    pub warmup: usize,
    /// libtorch threads; 0 = libtorch's default.
    pub threads: usize,
    /// CORAL weight of the `lambda > 0` measurements.
    pub lambda: f64,
    pub data_root: PathBuf,
    pub source: String,
    pub target: String,
    /// Each backbone and precision is measured once per layout: channels-last (true) or
    /// contiguous NCHW (false).
    pub layouts: Vec<bool>,
    pub device: DeviceChoice,
    /// Whether `runtime::keep_freed_memory` is on in this process (reported, not changed).
    pub keep_freed_memory: bool,
}

/// Where `bench` looks for a backbone's pretrained weights when `--weights` does not say:
/// the files `make weights` writes, and the SqueezeNet that ships in ../shared.
pub fn default_weights(backbone: Backbone) -> PathBuf {
    PathBuf::from(match backbone {
        Backbone::Alexnet => "weights/alexnet-imagenet.safetensors",
        Backbone::Caffenet => "weights/caffenet-imagenet.safetensors",
        Backbone::Squeezenet1_1 => "../shared/weights/squeezenet1_1-caffe-imagenet.safetensors",
    })
}

/// Time per iteration and images per second (source + target) of one measurement: the median
/// of its timed iterations (the mean in reports without `median`), so that one iteration held
/// up by something else on the machine does not move the figure.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Timing {
    pub s_per_iter: f64,
    pub img_per_s: f64,
}

/// Building the in-memory dataset (`transfer::scan` + `transfer::load_images`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataBench {
    pub data_root: PathBuf,
    pub source: String,
    pub target: String,
    /// Source + target images decoded.
    pub images: usize,
    /// Bytes the decoded images take in memory.
    pub bytes: u64,
    /// Seconds to scan and decode both domains.
    pub build_s: f64,
    /// `images / build_s`.
    pub decode_img_per_s: f64,
    /// Peak resident memory once the data is decoded.
    pub peak_rss_bytes: Option<u64>,
}

/// The measurements of one backbone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackboneBench {
    pub backbone: Backbone,
    /// `--precision` of this measurement (absent in reports from before it: fp32).
    #[serde(default)]
    pub precision: Precision,
    /// Channels-last (NHWC) images and convolution weights, or contiguous NCHW (absent in
    /// reports from before layouts were compared: the report's `channels_last`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels_last: Option<bool>,
    /// The weights file loaded, or null for a random initialisation.
    pub weights: Option<PathBuf>,
    /// Base learning rate of the updates: 0 since rounds (`measure`); in older reports training's,
    /// or 0 with random weights.
    pub lr: f64,
    /// `step::update` at `lambda` on a batch already in tensors (in reports from before rounds:
    /// the faster of two measurements, before and after the loop's, or one).
    pub limit: Timing,
    /// Making one batch (sampling, crops, mirrors, tensors of source and target) on the loop's
    /// thread, alone: the work that prefetching moves off the loop (absent in older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Timing>,
    /// The loop's iteration (batch from `prefetch::Feed`, then `step::update`) at `lambda`.
    pub train: Timing,
    /// The same at lambda = 0.
    pub train_lambda0: Timing,
    /// The same at `lambda` with `prefetch: false` (the batch made inline; absent in reports
    /// from before prefetching, whose `train` was made that way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_inline: Option<Timing>,
    /// The share of the limit the full iteration reaches: the median of `rounds`' own ratios
    /// (`train.img_per_s / limit.img_per_s` in reports from before rounds).
    pub train_over_limit: f64,
    /// The time of a lambda = 0 iteration over a lambda > 0 one (about 2/3 expected): the
    /// median of `rounds`' own ratios (of the two medians in older reports).
    pub lambda0_over_lambda_time: f64,
    /// Each timed round's ratios, the limit and the loop kinds measured back to back (absent
    /// in reports from before rounds, whose kinds were measured one after another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<RoundRatios>,
    /// Peak resident memory while this backbone ran (decoded images included).
    pub peak_rss_bytes: Option<u64>,
}

/// The ratios of each timed round, one value per round, in img/s terms (the faster kind above
/// 1): each compares two iterations run back to back in the same round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundRatios {
    /// Limit time / loop time (batches made ahead).
    pub train_over_limit: Vec<f64>,
    /// Limit time / loop time with batches made inline.
    pub inline_over_limit: Vec<f64>,
    /// Inline time / ahead time: the gain of prefetching.
    pub ahead_over_inline: Vec<f64>,
    /// Lambda = 0 time / lambda > 0 time (a ratio of times, as its name says).
    pub lambda0_over_lambda_time: Vec<f64>,
}

/// Everything one `bench` run measured; written by `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub device: String,
    /// libtorch intra-op threads in use.
    pub threads: usize,
    /// Images per domain per iteration.
    pub batch_size: usize,
    pub lambda: f64,
    pub iterations: usize,
    pub warmup: usize,
    /// Each figure is the median of its timed iterations (false in older reports: the mean).
    #[serde(default)]
    pub median: bool,
    /// Each cell was measured in a process of its own (`cells`; false in older reports, whose
    /// cells ran one after another in one process).
    #[serde(default)]
    pub process_per_cell: bool,
    /// The layout of every measurement in reports from before layouts were compared; now
    /// each backbone entry says its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels_last: Option<bool>,
    pub keep_freed_memory: bool,
    /// False where the kernel refused to reset the peak: each backbone's peak then includes
    /// the backbones before it.
    pub peak_rss_per_backbone: bool,
    pub data: DataBench,
    pub backbones: Vec<BackboneBench>,
}

/// Runs every measurement and returns the numbers; progress goes to stderr. More than one cell
/// (backbone, precision, layout): each runs in a process of its own, `exe bench` with that cell
/// ([`cells`]).
pub fn bench(opts: &BenchOptions, exe: &Path) -> Result<BenchReport> {
    if opts.batch_size < 2 {
        bail!("--batch-size must be at least 2 (the covariance needs two rows), got {}", opts.batch_size);
    }
    if opts.iterations == 0 {
        bail!("--iterations must be positive, got 0");
    }
    if !(opts.lambda.is_finite() && opts.lambda > 0.0) {
        bail!("--lambda must be > 0 (lambda = 0 is measured as well), got {}", opts.lambda);
    }
    if opts.backbones.is_empty() {
        bail!("no --backbone to measure");
    }
    if opts.precisions.is_empty() {
        bail!("no --precision to measure");
    }
    if opts.layouts.is_empty() {
        bail!("no --channels-last layout to measure");
    }
    let device = runtime::device(opts.device)?;
    for &p in &opts.precisions {
        crate::train::precision::check_supported(p, device)?;
    }
    let threads = runtime::set_threads(opts.threads)?;
    let base = config(opts, opts.backbones[0], opts.precisions[0], opts.layouts[0]);
    base.validate()?;
    if opts.backbones.len() * opts.precisions.len() * opts.layouts.len() > 1 {
        return cells::measure_each_in_own_process(opts, exe);
    }

    eprintln!("bench: decoding {} and {} from {}", opts.source, opts.target, opts.data_root.display());
    let clock = Instant::now();
    let (source, target) = transfer::scan(&base)?;
    let data = transfer::load_images(&base, &source, &target, device)?;
    let build_s = clock.elapsed().as_secs_f64();
    let images = data.source.len() + data.target.len();
    let data_bench = DataBench {
        data_root: opts.data_root.clone(),
        source: opts.source.clone(),
        target: opts.target.clone(),
        images,
        bytes: data.source.bytes() + data.target.bytes(),
        build_s,
        decode_img_per_s: images as f64 / build_s,
        peak_rss_bytes: runtime::peak_rss_bytes(),
    };

    // The one cell of this process.
    let peak_rss_per_backbone = runtime::reset_peak_rss();
    let (backbone, precision, channels_last) = (opts.backbones[0], opts.precisions[0], opts.layouts[0]);
    let backbones = vec![measure::bench_backbone(opts, backbone, precision, channels_last, &data, device)?];
    Ok(BenchReport {
        device: runtime::device_name(device),
        threads,
        batch_size: opts.batch_size,
        lambda: opts.lambda,
        iterations: opts.iterations,
        warmup: opts.warmup,
        median: true,
        process_per_cell: false,
        channels_last: None,
        keep_freed_memory: opts.keep_freed_memory,
        peak_rss_per_backbone,
        data: data_bench,
        backbones,
    })
}

/// The training config of `backbone` with the benchmark's settings; the rest is `train`'s default.
fn config(opts: &BenchOptions, backbone: Backbone, precision: Precision, channels_last: bool) -> TrainConfig {
    let weights = opts
        .weights
        .iter()
        .rev()
        .find(|(b, _)| *b == backbone)
        .map_or_else(|| default_weights(backbone), |(_, p)| p.clone());
    TrainConfig {
        data_root: opts.data_root.clone(),
        source: opts.source.clone(),
        target: opts.target.clone(),
        backbone,
        weights,
        lambda: opts.lambda,
        batch_size: opts.batch_size,
        threads: opts.threads,
        channels_last,
        device: opts.device,
        precision,
        ..TrainConfig::default()
    }
}

/// "channels-last" or "contiguous".
fn layout_name(channels_last: bool) -> &'static str {
    if channels_last {
        "channels-last"
    } else {
        "contiguous"
    }
}

impl BenchReport {
    pub fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub fn read_json(path: &Path) -> Result<BenchReport> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a deep-coral bench report", path.display()))
    }
}
