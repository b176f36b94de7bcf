//! Launchers: how a sweep's runs are executed.
//!
//! A launcher is handed the sweep's pending runs as [`Job`]s, in grid order, each one
//! `deep-coral train` command on one run folder, and says which of them did not finish
//! ([`Failure`], with an [`Unfinished`] kind). It decides where and how many at a time the
//! commands run; it never decides *what* runs: the sweep reads the state of every run folder
//! ([`RunState`]), leaves finished and in-use runs out, writes each job's `config.json`, and
//! builds the command (fresh or `--resume`, see [`Job::new`]). Run state lives on disk only, so a
//! launcher keeps no records of its own: a sweep run again picks up whatever did not finish.
//!
//! The launchers, one file (or folder) each:
//! - [`Local`] (`local.rs`): up to N `train` children at once on this machine;
//! - [`DryRun`] (`dry_run.rs`): prints every job's state, folder and command, runs nothing;
//! - [`slurm::Slurm`] (`slurm/`): one Slurm job array, one task per run, each task running its
//!   `train` on a node; `--status`, `--wait` and `--cancel` beside it.
//!
//! Adding one (DomainBed's `command_launchers.py` is the model): a new file here with a type
//! that implements [`Launcher`], re-exported below, and a way to pick it in `main.rs`'s `sweep`
//! arm. What a launcher owes the sweep:
//! - run each job with [`Job::spawn_logged`], which appends its output to [`Job::log_path`]
//!   after a header line that helps a reader of the log tell the attempts apart;
//! - a failure of one run never stops the others; `Err` only when the launcher itself breaks;
//! - when the sweep's [`Stop`] is raised (SIGINT or SIGTERM to the sweep): start no more runs,
//!   pass the signal on to the running ones (`train` then finishes its iteration, checkpoints
//!   and exits 130 with run.json status "interrupted"), wait for them, and report them as
//!   [`Unfinished::Interrupted`] and the ones never started as [`Unfinished::NotStarted`]; a
//!   launcher that overrides only [`Launcher::launch`] ignores the stop and runs everything;
//! - a run whose lock another process holds is not started ([`RunState::InUse`], read again
//!   when its turn comes, since the sweep's reading may be hours old) but reported as
//!   [`Unfinished::InUse`]; a run a launcher leaves to an earlier submission of its own (a Slurm
//!   task still pending or running) is reported as [`Unfinished::Queued`];
//! - say in [`Launcher::threads_per_run`] how many libtorch threads each run should take, and in
//!   [`Launcher::executes`] whether it runs anything at all.
//!
//! Tests pass their own, recording, launchers.

mod dry_run;
mod local;
mod shell;
pub mod slurm;

pub use dry_run::DryRun;
pub use local::Local;
pub use shell::shell_quote;

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Result;
use indicatif::ProgressBar;

use crate::config::TrainConfig;
use crate::experiment::run_state::RunState;
use crate::experiment::spec::RunSpec;

