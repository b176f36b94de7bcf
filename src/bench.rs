//! `deep-coral bench`: how fast training runs, and where the time goes, per backbone.
//!
//! Everything timed here is the training code itself, never a copy of it:
//!
//! 1. **limit**: `step::update` (both branches with autograd, `class + lambda * CORAL`,
//!    backward, Caffe SGD) on one batch already in tensors: the network's share of an
//!    iteration, without sampling, crops, mirrors or tensor making; measured first and again
//!    last, the faster of the two counting (the first ran slow on a model just built);
//!    **batch**: making one batch alone (sampling, crops, mirrors, tensors), the work the loop
//!    adds to the limit;
//! 2. **train**: the loop's own iteration on the decoded images: the next batch from
//!    `prefetch::Feed` (sampling, augmentation, tensors, made one iteration ahead on a second
//!    thread) then `step::update`, at `lambda` and at 0 (target branch without autograd;
//!    expected about 2/3 of the time); and at `lambda` with the batch made inline
//!    (`prefetch: false`, as before prefetching), so the gain is measured in the same run;
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
//! The `TrainConfig` and `Model` are built as `train` builds them; a backbone whose weights
//! file is not at hand keeps its random initialisation (speed does not depend on the values).
//! Images per second count source and target images alike (2 x batch per iteration). Each
//! figure is the median of its timed iterations, which one iteration disturbed by something
//! else on the machine does not move.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::config::{DeviceChoice, Precision, TrainConfig};
use crate::data::transfer::{self, Data};
use crate::model::backbone::Backbone;
use crate::train::checkpoint::Streams;
use crate::train::model::Model;
use crate::train::prefetch::Feed;
use crate::train::runtime;
use crate::train::step;

mod cells;

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
    /// Base learning rate of the updates: training's, or 0 with random weights.
    pub lr: f64,
    /// `step::update` at `lambda` on a batch already in tensors: the faster of two
    /// measurements, before and after the loop's (one measurement in older reports).
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
    /// `train.img_per_s / limit.img_per_s`: the share of the limit the full iteration reaches.
    pub train_over_limit: f64,
    /// `train_lambda0.s_per_iter / train.s_per_iter` (about 2/3 expected).
    pub lambda0_over_lambda_time: f64,
    /// Peak resident memory while this backbone ran (decoded images included).
    pub peak_rss_bytes: Option<u64>,
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
    let backbones = vec![bench_backbone(opts, backbone, precision, channels_last, &data, device)?];
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

