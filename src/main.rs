//! `deep-coral`: train one Deep CORAL run, sweep an experiment grid, report and plot results,
//! import and inspect weights, time the training step. Exit codes: 0 done, 1 error, 3 diverged,
//! 130 interrupted.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use deep_coral::backbone::{Backbone, Finetune};
use deep_coral::config::{DeviceChoice, TrainConfig};
use deep_coral::metrics::{RunRecord, Status};
use deep_coral::{runtime, train};

#[derive(Parser)]
#[command(name = "deep-coral", version, about = "Deep CORAL (Sun & Saenko, 2016) experiment runner on libtorch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train one source->target run; writes metrics.csv and run.json into --out.
    Train(TrainArgs),
    /// Run an experiment's grid (spec JSON): every transfer x lambda x seed not done yet.
    Sweep {
        /// Experiment spec, e.g. experiments/office31.json.
        spec: PathBuf,
        /// Results root; runs go to <out>/<experiment>/<source>_<target>/lambda_<x>/seed_<n>/.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Runs at a time on this machine (libtorch threads are shared out between them).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// List the runs, their state and commands; run nothing, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Use this data root for every run instead of the spec's.
        #[arg(long)]
        data_root: Option<PathBuf>,
    },
    /// Tables of an experiment's runs: summary.csv and table.md beside the paper's Table 1.
    Report {
        /// The experiment's results folder, e.g. results/office31.
        dir: PathBuf,
        /// Paper table (JSON); default: the one the experiment's spec.json names.
        #[arg(long)]
        paper: Option<PathBuf>,
    },
    /// Training-curve figures of an experiment (PNG and SVG per transfer, as the paper's Fig. 3).
    Plot {
        /// The experiment's results folder, e.g. results/office31.
        dir: PathBuf,
        /// The authors' released curves (CSV); default: the one the experiment's spec.json names.
        #[arg(long)]
        paper_curves: Option<PathBuf>,
    },
    /// Import and inspect pretrained weights.
    Weights {
        #[command(subcommand)]
        command: WeightsCommand,
    },
    /// Time the training step per backbone: its compute limit on tensors in memory, the full
    /// iteration at lambda and at 0, image decoding, peak memory; prints a table.
    Bench(BenchArgs),
}

/// Flags of `bench`.
#[derive(Args)]
struct BenchArgs {
    /// Backbones to measure (repeat the flag or give a comma list).
    #[arg(long = "backbone", value_enum, value_delimiter = ',', default_values_t = Backbone::ALL)]
    backbones: Vec<Backbone>,
    /// Pretrained weights of a backbone, as BACKBONE=FILE (repeatable); default: weights/ from
    /// `make weights`, and ../shared's SqueezeNet. A backbone without its file runs from random
    /// initialisation (same speed; the table says so).
    #[arg(long = "weights", value_parser = parse_backbone_file)]
    weights: Vec<(Backbone, PathBuf)>,
    /// Images per domain per iteration (source and target alike; training's default 128).
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Timed iterations per measurement.
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Untimed iterations before each measurement.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// libtorch threads; 0 = one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// CORAL weight of the lambda > 0 measurements (lambda = 0 is measured too).
    #[arg(long = "lambda", default_value_t = 0.8)]
    lambda: f64,
    /// Folder holding the domain folders.
    #[arg(long, default_value = "../shared/data/office-caltech10")]
    data_root: PathBuf,
    /// Source domain.
    #[arg(long, default_value = "amazon")]
    source: String,
    /// Target domain.
    #[arg(long, default_value = "webcam")]
    target: String,
    /// Channels-last (NHWC) images and conv weights, as training does by default.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    channels_last: bool,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Also write the numbers to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `BACKBONE=FILE` of `bench --weights`.
fn parse_backbone_file(s: &str) -> Result<(Backbone, PathBuf)> {
    let (name, file) = s.split_once('=').with_context(|| format!("expected BACKBONE=FILE, got {s:?}"))?;
    Ok((name.parse()?, PathBuf::from(file)))
}

#[derive(Subcommand)]
enum WeightsCommand {
    /// Convert a Caffe .caffemodel into .safetensors (`<layer>.weight`, `<layer>.bias`).
    ImportCaffe {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Check the tensors against this backbone's names and shapes.
        #[arg(long, value_enum)]
        arch: Option<Backbone>,
    },
    /// List a weights file's tensors and which backbone it fits.
    Inspect { file: PathBuf },
}

/// Flags of `train`; any flag not given keeps the value from `--config`, else the paper's.
#[derive(Args)]
struct TrainArgs {
    /// JSON file with a full or partial TrainConfig (unknown keys are an error).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Folder holding the domain folders.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Labelled source domain (e.g. amazon).
    #[arg(long)]
    source: Option<String>,
    /// Unlabelled target domain (e.g. webcam).
    #[arg(long)]
    target: Option<String>,
    #[arg(long, value_enum)]
    backbone: Option<Backbone>,
    /// Pretrained weights (.safetensors).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// CORAL weight; 0 trains without adaptation.
    #[arg(long = "lambda", allow_negative_numbers = true)]
    lambda: Option<f64>,
    /// Output folder of the run.
    #[arg(long)]
    out: PathBuf,
    /// Training iterations (paper: 2000).
    #[arg(long, allow_negative_numbers = true)]
    iterations: Option<i64>,
    /// Images per domain per iteration (paper: 128).
    #[arg(long, allow_negative_numbers = true)]
    batch_size: Option<i64>,
    /// Base learning rate (paper: 1e-3, x0.1 every 500 iterations).
    #[arg(long)]
    lr: Option<f64>,
    /// Iterations between learning-rate steps (paper: 500).
    #[arg(long)]
    lr_step: Option<usize>,
    /// Iterations between evaluations of the whole target domain (paper: 50).
    #[arg(long, allow_negative_numbers = true)]
    eval_every: Option<i64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, value_enum)]
    device: Option<DeviceChoice>,
    /// libtorch threads; 0 = one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// Skip images that fail to decode (recorded in run.json) instead of stopping.
    #[arg(long)]
    skip_bad_images: bool,
    /// Save a resumable checkpoint every N iterations.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Layers to train: all (the paper's), fc (fc6-fc8 on frozen conv features; AlexNet and
    /// CaffeNet) or last (the new last layer on frozen penultimate features). fc and last
    /// cache the frozen part's outputs for the centre crop and its mirror: a CPU fast mode.
    #[arg(long, value_enum)]
    finetune: Option<Finetune>,
    /// Folder of the fc/last feature cache (default cache/features), shared across runs.
    #[arg(long)]
    feature_cache: Option<PathBuf>,
    /// Continue the interrupted run in --out from its checkpoint (its run.json gives the config).
    #[arg(long, conflicts_with = "config")]
    resume: bool,
    /// Replace a finished run in --out.
    #[arg(long)]
    force: bool,
}