/// One run to execute: `<exe> train --config <dir>/config.json --out <dir>`, output appended
/// to `<dir>/train.log`. A run with a checkpoint (`<dir>/checkpoint/state.json`, which a
/// checkpoint writes last) is resumed instead:
/// `<exe> train --out <dir> --resume` (the train CLI then takes the config from
/// `<dir>/run.json`; it refuses `--config` together with `--resume`).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The run directory (a pure function of the run's identity, see `spec`).
    pub dir: PathBuf,
    /// The config written to `<dir>/config.json`.
    pub config: TrainConfig,
    /// State on disk before launching.
    pub state: RunState,
    /// The `deep-coral` executable.
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl Job {
    /// The command for `run`: resume when its directory holds a whole checkpoint and a run.json
    /// (a checkpoint folder without state.json, from a save cut short, starts the run afresh).
    /// The run.json's status does not matter: an "interrupted" run and a "running" one whose
    /// process was killed (by the kernel, for memory) resume alike.
    pub fn new(run: &RunSpec, state: RunState, exe: &Path) -> Job {
        let dir = &run.dir;
        let resume = dir.join("checkpoint/state.json").is_file() && dir.join("run.json").is_file();
        let mut args: Vec<OsString> = vec!["train".into()];
        if !resume {
            args.extend(["--config".into(), dir.join("config.json").into()]);
        }
        args.extend(["--out".into(), dir.clone().into()]);
        if resume {
            args.push("--resume".into());
        }
        Job { dir: dir.clone(), config: run.config.clone(), state, program: exe.to_path_buf(), args }
    }

    /// The same job as its folder stands now: state and command read again (another process
    /// may have finished, taken, or checkpointed the run since the sweep looked).
    pub fn refreshed(&self) -> Job {
        let run = RunSpec { dir: self.dir.clone(), config: self.config.clone() };
        Job::new(&run, RunState::read(&self.dir), &self.program)
    }

    /// `<dir>/train.log`, where the child's stdout and stderr are appended.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("train.log")
    }

    /// Creates the run folder, opens its train.log for appending and writes the header line of
    /// this attempt (`==== deep-coral sweep, unix:<secs>: <command line>`).
    pub fn open_log(&self) -> Result<File, String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let path = self.log_path();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        writeln!(log, "==== deep-coral sweep, unix:{secs}: {}", self.command_line())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(log)
    }

    /// Starts the job's command with stdin closed and stdout and stderr appended to its
    /// train.log, after the attempt's header line ([`Job::open_log`]) and `header`, if given: the
    /// one way every launcher starts a run. Returns the child and the log, for notes after it.
    pub fn spawn_logged(&self, header: Option<&str>) -> Result<(Child, File), String> {
        let mut log = self.open_log()?;
        let path = self.log_path();
        if let Some(h) = header {
            writeln!(log, "{h}").map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        let clone = || log.try_clone().map_err(|e| format!("opening {}: {e}", path.display()));
        let (out, err) = (clone()?, clone()?);
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", self.program.display()))?;
        Ok((child, log))
    }

    /// The command as one shell line (arguments with spaces or quotes are single-quoted).
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(|a| a.as_os_str()))
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `amazon->dslr lambda 0.05 seed 1`.
    pub fn label(&self) -> String {
        format!(
            "{}->{} lambda {} seed {}",
            self.config.source, self.config.target, self.config.lambda, self.config.seed
        )
    }

    /// The command, without its stdio set.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        cmd
    }

    /// The record of this job not finishing.
    pub fn unfinished(&self, kind: Unfinished, reason: impl Into<String>) -> Failure {
        Failure { dir: self.dir.clone(), log: self.log_path(), reason: reason.into(), kind }
    }
}

/// A run that did not finish, with why and where its output went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub dir: PathBuf,
    pub log: PathBuf,
    /// e.g. "exit status: 1", or "could not start ...".
    pub reason: String,
    pub kind: Unfinished,
}

/// Why a run did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// It ran and failed, or could not be started.
    Failed,
    /// It was stopped by a signal (exit 130, run.json "interrupted", checkpoint written):
    /// the next sweep resumes it.
    Interrupted,
    /// Another process (pid) holds the run's lock; it was left alone.
    InUse(u32),
    /// The sweep was stopped before the run's turn came.
    NotStarted,
    /// Left alone: a task of an earlier submission has it pending or running on the cluster.
    Queued,
}

/// A sweep's request to stop early: the number of the signal that asked (SIGINT, SIGTERM), or
/// none. Clones share one flag; the sweep raises it from its signal handler, a launcher reads it
/// while its runs go on.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicUsize>);

impl Stop {
    /// A stop that nothing raises but [`Stop::raise`].
    pub fn never() -> Stop {
        Stop::default()
    }

    /// The flag, for `signal_hook::flag::register_usize(sig, flag, sig as usize)`.
    pub fn flag(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.0)
    }

    /// Asks for a stop as signal `sig` would.
    pub fn raise(&self, sig: i32) {
        self.0.store(sig as usize, Ordering::SeqCst);
    }

    /// The signal that asked for the stop (the latest, when several came).
    pub fn signal(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig as i32),
        }
    }
}

/// `SIGTERM`, `SIGINT`, or `signal 10`.
pub fn signal_name(sig: i32) -> String {
    signal_hook::low_level::signal_name(sig).map_or_else(|| format!("signal {sig}"), str::to_string)
}

/// Executes a sweep's jobs. The sweep hands over only runs that are not done (nor in use by
/// another process), in grid order.
pub trait Launcher {
    /// Runs every job, calling `progress.inc(1)` as each ends, and returns the ones that
    /// failed (a failure never stops the others). `Err` only when the launcher itself breaks.
    fn launch(&self, jobs: Vec<Job>, progress: &ProgressBar) -> Result<Vec<Failure>>;

