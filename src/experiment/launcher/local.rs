//! `Local { jobs }`: the runs as `train` children of the sweep, up to `jobs` at once.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::ProgressBar;

use super::{signal_name, Failure, Job, Launcher, Stop, Unfinished};
use crate::experiment::run_state::RunState;
use crate::files::RunLock;
use crate::train::metrics::Status;

/// How often a worker looks at its child and at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Runs up to `jobs` children at once on this machine, each with its output appended to its
/// train.log. On a stop it starts no more, passes the signal on to each running child (once
/// per signal: a Ctrl-C that reached the children directly too only raises their stop flag a
/// second time) and waits for them to checkpoint and exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub jobs: usize,
}

impl Launcher for Local {
    fn launch(&self, jobs: Vec<Job>, progress: &ProgressBar) -> Result<Vec<Failure>> {
        self.launch_until(jobs, progress, &Stop::never())
    }

    fn launch_until(&self, jobs: Vec<Job>, progress: &ProgressBar, stop: &Stop) -> Result<Vec<Failure>> {
        let workers = self.jobs.max(1).min(jobs.len());
        let queue = Mutex::new(jobs.into_iter().enumerate().collect::<VecDeque<_>>());
        let failures = Mutex::new(Vec::new());
        let announced = AtomicBool::new(false);
        let announce = |sig: i32| {
            if !announced.swap(true, Ordering::SeqCst) {
                progress.suspend(|| {
                    eprintln!(
                        "{}: stopping the sweep: passed on to the running runs, waiting for them to checkpoint; no \
                         new runs start",
                        signal_name(sig)
                    )
                });
            }
        };
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let Some((i, job)) = queue.lock().unwrap().pop_front() else { break };
                    let failure = match stop.signal() {
                        Some(sig) => Some(job.unfinished(
                            Unfinished::NotStarted,
                            format!("not started: the sweep was stopped by {}", signal_name(sig)),
                        )),
                        None => {
                            let failure = run_job(&job, stop, progress, &announce);
                            progress.inc(1);
                            failure
                        }
                    };
                    if let Some(f) = failure {
                        failures.lock().unwrap().push((i, f));
                    }
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

/// Runs `job` unless its folder, read again now, is done or in use; None when it ends done.
fn run_job(job: &Job, stop: &Stop, progress: &ProgressBar, announce: &dyn Fn(i32)) -> Option<Failure> {
    let job = job.refreshed();
    let dir = job.dir.display();
    match job.state {
        RunState::Done => {
            progress.suspend(|| eprintln!("skipping {dir}: done meanwhile by another process"));
            return None;
        }
        RunState::InUse(pid) => {
            progress.suspend(|| eprintln!("skipping {dir}: in use by process {pid}"));
            return Some(job.unfinished(Unfinished::InUse(pid), format!("in use by process {pid}")));
        }
        RunState::Incomplete | RunState::New => {}
    }
    let start = Instant::now();
    let result = run_child(&job, stop, announce);
    let took = start.elapsed().as_secs_f64();
    let log = job.log_path();
    progress.suspend(|| match &result {
        Ok(()) => eprintln!("done    {dir} ({took:.0} s)"),
        Err(f) => match f.kind {
            Unfinished::Interrupted => {
                eprintln!("interrupted {dir} ({}); the next sweep resumes it; log: {}", f.reason, log.display())
            }
            Unfinished::InUse(_) => eprintln!("skipping {dir}: {}", f.reason),
            Unfinished::Failed | Unfinished::NotStarted | Unfinished::Queued => {
                eprintln!("FAILED  {dir} ({}); log: {}", f.reason, log.display())
            }
        },
    });
    result.err()
}

/// Runs one child with its output appended to its train.log, passing a stop's signal on to
/// it, and says how it ended.
fn run_child(job: &Job, stop: &Stop, announce: &dyn Fn(i32)) -> Result<(), Failure> {
    let failed = |reason: String| job.unfinished(Unfinished::Failed, reason);
    let (mut child, _) = job.spawn_logged(None).map_err(failed)?;
    let mut forwarded = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(failed(format!("waiting for {}: {e}", job.program.display()))),
        }
        if let Some(sig) = stop.signal() {
            if forwarded != Some(sig) {
                // SAFETY: kill(2) on our own child, which try_wait has just found not reaped,
                // so its pid cannot belong to another process yet.
                unsafe { libc::kill(child.id() as libc::pid_t, sig) };
                forwarded = Some(sig);
                announce(sig);
            }
        }
        std::thread::sleep(POLL);
    };
    ended(job, status, stop.signal())
}

