//! `--launcher slurm`: a sweep's pending runs as one Slurm job array, one task per run.
//!
//! The sweep does what it does for every launcher (reads the run folders, writes `spec.json` and
//! each pending run's `config.json`, builds each [`Job`]); this launcher then
//! - leaves out the runs that an earlier submission of this experiment still has pending or
//!   running on the cluster (the record `<experiment>/slurm/submissions.json` maps every
//!   submitted array index to its run folder; `scontrol -o show job` says where each task
//!   stands), and says which runs it submits again because their task failed or was cancelled;
//! - submits the rest with one `sbatch --array=0-(n-1)[%K]`, the batch script on sbatch's
//!   stdin (nothing is written before sbatch accepted the job: the record is written after);
//! - with `--wait`, polls the scheduler until every run of the sweep's arrays has ended, with
//!   the sweep's progress bar, and reports the failed ones (exit code, train.log, task output).
//!
//! Each array task runs `exec deep-coral sweep-task DIR` ([`run_task`]): it decides at start
//! whether the run resumes (a whole checkpoint is there, [`Job::new`]) or starts afresh, runs
//! `deep-coral train` as its child with the output appended to `DIR/train.log`, and passes
//! SIGUSR1, SIGTERM and SIGINT on to it. `sbatch --signal=B:USR1@N` has Slurm send SIGUSR1 to the
//! task N seconds before its time limit (and sites send it on preemption): `train` finishes its
//! iteration, checkpoints and exits 130, and the task requeues itself (`scontrol requeue`, like
//! submitit) unless it was requeued `max_requeues` times already (then the run can never fit its
//! time limit, and train.log says so). A SIGTERM (or SIGINT) requeues the task too while the job
//! is still running, but not when Slurm is ending the job (`scancel`, the time limit itself):
//! a cancelled run stays cancelled, with its checkpoint for the next sweep.
//!
//! Watching (`sweep --status`), waiting (`sweep --wait`) and cancelling (`sweep --cancel`) read
//! the same record; they need no accounting database (`sacct`).
//!
//! Task output (the task's own messages, Slurm's) goes to `<experiment>/slurm/<job>_<index>.out`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::experiment::launcher::{shell_quote, signal_name, Failure, Job, Launcher, Stop, Unfinished};
use crate::experiment::run_state::RunState;
use crate::experiment::spec::{RunSpec, SlurmSpec, Spec};
use crate::files::{write_atomic, RunLock};

/// Seconds before the time limit at which Slurm sends the warning signal, unless set.
pub const DEFAULT_SIGNAL_SECONDS: u32 = 120;
/// Requeues per run before it fails as one that cannot fit its time limit, unless set.
pub const DEFAULT_MAX_REQUEUES: u32 = 3;
/// The folder of the experiment that holds the record and the task outputs.
pub const FOLDER: &str = "slurm";
/// The record of what the sweeps of one experiment submitted.
pub const RECORD: &str = "submissions.json";

/// The sweep's Slurm flags; each overrides the spec's `slurm` key of the same name.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Slurm (--launcher slurm; each flag overrides the spec's `slurm` key)")]
pub struct SlurmFlags {
    /// Partition of the runs (sbatch --partition).
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per run (sbatch --gres=gpu:N).
    #[arg(long, value_name = "N")]
    pub gpus_per_run: Option<u32>,
    /// CPUs per run (sbatch --cpus-per-task); also each run's libtorch threads when the spec's
    /// `train.threads` is 0 (default 1).
    #[arg(long, value_name = "N")]
    pub cpus_per_run: Option<u32>,
    /// Memory per run (sbatch --mem), e.g. 16G.
    #[arg(long)]
    pub mem: Option<String>,
    /// Time limit of one attempt of a run (sbatch --time), e.g. 01:30:00; a run warned before it
    /// checkpoints and requeues itself.
    #[arg(long)]
    pub time: Option<String>,
    /// sbatch --account.
    #[arg(long)]
    pub account: Option<String>,
    /// sbatch --qos.
    #[arg(long)]
    pub qos: Option<String>,
    /// At most K runs at once (the array's %K).
    #[arg(long, value_name = "K")]
    pub max_parallel: Option<u32>,
    /// Seconds before the time limit at which a run is warned (sbatch --signal=B:USR1@N) [default: 120].
    #[arg(long, value_name = "N")]
    pub signal_seconds: Option<u32>,
    /// Requeues per run before it fails as one that cannot fit its time limit [default: 3].
    #[arg(long, value_name = "N")]
    pub max_requeues: Option<u32>,
    /// One more sbatch argument, passed through as it is (repeatable), e.g. --sbatch-arg=--constraint=a100.
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
}

impl SlurmFlags {
    /// True when no Slurm flag was given.
    pub fn is_empty(&self) -> bool {
        self.as_spec() == SlurmSpec::default()
    }

    fn as_spec(&self) -> SlurmSpec {
        SlurmSpec {
            partition: self.partition.clone(),
            gpus_per_run: self.gpus_per_run,
            cpus_per_run: self.cpus_per_run,
            mem: self.mem.clone(),
            time: self.time.clone(),
            account: self.account.clone(),
            qos: self.qos.clone(),
            max_parallel: self.max_parallel,
            signal_seconds: self.signal_seconds,
            max_requeues: self.max_requeues,
            sbatch_args: self.sbatch_args.clone(),
        }
    }
}

/// The Slurm settings of a submission: the spec's `slurm` block with the flags on top, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub partition: Option<String>,
    pub gpus_per_run: u32,
    pub cpus_per_run: Option<u32>,
    pub mem: Option<String>,
    pub time: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub max_parallel: Option<u32>,
    pub signal_seconds: u32,
    pub max_requeues: u32,
    /// The spec's `sbatch_args`, then the flags'.
    pub sbatch_args: Vec<String>,
}

/// sbatch options the launcher sets itself; `sbatch_args` may not set them.
const OWN_OPTIONS: [&str; 11] = [
    "--array",
    "-a",
    "--output",
    "-o",
    "--open-mode",
    "--parsable",
    "--signal",
    "--requeue",
    "--no-requeue",
    "--chdir",
    "--wrap",
];

