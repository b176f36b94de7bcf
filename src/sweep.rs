//! A sweep: expand a spec into runs, read each run's state from its directory, launch the
//! ones that are not done. Run state lives on disk only (DomainBed's `sweep.py`): a run is
//! done when `<dir>/run.json` says `"status": "done"` (written last by `train`), incomplete
//! when its directory exists otherwise, new when it does not. Running a sweep again after an
//! interruption or a failure re-runs exactly the runs that did not finish.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;

use crate::config::TrainConfig;
use crate::launcher::{Job, Launcher};
use crate::metrics::{write_atomic, Status};
use crate::spec::{self, RunSpec, Spec};

/// Where a run stands, read from its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// `run.json` says `"status": "done"`.
    Done,
    /// The directory exists but the run did not finish (killed, failed, diverged, running).
    Incomplete,
    /// No directory yet.
    New,
}

impl RunState {
    /// Reads the state of the run in `dir`.
    pub fn read(dir: &Path) -> RunState {
        #[derive(Deserialize)]
        struct StatusOnly {
            status: Status,
        }
        let done = std::fs::read_to_string(dir.join("run.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<StatusOnly>(&text).ok())
            .is_some_and(|r| r.status == Status::Done);
        if done {
            RunState::Done
        } else if dir.exists() {
            RunState::Incomplete
        } else {
            RunState::New
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RunState::Done => "done",
            RunState::Incomplete => "incomplete",
            RunState::New => "new",
        }
    }
}

/// What a sweep found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepSummary {
    pub name: String,
    /// Runs in the grid.
    pub total: usize,
    /// Runs already done before this sweep (skipped).
    pub done_before: usize,
    /// Runs whose directory existed but that had not finished (re-run).
    pub incomplete: usize,
    /// Runs without a directory yet.
    pub new: usize,
    /// Runs handed to an executing launcher (0 for a dry run).
    pub launched: usize,
}

/// Loads the spec at `spec_path` and runs `sweep_spec` on it.
pub fn sweep(spec_path: &Path, results_root: &Path, launcher: &dyn Launcher, exe: &Path) -> Result<SweepSummary> {
    sweep_spec(&spec::load(spec_path)?, results_root, launcher, exe)
}

/// Runs every run of `spec` that is not done, with `exe` as the `deep-coral` executable.
///
/// Before launching (not for a launcher that only lists): checks the domain folders and the
/// weights file, refuses runs whose existing `config.json` differs from the spec's (the spec
/// changed under finished results), writes `<results>/<name>/spec.json` (the effective spec,
/// every `train` field written out) and each pending run's `config.json`. Returns an error
/// naming every failed run and its train.log after all runs have ended.
pub fn sweep_spec(spec: &Spec, results_root: &Path, launcher: &dyn Launcher, exe: &Path) -> Result<SweepSummary> {
    let mut runs = spec.runs(results_root);
    if spec.train.threads == 0 {
        if let Some(threads) = launcher.threads_per_run() {
            runs.iter_mut().for_each(|r| r.config.threads = threads);
        }
    }
    let states: Vec<RunState> = runs.iter().map(|r| RunState::read(&r.dir)).collect();
    let count = |s: RunState| states.iter().filter(|&&x| x == s).count();
    let (done_before, incomplete, new) = (count(RunState::Done), count(RunState::Incomplete), count(RunState::New));
    let executes = launcher.executes();

    if executes {
        spec.check_domains()?;
        spec.check_weights()?;
        check_unchanged(spec, &runs, &states)?;
        let exp_dir = results_root.join(&spec.name);
        std::fs::create_dir_all(&exp_dir).with_context(|| format!("creating {}", exp_dir.display()))?;
        write_atomic(&exp_dir.join("spec.json"), spec.to_json().as_bytes())?;
        for (run, _) in runs.iter().zip(&states).filter(|(_, &s)| s != RunState::Done) {
            std::fs::create_dir_all(&run.dir).with_context(|| format!("creating {}", run.dir.display()))?;
            write_atomic(&run.dir.join("config.json"), (serde_json::to_string_pretty(&run.config)? + "\n").as_bytes())?;
        }
    }

    let jobs: Vec<Job> = runs
        .iter()
        .zip(&states)
        .filter(|(_, &s)| !executes || s != RunState::Done)
        .map(|(run, &s)| Job::new(run, s, exe))
        .collect();
    let launched = if executes { jobs.len() } else { 0 };
    let progress = progress_bar(runs.len(), done_before, executes);
    let failures = launcher.launch(jobs, &progress)?;
    progress.finish_and_clear();

    let summary = SweepSummary { name: spec.name.clone(), total: runs.len(), done_before, incomplete, new, launched };
    if executes {
        eprintln!(
            "{}: {} runs: {done_before} done before, {launched} launched, {} failed",
            summary.name,
            summary.total,
            failures.len()
        );
    } else {
        eprintln!(
            "{}: {} runs: {done_before} done, {incomplete} incomplete, {new} new (dry run: nothing launched)",
            summary.name, summary.total
        );
    }
    if !failures.is_empty() {
        let list: Vec<String> = failures
            .iter()
            .map(|f| format!("  {} ({}); log: {}", f.dir.display(), f.reason, f.log.display()))
            .collect();
        bail!(
            "{} of {launched} runs of {} failed (the other runs went on; run the sweep again to retry them):\n{}",
            failures.len(),
            summary.name,
            list.join("\n")
        );
    }
    Ok(summary)
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

/// Overall progress: runs ended out of the grid, elapsed time, ETA (from the runs of this sweep).
fn progress_bar(total: usize, done_before: usize, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} runs, ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_position(done_before as u64);
    bar.reset_eta();
    bar.enable_steady_tick(Duration::from_secs(1));
    bar
}