/// How a child that exited with `status` ended, `stop` being the sweep's stop signal if any.
fn ended(job: &Job, status: ExitStatus, stop: Option<i32>) -> Result<(), Failure> {
    if status.success() {
        return match RunState::read(&job.dir) {
            RunState::Done => Ok(()),
            _ => Err(job.unfinished(Unfinished::Failed, "exited 0 but its run.json does not say \"done\"")),
        };
    }
    // `train` stopped by SIGINT or SIGTERM: it checkpointed and wrote "interrupted".
    if status.code() == Some(i32::from(Status::Interrupted.exit_code())) {
        return Err(job.unfinished(Unfinished::Interrupted, status.to_string()));
    }
    // Killed by the stop's signal before its handler was in place (the first milliseconds of
    // the process): nothing of the run is lost that a checkpoint held.
    if let (Some(_), Some(sig)) = (stop, status.signal()) {
        if sig == libc::SIGINT || sig == libc::SIGTERM {
            return Err(job.unfinished(Unfinished::Interrupted, status.to_string()));
        }
    }
    // Refused because another process took the folder between our look and its start.
    if let Some(pid) = RunLock::holder(&job.dir) {
        return Err(job.unfinished(Unfinished::InUse(pid), format!("in use by process {pid} ({status})")));
    }
    Err(job.unfinished(Unfinished::Failed, status.to_string()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::TrainConfig;
    use crate::experiment::spec::RunSpec;

    #[test]
    fn local_shares_the_cores() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(Local { jobs: 1 }.threads_per_run(), Some(cores));
        assert_eq!(Local { jobs: cores * 4 }.threads_per_run(), Some(1));
        assert!(Local { jobs: 2 }.executes());
    }

    #[test]
    fn how_a_child_ended() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunSpec { dir: tmp.path().join("run"), config: TrainConfig::default() };
        let job = Job::new(&run, RunState::New, Path::new("deep-coral"));
        let exit = |code: i32| ExitStatus::from_raw(code << 8);
        let kind = |r: Result<(), Failure>| r.map_err(|f| f.kind);

        assert_eq!(kind(ended(&job, exit(0), None)), Err(Unfinished::Failed), "no run.json");
        std::fs::create_dir_all(&run.dir).unwrap();
        std::fs::write(run.dir.join("run.json"), r#"{"status": "done"}"#).unwrap();
        assert_eq!(kind(ended(&job, exit(0), None)), Ok(()));
        assert_eq!(kind(ended(&job, exit(130), None)), Err(Unfinished::Interrupted));
        assert_eq!(kind(ended(&job, exit(130), Some(libc::SIGTERM))), Err(Unfinished::Interrupted));
        let err = ended(&job, exit(2), None).unwrap_err();
        assert_eq!((err.kind, err.reason.as_str()), (Unfinished::Failed, "exit status: 2"));
        let killed = ExitStatus::from_raw(libc::SIGTERM);
        assert_eq!(kind(ended(&job, killed, None)), Err(Unfinished::Failed), "not our stop");
        assert_eq!(kind(ended(&job, killed, Some(libc::SIGTERM))), Err(Unfinished::Interrupted));
        let oom = ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!(kind(ended(&job, oom, Some(libc::SIGTERM))), Err(Unfinished::Failed));

        let lock = RunLock::acquire(&run.dir).unwrap();
        let err = ended(&job, exit(1), None).unwrap_err();
        assert_eq!(err.kind, Unfinished::InUse(std::process::id()), "{}", err.reason);
        drop(lock);
    }
}