impl Settings {
    /// The spec's `slurm` block with the flags on top. Errors name the flag (`--time`) or the
    /// spec key (`slurm.time` in the spec file) the bad value came from.
    pub fn resolve(spec: &Spec, flags: &SlurmFlags) -> Result<Settings> {
        let block = spec.slurm.clone().unwrap_or_default();
        let file = spec.file();
        let flags = flags.as_spec();
        fn pick<T: Clone>(
            flag: &Option<T>,
            key: &Option<T>,
            flag_name: &str,
            key_name: &str,
            file: &str,
        ) -> Option<(T, String)> {
            match (flag, key) {
                (Some(v), _) => Some((v.clone(), format!("--{flag_name}"))),
                (None, Some(v)) => Some((v.clone(), format!("`slurm.{key_name}` in spec {file}"))),
                (None, None) => None,
            }
        }
        let word = |flag: &Option<String>, key: &Option<String>, name: &str| -> Result<Option<String>> {
            match pick(flag, key, &name.replace('_', "-"), name, &file) {
                None => Ok(None),
                Some((v, from)) => {
                    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        bail!("{from}: {v:?} must be one word, without spaces");
                    }
                    Ok(Some(v))
                }
            }
        };
        let partition = word(&flags.partition, &block.partition, "partition")?;
        let mem = word(&flags.mem, &block.mem, "mem")?;
        let account = word(&flags.account, &block.account, "account")?;
        let qos = word(&flags.qos, &block.qos, "qos")?;
        let time = word(&flags.time, &block.time, "time")?;
        let limit = match (&time, pick(&flags.time, &block.time, "time", "time", &file)) {
            (Some(t), Some((_, from))) => {
                time_limit_seconds(t).with_context(|| format!("{from}: {t:?} is not a Slurm time limit"))?
            }
            _ => None,
        };
        let positive = |flag: &Option<u32>, key: &Option<u32>, name: &str| -> Result<Option<u32>> {
            match pick(flag, key, &name.replace('_', "-"), name, &file) {
                Some((0, from)) => bail!("{from}: must be at least 1, got 0"),
                other => Ok(other.map(|(v, _)| v)),
            }
        };
        let cpus_per_run = positive(&flags.cpus_per_run, &block.cpus_per_run, "cpus_per_run")?;
        let max_parallel = positive(&flags.max_parallel, &block.max_parallel, "max_parallel")?;
        let gpus_per_run = flags.gpus_per_run.or(block.gpus_per_run).unwrap_or(0);
        let max_requeues = flags.max_requeues.or(block.max_requeues).unwrap_or(DEFAULT_MAX_REQUEUES);
        let signal = pick(&flags.signal_seconds, &block.signal_seconds, "signal-seconds", "signal_seconds", &file);
        let signal_seconds = match signal {
            None => DEFAULT_SIGNAL_SECONDS,
            Some((s, from)) if !(1..=65535).contains(&s) => bail!("{from}: must be 1 to 65535 seconds, got {s}"),
            Some((s, _)) => s,
        };
        if let (Some(limit), Some(t)) = (limit, &time) {
            if u64::from(signal_seconds) >= limit {
                bail!(
                    "time limit {t} ({limit} s) is not longer than the warning {signal_seconds} s before it (signal_seconds): \
                     a run would be told to checkpoint as it starts; give a longer --time or a smaller --signal-seconds"
                );
            }
        }
        let mut sbatch_args = Vec::new();
        for (args, from) in [
            (&block.sbatch_args, format!("`slurm.sbatch_args` in spec {file}")),
            (&flags.sbatch_args, "--sbatch-arg".into()),
        ] {
            for arg in args {
                let option = arg.split('=').next().unwrap_or_default();
                if arg.trim().is_empty() {
                    bail!("{from}: an empty argument");
                }
                if OWN_OPTIONS.contains(&option) {
                    bail!(
                        "{from}: {arg:?}: deep-coral sets {option} itself (array, output, requeue and signal make the \
                         sweep's runs resumable); use the sweep's own flags"
                    );
                }
                sbatch_args.push(arg.clone());
            }
        }
        Ok(Settings {
            partition,
            gpus_per_run,
            cpus_per_run,
            mem,
            time,
            account,
            qos,
            max_parallel,
            signal_seconds,
            max_requeues,
            sbatch_args,
        })
    }

    /// sbatch's arguments (all but the script, which goes to its stdin) for an array of `runs`
    /// tasks whose output goes to `out_dir/%A_%a.out`, run in `chdir`.
    fn sbatch_args(&self, job_name: &str, runs: usize, out_dir: &Path, chdir: &Path) -> Vec<String> {
        let mut array = if runs <= 1 { "0".to_string() } else { format!("0-{}", runs - 1) };
        if let Some(k) = self.max_parallel {
            array += &format!("%{k}");
        }
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={job_name}"),
            format!("--array={array}"),
            format!("--output={}", out_dir.join("%A_%a.out").display()),
            "--open-mode=append".into(),
            "--requeue".into(),
            format!("--signal=B:USR1@{}", self.signal_seconds),
            format!("--chdir={}", chdir.display()),
        ];
        let mut opt = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                args.push(format!("--{name}={v}"));
            }
        };
        opt("partition", &self.partition);
        opt("mem", &self.mem);
        opt("time", &self.time);
        opt("account", &self.account);
        opt("qos", &self.qos);
        if self.gpus_per_run > 0 {
            args.push(format!("--gres=gpu:{}", self.gpus_per_run));
        }
        if let Some(c) = self.cpus_per_run {
            args.push(format!("--cpus-per-task={c}"));
        }
        args.extend(self.sbatch_args.iter().cloned());
        args
    }
}

/// A Slurm time limit in seconds (`None`: unlimited): minutes, MM:SS, HH:MM:SS, D-HH,
/// D-HH:MM or D-HH:MM:SS, or UNLIMITED / INFINITE.
pub fn time_limit_seconds(t: &str) -> Result<Option<u64>> {
    if ["unlimited", "infinite"].contains(&t.to_ascii_lowercase().as_str()) {
        return Ok(None);
    }
    let number = |s: &str| -> Result<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            bail!("expected minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS");
        }
        s.parse().context("number too large")
    };
    let (days, rest) = match t.split_once('-') {
        Some((d, rest)) => (Some(number(d)?), rest),
        None => (None, t),
    };
    let parts: Vec<u64> = rest.split(':').map(number).collect::<Result<_>>()?;
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => bail!("expected minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"),
    };
    if secs == 0 {
        bail!("a time limit of 0");
    }
    Ok(Some(secs))
}

// ------------------------------------------------------------------------------------------
// The record of submissions

/// What the sweeps of one experiment submitted: `<experiment>/slurm/submissions.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub submissions: Vec<Submission>,
}

/// One job array: its id, and the run folder of each array index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub job_id: String,
    pub job_name: String,
    pub submitted_unix: u64,
    /// `runs[i]` is the run folder (absolute) of array task `i`.
    pub runs: Vec<PathBuf>,
    /// The arguments sbatch was given (the script went to its stdin).
    pub sbatch: Vec<String>,
}

impl Record {
    fn path(exp_dir: &Path) -> PathBuf {
        exp_dir.join(FOLDER).join(RECORD)
    }

