//! The run's configuration in one place: `TrainConfig::default()` is the paper's protocol
//! (PAPER.md, read from the authors' Caffe solver and prototxt files).

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::model::backbone::{Backbone, Finetune, Head, NewLayers};

/// Where the run's tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    /// CUDA when a GPU is visible, else CPU.
    Auto,
}

/// How every image is resized to 256x256 before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeFilter {
    /// OpenCV's `cv::resize(..., INTER_LINEAR)`, bit for bit: what Caffe's data layer (the
    /// authors' pipeline) does. Samples the 2x2 nearest pixels, no low-pass filter when
    /// shrinking.
    OpencvLinear,
    /// The `image` crate's Triangle filter, which widens its kernel by the scale factor when
    /// shrinking (an anti-aliased resize). What every run before this option used.
    Triangle,
}

/// The arithmetic of the backbone's forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 everywhere: the paper's (Caffe's) arithmetic.
    #[default]
    Fp32,
    /// Convolutions and matrix products of the backbone in bfloat16 (8 bits of mantissa);
    /// weights, optimiser, losses and CORAL in float32.
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// How a run aligns the domains: the registry of the alignment methods of the paper's Table 1
/// (one file each under `train::align`, which owns its loss and says where it attaches).
/// `lambda` weighs the method's loss; lambda = 0 is the CNN row (no adaptation).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Deep CORAL (Sun & Saenko 2016): the CORAL loss on fc8.
    #[default]
    Coral,
    /// DDC (Tzeng et al. 2014): an adaptation layer of 256 between fc7 and fc8, and the MMD
    /// with a linear kernel on its outputs.
    Ddc,
    /// DAN (Long et al. 2015): multi-kernel MMD on fc6, fc7 and fc8, with the lower
    /// convolutions (conv1-conv3) frozen.
    Dan,
    /// Shallow CORAL (Sun, Feng & Saenko, AAAI 2016): not trained, but evaluated on a finished
    /// source-only run's network (`deep-coral shallow-coral`); named here so that reports set
    /// its rows beside the trained methods'. A run cannot be configured with it.
    #[value(skip)]
    #[serde(rename = "shallow-coral")]
    ShallowCoral,
    /// The linear SVM of shallow CORAL without the transform: its baseline on the same features.
    /// Evaluated, not trained, like `ShallowCoral`.
    #[value(skip)]
    Svm,
}

impl Method {
    /// Every method in the order reports list them.
    pub const ALL: [Method; 5] = [Method::Coral, Method::Ddc, Method::Dan, Method::Svm, Method::ShallowCoral];

    pub fn name(self) -> &'static str {
        match self {
            Method::Coral => "coral",
            Method::Ddc => "ddc",
            Method::Dan => "dan",
            Method::ShallowCoral => "shallow-coral",
            Method::Svm => "svm",
        }
    }

    /// Whether a run trains with it (the others are evaluated on a trained run's network).
    pub fn trains(self) -> bool {
        matches!(self, Method::Coral | Method::Ddc | Method::Dan)
    }

    /// The loss a trained method aligns with, as tables name it (what `align_loss` holds).
    pub fn loss_name(self) -> &'static str {
        match self {
            Method::Coral => "CORAL loss",
            Method::Ddc => "MMD",
            Method::Dan => "MK-MMD",
            Method::ShallowCoral | Method::Svm => "none (not trained)",
        }
    }

    /// The row of the paper's Table 1 this method's runs (with lambda > 0, for the trained
    /// ones) stand beside; none for the SVM baseline.
    pub fn paper_row(self) -> Option<&'static str> {
        match self {
            Method::Coral => Some("D-CORAL"),
            Method::Ddc => Some("DDC"),
            Method::Dan => Some("DAN"),
            Method::ShallowCoral => Some("CORAL"),
            Method::Svm => None,
        }
    }

    /// Width of the adaptation layer the method puts between fc7 and fc8 (DDC: 256, the width
    /// its paper chose on Office by the MMD, section 4.3).
    pub fn bottleneck(self) -> Option<i64> {
        match self {
            Method::Ddc => Some(256),
            _ => None,
        }
    }

    /// Whether the method freezes parameter `name` of `backbone` (DAN: conv1-conv3).
    pub fn freezes(self, backbone: Backbone, name: &str) -> bool {
        self == Method::Dan && backbone.is_lower_conv(name)
    }
}

