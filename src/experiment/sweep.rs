//! A sweep: expand a spec into runs, read each run's state from its directory, launch the
//! ones that are not done. Run state lives on disk only (DomainBed's `sweep.py`): a run is
//! done when `<dir>/run.json` says `"status": "done"` (written last by `train`), in use when
//! another process holds its lock, incomplete when its directory exists otherwise, new when
//! it does not. Running a sweep again after an interruption or a failure re-runs exactly the
//! runs that did not finish.
//!
//! SIGINT and SIGTERM to the sweep (to its pid alone, or to its whole process group as a
//! terminal's Ctrl-C) stop it cleanly: the launcher starts no new runs, passes the signal on to
//! the running ones and waits for them to checkpoint; the sweep then prints which runs finished
//! and which were interrupted, and its summary carries the signal (`deep-coral sweep` exits
//! 128 + its number: 130, 143).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use signal_hook::SigId;

use crate::config::TrainConfig;
use crate::experiment::launcher::{signal_name, slurm, Failure, Job, Launcher, Stop, Unfinished};
pub use crate::experiment::progress::progress_bar;
use crate::experiment::progress::Progress;
pub use crate::experiment::run_state::RunState;
use crate::experiment::spec::{self, RunSpec, Spec};
use crate::files::write_atomic;

/// What a sweep found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepSummary {
    pub name: String,
    /// Runs in the grid.
    pub total: usize,
    /// Runs already done before this sweep (skipped).
    pub done_before: usize,
    /// Runs whose directory existed but that had not finished, and that no other process
    /// held (re-run).
    pub incomplete: usize,
    /// Runs without a directory yet.
    pub new: usize,
    /// Runs handed to an executing launcher (0 for a dry run).
    pub launched: usize,
    /// Runs left alone because another process held their lock: when the sweep started, or
    /// when their turn came.
    pub skipped: usize,
    /// Runs left alone because an earlier submission has them pending or running on Slurm.
    pub queued: usize,
    /// Launched runs that ended done (also one that another process finished meanwhile).
    pub finished: Vec<PathBuf>,
    /// Launched runs that failed.
    pub failed: usize,
    /// Launched runs stopped by a signal, with a checkpoint to resume from.
    pub interrupted: Vec<PathBuf>,
    /// Launched runs never started because the sweep was stopped first.
    pub not_started: usize,
    /// The signal (SIGINT, SIGTERM) that stopped the sweep, if one did.
    pub interrupted_by: Option<i32>,
}

impl SweepSummary {
    /// The exit status of `deep-coral sweep` for a sweep that returned: 0, or 128 + the signal
    /// that stopped it (130 for SIGINT, 143 for SIGTERM), as a shell reports a process killed
    /// by it.
    pub fn exit_status(&self) -> u8 {
        self.interrupted_by.map_or(0, crate::train::metrics::signal_exit_code)
    }
}

/// Loads the spec at `spec_path` and runs `sweep_spec` on it.
pub fn sweep(spec_path: &Path, results_root: &Path, launcher: &dyn Launcher, exe: &Path) -> Result<SweepSummary> {
    sweep_spec(&spec::load(spec_path)?, results_root, launcher, exe)
}

