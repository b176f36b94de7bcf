//! One source->target run, top to bottom: images -> tensors -> backbone -> fc8 ->
//! `class + lambda * CORAL` -> Caffe SGD -> a CSV row every `eval_every` iterations.
//!
//! Outputs in the run folder: `metrics.csv` (whole rows, flushed per row), `steps.csv` (one
//! row per iteration, under `log_steps`), `run.json` (the effective config and status,
//! rewritten atomically; `"status": "done"` is written last), `checkpoint/` while a run is
//! resumable (removed when it is done), and `model.safetensors`, the network it ends with
//! (`saved_model`, under `save_model`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tch::Device;

use crate::config::TrainConfig;
use crate::data::fingerprint::DataFingerprint;
use crate::data::transfer::{self, Data};
use crate::files::RunLock;
use crate::train::checkpoint::{self, LoopState};
use crate::train::csv_log::CsvLog;
use crate::train::eval;
use crate::train::metrics::{ImageCounts, MetricsRow, RunRecord, Status, StepMeans, StepRow, StepStats, Versions};
use crate::train::model::Model;
use crate::train::precision;
use crate::train::prefetch::Feed;
use crate::train::runtime;
use crate::train::saved_model::{self, ModelCard};
use crate::train::step;

/// Images per forward pass during evaluation.
const EVAL_CHUNK: usize = 128;

/// How `run` was asked to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run; refuses a folder that holds a finished run unless `force`.
    Fresh { force: bool },
    /// Continue from `<out>/checkpoint`.
    Resume,
}

/// Runs training into `out` and returns the final record (also in `out/run.json`).
///
/// Checks before anything is written: the config, the folder's state (a finished or
/// interrupted run is replaced only with `force`), the data (a resumed run must find the data
/// it started on), the batch size against the domains, the weights. Then one writer per run
/// folder: a second process on the same `out` is refused for the life of this one.
pub fn run(cfg: &TrainConfig, out: &Path, start: Start, stop: &AtomicBool) -> Result<RunRecord> {
    cfg.validate()?;
    let record_path = out.join("run.json");
    let checkpoint_dir = out.join("checkpoint");
    // An existing folder is locked at once, so the checks below see no other writer's changes.
    let mut lock = if out.is_dir() { Some(RunLock::acquire(out)?) } else { None };
    let old = RunRecord::read(&record_path).ok();
    check_start(out, start, old.as_ref(), &checkpoint_dir)?;
    let device = runtime::device(cfg.device)?;
    precision::check_supported(cfg.precision, device)?;
    let threads = runtime::set_threads(cfg.threads)?;
    let setup = Instant::now();
    let (source, target) = transfer::scan(cfg)?;
    let fingerprint = DataFingerprint::of(&source, &target)?;
    if let (Start::Resume, Some(recorded)) = (start, old.as_ref().and_then(|r| r.data.as_ref())) {
        recorded.check_same(&fingerprint, &cfg.data_root)?;
    }
    // A resumed run takes every variable from its checkpoint: the pretrained file is not read
    // (it may have moved since, as on a cluster).
    let mut model = match start {
        Start::Fresh { .. } => Model::new(cfg, source.classes.len(), device)?,
        Start::Resume => Model::with_random_weights(cfg, source.classes.len(), device),
    };
    let resumed = match start {
        Start::Resume => Some(checkpoint::load(&checkpoint_dir, &mut model)?),
        Start::Fresh { .. } => None,
    };
    let data = transfer::load_data(cfg, &source, &target, model.net.as_ref(), device)?;
    check_batch_fits(cfg, &data)?;
    let setup_time_s = setup.elapsed().as_secs_f64();
    // Created only once the data and weights are known to be usable: bad input leaves no folder.
    if lock.is_none() {
        std::fs::create_dir_all(out).with_context(|| format!("creating output folder {}", out.display()))?;
        lock = Some(RunLock::acquire(out)?);
    }
    let lock = lock.expect("taken above");

    let mut record = RunRecord {
        config: cfg.clone(),
        status: Status::Running,
        versions: Versions::default(),
        device: runtime::device_name(device),
        threads,
        classes: data.classes.clone(),
        images: ImageCounts { source: data.source.len(), target: data.target.len() },
        skipped_images: data.skipped.clone(),
        iterations_done: 0,
        final_target_acc: None,
        best_target_acc: None,
        diverged_at: None,
        error: None,
        wall_time_s: 0.0,
        setup_time_s,
        started: now_utc(),
        data: Some(fingerprint),
    };
    // Absolute paths, so that `--resume` works from any directory.
    record.config = cfg.with_absolute_paths();

    let (metrics_path, steps_path) = (out.join("metrics.csv"), out.join("steps.csv"));
    let (state, log, steps) = match resumed {
        Some(state) => {
            record.started = RunRecord::read(&record_path).map(|r| r.started).unwrap_or(record.started);
            let log = CsvLog::resume(&metrics_path, state.rows)?;
            let steps = cfg.log_steps.then(|| CsvLog::resume(&steps_path, state.iteration)).transpose()?;
            eprintln!("resuming {} at iteration {}", out.display(), state.iteration);
            (state, log, steps)
        }
        None => {
            checkpoint::remove(&checkpoint_dir)?;
            let steps = cfg.log_steps.then(|| CsvLog::create(&steps_path)).transpose()?;
            (LoopState::fresh(cfg, &data), CsvLog::create(&metrics_path)?, steps)
        }
    };
    record.write(&record_path)?;

    let mut training = Training { cfg, model, data: &data, state, log, steps, checkpoint_dir, device, lock: &lock };
    // The batches of the coming iterations are made ahead on a second thread (`prefetch`).
    let result = std::thread::scope(|scope| {
        let (input, streams, from) = (training.model.input, &training.state.streams, training.state.iteration);
        let feed = Feed::start(scope, &data, cfg, input, streams, from, device);
        training.run_loop(stop, feed)
    });
    let Training { model, state, checkpoint_dir, .. } = training;
    record.iterations_done = state.iteration;
    record.final_target_acc = state.final_target_acc;
    record.best_target_acc = state.best_target_acc;
    record.wall_time_s = state.elapsed_s;
    // How the loop ended, recorded: the checkpoint kept or removed, then run.json. Any failure
    // on the way (a full disk, a folder removed under the run) ends the run `failed`, never
    // `done` and never still `running`.
    let recorded = result.and_then(|status| {
        lock.check_in_place()?;
        record.status = status;
        if cfg.save_model {
            let card = ModelCard::of_run(cfg, &record.classes, out, status, state.iteration);
            let vars: Vec<(String, tch::Tensor)> = model.vs.variables().into_iter().collect();
            saved_model::save(&out.join(saved_model::FILE), &vars, &card)?;
        }
        match status {
            Status::Diverged => record.diverged_at = Some(state.iteration),
            Status::Interrupted => checkpoint::save(&checkpoint_dir, &model, &state)?,
            Status::Done => checkpoint::remove(&checkpoint_dir)?,
            Status::Running | Status::Failed => {}
        }
        record.write(&record_path)
    });
    match recorded {
        Ok(()) => Ok(record),
        Err(e) => {
            record.status = Status::Failed;
            record.error = Some(format!("{e:#}"));
            // Only into the run's own folder: one removed or replaced under the run gets nothing.
            match lock.check_in_place().and_then(|()| record.write_last(&record_path)) {
                Ok(()) => {}
                Err(w) => eprintln!("warning: could not record the failure in {}: {w:#}", record_path.display()),
            }
            Err(e)
        }
    }
}