/// Everything one source->target training run depends on. Written into `run.json` before
/// the first step; an experiment spec or `train --config` sets any field by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Folder holding one folder per domain (Office-31 or Office-Caltech10 layout).
    pub data_root: PathBuf,
    /// Labelled domain, e.g. `amazon`.
    pub source: String,
    /// Unlabelled domain, evaluated every `eval_every` iterations.
    pub target: String,
    /// Network; paper: BVLC Reference CaffeNet.
    pub backbone: Backbone,
    /// ImageNet-pretrained weights (`.safetensors`), loaded strictly by name.
    pub weights: PathBuf,
    /// The new last layer: `linear` (the paper's fc8) or `relu` (torchvision's SqueezeNet
    /// classifier, whose outputs are >= 0; SqueezeNet only, for comparison with older runs).
    pub head: Head,
    /// The alignment method (`coral`, `ddc`, `dan`); paper: coral.
    pub method: Method,
    /// Weight of the method's loss; paper: per shift (A->W 0.8, ...), 0 = no adaptation.
    pub lambda: f64,
    /// SGD iterations; paper: 2000.
    pub iterations: usize,
    /// Images per domain per iteration (source and target alike); paper: 128.
    pub batch_size: usize,
    /// Base learning rate; paper: 1e-3.
    pub lr: f64,
    /// Learning rate is multiplied by `lr_gamma` every `lr_step` iterations; paper: 500.
    pub lr_step: usize,
    /// Step factor; paper: 0.1.
    pub lr_gamma: f64,
    /// SGD momentum; paper: 0.9.
    pub momentum: f64,
    /// L2 weight decay on weights (not biases); paper: 5e-4.
    pub weight_decay: f64,
    /// Evaluate the whole target domain every this many iterations; paper: 50.
    pub eval_every: usize,
    /// Seeds initialisation of the new last layer, dropout, sampling and augmentation.
    pub seed: u64,
    /// cpu, cuda or auto.
    pub device: DeviceChoice,
    /// libtorch intra-op threads; 0 = libtorch's default (one per core).
    pub threads: usize,
    /// Skip (and record) images that fail to decode instead of stopping.
    pub skip_bad_images: bool,
    /// Save a resumable checkpoint every this many iterations; 0 = never.
    pub checkpoint_every: usize,
    /// Keep images and conv weights in channels-last (NHWC) memory order, which libtorch's
    /// oneDNN convolutions run faster on CPU (measured ~1.4x for SqueezeNet training, ~1.7x for
    /// evaluation on 2 cores). Same network, float32 results differ only by rounding.
    pub channels_last: bool,
    /// Which layers train: `all` (the paper's), `fc` (fc6-fc8 on frozen conv features) or
    /// `last` (the new last layer on frozen penultimate features). Under `fc` and `last` the
    /// frozen part runs once per image for the centre crop and its mirror, cached on disk.
    pub finetune: Finetune,
    /// Folder of the feature cache of `finetune` `fc` and `last`, shared by every run that
    /// uses it (files are keyed by backbone, weights and data).
    pub feature_cache: PathBuf,
    /// Resize to 256x256: `opencv-linear` (Caffe's, the default) or `triangle` (the filter of
    /// runs made before this field existed: their records say so).
    pub resize: ResizeFilter,
    /// Arithmetic of the backbone: `fp32` (the paper's) or `bf16` (convolutions and matrix
    /// products in bfloat16 under autocast; weights, optimiser, losses and CORAL in float32).
    pub precision: Precision,
    /// Evaluate as Caffe's TEST phase with `mirror: true` does: the centre crop, mirrored by a
    /// fair coin per image (seeded by the run's seed and the iteration). Off: the centre crop
    /// alone, the same input at every evaluation.
    pub eval_mirror: bool,
    /// Also write `steps.csv`: every iteration's class loss, CORAL loss and distance (the
    /// values `metrics.csv` averages), for comparisons step by step.
    pub log_steps: bool,
    /// Keep the trained network as `model.safetensors` in the run folder when the run ends
    /// (about 5 MB for SqueezeNet, 230 MB for AlexNet/CaffeNet); off for large grids.
    pub save_model: bool,
    /// Make the next iteration's batches (crops, mirrors, normalisation) on a second thread
    /// while the current step runs, when the images are in host memory (`train::prefetch`).
    /// The same random draws in the same order: no effect on any number, only on speed.
    pub prefetch: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            data_root: PathBuf::from("data/office31/domain_adaptation_images"),
            source: "amazon".into(),
            target: "webcam".into(),
            backbone: Backbone::Caffenet,
            weights: PathBuf::from("weights/caffenet-imagenet.safetensors"),
            head: Head::Linear,
            method: Method::Coral,
            lambda: 0.8,
            iterations: 2000,
            batch_size: 128,
            lr: 1e-3,
            lr_step: 500,
            lr_gamma: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            eval_every: 50,
            seed: 1,
            device: DeviceChoice::Auto,
            threads: 0,
            skip_bad_images: false,
            checkpoint_every: 0,
            channels_last: true,
            finetune: Finetune::All,
            feature_cache: PathBuf::from("cache/features"),
            resize: ResizeFilter::OpencvLinear,
            precision: Precision::Fp32,
            eval_mirror: false,
            log_steps: false,
            save_model: true,
            prefetch: true,
        }
    }
}