/// Runs every run of `spec` that is not done, with `exe` as the `deep-coral` executable.
///
/// Before launching (not for a launcher that only lists): checks the domain folders and the
/// weights file, refuses runs whose existing `config.json` differs from the spec's (the spec
/// changed under finished results), leaves out the runs another process holds (`skipping
/// <dir>: in use by process <pid>`), writes `<results>/<name>/spec.json` (the effective spec,
/// every `train` field written out) and each pending run's `config.json`. Returns an error
/// naming every failed run and its train.log after all runs have ended.
///
/// While the launcher runs, SIGINT and SIGTERM are caught: the sweep returns `Ok` once the
/// launcher has stopped, with `interrupted_by` set (failures, if any, are printed then, not
/// returned).
pub fn sweep_spec(spec: &Spec, results_root: &Path, launcher: &dyn Launcher, exe: &Path) -> Result<SweepSummary> {
    let mut runs = spec.runs(results_root);
    if spec.train.threads == 0 {
        // One thread count for the whole grid, so the runs of a lambda pair differ only by the
        // CORAL term: the count the grid's first runs were given, also when this sweep runs
        // with another --jobs; else this launcher's share of the cores.
        let pinned = runs.iter().find_map(|r| recorded_threads(&r.dir));
        if let Some(threads) = pinned.or_else(|| launcher.threads_per_run()) {
            runs.iter_mut().for_each(|r| r.config.threads = threads);
        }
    }
    let states: Vec<RunState> = runs.iter().map(|r| RunState::read(&r.dir)).collect();
    let count = |f: fn(&RunState) -> bool| states.iter().filter(|s| f(s)).count();
    let done_before = count(|s| *s == RunState::Done);
    let incomplete = count(|s| *s == RunState::Incomplete);
    let new = count(|s| *s == RunState::New);
    let in_use = count(|s| matches!(s, RunState::InUse(_)));
    let executes = launcher.executes();
    // A launcher whose runs execute elsewhere (Slurm) is handed the runs in use too: the lock
    // may be one of its own tasks', which it knows and counts.
    let elsewhere = executes && !launcher.runs_here();
    // Executed: the runs not done and not in use. Listed: all of them.
    let pending = |s: &RunState| {
        !executes || matches!(s, RunState::Incomplete | RunState::New) || (elsewhere && matches!(s, RunState::InUse(_)))
    };
    let in_use = if elsewhere { 0 } else { in_use };

    // Threads are checked where the runs execute: here, for a local sweep and its dry run.
    if launcher.runs_here() {
        for run in &runs {
            crate::config::check_threads(run.config.threads)
                .with_context(|| format!("spec {}: `train.threads`", spec.file()))?;
        }
    }
    if executes && launcher.runs_here() {
        refuse_runs_on_slurm(spec, results_root, &runs, &states)?;
    }
    if executes {
        spec.check_domains()?;
        spec.check_weights()?;
        check_unchanged(spec, &runs, &states)?;
        let exp_dir = results_root.join(&spec.name);
        std::fs::create_dir_all(&exp_dir).with_context(|| format!("creating {}", exp_dir.display()))?;
        write_atomic(&exp_dir.join("spec.json"), spec.to_json().as_bytes())?;
        for (run, state) in runs.iter().zip(&states) {
            if let RunState::InUse(pid) = state {
                if !elsewhere {
                    eprintln!("skipping {}: in use by process {pid}", run.dir.display());
                }
            } else if pending(state) {
                std::fs::create_dir_all(&run.dir).with_context(|| format!("creating {}", run.dir.display()))?;
                write_atomic(
                    &run.dir.join("config.json"),
                    (serde_json::to_string_pretty(&run.config)? + "\n").as_bytes(),
                )?;
            }
        }
    }

    // A dry run lists every run, and then fails as the real run would if its checks fail.
    let dry_check = if executes { Ok(()) } else { spec.check_domains().and_then(|()| spec.check_weights()) };
    let jobs: Vec<Job> =
        runs.iter().zip(&states).filter(|(_, s)| pending(s)).map(|(run, &s)| Job::new(run, s, exe)).collect();
    let handed = if executes { jobs.len() } else { 0 };
    let dirs: Vec<PathBuf> = if executes { jobs.iter().map(|j| j.dir.clone()).collect() } else { Vec::new() };
    let progress = progress_bar(runs.len(), done_before, executes);
    let (failures, interrupted_by) = if executes {
        let caught = CaughtSignals::install()?;
        let ticking = AtomicBool::new(launcher.runs_here());
        let failures = std::thread::scope(|scope| {
            if ticking.load(Ordering::SeqCst) {
                scope.spawn(|| tick(&dirs, &progress, &ticking));
            }
            let failures = launcher.launch_until(jobs, &progress, &caught.stop);
            ticking.store(false, Ordering::SeqCst);
            failures
        });
        (failures?, caught.stop.signal())
    } else {
        (launcher.launch(jobs, &progress)?, None)
    };
    progress.finish_and_clear();
    dry_check.context("the runs above are listed, but the real sweep would stop before any of them")?;

    let of = |kind: fn(&Unfinished) -> bool| failures.iter().filter(|f| kind(&f.kind)).collect::<Vec<&Failure>>();
    let failed = of(|k| *k == Unfinished::Failed);
    let interrupted = of(|k| *k == Unfinished::Interrupted);
    let not_started = of(|k| *k == Unfinished::NotStarted);
    let skipped_late = of(|k| matches!(k, Unfinished::InUse(_))).len();
    let skipped = in_use + skipped_late;
    let queued = of(|k| *k == Unfinished::Queued).len();
    // Runs handed over but left alone (in use when their turn came, or on the cluster) were
    // not launched.
    let launched = handed - skipped_late - queued;
    let finished: Vec<PathBuf> = dirs.into_iter().filter(|d| failures.iter().all(|f| &f.dir != d)).collect();
    let summary = SweepSummary {
        name: spec.name.clone(),
        total: runs.len(),
        done_before,
        incomplete,
        new,
        launched,
        skipped,
        queued,
        finished,
        failed: failed.len(),
        interrupted: interrupted.iter().map(|f| f.dir.clone()).collect(),
        not_started: not_started.len(),
        interrupted_by,
    };
    if !executes {
        let in_use = if in_use > 0 { format!(", {in_use} in use by another process") } else { String::new() };
        eprintln!(
            "{}: {} runs: {done_before} done, {incomplete} incomplete{in_use}, {new} new (dry run: nothing launched)",
            summary.name, summary.total
        );
        return Ok(summary);
    }
    let mut line = format!(
        "{}: {} runs: {done_before} done before, {launched} launched, {} failed",
        summary.name,
        summary.total,
        failed.len()
    );
    if queued > 0 {
        line += &format!(", {queued} already pending or running on Slurm");
    }
    if skipped > 0 {
        line += &format!(", {skipped} skipped (in use by another process)");
    }
    if !interrupted.is_empty() || interrupted_by.is_some() {
        line += &format!(", {} interrupted", interrupted.len());
    }
    eprintln!("{line}");
    let listing = |list: &[&Failure]| -> Vec<String> {
        list.iter().map(|f| format!("  {} ({}); log: {}", f.dir.display(), f.reason, f.log.display())).collect()
    };

    if let Some(sig) = interrupted_by {
        eprintln!(
            "stopped by {}: {} finished, {} interrupted, {} failed, {} not started; run the sweep again to resume the \
             interrupted runs and start the rest",
            signal_name(sig),
            summary.finished.len(),
            interrupted.len(),
            failed.len(),
            not_started.len()
        );
        for dir in &summary.finished {
            eprintln!("  finished     {}", dir.display());
        }
        for f in &interrupted {
            eprintln!("  interrupted  {}; log: {}", f.dir.display(), f.log.display());
        }
        for f in &failed {
            eprintln!("  FAILED       {} ({}); log: {}", f.dir.display(), f.reason, f.log.display());
        }
        for f in &not_started {
            eprintln!("  not started  {}", f.dir.display());
        }
        return Ok(summary);
    }
    if !failed.is_empty() || !interrupted.is_empty() {
        let (nf, ni) = (failed.len(), interrupted.len());
        let what = match (nf, ni) {
            (_, 0) => format!("{nf} of {launched} runs of {} failed", summary.name),
            (0, _) => format!("{ni} of {launched} runs of {} were interrupted", summary.name),
            _ => format!("{nf} of {launched} runs of {} failed and {ni} were interrupted", summary.name),
        };
        let mut list = listing(&failed);
        list.extend(listing(&interrupted).into_iter().map(|l| l + " (interrupted: the next sweep resumes it)"));
        bail!("{what} (the other runs went on; run the sweep again to retry them):\n{}", list.join("\n"));
    }
    Ok(summary)
}