/// Refuses to start over a run that would be lost: a finished one, an interrupted one with a
/// checkpoint to resume, or checkpoint files of no known run (all only with `--force`),
/// and a resume of a finished run. A `checkpoint` that is a link is refused even with
/// `--force`: removing or writing its files would reach outside `out`.
fn check_start(out: &Path, start: Start, old: Option<&RunRecord>, checkpoint_dir: &Path) -> Result<()> {
    crate::files::check_own_dir(checkpoint_dir)?;
    let done = old.is_some_and(|r| r.status == Status::Done);
    let resumable = checkpoint::iteration(checkpoint_dir);
    match start {
        Start::Fresh { force: true } => Ok(()),
        Start::Fresh { force: false } if done => {
            bail!("{} holds a finished run; choose another --out, or pass --force to replace it", out.display())
        }
        Start::Fresh { force: false } => match resumable {
            Some(it) => bail!(
                "{} holds an interrupted run (checkpoint at iteration {it}); continue it with --resume, or pass \
                 --force to start it over",
                out.display()
            ),
            // Files of a save cut short are this folder's own run's when it has a run.json (the
            // fresh start removes them); without one, nothing says whose they are.
            None => {
                let stray = checkpoint::files(checkpoint_dir);
                if old.is_none() && !stray.is_empty() {
                    bail!(
                        "{} holds checkpoint files that cannot be resumed (no readable state.json) and {} has no \
                         run.json saying whose they are: {}; pass --force to remove them and start over, or move \
                         them away",
                        checkpoint_dir.display(),
                        out.display(),
                        stray.join(", ")
                    );
                }
                Ok(())
            }
        },
        Start::Resume if done => bail!("{} holds a finished run; there is nothing to resume", out.display()),
        Start::Resume => Ok(()),
    }
}

/// A batch draws `batch_size` distinct images of each domain per pass: more than the smaller
/// domain holds would repeat images within a batch and only cost memory.
fn check_batch_fits(cfg: &TrainConfig, data: &Data) -> Result<()> {
    let (name, n) = [(&cfg.source, data.source.len()), (&cfg.target, data.target.len())]
        .into_iter()
        .min_by_key(|&(_, n)| n)
        .expect("two domains");
    if cfg.batch_size > n {
        bail!("batch size {} is larger than domain {name} ({n} images); use --batch-size {n} or less", cfg.batch_size);
    }
    Ok(())
}

