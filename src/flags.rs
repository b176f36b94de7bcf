//! `train`'s config flags: a partial [`TrainConfig`] from the command line. Every flag is named
//! after its config field (`--lr-gamma` sets `lr_gamma`) and lands there through serde, so a
//! new field needs one flag line here and no copying code; a flag without a field is caught by
//! `deny_unknown_fields` (and by this file's test).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::Serialize;

use crate::config::{DeviceChoice, Method, Precision, ResizeFilter, TrainConfig};
use crate::model::backbone::{Backbone, Finetune, Head};
use crate::train::metrics::RunRecord;

/// The flags of `train` that set config fields; a flag not given keeps the value it had.
#[derive(Debug, Default, Clone, clap::Args, Serialize)]
pub struct ConfigFlags {
    /// Folder holding the domain folders.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_root: Option<PathBuf>,
    /// Labelled source domain (e.g. amazon).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Unlabelled target domain (e.g. webcam).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backbone: Option<Backbone>,
    /// Pretrained weights (.safetensors).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// The new last layer: linear (the paper's fc8) or relu (torchvision's SqueezeNet
    /// classifier, outputs >= 0; SqueezeNet only).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<Head>,
    /// Alignment method: coral (Deep CORAL), ddc (an adaptation layer and linear MMD) or dan
    /// (multi-kernel MMD on fc6-fc8).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Weight of the method's loss; 0 trains without adaptation.
    #[arg(long = "lambda", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    /// Training iterations (paper: 2000).
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<i64>,
    /// Images per domain per iteration (paper: 128).
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<i64>,
    /// Base learning rate (paper: 1e-3, x0.1 every 500 iterations).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Iterations between learning-rate steps (paper: 500).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_step: Option<usize>,
    /// Factor of each learning-rate step (paper: 0.1).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_gamma: Option<f64>,
    /// SGD momentum (paper: 0.9).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// L2 weight decay on weights, not biases (paper: 5e-4).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Iterations between evaluations of the whole target domain (paper: 50).
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<i64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceChoice>,
    /// libtorch threads; 0 = one per core.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Skip images that fail to decode (recorded in run.json) instead of stopping.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skip_bad_images: bool,
    /// Save a resumable checkpoint every N iterations.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<usize>,
    /// Layers to train: all (the paper's), fc (fc6-fc8 on frozen conv features; AlexNet and
    /// CaffeNet) or last (the new last layer on frozen penultimate features). fc and last
    /// cache the frozen part's outputs for the centre crop and its mirror: a CPU fast mode.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetune: Option<Finetune>,
    /// Folder of the fc/last feature cache (default cache/features), shared across runs.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_cache: Option<PathBuf>,
    /// Resize to 256x256: opencv-linear (Caffe's, bit for bit) or triangle (anti-aliased; the
    /// filter of runs made before this flag).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize: Option<ResizeFilter>,
    /// Arithmetic of the backbone: fp32 (the paper's) or bf16 (convolutions and matrix products
    /// in bfloat16; weights, optimiser, losses and CORAL in float32).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Evaluate like Caffe's TEST phase with mirror: true: the centre crop mirrored by a seeded
    /// fair coin per image (default: the centre crop alone).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub eval_mirror: bool,
    /// Also write steps.csv: each iteration's class loss, CORAL loss and distance.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub log_steps: bool,
    /// Keep the trained network as model.safetensors in the run folder (default true).
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_model: Option<bool>,
    /// Make the next batches on a second thread while a step runs (default true; no effect on
    /// results).
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<bool>,
}

impl ConfigFlags {
    /// The config fields these flags set, as `(field, value)`, in declaration order.
    pub fn given(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        self.check_counts()?;
        match serde_json::to_value(self)? {
            serde_json::Value::Object(map) => Ok(map),
            other => anyhow::bail!("flags serialised to {other}, expected an object"),
        }
    }