/// The authors' lambda per Office-31 shift (PAPER.md, read from their released logs).
pub const PAPER_LAMBDAS: [(&str, &str, f64); 6] = [
    ("amazon", "dslr", 0.05),
    ("amazon", "webcam", 0.8),
    ("dslr", "amazon", 0.001),
    ("dslr", "webcam", 0.0001),
    ("webcam", "amazon", 0.0007),
    ("webcam", "dslr", 0.0001),
];

/// The paper's lambda for `source -> target`, if the paper has that transfer.
pub fn paper_lambda(source: &str, target: &str) -> Option<f64> {
    PAPER_LAMBDAS.iter().find(|(s, t, _)| *s == source && *t == target).map(|&(_, _, l)| l)
}

/// The largest lambda a run accepts: the paper's per-shift values span 1e-4 to 0.8, and the
/// rule's pilots here reached about 30; six orders of magnitude above is a typo, not a weight.
pub const MAX_LAMBDA: f64 = 1e6;

/// The cores this process may run on (its CPU affinity and cgroup quota, as the standard
/// library reads them).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A run's libtorch thread count (0 = one per core) must not exceed the cores it runs on:
/// each thread is a busy-waiting OpenMP worker, so 64 threads on 2 cores ran 24x slower than
/// one, and 100000 took 7.5 GB and ignored SIGTERM. Checked where the run executes (`train`,
/// `bench`, a local sweep), not in `validate`: a spec may be written for bigger machines.
pub fn check_threads(threads: usize) -> Result<()> {
    let cores = cores();
    if threads > cores {
        bail!(
            "--threads {threads} is more than the {cores} core(s) available here; use at most {cores} (or 0 for one \
             per core): extra threads only wait for each other"
        );
    }
    Ok(())
}

impl TrainConfig {
    /// The layers the run adds to the pretrained network.
    pub fn new_layers(&self) -> NewLayers {
        NewLayers { head: self.head, bottleneck: self.method.bottleneck() }
    }

    /// The same config with its paths (data root, weights, feature cache) made absolute against
    /// the current directory, as `run.json` records them.
    pub fn with_absolute_paths(&self) -> TrainConfig {
        let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        TrainConfig {
            data_root: abs(&self.data_root),
            weights: abs(&self.weights),
            feature_cache: abs(&self.feature_cache),
            ..self.clone()
        }
    }

    /// Caffe's "step" policy: lr * gamma^floor(iter / step).
    pub fn lr_at(&self, iter: usize) -> f64 {
        self.lr * self.lr_gamma.powi((iter / self.lr_step) as i32)
    }