/// A run in progress: what the loop only reads (config, data, device) and what it changes
/// (the model, the loop state, the CSV logs).
struct Training<'a> {
    cfg: &'a TrainConfig,
    model: Model,
    data: &'a Data,
    state: LoopState,
    log: CsvLog<MetricsRow>,
    steps: Option<CsvLog<StepRow>>,
    checkpoint_dir: PathBuf,
    device: Device,
    /// The run folder's lock: every write first checks the folder is still the run's.
    lock: &'a RunLock,
}

impl Training<'_> {
    /// The loop itself; returns how it ended. Each pass: evaluate and write a row if due ->
    /// stop if done or asked to -> the next batch from `feed` -> one SGD step -> stop if the
    /// loss is not finite -> checkpoint if due.
    fn run_loop(&mut self, stop: &AtomicBool, mut feed: Feed) -> Result<Status> {
        let cfg = self.cfg;
        let bar = ProgressBar::new(cfg.iterations as u64).with_style(
            ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_position(self.state.iteration as u64);
        let clock = Instant::now();
        let elapsed_before = self.state.elapsed_s;
        let elapsed = || elapsed_before + clock.elapsed().as_secs_f64();
        loop {
            let it = self.state.iteration;
            self.state.elapsed_s = elapsed();
            if (it.is_multiple_of(cfg.eval_every) || it == cfg.iterations) && !self.state.evaluated {
                let line = self.evaluate_and_log(elapsed)?;
                bar.set_message(format!("target acc {:.3}", self.state.final_target_acc.unwrap_or(f64::NAN)));
                // A hidden bar (stderr is not a terminal: a sweep's train.log) prints nothing itself.
                if bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    bar.println(line);
                }
            }
            if it == cfg.iterations {
                bar.finish_and_clear();
                return Ok(Status::Done);
            }
            if runtime::stopped(stop) {
                bar.abandon_with_message("interrupted");
                return Ok(Status::Interrupted);
            }
            let batch = feed.next(self.data, cfg, &self.model.input, &mut self.state.streams, self.device)?;
            let stats = step::update(&mut self.model, cfg, &batch, it)?;
            if !(stats.class_loss.is_finite() && stats.coral_loss.is_finite() && stats.align_loss.is_finite()) {
                bar.abandon_with_message("diverged");
                eprintln!(
                    "iteration {it}: loss is not finite (class {}, coral {}, {} {}); stopping the run as diverged",
                    stats.class_loss,
                    stats.coral_loss,
                    cfg.method.name(),
                    stats.align_loss
                );
                return Ok(Status::Diverged);
            }
            if let Some(steps) = &mut self.steps {
                let StepStats { class_loss, coral_loss, coral_distance, correct, align_loss, .. } = stats;
                steps.append(&StepRow {
                    iteration: it,
                    lr: cfg.lr_at(it),
                    class_loss,
                    coral_loss,
                    coral_distance,
                    correct,
                    align_loss,
                })?;
            }
            self.state.means.add(stats);
            self.state.iteration += 1;
            self.state.evaluated = false;
            bar.inc(1);
            if cfg.checkpoint_every > 0
                && self.state.iteration.is_multiple_of(cfg.checkpoint_every)
                && self.state.iteration < cfg.iterations
            {
                self.state.elapsed_s = elapsed();
                self.lock.check_in_place()?;
                checkpoint::save(&self.checkpoint_dir, &self.model, &self.state)?;
            }
        }
    }

    /// Evaluates the whole target domain, appends the row of this iteration (the means of the
    /// steps since the last row) to metrics.csv, and returns the line to print.
    fn evaluate_and_log(&mut self, elapsed: impl Fn() -> f64) -> Result<String> {
        let (cfg, state) = (self.cfg, &mut self.state);
        let it = state.iteration;
        let ev = eval::evaluate(
            self.model.net.as_ref(),
            cfg,
            &self.data.target,
            &self.model.input,
            self.device,
            EVAL_CHUNK,
            it,
        )?;
        let (class_loss, coral_loss, coral_distance, source_acc, align_loss) = state.means.means();
        let row = MetricsRow {
            iteration: it,
            epoch: state.streams.source.epoch(),
            lr: cfg.lr_at(it.saturating_sub(1)),
            class_loss,
            coral_loss,
            weighted_coral_loss: cfg.lambda * align_loss,
            coral_distance,
            source_acc,
            target_acc: ev.accuracy,
            target_loss: ev.loss,
            elapsed_s: elapsed(),
            align_loss,
        };
        self.lock.check_in_place()?;
        self.log.append(&row)?;
        state.rows += 1;
        state.evaluated = true;
        state.means = StepMeans::default();
        state.final_target_acc = Some(ev.accuracy);
        state.best_target_acc = Some(state.best_target_acc.map_or(ev.accuracy, |b| b.max(ev.accuracy)));
        Ok(format!(
            "iter {it:>5} lr {:.1e} class {class_loss:.4} coral {coral_loss:.3e} dist {coral_distance:.3e} \
             source acc {source_acc:.3} target acc {:.4} loss {:.4}",
            row.lr, ev.accuracy, ev.loss
        ))
    }
}

/// Seconds since the Unix epoch, as text (no time-zone database needed).
fn now_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("unix:{secs}")
}