    /// The record of `exp_dir`; empty when there is none.
    pub fn read(exp_dir: &Path) -> Result<Record> {
        let path = Record::path(exp_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).with_context(|| format!("reading the Slurm record {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
            Err(e) => Err(e).with_context(|| format!("reading the Slurm record {}", path.display())),
        }
    }

    fn write(&self, exp_dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        write_atomic(&Record::path(exp_dir), text.as_bytes())
    }

    /// Where each run was submitted last: run folder -> (job id, array index).
    fn latest(&self) -> BTreeMap<PathBuf, (String, usize)> {
        let mut map = BTreeMap::new();
        for s in &self.submissions {
            for (i, dir) in s.runs.iter().enumerate() {
                map.insert(dir.clone(), (s.job_id.clone(), i));
            }
        }
        map
    }
}

// ------------------------------------------------------------------------------------------
// The scheduler

/// One array task as `scontrol -o show job` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub index: usize,
    pub state: String,
    pub reason: String,
    /// `1:0` (exit code 1), `0:15` (killed by signal 15).
    pub exit_code: String,
    pub restarts: u32,
}

/// Where a task stands, in the terms a user asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl Task {
    pub fn phase(&self) -> Phase {
        match self.state.trim_end_matches('+') {
            "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "SUSPENDED" | "RESV_DEL_HOLD"
            | "SPECIAL_EXIT" => Phase::Pending,
            "RUNNING" | "CONFIGURING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" | "RESIZING" | "STOPPED" => {
                Phase::Running
            }
            "COMPLETED" => Phase::Completed,
            "CANCELLED" => Phase::Cancelled,
            _ => Phase::Failed,
        }
    }

    /// Pending or running: the cluster still has it.
    pub fn active(&self) -> bool {
        matches!(self.phase(), Phase::Pending | Phase::Running)
    }

    /// `exit code 1`, `exit code 3 (diverged)`, `killed by signal 9`.
    pub fn exit(&self) -> String {
        let (code, sig) = self.exit_code.split_once(':').unwrap_or((&self.exit_code, "0"));
        if sig != "0" {
            format!("killed by signal {sig}")
        } else {
            format!("exit code {code}{}", exit_meaning(code.parse().unwrap_or(-1)))
        }
    }
}

/// What `deep-coral train`'s exit code says, after the code: ` (diverged)`, ` (interrupted)`.
fn exit_meaning(code: i32) -> &'static str {
    match code {
        3 => " (diverged)",
        130 => " (interrupted)",
        _ => "",
    }
}

/// The fields of one `scontrol -o` line.
fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace().filter_map(|t| t.split_once('=')).collect()
}

/// The tasks of the arrays in `scontrol -o show job` output; a pending record of several
/// tasks (`ArrayTaskId=2-5%2`) stands for each of them.
pub fn parse_tasks(text: &str) -> Vec<Task> {
    let mut tasks = Vec::new();
    for line in text.lines() {
        let f = fields(line);
        let Some(ids) = f.get("ArrayTaskId") else { continue };
        let get = |k: &str| f.get(k).copied().unwrap_or_default().to_string();
        for index in expand_indices(ids) {
            tasks.push(Task {
                index,
                state: get("JobState"),
                reason: get("Reason"),
                exit_code: get("ExitCode"),
                restarts: get("Restarts").parse().unwrap_or(0),
            });
        }
    }
    tasks.sort_by_key(|t| t.index);
    tasks
}