impl TrainArgs {
    fn config(&self) -> Result<TrainConfig> {
        let mut c = if self.resume {
            RunRecord::read(&self.out.join("run.json"))
                .with_context(|| format!("--resume needs the run.json of an earlier run in {}", self.out.display()))?
                .config
        } else if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?
        } else {
            TrainConfig::default()
        };
        let positive = |name: &str, v: Option<i64>| -> Result<Option<usize>> {
            match v {
                Some(v) if v <= 0 => anyhow::bail!("--{name} must be positive, got {v}"),
                v => Ok(v.map(|v| v as usize)),
            }
        };
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = self.$field.clone() { c.$field = v; })* };
        }
        set!(
            data_root,
            source,
            target,
            backbone,
            weights,
            lambda,
            lr,
            lr_step,
            seed,
            device,
            threads,
            checkpoint_every,
            finetune,
            feature_cache
        );
        if let Some(v) = positive("iterations", self.iterations)? {
            c.iterations = v;
        }
        if let Some(v) = self.batch_size {
            anyhow::ensure!(v >= 2, "--batch-size must be at least 2 (the covariance needs two rows), got {v}");
            c.batch_size = v as usize;
        }
        if let Some(v) = positive("eval-every", self.eval_every)? {
            c.eval_every = v;
        }
        c.skip_bad_images |= self.skip_bad_images;
        c.validate()?;
        Ok(c)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let keep_freed_memory = runtime::keep_freed_memory();
    match dispatch(cli, keep_freed_memory) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli, keep_freed_memory: bool) -> Result<ExitCode> {
    match cli.command {
        Command::Train(args) => {
            let cfg = args.config()?;
            let stop = runtime::stop_flag();
            let start = if args.resume { train::Start::Resume } else { train::Start::Fresh { force: args.force } };
            let record = train::run(&cfg, &args.out, start, &stop)?;
            let acc = record.final_target_acc.map_or("-".into(), |a| format!("{:.4}", a));
            eprintln!(
                "{:?}: {} -> {} lambda {} target acc {acc} ({})",
                record.status,
                cfg.source,
                cfg.target,
                cfg.lambda,
                args.out.display()
            );
            Ok(match record.status {
                Status::Done => ExitCode::SUCCESS,
                Status::Diverged => ExitCode::from(3),
                Status::Interrupted => ExitCode::from(130),
                Status::Running | Status::Failed => ExitCode::from(1),
            })
        }
        Command::Sweep { spec, out, jobs, dry_run, data_root } => {
            let mut spec = deep_coral::spec::load(&spec)?;
            if let Some(root) = data_root {
                spec.set_data_root(root);
            }
            let launcher: Box<dyn deep_coral::launcher::Launcher> = if dry_run {
                Box::new(deep_coral::launcher::DryRun)
            } else {
                anyhow::ensure!(jobs >= 1, "--jobs must be at least 1, got {jobs}");
                Box::new(deep_coral::launcher::Local { jobs })
            };
            let exe = std::env::current_exe().context("locating the deep-coral executable")?;
            deep_coral::sweep::sweep_spec(&spec, &out, launcher.as_ref(), &exe)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { dir, paper } => {
            let report = deep_coral::report::report(&dir, paper.as_deref())?;
            print!("{}", report.markdown);
            eprintln!("wrote {} and {}", report.summary_csv.display(), report.table_md.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plot { dir, paper_curves } => {
            for path in deep_coral::plot::plot(&dir, paper_curves.as_deref())? {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Weights { command: WeightsCommand::ImportCaffe { input, output, arch } } => {
            let tensors = deep_coral::caffe::import_caffe(&input, &output, arch)?;
            for (name, shape) in &tensors {
                println!("{name} {shape:?}");
            }
            eprintln!("wrote {} tensors to {}", tensors.len(), output.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Weights { command: WeightsCommand::Inspect { file } } => {
            print!("{}", deep_coral::inspect::inspect(&file)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(a) => {
            let opts = deep_coral::bench::BenchOptions {
                backbones: a.backbones,
                weights: a.weights,
                batch_size: a.batch_size,
                iterations: a.iterations,
                warmup: a.warmup,
                threads: a.threads,
                lambda: a.lambda,
                data_root: a.data_root,
                source: a.source,
                target: a.target,
                channels_last: a.channels_last,
                device: a.device,
                keep_freed_memory,
            };
            let report = deep_coral::bench::bench(&opts)?;
            print!("{}", deep_coral::bench::table(&report));
            if let Some(path) = &a.json {
                report.write_json(path)?;
                eprintln!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