/// SIGINT and SIGTERM raise `stop` while this lives, instead of ending the process. Once the
/// last one is dropped they end it again as by default (signal-hook cannot restore the
/// disposition: a conditional default action, armed while none lives, stands in for it).
struct CaughtSignals {
    stop: Stop,
    ids: Vec<SigId>,
}

/// How many `CaughtSignals` live, and the flag that arms the default action when none does.
static LIVE: Mutex<usize> = Mutex::new(0);
static DEFAULT_ARMED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

const CAUGHT: [i32; 2] = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];

impl CaughtSignals {
    fn install() -> Result<CaughtSignals> {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        let armed = DEFAULT_ARMED.get_or_init(|| {
            let armed = Arc::new(AtomicBool::new(false));
            for sig in CAUGHT {
                // Registered before any flag action, so it runs first; a no-op while disarmed.
                let _ = signal_hook::flag::register_conditional_default(sig, Arc::clone(&armed));
            }
            armed
        });
        armed.store(false, std::sync::atomic::Ordering::SeqCst);
        *live += 1;
        let stop = Stop::never();
        let mut ids = Vec::new();
        for sig in CAUGHT {
            let id = signal_hook::flag::register_usize(sig, stop.flag(), sig as usize)
                .with_context(|| format!("catching {}", signal_name(sig)));
            match id {
                Ok(id) => ids.push(id),
                Err(e) => {
                    drop(live);
                    drop(CaughtSignals { stop, ids });
                    return Err(e);
                }
            }
        }
        Ok(CaughtSignals { stop, ids })
    }
}