fn bench_backbone(
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
    if weights.is_none() {
        // Random weights diverge within a few steps at the training rate (NaN losses skip the
        // update); at rate 0 the update does the same arithmetic and the weights stay finite.
        cfg.lr = 0.0;
    }
    // Each measurement starts from the model `train` starts from (not from the previous
    // measurement's updates, which a small batch can drive off within a few steps).
    let fresh_model = |cfg: &TrainConfig| match weights {
        Some(_) => Model::new(cfg, classes, device),
        None => Ok(Model::with_random_weights(cfg, classes, device)),
    };
    let mut model = fresh_model(&cfg)?;
    let what = format!(
        "{}, {}, {}",
        weights.as_ref().map_or("random weights".to_string(), |p| p.display().to_string()),
        precision.name(),
        layout_name(channels_last)
    );
    let images = 2 * cfg.batch_size;
    let total = opts.warmup + opts.iterations;

    eprintln!("bench {backbone} ({what}): limit, {total} iterations");
    let mut streams = Streams::fresh(&cfg, data);
    let batch = step::next_batch(data, &cfg, &model.input, &mut streams, device);
    let limit = time(opts, images, device, |it| finite(step::update(&mut model, &cfg, &batch, it)?))?;
    eprintln!("bench {backbone} ({what}): making batches, {total} batches");
    let made = time(opts, images, device, |_| {
        step::next_batch(data, &cfg, &model.input, &mut streams, device);
        Ok(())
    })?;

    let train_at = |cfg: &TrainConfig| -> Result<Timing> {
        let how = if cfg.prefetch { "batches made ahead" } else { "batches made inline" };
        eprintln!("bench {backbone} ({what}): the loop at lambda {}, {how}, {total} iterations", cfg.lambda);
        let cfg = &TrainConfig { iterations: total, ..cfg.clone() };
        let mut model = fresh_model(cfg)?;
        let mut streams = Streams::fresh(cfg, data);
        std::thread::scope(|scope| {
            let mut feed = Feed::start(scope, data, cfg, model.input, &streams, 0, device);
            time(opts, images, device, |it| {
                let batch = feed.next(data, cfg, &model.input, &mut streams, device)?;
                finite(step::update(&mut model, cfg, &batch, it)?)
            })
        })
    };
    let train = train_at(&cfg)?;
    let train_lambda0 = train_at(&TrainConfig { lambda: 0.0, ..cfg.clone() })?;
    let train_inline = train_at(&TrainConfig { prefetch: false, ..cfg.clone() })?;
    // The limit once more, after the loop's measurements: the first, on a model just built
    // and an allocator not yet grown to a step's size, came out below the loop's own figure in
    // quiet runs (train/limit up to 1.07); the faster of the two is the limit.
    eprintln!("bench {backbone} ({what}): limit again, {total} iterations");
    let limit_again = time(opts, images, device, |it| finite(step::update(&mut model, &cfg, &batch, it)?))?;
    let limit = if limit_again.s_per_iter < limit.s_per_iter { limit_again } else { limit };
    Ok(BackboneBench {
        backbone,
        precision,
        channels_last: Some(channels_last),
        weights,
        lr: cfg.lr,
        limit,
        batch: Some(made),
        train,
        train_lambda0,
        train_inline: Some(train_inline),
        train_over_limit: train.img_per_s / limit.img_per_s,
        lambda0_over_lambda_time: train_lambda0.s_per_iter / train.s_per_iter,
        peak_rss_bytes: runtime::peak_rss_bytes(),
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
    let s_per_iter = median(&mut times);
    Ok(Timing { s_per_iter, img_per_s: images as f64 / s_per_iter })
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(xs: &mut [f64]) -> f64 {
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

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64))
}

/// "channels-last" or "contiguous".
fn layout_name(channels_last: bool) -> &'static str {
    if channels_last {
        "channels-last"
    } else {
        "contiguous"
    }
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
        "{:<14} {:<9} {:<13} {:<10} {:>12} {:>9} {:>11} {:>12} {:>12} {:>13} {:>13} {:>16} {:>14} {:>10}\n",
        "backbone",
        "precision",
        "layout",
        "weights",
        "limit img/s",
        "batch ms",
        "batch/step",
        "train img/s",
        "train/limit",
        "inline/limit",
        "ahead/inline",
        "train img/s λ=0",
        "time λ=0/λ>0",
        "peak RSS"
    );
    for b in &r.backbones {
        let inline = b.train_inline.map(|t| t.img_per_s);
        let opt = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
        s += &format!(
            "{:<14} {:<9} {:<13} {:<10} {:>12.1} {:>9} {:>11} {:>12.1} {:>12.2} {:>13} {:>13} {:>16.1} {:>14.2} {:>10}\n",
            b.backbone.name(),
            b.precision.name(),
            layout_name(layout_of(r, b)),
            if b.weights.is_some() { "pretrained" } else { "random" },
            b.limit.img_per_s,
            b.batch.map_or("-".to_string(), |t| format!("{:.0}", 1000.0 * t.s_per_iter)),
            b.batch.map_or("-".to_string(), |t| format!("{:.1}%", 100.0 * t.s_per_iter / b.limit.s_per_iter)),
            b.train.img_per_s,
            b.train_over_limit,
            opt(inline.map(|i| i / b.limit.img_per_s)),
            opt(inline.map(|i| b.train.img_per_s / i)),
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
          the gain of prefetching.\n";
    if r.backbones.iter().any(|b| b.weights.is_none()) {
        s += "random: no weights file for that backbone (see --weights): random initialisation, updated at \
              learning rate 0 (random weights diverge within a few steps at the training rate); the work per \
              iteration is the same.\n";
    }
    if !r.peak_rss_per_backbone {
        s += "peak RSS could not be reset between backbones: each includes the backbones before it.\n";
    }
    s
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
