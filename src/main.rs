//! `deep-coral`: train one Deep CORAL run, sweep an experiment grid, report and plot results,
//! import and inspect weights, time the training step. This file parses the command line and
//! hands each command to the library. Exit codes (`train::metrics::Status::exit_code` and the
//! constants beside it): 0 done, 1 error, 3 diverged, 75 runs still to finish (`sweep --status`,
//! `--wait`), 128 + signal when stopped by one (130 interrupted), 141 when stdout was closed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use deep_coral::config::{DeviceChoice, Precision};
use deep_coral::flags::ConfigFlags;
use deep_coral::model::backbone::Backbone;
use deep_coral::train::metrics::signal_exit_code;
use deep_coral::train::{self, runtime};

use deep_coral::experiment::launcher::slurm;

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
        /// Where the runs go: `local` (this machine, --jobs at a time) or `slurm` (one Slurm job
        /// array, one task per run; see docs/slurm.md).
        #[arg(long, value_enum, default_value_t = LauncherKind::Local)]
        launcher: LauncherKind,
        /// Print where each run stands (done / running / pending / failed / cancelled / lost /
        /// incomplete / new), from the run folders and Slurm; submit nothing. Exits 0 when every
        /// run is done, 1 while any failed, was cancelled or is lost, 75 while runs are still to
        /// finish.
        #[arg(long, conflicts_with_all = ["dry_run", "wait", "cancel"])]
        status: bool,
        /// Wait for the runs on the Slurm cluster to end (after submitting, with --launcher slurm;
        /// alone: the runs already submitted), then print the tally of the whole grid and fail
        /// naming every run that is not done. Ctrl-C stops the waiting, not the jobs.
        #[arg(long, conflicts_with_all = ["dry_run", "cancel"])]
        wait: bool,
        /// Cancel this experiment's own Slurm job arrays (scancel); running runs checkpoint.
        #[arg(long, conflicts_with = "dry_run")]
        cancel: bool,
        #[command(flatten)]
        slurm: slurm::Settings,
    },
    /// One array task of `sweep --launcher slurm` (what its batch script runs): train the run in
    /// DIR as a child, pass Slurm's signals on, requeue the task after a checkpoint.
    #[command(hide = true)]
    SweepTask {
        /// Requeues before the run fails as one that cannot fit its time limit.
        #[arg(long, default_value_t = slurm::DEFAULT_MAX_REQUEUES)]
        max_requeues: u32,
        /// The run folder (with the config.json the sweep wrote).
        dir: PathBuf,
    },
    /// Lambda per transfer by the paper's rule: pilot runs search lambda (in log space) until
    /// lambda x the alignment loss (the spec's method: CORAL, MMD, MK-MMD) and the
    /// classification loss agree at the end; writes a spec with lambda = 0 and the chosen
    /// lambda per transfer, and the pilots' losses as evidence.
    Calibrate(CalibrateArgs),
    /// Shallow CORAL (AAAI 2016) on the source-only networks: every done coral run at lambda 0
    /// of an experiment folder (or the run folders given) that kept its network; a linear SVM
    /// on its fc7 features with and without the CORAL transform, into shallow_coral.json.
    ShallowCoral {
        /// Experiment folders (results/<experiment>) or run folders.
        paths: Vec<PathBuf>,
        /// Use this data root instead of the one each run recorded.
        #[arg(long)]
        data_root: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
        /// libtorch threads; 0 = one per core.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Compute it again where a result exists.
        #[arg(long)]
        again: bool,
    },
    /// Label image files (or every image under folders) with a kept network: one CSV row per
    /// image, the predicted class, its probability and the next most probable classes.
    Predict {
        /// A run folder (holding model.safetensors) or a model file.
        model: PathBuf,
        /// Image files or folders (searched recursively).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// The CSV to write.
        #[arg(long)]
        out: PathBuf,
        /// Classes per row, most probable first.
        #[arg(long, default_value_t = 3)]
        top_k: usize,
        /// Name and leave out files that do not decode, instead of stopping.
        #[arg(long)]
        skip_bad_images: bool,
        /// Images per forward pass (memory only: each image's scores are its own).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
        batch_size: u64,
        /// Arithmetic of the forward pass (default: the precision the network trained in).
        #[arg(long, value_enum)]
        precision: Option<deep_coral::config::Precision>,
        #[command(flatten)]
        machine: MachineArgs,
    },
    /// A kept network on a whole domain: accuracy, accuracy per class, the confusion matrix
    /// (accuracy.csv, confusion.csv, confusion.png/.svg).
    Evaluate {
        /// A run folder (holding model.safetensors) or a model file.
        model: PathBuf,
        /// Folder of the domain folders.
        #[arg(long)]
        data_root: PathBuf,
        /// The domain to evaluate on (its classes must be the network's).
        #[arg(long)]
        domain: String,
        /// Mirror each centre crop by the run's seeded coin, as Caffe's TEST phase (the run's
        /// own evaluation under --eval-mirror).
        #[arg(long)]
        mirror: bool,
        /// Folder for the files (default: <run folder>/evaluate-<domain>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        skip_bad_images: bool,
        #[command(flatten)]
        machine: MachineArgs,
    },
    /// A kept network as a TorchScript module (input [N, 3, 227, 227] in its input convention,
    /// output the class scores), for PyTorch (torch.jit.load) or C++.
    Export {
        /// A run folder (holding model.safetensors) or a model file.
        model: PathBuf,
        /// The TorchScript file to write.
        #[arg(long)]
        torchscript: PathBuf,
    },
    /// The t-SNE picture of runs' features: source and target images, coloured by domain and
    /// marked by class, one panel per run (a lambda = 0 run beside its lambda > 0 twin).
    Embed {
        /// Run folders (holding model.safetensors).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Folder for embedding.png, embedding.svg and one CSV of coordinates per run.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the initial layout.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 30.0)]
        perplexity: f64,
        /// Use this data root instead of the one each run recorded.
        #[arg(long)]
        data_root: Option<PathBuf>,
        #[command(flatten)]
        machine: MachineArgs,
    },
    /// Tables of an experiment's runs: summary.csv and table.md beside the paper's Table 1.
    Report {
        /// The experiment's results folder, e.g. results/office31.
        dir: PathBuf,
        /// Paper table (JSON); default: the one the experiment's spec.json names.
        #[arg(long)]
        paper: Option<PathBuf>,
    },
    /// Two experiments run for run (same transfer, lambda, seed): final target accuracy, final
    /// CORAL loss and the largest class-loss difference between the two runs of a pair.
    Compare {
        /// Results folder A, e.g. results/six-shifts-calibrated.
        a: PathBuf,
        /// Results folder B, e.g. results/precision-bf16.
        b: PathBuf,
        /// Also write the table (markdown) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
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

/// Where a command that uses a kept network computes.
#[derive(Args)]
struct MachineArgs {
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    device: DeviceChoice,
    /// libtorch threads; 0 = one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

impl MachineArgs {
    fn device(&self) -> Result<tch::Device> {
        runtime::set_threads(self.threads)?;
        runtime::device(self.device)
    }
}

/// Flags of `calibrate`.
#[derive(Args)]
struct CalibrateArgs {
    /// Experiment spec whose transfers (and settings) to calibrate.
    spec: PathBuf,
    /// Results root; pilots go to <out>/<experiment>-calibrate/.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Pilot runs at a time on this machine.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Accept lambda when lambda x the alignment loss and the class loss agree within this factor.
    #[arg(long, default_value_t = deep_coral::experiment::rule::FACTOR)]
    factor: f64,
    /// The fraction of each pilot's steps, at its end, whose mean losses the rule compares.
    #[arg(long, default_value_t = deep_coral::experiment::rule::WINDOW)]
    window: f64,
    /// Iterations of a pilot (default: the spec's; the lr step keeps its place in the schedule).
    #[arg(long)]
    pilot_iterations: Option<usize>,
    /// Pilots per transfer at most.
    #[arg(long, default_value_t = 6)]
    max_pilots: usize,
    /// Seeds of every pilot (comma list); the rule pools them.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 2])]
    seeds: Vec<u64>,
    /// The calibrated spec to write (default experiments/<name>-calibrated.json).
    #[arg(long)]
    write: Option<PathBuf>,
    /// Name of the calibrated experiment (default <name>-calibrated).
    #[arg(long)]
    name: Option<String>,
    /// Use this data root for every pilot instead of the spec's.
    #[arg(long)]
    data_root: Option<PathBuf>,
}

/// `sweep --launcher`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LauncherKind {
    Local,
    Slurm,
}

/// Flags of `bench`.
#[derive(Args)]
struct BenchArgs {
    /// Backbones to measure (repeat the flag or give a comma list).
    #[arg(long = "backbone", value_enum, value_delimiter = ',', default_values_t = Backbone::ALL)]
    backbones: Vec<Backbone>,
    /// Precisions to measure each backbone in (repeat the flag or give a comma list); the
    /// table sets bf16 against fp32 when both are measured.
    #[arg(long = "precision", value_enum, value_delimiter = ',', default_values_t = [Precision::Fp32, Precision::Bf16])]
    precisions: Vec<Precision>,
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
    /// Memory layouts to measure, each backbone and precision once per value: true =
    /// channels-last (NHWC) images and conv weights, training's default; false = contiguous NCHW.
    #[arg(long = "channels-last", value_delimiter = ',', default_values_t = [true, false], action = clap::ArgAction::Set)]
    layouts: Vec<bool>,
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
    /// Output folder of the run.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    flags: ConfigFlags,
    /// Continue the interrupted run in --out from its checkpoint (its run.json gives the config).
    #[arg(long, conflicts_with = "config")]
    resume: bool,
    /// Replace a finished run in --out.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let keep_freed_memory = runtime::keep_freed_memory();
    quiet_broken_pipes();
    match std::panic::catch_unwind(move || dispatch(cli, keep_freed_memory)) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
        Err(panic) if is_broken_pipe(panic.as_ref()) => ExitCode::from(signal_exit_code(libc::SIGPIPE)),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Output piped into a reader that stopped reading (`deep-coral sweep --dry-run | head`): Rust
/// ignores SIGPIPE, so `println!` panics on the broken pipe. Such a panic says nothing (and
/// main exits 141, as a process killed by SIGPIPE would); any other panic is reported as usual.
fn quiet_broken_pipes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(info.payload()) {
            default(info);
        }
    }));
}

fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    text.starts_with("failed printing to std") && text.contains("Broken pipe")
}

/// A sweep's exit status; `--wait` stopped by a signal (Ctrl-C) is no error but 128 + the signal,
/// after its message (the Slurm jobs go on).
fn slurm_exit(result: Result<u8>) -> Result<ExitCode> {
    match result {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) => match e.downcast_ref::<slurm::WaitStopped>() {
            Some(stopped) => {
                eprintln!("{stopped}");
                Ok(ExitCode::from(signal_exit_code(stopped.signal)))
            }
            None => Err(e),
        },
    }
}

fn dispatch(cli: Cli, keep_freed_memory: bool) -> Result<ExitCode> {
    match cli.command {
        Command::Train(args) => {
            let (cfg, said) = args.flags.resolve(args.config.as_deref(), args.resume.then_some(args.out.as_path()))?;
            if let Some(said) = said {
                eprintln!("{said}");
            }
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
            Ok(ExitCode::from(record.status.exit_code()))
        }
        Command::Sweep {
            spec: spec_path,
            out,
            jobs,
            dry_run,
            data_root,
            launcher,
            status,
            wait,
            cancel,
            slurm: flags,
        } => {
            let commands = slurm::Commands::new(&spec_path, &out, data_root.as_deref());
            let mut spec = deep_coral::experiment::spec::load(&spec_path)?;
            if let Some(root) = data_root {
                spec.set_data_root(root);
            }
            if status {
                return Ok(ExitCode::from(slurm::print_status(&spec, &out)?.exit_code()));
            }
            if cancel {
                slurm::cancel(&spec, &out, &commands)?;
                return Ok(ExitCode::SUCCESS);
            }
            if launcher == LauncherKind::Local {
                anyhow::ensure!(
                    flags.is_empty(),
                    "the Slurm flags (--partition, --time, --max-parallel, ...) need --launcher slurm"
                );
                if wait {
                    return slurm_exit(slurm::wait(&spec, &out, &commands).map(|t| t.exit_code()));
                }
            }
            let exe = std::env::current_exe().context("locating the deep-coral executable")?;
            let launcher: Box<dyn deep_coral::experiment::launcher::Launcher> = match launcher {
                LauncherKind::Slurm => Box::new(slurm::Slurm::new(&spec, &out, &flags, commands.clone(), dry_run)?),
                LauncherKind::Local if dry_run => Box::new(deep_coral::experiment::launcher::DryRun),
                LauncherKind::Local => {
                    anyhow::ensure!(jobs >= 1, "--jobs must be at least 1, got {jobs}");
                    Box::new(deep_coral::experiment::launcher::Local { jobs })
                }
            };
            let code = deep_coral::experiment::sweep::sweep_spec(&spec, &out, launcher.as_ref(), &exe)?.exit_status();
            if wait && code == 0 {
                // Submitted: now the same wait as `--wait` alone, with the tally of the whole grid.
                return slurm_exit(slurm::wait(&spec, &out, &commands).map(|t| t.exit_code()));
            }
            Ok(ExitCode::from(code))
        }
        Command::SweepTask { max_requeues, dir } => {
            let exe = std::env::current_exe().context("locating the deep-coral executable")?;
            Ok(ExitCode::from(slurm::run_task(&dir, &exe, max_requeues)?))
        }
        Command::Calibrate(a) => {
            use deep_coral::experiment::calibrate::{self, CalibrateOptions};
            let mut spec = deep_coral::experiment::spec::load(&a.spec)?;
            if let Some(root) = &a.data_root {
                spec.set_data_root(root.clone());
            }
            anyhow::ensure!(a.jobs >= 1, "--jobs must be at least 1, got {}", a.jobs);
            let opts = CalibrateOptions {
                factor: a.factor,
                window: a.window,
                pilot_iterations: a.pilot_iterations,
                max_pilots: a.max_pilots,
                seeds: a.seeds.clone(),
                name: a.name.clone(),
            };
            opts.validate()?;
            let path = opts.output_path(&spec, a.write.as_deref())?;
            let launcher = deep_coral::experiment::launcher::Local { jobs: a.jobs };
            let exe = std::env::current_exe().context("locating the deep-coral executable")?;
            let c = calibrate::calibrate(&spec, &a.out, &launcher, &exe, &opts)?;
            let evidence = a.out.join(format!("{}-calibrate", spec.name)).join("calibration.md");
            let out_spec = calibrate::calibrated_spec(&spec, &c, &opts, &evidence);
            deep_coral::files::write_atomic(&path, out_spec.to_json().as_bytes())?;
            print!("{}", calibrate::markdown(&c, &spec));
            eprintln!("wrote {} (evidence: {})", path.display(), evidence.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Predict { model, images, out, top_k, skip_bad_images, batch_size, precision, machine } => {
            use deep_coral::infer::{features::Pass, loaded::Loaded, predict};
            let device = machine.device()?;
            let files = predict::image_files(&images)?;
            let loaded = Loaded::open(&model, device)?;
            deep_coral::files::check_output_not_input(
                &out,
                &files.iter().map(|f| f.as_path()).collect::<Vec<_>>(),
                "--out",
            )?;
            let pass = Pass { batch: batch_size as usize, precision: precision.unwrap_or(loaded.card.precision) };
            let (predictions, skipped) = predict::predict(&loaded, &files, top_k, skip_bad_images, device, pass)?;
            predict::write_csv(&predictions, top_k.min(loaded.card.classes.len()), &out)?;
            eprintln!("wrote {} ({} images, {} skipped)", out.display(), predictions.len(), skipped.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Evaluate { model, data_root, domain, mirror, out, skip_bad_images, machine } => {
            use deep_coral::experiment::plot::{canvas, confusion::ConfusionFigure};
            use deep_coral::infer::{evaluate, loaded::Loaded};
            let device = machine.device()?;
            let loaded = Loaded::open(&model, device)?;
            let ev = evaluate::evaluate(&loaded, &data_root, &domain, mirror, skip_bad_images, device)?;
            let dir = out.unwrap_or_else(|| {
                loaded.path.parent().unwrap_or(std::path::Path::new(".")).join(format!("evaluate-{domain}"))
            });
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            ev.write(&dir)?;
            let title = format!("{} on {domain}: accuracy {:.1}%", loaded.path.display(), 100.0 * ev.accuracy);
            canvas::render_both(&ConfusionFigure { evaluation: &ev, title }, &dir, "confusion")?;
            print!("{}", ev.accuracy_csv());
            eprintln!("wrote accuracy.csv, confusion.csv, confusion.png and confusion.svg into {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { model, torchscript } => {
            let loaded = deep_coral::infer::loaded::Loaded::open(&model, tch::Device::Cpu)?;
            deep_coral::files::check_output_not_input(&torchscript, &[&loaded.path], "--torchscript")?;
            deep_coral::infer::export::torchscript(&loaded, &torchscript)?;
            eprintln!(
                "wrote {} (input [N, 3, {c}, {c}] in the model's convention: {:?})",
                torchscript.display(),
                loaded.card.input,
                c = loaded.card.input.crop
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Embed { runs, out, seed, perplexity, data_root, machine } => {
            use deep_coral::experiment::plot::{canvas, embedding::EmbeddingFigure};
            let device = machine.device()?;
            let mut panels = Vec::new();
            for run in &runs {
                panels.push(deep_coral::infer::embed::embed(run, data_root.as_deref(), perplexity, seed, device)?);
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (k, e) in panels.iter().enumerate() {
                deep_coral::files::write_atomic(&out.join(format!("embedding-{}.csv", k + 1)), e.csv().as_bytes())?;
            }
            let written = canvas::render_both(&EmbeddingFigure { panels: &panels }, &out, "embedding")?;
            eprintln!("wrote {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Command::ShallowCoral { paths, data_root, device, threads, again } => {
            anyhow::ensure!(!paths.is_empty(), "name at least one experiment or run folder");
            runtime::set_threads(threads)?;
            let device = runtime::device(device)?;
            let done = deep_coral::experiment::shallow::run_all(&paths, data_root.as_deref(), device, again)?;
            eprintln!("shallow CORAL: {} run(s) with a result", done.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { dir, paper } => {
            let report = deep_coral::experiment::report::report(&dir, paper.as_deref())?;
            print!("{}", report.markdown);
            eprintln!("wrote {} and {}", report.summary_csv.display(), report.table_md.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare { a, b, out } => {
            let comparison = deep_coral::experiment::report::compare::compare(&a, &b)?;
            print!("{}", comparison.markdown);
            if let Some(path) = &out {
                let inputs: Vec<&std::path::Path> = comparison.inputs.iter().map(|p| p.as_path()).collect();
                deep_coral::files::check_output_not_input(path, &inputs, "--out")?;
                deep_coral::files::write_atomic(path, comparison.markdown.as_bytes())?;
                eprintln!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plot { dir, paper_curves } => {
            for path in deep_coral::experiment::plot::plot(&dir, paper_curves.as_deref())? {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Weights { command: WeightsCommand::ImportCaffe { input, output, arch } } => {
            let tensors = deep_coral::model::caffe::import_caffe(&input, &output, arch)?;
            for (name, shape) in &tensors {
                println!("{name} {shape:?}");
            }
            eprintln!("wrote {} tensors to {}", tensors.len(), output.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Weights { command: WeightsCommand::Inspect { file } } => {
            print!("{}", deep_coral::model::inspect::inspect(&file)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(a) => {
            let opts = deep_coral::bench::BenchOptions {
                backbones: a.backbones,
                precisions: a.precisions,
                weights: a.weights,
                batch_size: a.batch_size,
                iterations: a.iterations,
                warmup: a.warmup,
                threads: a.threads,
                lambda: a.lambda,
                data_root: a.data_root,
                source: a.source,
                target: a.target,
                layouts: a.layouts,
                device: a.device,
                keep_freed_memory,
            };
            let exe = std::env::current_exe().context("locating the deep-coral executable")?;
            let report = deep_coral::bench::bench(&opts, &exe)?;
            print!("{}", deep_coral::bench::table(&report));
            if let Some(path) = &a.json {
                report.write_json(path)?;
                eprintln!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