impl Drop for CaughtSignals {
    fn drop(&mut self) {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        *live -= 1;
        if *live == 0 {
            if let Some(armed) = DEFAULT_ARMED.get() {
                armed.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
}

/// Runs that already have a config.json must have been made with the same settings: else a
/// changed spec would mix old finished runs with new ones. `threads` may differ (it follows
/// `--jobs`, not the experiment).
fn check_unchanged(spec: &Spec, runs: &[RunSpec], states: &[RunState]) -> Result<()> {
    let comparable = |c: &TrainConfig| {
        let mut v = serde_json::to_value(c).expect("TrainConfig serialises");
        v.as_object_mut().map(|m| m.remove("threads"));
        v
    };
    let mut changed = Vec::new();
    for (run, _) in runs.iter().zip(states).filter(|(_, &s)| s != RunState::New) {
        let path = run.dir.join("config.json");
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let new = comparable(&run.config);
        let old = match serde_json::from_str::<TrainConfig>(&text) {
            Ok(old) => comparable(&old),
            Err(e) => {
                changed.push(format!("  {} (unreadable: {e})", path.display()));
                continue;
            }
        };
        if old != new {
            let keys: Vec<&str> = new
                .as_object()
                .map(|m| m.iter().filter(|(k, v)| old.get(k.as_str()) != Some(v)).map(|(k, _)| k.as_str()).collect())
                .unwrap_or_default();
            changed.push(format!("  {} (differs in: {})", path.display(), keys.join(", ")));
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    bail!(
        "spec {} no longer matches {} existing run(s) of experiment {}; give the changed experiment a new `name`, or \
         move its old results away:\n{}",
        spec.file(),
        changed.len(),
        spec.name,
        changed.join("\n")
    )
}

/// The thread count in `<dir>/config.json`, if a sweep already wrote one there.
fn recorded_threads(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let config: TrainConfig = serde_json::from_str(&text).ok()?;
    (config.threads > 0).then_some(config.threads)
}

/// Until `ticking` is lowered, once a second: the bar's message from `dirs`' folders (the runs
/// in use are the running ones, the rest not done are waiting).
fn tick(dirs: &[PathBuf], progress: &ProgressBar, ticking: &AtomicBool) {
    let mut tracker = Progress::default();
    let mut ended: Vec<&PathBuf> = Vec::new();
    while ticking.load(Ordering::SeqCst) {
        let (mut running, mut waiting) = (Vec::new(), Vec::new());
        let open: Vec<&PathBuf> = dirs.iter().filter(|d| !ended.contains(d)).collect();
        for dir in open {
            match RunState::read(dir) {
                RunState::Done => {
                    tracker.ended(dir);
                    ended.push(dir);
                }
                RunState::InUse(_) => running.push(dir.clone()),
                RunState::Incomplete | RunState::New => waiting.push(dir.clone()),
            }
        }
        progress.set_message(tracker.message(&running, &waiting));
        for _ in 0..10 {
            if !ticking.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A local sweep refuses runs that a Slurm array of the experiment has pending or running:
/// both would train them. Where Slurm cannot be asked, it says so and goes on.
fn refuse_runs_on_slurm(spec: &Spec, results_root: &Path, runs: &[RunSpec], states: &[RunState]) -> Result<()> {
    let exp_dir = results_root.join(&spec.name);
    let open: Vec<PathBuf> =
        runs.iter().zip(states).filter(|(_, s)| **s != RunState::Done).map(|(r, _)| r.dir.clone()).collect();
    match slurm::on_cluster(&exp_dir, &open) {
        Ok(queued) if !queued.is_empty() => {
            let commands = slurm::Commands::new(&spec.path, results_root, None);
            bail!(
                "{} runs of {} are pending or running on Slurm; a local sweep would train them too: `{}` waits for \
                 them, `{}` cancels them:\n{}",
                queued.len(),
                spec.name,
                commands.wait(),
                commands.cancel(),
                queued.join("\n")
            )
        }
        Ok(_) => Ok(()),
        Err(e) => {
            eprintln!(
                "warning: could not ask Slurm whether runs of {} are on the cluster ({e:#}); going on",
                spec.name
            );
            Ok(())
        }
    }
}
