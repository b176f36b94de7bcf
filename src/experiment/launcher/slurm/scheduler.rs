//! The Slurm client and where a run stands: the record of what an experiment's sweeps
//! submitted (`<experiment>/slurm/submissions.json`), the tasks as `scontrol -o show job` shows
//! them, `sacct` for a task the controller has forgotten, and a run's [`Standing`] from its
//! folder and its task together.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::settings::Settings;
use crate::experiment::run_state::RunState;
use crate::files::write_atomic;
use crate::train::metrics::Status;

/// The folder of the experiment that holds the record and the task outputs.
pub const FOLDER: &str = "slurm";
/// The record of what the sweeps of one experiment submitted.
pub const RECORD: &str = "submissions.json";

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
    /// The Slurm flags the array was submitted with (on top of the spec's `slurm` block): what
    /// the next submission reuses unless it is given flags of its own.
    #[serde(default, skip_serializing_if = "Settings::is_empty")]
    pub flags: Settings,
}

impl Record {
    /// `<experiment>/slurm/submissions.json`.
    pub fn path(exp_dir: &Path) -> PathBuf {
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

    pub fn write(&self, exp_dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        write_atomic(&Record::path(exp_dir), text.as_bytes())
    }

    /// Where each run was submitted last: run folder -> (job id, array index).
    pub fn latest(&self) -> BTreeMap<PathBuf, (String, usize)> {
        let mut map = BTreeMap::new();
        for s in &self.submissions {
            for (i, dir) in s.runs.iter().enumerate() {
                map.insert(dir.clone(), (s.job_id.clone(), i));
            }
        }
        map
    }

    /// The job ids, in submission order.
    pub fn jobs(&self) -> Vec<&str> {
        self.submissions.iter().map(|s| s.job_id.as_str()).collect()
    }

    /// The flags a new submission uses: `given` when any were given, else those of the latest
    /// submission; with a sentence saying which, when there is anything to say.
    pub fn flags_for(&self, given: &Settings) -> (Settings, Option<String>) {
        let last = self.submissions.last();
        match last {
            Some(last) if given.is_empty() && !last.flags.is_empty() => (
                last.flags.clone(),
                Some(format!(
                    "Slurm settings: those Slurm job {} was submitted with ({}); give Slurm flags to change them",
                    last.job_id,
                    last.flags.as_flags().join(" ")
                )),
            ),
            Some(last) if !given.is_empty() && last.flags != *given => (
                given.clone(),
                Some(format!(
                    "Slurm settings: the command line's ({}), not those of Slurm job {} ({})",
                    given.as_flags().join(" "),
                    last.job_id,
                    if last.flags.is_empty() { "none".to_string() } else { last.flags.as_flags().join(" ") }
                )),
            ),
            _ => (given.clone(), None),
        }
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
        phase_of(&self.state)
    }

    /// Pending or running: the cluster still has it.
    pub fn active(&self) -> bool {
        matches!(self.phase(), Phase::Pending | Phase::Running)
    }

    /// `exit code 1`, `exit code 3 (diverged)`, `killed by signal 9`.
    pub fn exit(&self) -> String {
        describe_exit_code(&self.exit_code)
    }
}

/// A Slurm job state (`RUNNING`, `CANCELLED+`, `NODE_FAIL`) in the terms a user asks about.
fn phase_of(state: &str) -> Phase {
    match state.trim_end_matches('+') {
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "SUSPENDED" | "RESV_DEL_HOLD" | "SPECIAL_EXIT" => {
            Phase::Pending
        }
        "RUNNING" | "CONFIGURING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" | "RESIZING" | "STOPPED" => Phase::Running,
        "COMPLETED" => Phase::Completed,
        s if s.starts_with("CANCELLED") => Phase::Cancelled,
        _ => Phase::Failed,
    }
}

/// Slurm's `code:signal` as words: `exit code 1`, `exit code 3 (diverged)`, `killed by signal 9`.
fn describe_exit_code(exit_code: &str) -> String {
    let (code, sig) = exit_code.split_once(':').unwrap_or((exit_code, "0"));
    if sig != "0" {
        format!("killed by signal {sig}")
    } else {
        format!("exit code {code}{}", exit_meaning(code.parse().unwrap_or(-1)))
    }
}

/// What `deep-coral train`'s exit code says, after the code: ` (diverged)`, ` (interrupted)`.
pub fn exit_meaning(code: i32) -> String {
    Status::of_exit_code(code).filter(|s| *s != Status::Done).map_or(String::new(), |s| format!(" ({})", s.name()))
}

/// The fields of one `scontrol -o` line.
pub fn fields(line: &str) -> BTreeMap<&str, &str> {
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
pub fn client(name: &str) -> Result<PathBuf> {
    find_on_path(name).with_context(|| {
        format!(
            "{name} not found on PATH ({}): --launcher slurm, --status, --wait and --cancel use Slurm's client \
             commands; run the sweep on a login node of the cluster, or put Slurm's bin folder on PATH",
            std::env::var("PATH").unwrap_or_default()
        )
    })
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
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

/// How the accounting database says task `id` (`12_3`) ended, for a task the controller has
/// forgotten: `COMPLETED, exit code 0`, `FAILED, exit code 1`; or why it cannot say (no
/// `sacct`, accounting disabled, the task not in it).
pub fn accounting(id: &str) -> String {
    let Some(sacct) = find_on_path("sacct") else {
        return "no accounting to ask how its task ended (sacct is not on PATH)".into();
    };
    let out =
        Command::new(sacct).args(["-n", "-P", "-X", "-j", id, "-o", "State,ExitCode"]).stdin(Stdio::null()).output();
    let out = match out {
        Ok(out) => out,
        Err(e) => return format!("no accounting to ask how its task ended (sacct: {e})"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match stdout.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) if out.status.success() => {
            let (state, code) = line.split_once('|').unwrap_or((line, "0:0"));
            format!("sacct: its task ended {state}, {}", describe_exit_code(code.trim()))
        }
        _ if !stderr.trim().is_empty() => {
            format!("no accounting to ask how its task ended (sacct: {})", stderr.trim().lines().next().unwrap_or(""))
        }
        _ => format!("no accounting to ask how its task ended (sacct knows no task {id})"),
    }
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

    pub fn active(&self) -> bool {
        self.task.as_ref().is_some_and(Task::active)
    }
}

/// The latest placement of every run of the record, the scheduler asked once per job.
pub fn placements(exp_dir: &Path, record: &Record) -> Result<BTreeMap<PathBuf, Placement>> {
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

/// The runs of `dirs` that a task of the record has pending or running: `Slurm job 12_3: dir`.
pub fn on_cluster(exp_dir: &Path, dirs: &[PathBuf]) -> Result<Vec<String>> {
    let record = Record::read(exp_dir)?;
    if record.submissions.is_empty() || find_on_path("scontrol").is_none() {
        return Ok(Vec::new());
    }
    let places = placements(exp_dir, &record)?;
    Ok(dirs
        .iter()
        .filter_map(|d| places.get(&absolute(d)).filter(|p| p.active()).map(|p| (d, p)))
        .map(|(d, p)| format!("  {} (Slurm job {})", d.display(), p.id()))
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
    /// Submitted, not done, and its task is no longer on the cluster: the controller forgot it
    /// (`MinJobAge` after it ended) before anyone saw how it ended; what accounting says of it.
    Lost(String),
    /// Its folder holds an unfinished run that was never submitted (a local sweep's).
    Incomplete,
    /// Not started, not submitted.
    New,
}

impl Standing {
    pub fn of(dir: &Path, place: Option<&Placement>) -> Standing {
        let disk = RunState::read(dir);
        if disk == RunState::Done {
            return Standing::Done;
        }
        match place {
            Some(p) => match &p.task {
                Some(t) => match t.phase() {
                    Phase::Pending => Standing::Pending(t.reason.clone()),
                    Phase::Running => Standing::Running(last_iteration(dir)),
                    Phase::Cancelled => Standing::Cancelled,
                    Phase::Failed => Standing::Failed(format!("{} ({})", t.exit(), t.state)),
                    Phase::Completed => Standing::Failed("exit code 0 but its run.json does not say \"done\"".into()),
                },
                None => Standing::Lost(accounting(&p.id())),
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
            Standing::Lost(_) => "lost",
            Standing::Incomplete => "incomplete",
            Standing::New => "new",
        }
    }

    /// Every name, in the order the tallies give them.
    pub const NAMES: [&'static str; 8] =
        ["done", "running", "pending", "failed", "cancelled", "lost", "incomplete", "new"];

    pub fn on_cluster(&self) -> bool {
        matches!(self, Standing::Running(_) | Standing::Pending(_))
    }

    /// Ended without the run done: failed, cancelled or lost.
    pub fn failed(&self) -> bool {
        matches!(self, Standing::Failed(_) | Standing::Cancelled | Standing::Lost(_))
    }

    /// The details, as --status and the failure messages give them.
    pub fn describe(&self) -> String {
        match self {
            Standing::Done => "done".into(),
            Standing::Running(Some(i)) => format!("iteration {i}"),
            Standing::Running(None) => "starting".into(),
            Standing::Pending(reason) => format!("reason {reason}"),
            Standing::Failed(why) => why.clone(),
            Standing::Cancelled => "cancelled".into(),
            Standing::Lost(how) => format!("not finished and no longer on the cluster; {how}"),
            Standing::Incomplete => "not finished, never submitted".into(),
            Standing::New => "not started".into(),
        }
    }
}

/// The iteration of the last row of `dir/metrics.csv`.
pub fn last_iteration(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    line.split(',').next()?.parse().ok()
}

/// What the run's run.json says: `run.json "running"`, or `no readable run.json`.
pub fn recorded_status(dir: &Path) -> String {
    crate::experiment::run_state::recorded_status(dir)
        .map_or_else(|| "no readable run.json".to_string(), |s| format!("run.json \"{}\"", s.name()))
}

/// `std::path::absolute`, falling back to the path itself.
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// How often `--wait` asks the scheduler: 5 s, or `DEEP_CORAL_SLURM_POLL_SECONDS`.
pub fn poll_interval() -> Duration {
    std::env::var("DEEP_CORAL_SLURM_POLL_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(5), Duration::from_secs_f64)
}

pub fn run_with_stdin(program: &Path, args: &[String], stdin: &str) -> Result<std::process::Output> {
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

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(phase_of("CANCELLED by 0"), Phase::Cancelled);
        assert_eq!(describe_exit_code("130:0"), "exit code 130 (interrupted)");
    }

    fn sub(job: &str, runs: &[&str], flags: Settings) -> Submission {
        Submission {
            job_id: job.into(),
            job_name: "n".into(),
            submitted_unix: 0,
            runs: runs.iter().map(PathBuf::from).collect(),
            sbatch: Vec::new(),
            flags,
        }
    }

    #[test]
    fn the_record_keeps_each_runs_latest_submission() {
        let record = Record {
            submissions: vec![
                sub("5", &["/a", "/b", "/c"], Settings::default()),
                sub("9", &["/b"], Settings::default()),
            ],
        };
        let latest = record.latest();
        assert_eq!(latest[Path::new("/a")], ("5".to_string(), 0));
        assert_eq!(latest[Path::new("/b")], ("9".to_string(), 0));
        assert_eq!(latest[Path::new("/c")], ("5".to_string(), 2));
        assert_eq!(record.jobs(), ["5", "9"]);
    }

    #[test]
    fn a_submission_reuses_the_last_ones_flags_unless_given_new_ones_and_says_which() {
        let mem = Settings { mem: Some("500M".into()), max_parallel: Some(1), ..Default::default() };
        let none = Settings::default();
        assert_eq!(Record::default().flags_for(&none), (none.clone(), None));
        let record = Record { submissions: vec![sub("5", &["/a"], mem.clone())] };
        let (flags, said) = record.flags_for(&none);
        assert_eq!(flags, mem);
        assert!(said.unwrap().contains("those Slurm job 5 was submitted with (--max-parallel 1 --mem 500M)"));
        let time = Settings { time: Some("00:05:00".into()), ..Default::default() };
        let (flags, said) = record.flags_for(&time);
        assert_eq!(flags, time);
        assert!(said.unwrap().contains("the command line's (--time 00:05:00), not those of Slurm job 5"));
        assert_eq!(record.flags_for(&mem), (mem.clone(), None));
        // Records from before flags were recorded read as submissions without flags.
        let old =
            r#"{"submissions": [{"job_id": "3", "job_name": "x", "submitted_unix": 1, "runs": [], "sbatch": []}]}"#;
        let old: Record = serde_json::from_str(old).unwrap();
        assert!(old.submissions[0].flags.is_empty());
        assert!(!serde_json::to_string(&old).unwrap().contains("flags"));
    }
}