    /// `launch`, stopping early once `stop` is raised: no new runs, the signal passed on to the
    /// running ones, which are waited for (see the module doc). What the sweep calls; the
    /// default ignores `stop`, for launchers that end quickly anyway (listing, recording).
    fn launch_until(&self, jobs: Vec<Job>, progress: &ProgressBar, stop: &Stop) -> Result<Vec<Failure>> {
        let _ = stop;
        self.launch(jobs, progress)
    }

    /// libtorch threads per run, written into each config whose spec leaves `threads` at 0;
    /// `None` keeps libtorch's default (one per core).
    fn threads_per_run(&self) -> Option<usize> {
        None
    }

    /// False for a launcher that only lists: the sweep then writes nothing, skips the data
    /// check, catches no signals, and hands over the done and in-use runs too, so the listing
    /// shows the whole grid.
    fn executes(&self) -> bool {
        true
    }

    /// True when the runs execute on this machine (or would: a dry run of a local sweep), so
    /// the sweep checks what depends on it, the thread count against its cores.
    fn runs_here(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path) -> RunSpec {
        RunSpec { dir: dir.to_path_buf(), config: TrainConfig::default() }
    }

    #[test]
    fn new_runs_get_the_config_and_checkpointed_runs_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a_b/lambda_0/seed_1");
        let job = Job::new(&run(&dir), RunState::New, Path::new("/bin/deep-coral"));
        let cfg = dir.join("config.json");
        let expect: Vec<OsString> =
            vec!["train".into(), "--config".into(), cfg.into(), "--out".into(), dir.clone().into()];
        assert_eq!(job.args, expect);
        assert_eq!(job.log_path(), dir.join("train.log"));

        std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
        std::fs::write(dir.join("run.json"), r#"{"status": "interrupted"}"#).unwrap();
        let job = Job::new(&run(&dir), RunState::Incomplete, Path::new("/bin/deep-coral"));
        assert_eq!(job.args[1], "--config", "a checkpoint folder without state.json is no checkpoint");
        std::fs::write(dir.join("checkpoint/state.json"), "{}").unwrap();
        let job = Job::new(&run(&dir), RunState::Incomplete, Path::new("/bin/deep-coral"));
        let expect: Vec<OsString> = vec!["train".into(), "--out".into(), dir.clone().into(), "--resume".into()];
        assert_eq!(job.args, expect);
        // A run killed without a word (run.json still "running") resumes the same way.
        std::fs::write(dir.join("run.json"), r#"{"status": "running"}"#).unwrap();
        assert_eq!(Job::new(&run(&dir), RunState::Incomplete, Path::new("/bin/deep-coral")).args, expect);
    }

    #[test]
    fn a_refreshed_job_reads_its_folder_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let job = Job::new(&run(&dir), RunState::New, Path::new("/bin/deep-coral"));
        std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
        std::fs::write(dir.join("checkpoint/state.json"), "{}").unwrap();
        std::fs::write(dir.join("run.json"), r#"{"status": "interrupted"}"#).unwrap();
        let now = job.refreshed();
        assert_eq!(now.state, RunState::Incomplete);
        assert_eq!(now.args.last().unwrap(), "--resume");
        std::fs::write(dir.join("run.json"), r#"{"status": "done"}"#).unwrap();
        assert_eq!(job.refreshed().state, RunState::Done);
    }

    #[test]
    fn command_lines_quote_what_the_shell_would_split() {
        let job = Job::new(&run(Path::new("res/my run")), RunState::New, Path::new("target/deep-coral"));
        assert_eq!(job.command_line(), "target/deep-coral train --config 'res/my run/config.json' --out 'res/my run'");
        assert_eq!(job.label(), "amazon->webcam lambda 0.8 seed 1");
    }

    #[test]
    fn a_stop_keeps_the_latest_signal_and_clones_share_it() {
        let stop = Stop::never();
        let seen = stop.clone();
        assert_eq!(seen.signal(), None);
        stop.raise(libc::SIGINT);
        assert_eq!(seen.signal(), Some(libc::SIGINT));
        seen.flag().store(libc::SIGTERM as usize, Ordering::SeqCst);
        assert_eq!(stop.signal(), Some(libc::SIGTERM));
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(1000), "signal 1000");
    }
}
