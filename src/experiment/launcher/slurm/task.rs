//! One array task: `deep-coral sweep-task DIR`, what runs on the node. The batch script `exec`s
//! it, so it is the process Slurm's `B:` signals reach.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::scheduler::{exit_meaning, fields, last_iteration};
use crate::config::TrainConfig;
use crate::experiment::launcher::{signal_name, Job};
use crate::experiment::run_state::RunState;
use crate::experiment::spec::RunSpec;
use crate::train::metrics::Status;

/// What one array task does: runs `train` on `dir` as its child (resuming when the folder holds
/// a whole checkpoint), output appended to `dir/train.log`, SIGUSR1 / SIGTERM / SIGINT passed
/// on; after an interruption, requeues its own array task. Returns the exit status.
pub fn run_task(dir: &Path, exe: &Path, max_requeues: u32) -> Result<u8> {
    let signalled = Arc::new(AtomicUsize::new(0));
    let child_pid = Arc::new(AtomicI32::new(0));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGUSR1,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("catching SIGUSR1, SIGTERM and SIGINT")?;
    {
        let (signalled, child_pid) = (Arc::clone(&signalled), Arc::clone(&child_pid));
        std::thread::spawn(move || {
            for sig in signals.forever() {
                // The first signal decides what happened (a USR1 warning, then Slurm's TERM).
                let _ = signalled.compare_exchange(0, sig as usize, Ordering::SeqCst, Ordering::SeqCst);
                let pid = child_pid.load(Ordering::SeqCst);
                if pid > 0 {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(pid, sig) };
                }
            }
        });
    }

    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let task_id = match (env("SLURM_ARRAY_JOB_ID"), env("SLURM_ARRAY_TASK_ID")) {
        (Some(job), Some(task)) => Some(format!("{job}_{task}")),
        _ => env("SLURM_JOB_ID"),
    };
    let restarts: u32 = env("SLURM_RESTART_COUNT").and_then(|r| r.parse().ok()).unwrap_or(0);
    let host = env("SLURMD_NODENAME").or_else(|| env("HOSTNAME")).unwrap_or_else(|| "?".into());
    let who = task_id.as_ref().map_or("not under Slurm".to_string(), |t| format!("Slurm job {t}"));
    println!(
        "deep-coral sweep-task: {who}, restart {restarts} of at most {max_requeues}, on {host}: run {}",
        dir.display()
    );

    let state = RunState::read(dir);
    if state == RunState::Done {
        println!("{} is done already: nothing to run", dir.display());
        return Ok(0);
    }
    let config_path = dir.join("config.json");
    let config: TrainConfig = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {} (the sweep writes it before submitting)", config_path.display()))
        .and_then(|t| serde_json::from_str(&t).with_context(|| format!("parsing {}", config_path.display())))?;
    let job = Job::new(&RunSpec { dir: dir.to_path_buf(), config }, state, exe);
    let header = format!("==== {who}, restart {restarts} (at most {max_requeues}), on {host}");
    let (mut child, mut log) = job.spawn_logged(Some(&header)).map_err(anyhow::Error::msg)?;
    let note = |log: &mut File, msg: &str| {
        println!("{msg}");
        let _ = writeln!(log, "==== {msg}");
    };
    child_pid.store(child.id() as i32, Ordering::SeqCst);
    if let Some(sig) = nonzero(signalled.load(Ordering::SeqCst)) {
        // SAFETY: kill(2) on our own child's pid; a signal that came before it existed.
        unsafe { libc::kill(child.id() as i32, sig) };
    }
    let status = child.wait().context("waiting for train")?;
    child_pid.store(0, Ordering::SeqCst);
    let sig = nonzero(signalled.load(Ordering::SeqCst));

    if status.success() {
        if RunState::read(dir) == RunState::Done {
            println!("done: {}", dir.display());
            return Ok(0);
        }
        note(&mut log, "train exited 0 but run.json does not say \"done\"");
        return Ok(1);
    }
    let interrupted = i32::from(Status::Interrupted.exit_code());
    let was_interrupted = sig.is_some_and(|s| status.code() == Some(interrupted) || status.signal() == Some(s));
    let Some(sig) = sig.filter(|_| was_interrupted) else {
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}{}", exit_meaning(code)),
            (None, Some(s)) => format!("killed by {}", signal_name(s)),
            _ => status.to_string(),
        };
        note(&mut log, &format!("train failed ({how}); see above in {}", job.log_path().display()));
        return Ok(status
            .code()
            .map_or_else(|| 128 + status.signal().unwrap_or(0).clamp(0, 127) as u8, |c| c.clamp(1, 255) as u8));
    };
    let name = signal_name(sig);
    let kept = checkpointed(last_iteration(dir));
    let stopped = Status::Interrupted.exit_code();
    let Some(task_id) = task_id else {
        note(&mut log, &format!("stopped by {name}: {kept}; not under Slurm, so not requeued"));
        return Ok(stopped);
    };
    // A TERM or INT while Slurm ends the job (scancel, the time limit itself) is no request to
    // go on: the job stays cancelled, the checkpoint waits for the next sweep. While Slurm
    // requeues the job itself (`scontrol requeue` by someone, preemption in requeue mode) the
    // task comes back on its own.
    if sig != signal_hook::consts::SIGUSR1 {
        // Slurm counts a requeue as it orders it: a count above this task's own says so (the
        // state reads COMPLETING for a requeue and a cancel alike).
        let (state, requeued) = match own_state(&task_id) {
            Some((state, count)) => (Some(state), count > restarts),
            None => (None, false),
        };
        match state.as_deref() {
            Some("RUNNING") if !requeued => {}
            Some(s) if requeued || s.starts_with("REQUEUE") || s == "PENDING" => {
                note(
                    &mut log,
                    &format!(
                        "stopped by {name} as Slurm requeues the job ({s}): {kept}; Slurm job {task_id} starts \
                         again and resumes from the checkpoint"
                    ),
                );
                return Ok(stopped);
            }
            _ => {
                note(
                    &mut log,
                    &format!(
                        "stopped by {name} as Slurm ends the job ({}): {kept}, not requeued; the next sweep resumes \
                         the run",
                        state.unwrap_or_else(|| "state unknown".into())
                    ),
                );
                return Ok(stopped);
            }
        }
    }
    if restarts >= max_requeues {
        note(
            &mut log,
            &format!(
                "stopped by {name} after {restarts} requeues (the cap, max_requeues {max_requeues}): this run can never \
                 fit its time limit; {kept}: give it a longer --time and run the sweep again, which resumes it",
            ),
        );
        return Ok(1);
    }
    let out = Command::new("scontrol").args(["requeue", &task_id]).stdin(Stdio::null()).output();
    match out {
        Ok(o) if o.status.success() => {
            note(
                &mut log,
                &format!(
                    "stopped by {name}: {kept}; requeued Slurm job {task_id} (requeue {} of at most \
                     {max_requeues}); it resumes from the checkpoint",
                    restarts + 1
                ),
            );
            Ok(0)
        }
        Ok(o) => {
            note(
                &mut log,
                &format!(
                    "stopped by {name}: {kept}, but `scontrol requeue {task_id}` failed ({}): {}; the next sweep \
                     resumes the run",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            );
            Ok(stopped)
        }
        Err(e) => {
            note(
                &mut log,
                &format!(
                    "stopped by {name}: {kept}, but scontrol could not be run ({e}); the next sweep resumes the run"
                ),
            );
            Ok(stopped)
        }
    }
}

/// What a stopped run kept: `checkpointed at iteration 40`, or, stopped during its set-up
/// before it logged a row, that there was nothing new to keep.
fn checkpointed(iteration: Option<usize>) -> String {
    match iteration {
        Some(i) => format!("checkpointed at iteration {i}"),
        None => "during set-up, before its first row: nothing new to checkpoint".into(),
    }
}

fn nonzero(sig: usize) -> Option<i32> {
    (sig != 0).then_some(sig as i32)
}

/// This job's JobState (`RUNNING`, `COMPLETING` while Slurm ends it) and its restart count.
fn own_state(task_id: &str) -> Option<(String, u32)> {
    let out = Command::new("scontrol").args(["-o", "show", "job", task_id]).stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f = fields(text.lines().next()?);
    Some((f.get("JobState")?.to_string(), f.get("Restarts").and_then(|r| r.parse().ok()).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_stopped_before_its_first_row_says_so() {
        assert_eq!(checkpointed(Some(40)), "checkpointed at iteration 40");
        assert!(checkpointed(None).contains("during set-up") && !checkpointed(None).contains('?'));
    }
}