    /// Rejects values the run cannot use, naming the value and what was expected.
    pub fn validate(&self) -> Result<()> {
        if !self.lambda.is_finite() || self.lambda < 0.0 {
            bail!("lambda must be a finite number >= 0, got {}", self.lambda);
        }
        if self.lambda > MAX_LAMBDA {
            bail!(
                "lambda {} is beyond any sane CORAL weight (at most {MAX_LAMBDA:e}; the paper's are 1e-4 to 0.8): the CORAL \
                 term would drown the classification loss",
                self.lambda
            );
        }
        if self.batch_size < 2 {
            bail!("batch size must be at least 2 (the covariance needs two rows), got {}", self.batch_size);
        }
        if self.iterations == 0 {
            bail!("iterations must be positive, got 0");
        }
        if self.eval_every == 0 {
            bail!("eval interval (--eval-every) must be positive, got 0");
        }
        if self.lr_step == 0 {
            bail!("lr_step must be positive, got 0");
        }
        for (name, v) in [
            ("lr", self.lr),
            ("lr_gamma", self.lr_gamma),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
        ] {
            if !v.is_finite() || v < 0.0 {
                bail!("{name} must be a finite number >= 0, got {v}");
            }
        }
        if !self.backbone.supports(self.finetune) {
            bail!(
                "finetune {} needs fully connected layers, which {} does not have (its classifier is one \
                 1x1 convolution); use finetune all or last",
                self.finetune.name(),
                self.backbone
            );
        }
        if !self.backbone.supports_head(self.head) {
            bail!(
                "head {} is torchvision's SqueezeNet classifier (a ReLU before the pool); {}'s fc8 is a linear \
                 layer: use head linear",
                self.head.name(),
                self.backbone
            );
        }
        if !self.method.trains() {
            bail!(
                "method {} is not trained: it is evaluated on a finished source-only run's network (deep-coral \
                 shallow-coral RUN); train with coral, ddc or dan",
                self.method.name()
            );
        }
        if self.method == Method::Dan && self.finetune == Finetune::Last {
            bail!("method dan aligns fc6 and fc7 too, which finetune last freezes; use finetune all (or fc)");
        }
        if self.source == self.target {
            bail!("source and target are the same domain ({:?})", self.source);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_papers_protocol() {
        let c = TrainConfig::default();
        assert_eq!((c.iterations, c.batch_size, c.eval_every, c.lr_step), (2000, 128, 50, 500));
        assert_eq!((c.lr, c.momentum, c.weight_decay, c.lr_gamma), (1e-3, 0.9, 5e-4, 0.1));
        // Where `make data` unpacks Office-31 (scripts/fetch_office31.sh).
        assert_eq!(c.data_root, PathBuf::from("data/office31/domain_adaptation_images"));
        assert_eq!(paper_lambda(&c.source, &c.target), Some(c.lambda));
        assert_eq!(paper_lambda("dslr", "webcam"), Some(0.0001));
        assert_eq!(paper_lambda("amazon", "caltech10"), None);
        c.validate().unwrap();
    }

    #[test]
    fn lr_steps_every_500_iterations() {
        let c = TrainConfig::default();
        assert_eq!(c.lr_at(0), 1e-3);
        assert_eq!(c.lr_at(499), 1e-3);
        assert!((c.lr_at(500) - 1e-4).abs() < 1e-15);
        assert!((c.lr_at(1999) - 1e-6).abs() < 1e-18);
    }

    #[test]
    fn rejects_bad_values_by_name() {
        let bad = |f: fn(&mut TrainConfig)| {
            let mut c = TrainConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.lambda = -1.0).contains("lambda"));
        assert!(bad(|c| c.lambda = f64::NAN).contains("lambda"));
        assert!(bad(|c| c.lambda = 1e9).contains("sane CORAL weight"));
        assert!(bad(|c| c.batch_size = 1).contains("batch size"));
        assert!(bad(|c| c.iterations = 0).contains("iterations"));
        assert!(bad(|c| c.eval_every = 0).contains("eval"));
        let fc = bad(|c| {
            c.backbone = Backbone::Squeezenet1_1;
            c.finetune = Finetune::Fc;
        });
        assert!(fc.contains("squeezenet1_1") && fc.contains("fully connected"), "{fc}");
        let relu = bad(|c| c.head = Head::Relu);
        assert!(relu.contains("caffenet") && relu.contains("head linear"), "{relu}");
    }

    #[test]
    fn unknown_keys_are_an_error() {
        let err = serde_json::from_str::<TrainConfig>(r#"{"lamda": 0.8}"#).unwrap_err();
        assert!(err.to_string().contains("lamda"), "{err}");
        let c: TrainConfig = serde_json::from_str(r#"{"lambda": 0.5, "backbone": "squeezenet1_1"}"#).unwrap();
        assert_eq!(c.lambda, 0.5);
        assert_eq!(c.backbone, Backbone::Squeezenet1_1);
    }
}