/// `3`, `2-5%2`, `0,2-3`, `[4-7]` -> the indices.
fn expand_indices(ids: &str) -> Vec<usize> {
    let ids = ids.trim_matches(|c| c == '[' || c == ']');
    let ids = ids.split('%').next().unwrap_or_default();
    let mut out = Vec::new();
    for part in ids.split(',') {
        let part = part.split(':').next().unwrap_or_default();
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// A Slurm client command on PATH, or an error naming it.
fn client(name: &str) -> Result<PathBuf> {
    find_on_path(name).with_context(|| {
        format!(
            "{name} not found on PATH ({}): --launcher slurm, --status, --wait and --cancel use Slurm's client \
             commands; run the sweep on a login node of the cluster, or put Slurm's bin folder on PATH",
            std::env::var("PATH").unwrap_or_default()
        )
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The tasks of job array `job_id`; `None` when the controller no longer knows it (jobs are
/// forgotten `MinJobAge` seconds after they end).
pub fn query(job_id: &str) -> Result<Option<Vec<Task>>> {
    let out = Command::new(client("scontrol")?)
        .args(["-o", "show", "job", job_id])
        .stdin(Stdio::null())
        .output()
        .context("running scontrol")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("Invalid job id") {
            return Ok(None);
        }
        bail!("scontrol -o show job {job_id} failed ({}): {}", out.status, stderr.trim());
    }
    Ok(Some(parse_tasks(&String::from_utf8_lossy(&out.stdout))))
}

/// Where a submitted run stands on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub job_id: String,
    pub index: usize,
    /// `None`: the controller no longer knows the job (or the task).
    pub task: Option<Task>,
    /// `<experiment>/slurm/<job>_<index>.out`.
    pub output: PathBuf,
}

impl Placement {
    /// `12_3`.
    pub fn id(&self) -> String {
        format!("{}_{}", self.job_id, self.index)
    }

    fn active(&self) -> bool {
        self.task.as_ref().is_some_and(Task::active)
    }
}

/// The latest placement of every run of the record, the scheduler asked once per job.
fn placements(exp_dir: &Path, record: &Record) -> Result<BTreeMap<PathBuf, Placement>> {
    let latest = record.latest();
    let jobs: BTreeSet<&String> = latest.values().map(|(j, _)| j).collect();
    let mut tasks: BTreeMap<&String, Option<Vec<Task>>> = BTreeMap::new();
    for job in jobs {
        tasks.insert(job, query(job)?);
    }
    let out_dir = exp_dir.join(FOLDER);
    Ok(latest
        .iter()
        .map(|(dir, (job, index))| {
            let task = tasks[job].as_ref().and_then(|ts| ts.iter().find(|t| t.index == *index).cloned());
            let output = out_dir.join(format!("{job}_{index}.out"));
            (dir.clone(), Placement { job_id: job.clone(), index: *index, task, output })
        })
        .collect())
}

// ------------------------------------------------------------------------------------------
// Where a run stands: its folder and its task

/// A run as `--status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Done,
    /// Its task runs; the last iteration its metrics.csv logged.
    Running(Option<usize>),
    /// Its task waits (Slurm's reason: `Priority`, `JobArrayTaskLimit`, `BeginTime` after a requeue).
    Pending(String),
    /// Its task ended without the run done.
    Failed(String),
    Cancelled,
    /// Its folder holds an unfinished run that no task of this experiment has on the cluster.
    Incomplete,
    /// Not started, not submitted.
    New,
}

impl Standing {
    fn of(dir: &Path, place: Option<&Placement>) -> Standing {
        let disk = RunState::read(dir);
        if disk == RunState::Done {
            return Standing::Done;
        }
        match place.and_then(|p| p.task.as_ref()) {
            Some(t) => match t.phase() {
                Phase::Pending => Standing::Pending(t.reason.clone()),
                Phase::Running => Standing::Running(last_iteration(dir)),
                Phase::Cancelled => Standing::Cancelled,
                Phase::Failed => Standing::Failed(format!("{} ({})", t.exit(), t.state)),
                Phase::Completed => Standing::Failed("exit code 0 but its run.json does not say \"done\"".into()),
            },
            None if disk == RunState::New => Standing::New,
            None => Standing::Incomplete,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Standing::Done => "done",
            Standing::Running(_) => "running",
            Standing::Pending(_) => "pending",
            Standing::Failed(_) => "failed",
            Standing::Cancelled => "cancelled",
            Standing::Incomplete => "incomplete",
            Standing::New => "new",
        }
    }

    fn on_cluster(&self) -> bool {
        matches!(self, Standing::Running(_) | Standing::Pending(_))
    }
}

/// The iteration of the last row of `dir/metrics.csv`.
fn last_iteration(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    line.split(',').next()?.parse().ok()
}

/// `std::path::absolute`, falling back to the path itself.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

// ------------------------------------------------------------------------------------------
// The launcher

/// Submits a sweep's pending runs as one Slurm job array; with `wait`, waits for the sweep's
/// arrays to end and reports the runs that failed.
#[derive(Debug, Clone)]
pub struct Slurm {
    /// `<results>/<experiment>`, absolute.
    exp_dir: PathBuf,
    name: String,
    /// The spec file, for the commands the messages suggest.
    spec_file: String,
    settings: Settings,
    wait: bool,
    dry_run: bool,
    poll: Duration,
}

impl Slurm {
    /// The launcher for `spec`'s grid under `results_root`. Unless `dry_run`, checks that the
    /// submission would be accepted before anything is written: sbatch and scontrol are on PATH,
    /// and `sbatch --test-only` takes the settings (it names an unknown partition, account or
    /// QOS, or an option it does not know).
    pub fn new(spec: &Spec, results_root: &Path, settings: Settings, wait: bool, dry_run: bool) -> Result<Slurm> {
        let poll = poll_interval();
        let slurm = Slurm {
            exp_dir: absolute(&results_root.join(&spec.name)),
            name: spec.name.clone(),
            spec_file: spec.file(),
            settings,
            wait,
            dry_run,
            poll,
        };
        if !dry_run {
            slurm.preflight()?;
        }
        Ok(slurm)
    }

    fn out_dir(&self) -> PathBuf {
        self.exp_dir.join(FOLDER)
    }

    /// `deep-coral-<experiment>`, with anything but `[A-Za-z0-9_.-]` as `_` (scontrol does not
    /// quote its values).
    fn job_name(&self) -> String {
        let name: String =
            self.name.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect();
        format!("deep-coral-{name}")
    }

    fn args_for(&self, runs: usize) -> Result<Vec<String>> {
        let cwd = std::env::current_dir().context("reading the current folder")?;
        Ok(self.settings.sbatch_args(&self.job_name(), runs, &self.out_dir(), &cwd))
    }

    fn preflight(&self) -> Result<()> {
        let sbatch = client("sbatch")?;
        client("scontrol")?;
        let mut args = self.args_for(1)?;
        args.retain(|a| a != "--parsable");
        args.insert(0, "--test-only".into());
        let out = run_with_stdin(&sbatch, &args, "#!/bin/sh\ntrue\n")?;
        if !out.status.success() {
            bail!("{}", self.rejection(&out, &args));
        }
        Ok(())
    }

    /// The message for sbatch refusing `args`: its own words, the values it may mean, the command.
    fn rejection(&self, out: &std::process::Output, args: &[String]) -> String {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let s = &self.settings;
        let lower = stderr.to_ascii_lowercase();
        let mut hint = String::new();
        for (word, value, flag) in [
            ("partition", &s.partition, "--partition"),
            ("account", &s.account, "--account"),
            ("qos", &s.qos, "--qos"),
            ("memory", &s.mem, "--mem"),
            ("time limit", &s.time, "--time"),
        ] {
            if let (true, Some(v)) = (lower.contains(word), value) {
                hint += &format!(" ({flag} {v}");
                if word == "partition" {
                    hint += "; `sinfo -s` lists the partitions";
                }
                hint += ")";
            }
        }
        format!(
            "sbatch refused the job array{hint}: {}; nothing was submitted\n  $ sbatch {}",
            if said.is_empty() { out.status.to_string() } else { said.join(" / ") },
            args.join(" ")
        )
    }

    /// The batch script: the task's run folder by array index, then `exec deep-coral sweep-task`.
    fn script(&self, exe: &Path, dirs: &[PathBuf]) -> String {
        let mut s = format!(
            "#!/bin/bash\n# deep-coral sweep of experiment {:?}: one run per array task (written by `deep-coral sweep \
             --launcher slurm`; the record is {:?}).\ncase \"${{SLURM_ARRAY_TASK_ID:-}}\" in\n",
            self.name,
            Record::path(&self.exp_dir)
        );
        for (i, dir) in dirs.iter().enumerate() {
            s += &format!("  {i}) run={} ;;\n", shell_quote(dir.as_os_str()));
        }
        s += "  *) echo \"deep-coral: array task '${SLURM_ARRAY_TASK_ID:-}' is not one of this sweep's\" >&2; exit 2 ;;\n";
        s += "esac\n";
        s += &format!(
            "exec {} sweep-task --max-requeues {} \"$run\"\n",
            shell_quote(exe.as_os_str()),
            self.settings.max_requeues
        );
        s
    }

    /// Submits `dirs` as one array; returns its record entry.
    fn submit(&self, exe: &Path, dirs: &[PathBuf]) -> Result<Submission> {
        let sbatch = client("sbatch")?;
        let args = self.args_for(dirs.len())?;
        let out = run_with_stdin(&sbatch, &args, &self.script(exe, dirs))?;
        if !out.status.success() {
            bail!("{}", self.rejection(&out, &args));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let job_id = stdout.lines().next().unwrap_or_default().split(';').next().unwrap_or_default().trim().to_string();
        if job_id.is_empty() || !job_id.bytes().all(|b| b.is_ascii_digit()) {
            bail!(
                "sbatch --parsable printed {:?}, not a job id; the array may have been submitted: check squeue",
                stdout.trim()
            );
        }
        Ok(Submission {
            job_id,
            job_name: self.job_name(),
            submitted_unix: unix_now(),
            runs: dirs.to_vec(),
            sbatch: args,
        })
    }

    /// What the dry run prints: the sbatch command and its script.
    fn print_plan(&self, exe: &Path, dirs: &[PathBuf]) -> Result<()> {
        let args = self.args_for(dirs.len())?;
        println!("would submit {} runs of {} as one Slurm job array:", dirs.len(), self.name);
        println!("$ sbatch {} <<'EOF'", args.join(" "));
        print!("{}", self.script(exe, dirs));
        println!("EOF");
        Ok(())
    }
}

/// How often `--wait` asks the scheduler: 5 s, or `DEEP_CORAL_SLURM_POLL_SECONDS`.
fn poll_interval() -> Duration {
    std::env::var("DEEP_CORAL_SLURM_POLL_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(5), Duration::from_secs_f64)
}

fn run_with_stdin(program: &Path, args: &[String], stdin: &str) -> Result<std::process::Output> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    if let Some(mut input) = child.stdin.take() {
        // sbatch may refuse its arguments and exit before reading the script: a broken pipe
        // then says nothing; its exit status and stderr (read below) say why.
        if let Err(e) = input.write_all(stdin.as_bytes()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(e).with_context(|| format!("writing the batch script to {}", program.display()));
            }
        }
    }
    child.wait_with_output().with_context(|| format!("running {}", program.display()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `--wait` stopped by a signal (Ctrl-C): the jobs go on. `deep-coral sweep` exits 128 + signal.
#[derive(Debug)]
pub struct WaitStopped {
    pub signal: i32,
    pub message: String,
}

impl fmt::Display for WaitStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WaitStopped {}

impl Launcher for Slurm {
    /// The runs execute on the cluster's nodes, whose cores this machine cannot see.
    fn runs_here(&self) -> bool {
        false
    }

    fn launch(&self, jobs: Vec<Job>, progress: &ProgressBar) -> Result<Vec<Failure>> {
        self.launch_until(jobs, progress, &Stop::never())
    }

    fn launch_until(&self, jobs: Vec<Job>, progress: &ProgressBar, stop: &Stop) -> Result<Vec<Failure>> {
        let say = |msg: String| progress.suspend(|| eprintln!("{msg}"));
        let record = Record::read(&self.exp_dir)?;
        let places = if record.submissions.is_empty() {
            BTreeMap::new()
        } else if self.dry_run {
            placements(&self.exp_dir, &record).unwrap_or_else(|e| {
                say(format!(
                    "warning: could not ask Slurm about the earlier submissions ({e:#}); listing as if none ran"
                ));
                BTreeMap::new()
            })
        } else {
            placements(&self.exp_dir, &record)?
        };
        let Some(exe) = jobs.first().map(|j| j.program.clone()) else {
            say(format!("{}: nothing to submit", self.name));
            if self.wait {
                return self.wait_for(&self.waited(&record, &places, Vec::new()), progress, stop);
            }
            return Ok(Vec::new());
        };

        // Runs on the cluster are left alone; failed and cancelled ones go again, said so.
        let mut on_cluster: BTreeMap<String, usize> = BTreeMap::new();
        let mut again = Vec::new();
        let mut submit: Vec<PathBuf> = Vec::new();
        for job in &jobs {
            let dir = absolute(&job.dir);
            match job.state {
                RunState::Done => continue,
                RunState::InUse(pid) => {
                    say(format!("skipping {}: in use by process {pid}", job.dir.display()));
                    continue;
                }
                _ => {}
            }
            let place = places.get(&dir);
            match Standing::of(&dir, place) {
                s if s.on_cluster() => {
                    *on_cluster.entry(place.map(|p| p.job_id.clone()).unwrap_or_default()).or_default() += 1;
                    continue;
                }
                Standing::Done => continue,
                s @ (Standing::Failed(_) | Standing::Cancelled) => {
                    let p = place.expect("a failed or cancelled run has a task");
                    let why = match &s {
                        Standing::Failed(why) => format!("failed: {why}"),
                        _ => "cancelled".to_string(),
                    };
                    again.push(format!(
                        "  {} (Slurm job {} {why}; task output {})",
                        job.dir.display(),
                        p.id(),
                        p.output.display()
                    ));
                }
                _ => {}
            }
            submit.push(dir);
        }
        for (job, n) in &on_cluster {
            say(format!("{n} runs already pending or running in Slurm job {job}: not submitted again"));
        }
        if !again.is_empty() {
            say(format!("submitting again {} runs that failed or were cancelled:\n{}", again.len(), again.join("\n")));
        }

        if self.dry_run {
            if submit.is_empty() {
                println!("nothing to submit");
            } else {
                self.print_plan(&exe, &submit)?;
            }
            return Ok(Vec::new());
        }

        let mut record = record;
        if submit.is_empty() {
            say(format!("{}: nothing to submit", self.name));
        } else {
            let out_dir = self.out_dir();
            let created = !out_dir.exists();
            std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
            let submitted = (|| {
                let _lock = RunLock::acquire(&out_dir).context("another sweep of this experiment is submitting")?;
                // Read again under the lock: a sweep that held it may have just submitted.
                let now = Record::read(&self.exp_dir)?;
                if now != record {
                    bail!(
                        "another sweep of {} submitted runs while this one was looking; run this sweep again",
                        self.name
                    );
                }
                let s = self.submit(&exe, &submit)?;
                record.submissions.push(s.clone());
                record.write(&self.exp_dir).with_context(|| {
                    format!(
                        "Slurm job {} was submitted but its record could not be written; scancel {} to undo",
                        s.job_id, s.job_id
                    )
                })?;
                Ok(s)
            })();
            let s = match submitted {
                Ok(s) => s,
                Err(e) => {
                    if created {
                        std::fs::remove_file(out_dir.join(RunLock::FILE)).ok();
                        std::fs::remove_dir(&out_dir).ok();
                    }
                    return Err(e);
                }
            };
            let throttle = self.settings.max_parallel.map_or(String::new(), |k| format!(", at most {k} at once"));
            let partition = self.settings.partition.as_ref().map_or(String::new(), |p| format!(" on partition {p}"));
            say(format!(
                "submitted {} runs of {} as Slurm job array {}{partition}{throttle}\n  task output: {}/{}_<index>.out; each \
                 run's output: <run>/train.log\n  watch: deep-coral sweep {} --status; cancel: deep-coral sweep {} --cancel",
                submit.len(),
                self.name,
                s.job_id,
                self.out_dir().display(),
                s.job_id,
                self.spec_file,
                self.spec_file
            ));
        }
        if !self.wait {
            return Ok(Vec::new());
        }
        let places = placements(&self.exp_dir, &record)?;
        self.wait_for(&self.waited(&record, &places, submit), progress, stop)
    }

    /// The runs' libtorch threads: their CPUs (`--cpus-per-run`, 1 unless set).
    fn threads_per_run(&self) -> Option<usize> {
        Some(self.settings.cpus_per_run.unwrap_or(1) as usize)
    }

    fn executes(&self) -> bool {
        !self.dry_run
    }
}

impl Slurm {
    /// What `--wait` waits for: the runs just submitted and every run of the record whose task
    /// is still on the cluster.
    fn waited(&self, record: &Record, places: &BTreeMap<PathBuf, Placement>, submitted: Vec<PathBuf>) -> Vec<PathBuf> {
        let mut dirs = submitted;
        for dir in record.latest().keys() {
            if !dirs.contains(dir) && places.get(dir).is_some_and(Placement::active) {
                dirs.push(dir.clone());
            }
        }
        dirs
    }

    /// Polls until none of `dirs` is on the cluster, `progress.inc(1)` as each ends; returns
    /// the ones that did not end done.
    fn wait_for(&self, dirs: &[PathBuf], progress: &ProgressBar, stop: &Stop) -> Result<Vec<Failure>> {
        let record = Record::read(&self.exp_dir)?;
        let mut ended: BTreeMap<PathBuf, Standing> = BTreeMap::new();
        let mut errors = 0;
        loop {
            match placements(&self.exp_dir, &record) {
                Ok(places) => {
                    errors = 0;
                    let open: Vec<&PathBuf> = dirs.iter().filter(|d| !ended.contains_key(*d)).collect();
                    for dir in open {
                        let place = places.get(dir);
                        let standing = Standing::of(dir, place);
                        // A run done on disk whose task has not exited yet is still the cluster's.
                        if standing.on_cluster() || place.is_some_and(Placement::active) {
                            continue;
                        }
                        progress.suspend(|| match &standing {
                            Standing::Done => eprintln!("done    {}", dir.display()),
                            s => eprintln!(
                                "{:<7} {} ({}); log: {}{}",
                                s.name().to_uppercase(),
                                dir.display(),
                                describe(s),
                                dir.join("train.log").display(),
                                place.map_or(String::new(), |p| format!("; task output: {}", p.output.display()))
                            ),
                        });
                        progress.inc(1);
                        ended.insert(dir.clone(), standing);
                    }
                }
                Err(e) => {
                    errors += 1;
                    progress.suspend(|| eprintln!("warning: asking Slurm where the runs stand: {e:#} (retrying)"));
                    if errors >= 10 {
                        return Err(e.context("asking Slurm where the runs stand failed 10 times in a row"));
                    }
                }
            }
            if ended.len() == dirs.len() {
                break;
            }
            let until = Instant::now() + self.poll;
            while Instant::now() < until {
                if let Some(sig) = stop.signal() {
                    progress.finish_and_clear();
                    let jobs: BTreeSet<String> = record.latest().values().map(|(j, _)| j.clone()).collect();
                    let jobs: Vec<String> = jobs.into_iter().collect();
                    return Err(WaitStopped {
                        signal: sig,
                        message: format!(
                            "{}: stopped waiting; the Slurm jobs go on ({} of {} runs still pending or running, job {}): \
                             `deep-coral sweep {} --status` to watch them, `--wait` to wait again, `--cancel` to cancel them",
                            signal_name(sig),
                            dirs.len() - ended.len(),
                            dirs.len(),
                            jobs.join(", "),
                            self.spec_file
                        ),
                    }
                    .into());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let places = placements(&self.exp_dir, &record).unwrap_or_default();
        Ok(dirs
            .iter()
            .filter_map(|dir| {
                let s = &ended[dir];
                let kind = match s {
                    Standing::Done => return None,
                    Standing::Cancelled => Unfinished::Interrupted,
                    _ => Unfinished::Failed,
                };
                let out = places.get(dir).map_or(String::new(), |p| format!("; task output: {}", p.output.display()));
                Some(Failure {
                    dir: dir.clone(),
                    log: dir.join("train.log"),
                    reason: format!("{}{out}", describe(s)),
                    kind,
                })
            })
            .collect())
    }
}

/// A standing's details, as --status and the failure messages give them.
fn describe(s: &Standing) -> String {
    match s {
        Standing::Done => "done".into(),
        Standing::Running(Some(i)) => format!("iteration {i}"),
        Standing::Running(None) => "starting".into(),
        Standing::Pending(reason) => format!("reason {reason}"),
        Standing::Failed(why) => why.clone(),
        Standing::Cancelled => "cancelled".into(),
        Standing::Incomplete => "not finished, not on the cluster".into(),
        Standing::New => "not started".into(),
    }
}

// ------------------------------------------------------------------------------------------
// --status, --wait, --cancel

/// How many runs stand where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<&'static str, usize>);

/// The standing of every run of `spec`'s grid, from the run folders and the scheduler.
fn standings(
    spec: &Spec,
    results_root: &Path,
) -> Result<(Record, BTreeMap<PathBuf, Placement>, Vec<(PathBuf, Standing)>)> {
    let exp_dir = absolute(&results_root.join(&spec.name));
    let record = Record::read(&exp_dir)?;
    let places = if record.submissions.is_empty() { BTreeMap::new() } else { placements(&exp_dir, &record)? };
    let runs = spec
        .runs(results_root)
        .into_iter()
        .map(|r| {
            let abs = absolute(&r.dir);
            let s = Standing::of(&abs, places.get(&abs));
            (r.dir, s)
        })
        .collect();
    Ok((record, places, runs))
}

/// `sweep --status`: one line per run (done / running with its last logged iteration /
/// pending / failed with exit code and logs / cancelled / incomplete / new), then the counts.
pub fn print_status(spec: &Spec, results_root: &Path) -> Result<Counts> {
    let (record, places, runs) = standings(spec, results_root)?;
    let mut counts = Counts::default();
    for (dir, s) in &runs {
        *counts.0.entry(s.name()).or_default() += 1;
        let place = places.get(&absolute(dir));
        let task = place.map_or(String::new(), |p| format!(" (Slurm job {})", p.id()));
        let detail = match s {
            Standing::Done | Standing::New => String::new(),
            Standing::Running(_) | Standing::Pending(_) | Standing::Cancelled => format!("  {}{task}", describe(s)),
            Standing::Failed(_) => format!(
                "  {}{task}; log: {}{}",
                describe(s),
                dir.join("train.log").display(),
                place.map_or(String::new(), |p| format!("; task output: {}", p.output.display()))
            ),
            Standing::Incomplete => format!("  {}", describe(s)),
        };
        println!("{:<10} {}{detail}", s.name(), dir.display());
    }
    let order = ["done", "running", "pending", "failed", "cancelled", "incomplete", "new"];
    let parts: Vec<String> = order.iter().filter_map(|k| counts.0.get(k).map(|n| format!("{n} {k}"))).collect();
    let jobs: Vec<&str> = record.submissions.iter().map(|s| s.job_id.as_str()).collect();
    let jobs = if jobs.is_empty() {
        "no Slurm submissions recorded".to_string()
    } else {
        format!("Slurm jobs {}", jobs.join(", "))
    };
    println!("{}: {} runs: {} ({jobs})", spec.name, runs.len(), parts.join(", "));
    Ok(counts)
}

/// `sweep --wait` without submitting: waits for the grid's runs that are on the cluster, then
/// fails naming every run whose task failed or was cancelled (with its logs).
pub fn wait(spec: &Spec, results_root: &Path) -> Result<()> {
    let (record, places, runs) = standings(spec, results_root)?;
    if record.submissions.is_empty() {
        bail!(
            "nothing to wait for: no Slurm submissions recorded for {} (in {}); submit with `deep-coral sweep {} --launcher slurm`",
            spec.name,
            Record::path(&absolute(&results_root.join(&spec.name))).display(),
            spec.file()
        );
    }
    let slurm = Slurm {
        exp_dir: absolute(&results_root.join(&spec.name)),
        name: spec.name.clone(),
        spec_file: spec.file(),
        settings: Settings::default(),
        wait: true,
        dry_run: false,
        poll: poll_interval(),
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut done = 0;
    for (dir, s) in &runs {
        let abs = absolute(dir);
        match s {
            Standing::Done => done += 1,
            Standing::New | Standing::Incomplete => {}
            _ if places.contains_key(&abs) => dirs.push(abs),
            _ => {}
        }
    }
    let bar = crate::experiment::sweep::progress_bar(runs.len(), done, true);
    let stop = Stop::never();
    let ids: Vec<_> = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
        .into_iter()
        .filter_map(|sig| signal_hook::flag::register_usize(sig, stop.flag(), sig as usize).ok())
        .collect();
    let failures = slurm.wait_for(&dirs, &bar, &stop);
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    bar.finish_and_clear();
    let failures = failures?;
    let left: Vec<&PathBuf> =
        runs.iter().filter(|(_, s)| matches!(s, Standing::New | Standing::Incomplete)).map(|(d, _)| d).collect();
    let note = if left.is_empty() {
        String::new()
    } else {
        format!("; {} runs were never submitted or are not on the cluster (see --status)", left.len())
    };
    eprintln!(
        "{}: {} runs: {} done, {} failed{note}",
        spec.name,
        runs.len(),
        runs.len() - left.len() - failures.len(),
        failures.len()
    );
    if !failures.is_empty() {
        let list: Vec<String> = failures
            .iter()
            .map(|f| format!("  {} ({}); log: {}", f.dir.display(), f.reason, f.log.display()))
            .collect();
        bail!(
            "{} of {} runs of {} did not finish on the cluster (`deep-coral sweep {} --launcher slurm` submits them \
             again):\n{}",
            failures.len(),
            runs.len(),
            spec.name,
            spec.file(),
            list.join("\n")
        );
    }
    Ok(())
}

/// `sweep --cancel`: `scancel` of this experiment's own job arrays that still have runs pending
/// or running (no other job is touched), then waits for them to leave the cluster. A running
/// run gets SIGTERM: it checkpoints and its run.json says "interrupted" (never "done"); its
/// task does not requeue itself for a cancel.
pub fn cancel(spec: &Spec, results_root: &Path) -> Result<()> {
    let exp_dir = absolute(&results_root.join(&spec.name));
    let record = Record::read(&exp_dir)?;
    if record.submissions.is_empty() {
        bail!(
            "nothing to cancel: no Slurm submissions recorded for {} (in {})",
            spec.name,
            Record::path(&exp_dir).display()
        );
    }
    let places = placements(&exp_dir, &record)?;
    let active: Vec<&Placement> = places.values().filter(|p| p.active()).collect();
    let jobs: BTreeSet<&str> = active.iter().map(|p| p.job_id.as_str()).collect();
    if jobs.is_empty() {
        eprintln!("{}: no run of this sweep is pending or running on the cluster: nothing to cancel", spec.name);
        return Ok(());
    }
    let jobs: Vec<&str> = jobs.into_iter().collect();
    let out = Command::new(client("scancel")?).args(&jobs).stdin(Stdio::null()).output().context("running scancel")?;
    if !out.status.success() {
        bail!("scancel {} failed ({}): {}", jobs.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    eprintln!(
        "cancelled Slurm job {} ({} runs pending or running); waiting for the running ones to checkpoint",
        jobs.join(", "),
        active.len()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let places = placements(&exp_dir, &record)?;
        let left = places.values().filter(|p| jobs.contains(&p.job_id.as_str()) && p.active()).count();
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{left} tasks of Slurm job {} still on the cluster 120 s after scancel", jobs.join(", "));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, _, runs) = standings(spec, results_root)?;
    let done = runs.iter().filter(|(_, s)| *s == Standing::Done).count();
    eprintln!(
        "{}: {} runs: {done} done, {} not finished; runs stopped part-way kept their checkpoint (run.json \
         \"interrupted\"): `deep-coral sweep {} --launcher slurm` submits them again and they resume",
        spec.name,
        runs.len(),
        runs.len() - done,
        spec.file()
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------
// One array task: `deep-coral sweep-task DIR`

/// What one array task does (`deep-coral sweep-task DIR`, exec'd by the batch script, so it is
/// the process Slurm's `B:` signals reach): runs `train` on `dir` as its child (resuming when the
/// folder holds a whole checkpoint), output appended to `dir/train.log`, SIGUSR1 / SIGTERM /
/// SIGINT passed on; after an interruption, requeues its own array task. Returns the exit status.
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
    let mut log = job.open_log().map_err(anyhow::Error::msg)?;
    let _ = writeln!(log, "==== {who}, restart {restarts} (at most {max_requeues}), on {host}");
    let note = |log: &mut File, msg: &str| {
        println!("{msg}");
        let _ = writeln!(log, "==== {msg}");
    };
    let err_log = log.try_clone().with_context(|| format!("opening {}", job.log_path().display()))?;
    let out_log = log.try_clone().with_context(|| format!("opening {}", job.log_path().display()))?;
    let mut child = job
        .command()
        .stdin(Stdio::null())
        .stdout(out_log)
        .stderr(err_log)
        .spawn()
        .with_context(|| format!("starting {}", job.command_line()))?;
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
    let interrupted = sig.is_some_and(|s| status.code() == Some(130) || status.signal() == Some(s));
    let Some(sig) = sig.filter(|_| interrupted) else {
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
    let Some(task_id) = task_id else {
        note(&mut log, &format!("stopped by {name}: checkpointed; not under Slurm, so not requeued"));
        return Ok(130);
    };
    // A TERM or INT while Slurm ends the job (scancel, the time limit itself) is no request to
    // go on: the job stays cancelled, the checkpoint waits for the next sweep.
    if sig != signal_hook::consts::SIGUSR1 {
        let state = own_state(&task_id);
        if state.as_deref() != Some("RUNNING") {
            note(
                &mut log,
                &format!(
                    "stopped by {name} as Slurm ends the job ({}): checkpointed, not requeued; the next sweep resumes \
                     the run",
                    state.unwrap_or_else(|| "state unknown".into())
                ),
            );
            return Ok(130);
        }
    }
    if restarts >= max_requeues {
        note(
            &mut log,
            &format!(
                "stopped by {name} after {restarts} requeues (the cap, max_requeues {max_requeues}): this run can never \
                 fit its time limit; it checkpointed at iteration {}: give it a longer --time and run the sweep \
                 again, which resumes it",
                last_iteration(dir).map_or("?".into(), |i| i.to_string())
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
                    "stopped by {name}: checkpointed at iteration {}; requeued Slurm job {task_id} (requeue {} of at \
                     most {max_requeues}); it resumes from the checkpoint",
                    last_iteration(dir).map_or("?".into(), |i| i.to_string()),
                    restarts + 1
                ),
            );
            Ok(0)
        }
        Ok(o) => {
            note(
                &mut log,
                &format!(
                    "stopped by {name}: checkpointed, but `scontrol requeue {task_id}` failed ({}): {}; the next sweep \
                     resumes the run",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            );
            Ok(130)
        }
        Err(e) => {
            note(&mut log, &format!("stopped by {name}: checkpointed, but scontrol could not be run ({e}); the next sweep resumes the run"));
            Ok(130)
        }
    }
}

fn nonzero(sig: usize) -> Option<i32> {
    (sig != 0).then_some(sig as i32)
}

/// This job's JobState (`RUNNING`, `COMPLETING` while Slurm ends it).
fn own_state(task_id: &str) -> Option<String> {
    let out = Command::new("scontrol").args(["-o", "show", "job", task_id]).stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    fields(line).get("JobState").map(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_limits_in_slurm_formats() {
        assert_eq!(time_limit_seconds("90").unwrap(), Some(5400));
        assert_eq!(time_limit_seconds("10:30").unwrap(), Some(630));
        assert_eq!(time_limit_seconds("01:00:00").unwrap(), Some(3600));
        assert_eq!(time_limit_seconds("2-12").unwrap(), Some(2 * 86400 + 12 * 3600));
        assert_eq!(time_limit_seconds("1-00:30").unwrap(), Some(86400 + 1800));
        assert_eq!(time_limit_seconds("1-00:00:10").unwrap(), Some(86410));
        assert_eq!(time_limit_seconds("UNLIMITED").unwrap(), None);
        for bad in ["", "2h", "1:2:3:4", "-5", "1-", "0"] {
            assert!(time_limit_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn array_records_expand_to_their_tasks() {
        let text = "JobId=7 ArrayJobId=5 ArrayTaskId=2-3%2 ArrayTaskThrottle=2 JobName=x JobState=PENDING \
                    Reason=JobArrayTaskLimit Dependency=(null) Restarts=0 ExitCode=0:0 Power= \n\
                    JobId=6 ArrayJobId=5 ArrayTaskId=1 JobState=FAILED Reason=NonZeroExitCode Restarts=1 ExitCode=3:0 \n\
                    JobId=5 ArrayJobId=5 ArrayTaskId=0 JobState=CANCELLED Reason=None ExitCode=0:15 \n";
        let tasks = parse_tasks(text);
        assert_eq!(tasks.iter().map(|t| t.index).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!((tasks[0].phase(), tasks[0].exit()), (Phase::Cancelled, "killed by signal 15".to_string()));
        assert_eq!(
            (tasks[1].phase(), tasks[1].exit(), tasks[1].restarts),
            (Phase::Failed, "exit code 3 (diverged)".into(), 1)
        );
        assert_eq!((tasks[3].phase(), tasks[3].reason.as_str()), (Phase::Pending, "JobArrayTaskLimit"));
        assert!(tasks[2].active() && !tasks[1].active());
        assert_eq!(expand_indices("[0,4-6%3]"), [0, 4, 5, 6]);
        let t =
            |s: &str| Task { index: 0, state: s.into(), reason: String::new(), exit_code: "0:0".into(), restarts: 0 };
        assert_eq!(t("COMPLETING").phase(), Phase::Running);
        assert_eq!(t("TIMEOUT").phase(), Phase::Failed);
        assert_eq!(t("COMPLETED").phase(), Phase::Completed);
    }

    fn spec_with(slurm: &str) -> Spec {
        let text = format!(
            r#"{{"name": "t", "transfers": [{{"source": "a", "target": "b", "lambdas": [0]}}], "seeds": [1],
               "slurm": {slurm}}}"#
        );
        crate::experiment::spec::parse(&text, Path::new("exp/t.json")).unwrap()
    }

    #[test]
    fn flags_override_the_spec_and_bad_values_are_named() {
        let spec =
            spec_with(r#"{"partition": "cpu", "time": "01:00:00", "max_parallel": 4, "sbatch_args": ["--exclusive"]}"#);
        let flags = SlurmFlags {
            partition: Some("gpu".into()),
            gpus_per_run: Some(1),
            sbatch_args: vec!["--nice=5".into()],
            ..Default::default()
        };
        let s = Settings::resolve(&spec, &flags).unwrap();
        assert_eq!(
            (s.partition.as_deref(), s.time.as_deref(), s.max_parallel, s.gpus_per_run),
            (Some("gpu"), Some("01:00:00"), Some(4), 1)
        );
        let args = s.sbatch_args("deep-coral-t", 6, Path::new("/r/t/slurm"), Path::new("/w"));
        for a in [
            "--array=0-5%4",
            "--output=/r/t/slurm/%A_%a.out",
            "--open-mode=append",
            "--requeue",
            "--signal=B:USR1@120",
            "--chdir=/w",
            "--partition=gpu",
            "--time=01:00:00",
            "--gres=gpu:1",
            "--exclusive",
            "--nice=5",
        ] {
            assert!(args.contains(&a.to_string()), "{a} in {args:?}");
        }
        let e = format!(
            "{:#}",
            Settings::resolve(&spec_with(r#"{"time": "2 hours"}"#), &SlurmFlags::default()).unwrap_err()
        );
        assert!(e.contains("`slurm.time` in spec exp/t.json") && e.contains("2 hours"), "{e}");
        let e = format!(
            "{:#}",
            Settings::resolve(&spec, &SlurmFlags { time: Some("2h".into()), ..Default::default() }).unwrap_err()
        );
        assert!(e.contains("--time") && e.contains("2h"), "{e}");
        let e = format!(
            "{:#}",
            Settings::resolve(&spec_with(r#"{"max_parallel": 0}"#), &SlurmFlags::default()).unwrap_err()
        );
        assert!(e.contains("`slurm.max_parallel`"), "{e}");
        let e = format!(
            "{:#}",
            Settings::resolve(&spec_with(r#"{"sbatch_args": ["--array=0-3"]}"#), &SlurmFlags::default()).unwrap_err()
        );
        assert!(e.contains("--array"), "{e}");
        let e =
            format!("{:#}", Settings::resolve(&spec_with(r#"{"time": "2:00"}"#), &SlurmFlags::default()).unwrap_err());
        assert!(e.contains("signal_seconds"), "{e}");
    }

    #[test]
    fn the_record_keeps_each_runs_latest_submission() {
        let sub = |job: &str, runs: &[&str]| Submission {
            job_id: job.into(),
            job_name: "n".into(),
            submitted_unix: 0,
            runs: runs.iter().map(PathBuf::from).collect(),
            sbatch: Vec::new(),
        };
        let record = Record { submissions: vec![sub("5", &["/a", "/b", "/c"]), sub("9", &["/b"])] };
        let latest = record.latest();
        assert_eq!(latest[Path::new("/a")], ("5".to_string(), 0));
        assert_eq!(latest[Path::new("/b")], ("9".to_string(), 0));
        assert_eq!(latest[Path::new("/c")], ("5".to_string(), 2));
    }
}
