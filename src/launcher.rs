//! How a sweep's runs are executed: a `Launcher` is handed `Job`s (one `deep-coral train`
//! command each) and reports which failed. `Local` runs N at once on this machine, `DryRun`
//! only prints them; a cluster launcher (Slurm) would be one more impl (DomainBed's
//! `command_launchers.py`). Tests pass their own, recording, launcher.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;
use indicatif::ProgressBar;

use crate::config::TrainConfig;
use crate::spec::RunSpec;
use crate::sweep::RunState;

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

    /// `<dir>/train.log`, where the child's stdout and stderr are appended.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("train.log")
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

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        cmd
    }
}

fn shell_quote(s: &std::ffi::OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@".contains(c)) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A run that did not finish, with why and where its output went.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub dir: PathBuf,
    pub log: PathBuf,
    /// e.g. "exit status: 1", or "could not start ...".
    pub reason: String,
}

/// Executes a sweep's jobs. The sweep hands over only runs that are not done, in grid order.
pub trait Launcher {
    /// Runs every job, calling `progress.inc(1)` as each ends, and returns the ones that
    /// failed (a failure never stops the others). `Err` only when the launcher itself breaks.
    fn launch(&self, jobs: Vec<Job>, progress: &ProgressBar) -> Result<Vec<Failure>>;

    /// libtorch threads per run, written into each config whose spec leaves `threads` at 0;
    /// `None` keeps libtorch's default (one per core).
    fn threads_per_run(&self) -> Option<usize> {
        None
    }

    /// False for a launcher that only lists: the sweep then writes nothing, skips the data
    /// check, and hands over the done runs too, so the listing shows the whole grid.
    fn executes(&self) -> bool {
        true
    }
}

/// Runs up to `jobs` children at once on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub jobs: usize,
}

impl Launcher for Local {
    fn launch(&self, jobs: Vec<Job>, progress: &ProgressBar) -> Result<Vec<Failure>> {
        let workers = self.jobs.max(1).min(jobs.len());
        let queue = Mutex::new(jobs.into_iter().enumerate().collect::<VecDeque<_>>());
        let failures = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let Some((i, job)) = queue.lock().unwrap().pop_front() else { break };
                    let start = Instant::now();
                    let result = run_child(&job);
                    let took = start.elapsed().as_secs_f64();
                    progress.suspend(|| match &result {
                        Ok(()) => eprintln!("done    {} ({took:.0} s)", job.dir.display()),
                        Err(reason) => {
                            eprintln!("FAILED  {} ({reason}); log: {}", job.dir.display(), job.log_path().display())
                        }
                    });
                    if let Err(reason) = result {
                        failures
                            .lock()
                            .unwrap()
                            .push((i, Failure { dir: job.dir.clone(), log: job.log_path(), reason }));
                    }
                    progress.inc(1);
                });
            }
        });
        let mut failures = failures.into_inner().unwrap();
        failures.sort_by_key(|(i, _)| *i);
        Ok(failures.into_iter().map(|(_, f)| f).collect())
    }

    /// The machine's cores shared evenly between the runs, at least 1 each.
    fn threads_per_run(&self) -> Option<usize> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Some((cores / self.jobs.max(1)).max(1))
    }
}

/// Runs one child with its output appended to its train.log; Ok when it exits 0 and its
/// run.json says done.
fn run_child(job: &Job) -> Result<(), String> {
    std::fs::create_dir_all(&job.dir).map_err(|e| format!("creating {}: {e}", job.dir.display()))?;
    let log_path = job.log_path();
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    writeln!(log, "==== deep-coral sweep, unix:{secs}: {}", job.command_line())
        .map_err(|e| format!("writing {}: {e}", log_path.display()))?;
    let err_log = log.try_clone().map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let status = job
        .command()
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .status()
        .map_err(|e| format!("could not start {}: {e}", job.program.display()))?;
    if !status.success() {
        return Err(status.to_string());
    }
    match RunState::read(&job.dir) {
        RunState::Done => Ok(()),
        _ => Err("exited 0 but its run.json does not say \"done\"".into()),
    }
}

/// Prints one line per job (state, directory, command) and runs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DryRun;

impl Launcher for DryRun {
    fn launch(&self, jobs: Vec<Job>, _progress: &ProgressBar) -> Result<Vec<Failure>> {
        for job in &jobs {
            println!("{:<10} {}  $ {}", job.state.name(), job.dir.display(), job.command_line());
        }
        Ok(Vec::new())
    }

    fn executes(&self) -> bool {
        false
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
    }

    #[test]
    fn command_lines_quote_what_the_shell_would_split() {
        let job = Job::new(&run(Path::new("res/my run")), RunState::New, Path::new("target/deep-coral"));
        assert_eq!(job.command_line(), "target/deep-coral train --config 'res/my run/config.json' --out 'res/my run'");
        assert_eq!(job.label(), "amazon->webcam lambda 0.8 seed 1");
    }

    #[test]
    fn local_shares_the_cores() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(Local { jobs: 1 }.threads_per_run(), Some(cores));
        assert_eq!(Local { jobs: cores * 4 }.threads_per_run(), Some(1));
        assert_eq!(DryRun.threads_per_run(), None);
        assert!(!DryRun.executes() && Local { jobs: 2 }.executes());
    }
}