    /// `base` with every given flag written over its field, then validated.
    pub fn apply(&self, base: &TrainConfig) -> Result<TrainConfig> {
        let mut value = serde_json::to_value(base)?;
        let fields = value.as_object_mut().context("a TrainConfig serialises to an object")?;
        for (key, v) in self.given()? {
            fields.insert(key, v);
        }
        let cfg: TrainConfig = serde_json::from_value(value).context("applying the command-line flags")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config of a `train` command, decided here once: the recorded one of the run in
    /// `resume` (a run folder; no flag may change it, see [`ConfigFlags::check_resumable`]),
    /// else the file `config` (JSON, a whole or partial `TrainConfig`), else the paper's
    /// defaults; the flags on top. A bare `train` (neither, and no `--lambda`) takes the paper's
    /// lambda for a transfer the paper has, and returns a sentence saying so; on any other
    /// transfer it needs `--lambda`.
    pub fn resolve(&self, config: Option<&Path>, resume: Option<&Path>) -> Result<(TrainConfig, Option<String>)> {
        let base = if let Some(out) = resume {
            let recorded = RunRecord::read(&out.join("run.json"))
                .with_context(|| format!("--resume needs the run.json of an earlier run in {}", out.display()))?
                .config;
            self.check_resumable(&recorded)?;
            recorded
        } else if let Some(path) = config {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?
        } else {
            TrainConfig::default()
        };
        let cfg = self.apply(&base)?;
        if resume.is_some() || config.is_some() || self.lambda.is_some() {
            return Ok((cfg, None));
        }
        match crate::config::paper_lambda(&cfg.source, &cfg.target) {
            Some(lambda) => {
                let said = format!(
                    "lambda {lambda}: the paper's for {} -> {} (--lambda to choose another)",
                    cfg.source, cfg.target
                );
                Ok((TrainConfig { lambda, ..cfg }, Some(said)))
            }
            None => anyhow::bail!(
                "--lambda is required for {} -> {}: the paper gives lambda only for its six Office-31 transfers \
                 (deep-coral calibrate finds one by the paper's rule)",
                cfg.source,
                cfg.target
            ),
        }
    }

    /// `--resume` continues a run exactly as `run.json` records it: any flag that would change
    /// it is refused, naming the flag, the recorded value and the given one. Only the paths a
    /// moved run may need (data root, weights, feature cache) may be given; the data's
    /// fingerprint then checks it is the same data.
    pub fn check_resumable(&self, recorded: &TrainConfig) -> Result<()> {
        const PATHS: [&str; 3] = ["data_root", "weights", "feature_cache"];
        let was = serde_json::to_value(recorded)?;
        let changes: Vec<String> = self
            .given()?
            .into_iter()
            .filter(|(key, value)| !PATHS.contains(&key.as_str()) && was.get(key) != Some(value))
            .map(|(key, value)| format!("--{} {value} (the run has {})", key.replace('_', "-"), was[&key]))
            .collect();
        anyhow::ensure!(
            changes.is_empty(),
            "--resume continues the run recorded in run.json unchanged; these flags would change it: {}. Start a new \
             run in another --out instead",
            changes.join(", ")
        );
        Ok(())
    }

    /// The counts given as signed numbers, so that `-5` is named as out of range rather than
    /// refused as "not a number"; NaN and infinity, which JSON cannot carry.
    fn check_counts(&self) -> Result<()> {
        for (name, v) in [("iterations", self.iterations), ("eval-every", self.eval_every)] {
            if let Some(v) = v {
                ensure!(v > 0, "--{name} must be positive, got {v}");
            }
        }
        // JSON has no NaN or infinity: name them here, as `TrainConfig::validate` would.
        let floats = [
            ("lambda", self.lambda),
            ("lr", self.lr),
            ("lr_gamma", self.lr_gamma),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
        ];
        for (name, v) in floats {
            if let Some(v) = v {
                ensure!(v.is_finite(), "{name} must be a finite number >= 0, got {v}");
            }
        }
        if let Some(v) = self.batch_size {
            ensure!(v >= 2, "--batch-size must be at least 2 (the covariance needs two rows), got {v}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_train_takes_the_papers_lambda_and_says_so_and_any_other_choice_wins() {
        let flags = |source: &str, target: &str, lambda: Option<f64>| ConfigFlags {
            source: Some(source.into()),
            target: Some(target.into()),
            lambda,
            ..Default::default()
        };
        let (cfg, said) = flags("dslr", "webcam", None).resolve(None, None).unwrap();
        assert_eq!(cfg.lambda, 0.0001);
        assert!(said.unwrap().contains("the paper's for dslr -> webcam"));
        let (cfg, said) = flags("dslr", "webcam", Some(0.5)).resolve(None, None).unwrap();
        assert_eq!((cfg.lambda, said), (0.5, None));
        let e = flags("amazon", "caltech10", None).resolve(None, None).unwrap_err().to_string();
        assert!(e.contains("--lambda is required for amazon -> caltech10"), "{e}");
        // A config file's lambda is the config's, also where the paper has one.
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("c.json");
        std::fs::write(&file, r#"{"lambda": 0.25}"#).unwrap();
        let (cfg, said) = flags("dslr", "webcam", None).resolve(Some(&file), None).unwrap();
        assert_eq!((cfg.lambda, said), (0.25, None));
        let e = format!("{:#}", ConfigFlags::default().resolve(None, Some(tmp.path())).unwrap_err());
        assert!(e.contains("--resume needs the run.json"), "{e}");
    }

    /// Every flag reaches the field of its name: set them all to non-default values.
    #[test]
    fn every_flag_sets_its_field() {
        let flags = ConfigFlags {
            data_root: Some("d".into()),
            source: Some("dslr".into()),
            target: Some("amazon".into()),
            backbone: Some(Backbone::Squeezenet1_1),
            weights: Some("w.safetensors".into()),
            head: Some(Head::Relu),
            method: Some(Method::Ddc),
            lambda: Some(0.25),
            iterations: Some(7),
            batch_size: Some(3),
            lr: Some(0.5),
            lr_step: Some(9),
            lr_gamma: Some(0.5),
            momentum: Some(0.8),
            weight_decay: Some(0.0),
            eval_every: Some(2),
            seed: Some(11),
            device: Some(DeviceChoice::Cpu),
            threads: Some(1),
            skip_bad_images: true,
            checkpoint_every: Some(4),
            finetune: Some(Finetune::Last),
            feature_cache: Some("c".into()),
            resize: Some(ResizeFilter::Triangle),
            precision: Some(Precision::Bf16),
            eval_mirror: true,
            log_steps: true,
            save_model: Some(false),
            prefetch: Some(false),
        };
        let base = TrainConfig::default();
        let cfg = flags.apply(&base).unwrap();
        let given = flags.given().unwrap();
        let (a, b) = (serde_json::to_value(&cfg).unwrap(), serde_json::to_value(&base).unwrap());
        for key in b.as_object().unwrap().keys() {
            if given.contains_key(key) {
                assert_ne!(a[key], b[key], "flag of {key} did not change it");
            }
        }
        assert_eq!((cfg.momentum, cfg.lr_gamma, cfg.weight_decay), (0.8, 0.5, 0.0));
        assert_eq!(given.len(), 29, "a flag without a field, or a field counted twice");
        // A flag not given keeps the base value.
        let cfg = ConfigFlags { lr: Some(0.1), ..Default::default() }.apply(&base).unwrap();
        assert_eq!(cfg, TrainConfig { lr: 0.1, ..base });
    }

    #[test]
    fn resume_refuses_flags_that_change_the_run() {
        let recorded = TrainConfig { iterations: 20, lambda: 1.0, ..TrainConfig::default() };
        let flags = ConfigFlags { iterations: Some(10), lambda: Some(5.0), ..Default::default() };
        let err = flags.check_resumable(&recorded).unwrap_err().to_string();
        assert!(
            err.contains("--iterations 10 (the run has 20)") && err.contains("--lambda 5.0 (the run has 1.0)"),
            "{err}"
        );
        // The same value, or a moved data root, changes nothing.
        let ok = ConfigFlags { lambda: Some(1.0), data_root: Some("elsewhere".into()), ..Default::default() };
        ok.check_resumable(&recorded).unwrap();
    }

    #[test]
    fn counts_are_named_when_out_of_range() {
        let err = ConfigFlags { iterations: Some(-5), ..Default::default() }.apply(&TrainConfig::default());
        assert!(err.unwrap_err().to_string().contains("--iterations must be positive, got -5"));
    }
}
