//! `--launcher slurm`: a sweep's pending runs as one Slurm job array, one task per run.
//!
//! The sweep does what it does for every launcher (reads the run folders, writes `spec.json` and
//! each pending run's `config.json`, builds each [`Job`]); this launcher then
//! - leaves out the runs that an earlier submission of this experiment still has pending or
//!   running on the cluster (the record `<experiment>/slurm/submissions.json` maps every
//!   submitted array index to its run folder; `scontrol -o show job` says where each task
//!   stands), and says which runs it submits again because their task failed, was cancelled or
//!   was lost;
//! - submits the rest with one `sbatch --array=0-(n-1)[%K]`, the batch script on sbatch's
//!   stdin (nothing is written before sbatch accepted the job: the record is written after,
//!   with the Slurm flags the array was submitted with, which the next submission reuses unless
//!   it is given its own).
//!
//! It refuses a grid with runs in use by a process that is not one of its tasks (a local sweep);
//! the local sweep refuses a grid with tasks on the cluster in turn (`sweep::sweep_spec`).
//!
//! The files, one job each:
//! - `settings.rs`: [`Settings`], the spec's `slurm` block and the sweep's flags in one type;
//! - `scheduler.rs`: the record, `scontrol` / `sacct`, and where a run stands ([`Standing`]);
//! - `status.rs`: `sweep --status`, `--wait` and `--cancel`;
//! - `task.rs`: `deep-coral sweep-task DIR`, what runs on the node: it decides at start whether
//!   the run resumes, runs `train` as its child with the output appended to `DIR/train.log`,
//!   passes SIGUSR1, SIGTERM and SIGINT on to it, and requeues itself after a warning
//!   (`sbatch --signal=B:USR1@N`) unless it was requeued `max_requeues` times already.
//!
//! Task output (the task's own messages, Slurm's) goes to `<experiment>/slurm/<job>_<index>.out`;
//! a link beside it, `<job>_<index>.<run>.out` (`12_3.src_tgt-lambda_1-seed_1.out`), names the run.

mod scheduler;
pub mod settings;
mod status;
mod task;

pub use scheduler::{on_cluster, Placement, Record, Standing, Submission, Task, FOLDER, RECORD};
pub use settings::{time_limit_seconds, GpuOption, Settings, DEFAULT_MAX_REQUEUES, DEFAULT_SIGNAL_SECONDS};
pub use status::{cancel, print_status, wait, Tally, WaitStopped};
pub use task::run_task;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use crate::experiment::launcher::{shell_quote, Failure, Job, Launcher, Stop, Unfinished};
use crate::experiment::run_state::RunState;
use crate::experiment::spec::Spec;
use crate::files::RunLock;
use scheduler::{absolute, client, placements, run_with_stdin, unix_now};

/// The sweep's command line, for the commands the messages suggest, which can be pasted as they
/// are: `deep-coral sweep SPEC --out OUT [--data-root DIR]`, and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    base: String,
}

impl Commands {
    pub fn new(spec_file: &Path, out: &Path, data_root: Option<&Path>) -> Commands {
        let mut base =
            format!("deep-coral sweep {} --out {}", shell_quote(spec_file.as_os_str()), shell_quote(out.as_os_str()));
        if let Some(root) = data_root {
            base += &format!(" --data-root {}", shell_quote(root.as_os_str()));
        }
        Commands { base }
    }

    pub fn status(&self) -> String {
        format!("{} --status", self.base)
    }

    pub fn wait(&self) -> String {
        format!("{} --wait", self.base)
    }

    pub fn cancel(&self) -> String {
        format!("{} --cancel", self.base)
    }

    /// The submission with these Slurm flags.
    pub fn submit(&self, flags: &Settings) -> String {
        let mut line = format!("{} --launcher slurm", self.base);
        for f in flags.as_flags() {
            line += " ";
            line += &f;
        }
        line
    }
}

/// Submits a sweep's pending runs as one Slurm job array.
#[derive(Debug, Clone)]
pub struct Slurm {
    /// `<results>/<experiment>`, absolute.
    exp_dir: PathBuf,
    name: String,
    commands: Commands,
    /// The flags of this submission: the command line's, or the last submission's.
    flags: Settings,
    /// Said when the array is submitted: which flags it uses, if that is worth saying.
    flags_said: Option<String>,
    /// The spec's block with the flags on top, checked.
    settings: Settings,
    dry_run: bool,
}

impl Slurm {
    /// The launcher for `spec`'s grid under `results_root`, with the Slurm flags `given` on the
    /// command line (none: those of the experiment's last submission). Unless `dry_run`, checks
    /// that the submission would be accepted before anything is written: no run is in use by a
    /// process other than a task of this experiment (a local sweep), and, when there is anything
    /// to submit, sbatch and scontrol are on PATH and `sbatch --test-only` takes the settings (it
    /// names an unknown partition, account or QOS, or an option it does not know).
    pub fn new(spec: &Spec, results_root: &Path, given: &Settings, commands: Commands, dry_run: bool) -> Result<Slurm> {
        let exp_dir = absolute(&results_root.join(&spec.name));
        let record = Record::read(&exp_dir)?;
        let (flags, flags_said) = record.flags_for(given);
        let block = spec.slurm.clone().unwrap_or_default();
        let settings = Settings::resolve(&block, &flags, &spec.file())?;
        let slurm = Slurm { exp_dir, name: spec.name.clone(), commands, flags, flags_said, settings, dry_run };
        if dry_run {
            return Ok(slurm);
        }
        let places = if record.submissions.is_empty() { BTreeMap::new() } else { placements(&slurm.exp_dir, &record)? };
        let mut to_submit = 0;
        let mut taken = Vec::new();
        for run in spec.runs(results_root) {
            let dir = absolute(&run.dir);
            let place = places.get(&dir);
            match RunState::read(&dir) {
                RunState::Done => {}
                _ if place.is_some_and(Placement::active) => {}
                RunState::InUse(pid) => taken.push(format!("  {} (in use by process {pid})", run.dir.display())),
                RunState::Incomplete | RunState::New => to_submit += 1,
            }
        }
        if !taken.is_empty() {
            bail!(
                "{} runs of {} are in use by processes that are no Slurm task of this experiment (a local sweep?); \
                 submitting them would collide with it: let it finish or stop it, then submit:\n{}",
                taken.len(),
                spec.name,
                taken.join("\n")
            );
        }
        if to_submit > 0 {
            slurm.preflight()?;
        }
        Ok(slurm)
    }

    fn out_dir(&self) -> PathBuf {
        self.exp_dir.join(FOLDER)
    }

    /// The experiment's name, with anything but `[A-Za-z0-9_.-]` as `_` (scontrol does not
    /// quote its values), so squeue's first characters say whose task it is.
    fn job_name(&self) -> String {
        self.name.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect()
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
            s += &format!(
                "  {i}) run={} label={} ;;\n",
                shell_quote(dir.as_os_str()),
                shell_quote(self.label(dir).as_ref())
            );
        }
        s += "  *) echo \"deep-coral: array task '${SLURM_ARRAY_TASK_ID:-}' is not one of this sweep's\" >&2; exit 2 ;;\n";
        s += "esac\n";
        // The task output's name says the array task; a link beside it says the run.
        s += &format!(
            "task=\"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\"\nln -sfn \"$task.out\" {}/\"$task.$label.out\" 2>/dev/null || true\n",
            shell_quote(self.out_dir().as_os_str())
        );
        s += &format!(
            "exec {} sweep-task --max-requeues {} \"$run\"\n",
            shell_quote(exe.as_os_str()),
            self.settings.max_requeues()
        );
        s
    }

    /// A run folder as one word for file names: `src_tgt-lambda_1-seed_1`.
    fn label(&self, dir: &Path) -> String {
        let rel = dir.strip_prefix(&self.exp_dir).unwrap_or(dir);
        rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("-")
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
            flags: self.flags.clone(),
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

    /// Submits `dirs` under the experiment's submission lock, then writes the record.
    fn submit_recorded(&self, exe: &Path, dirs: &[PathBuf], record: &Record) -> Result<Submission> {
        let out_dir = self.out_dir();
        let created = !out_dir.exists();
        std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
        let submitted = (|| {
            let _lock = RunLock::acquire(&out_dir).context("another sweep of this experiment is submitting")?;
            // Read again under the lock: a sweep that held it may have just submitted.
            if Record::read(&self.exp_dir)? != *record {
                bail!("another sweep of {} submitted runs while this one was looking; run this sweep again", self.name);
            }
            let s = self.submit(exe, dirs)?;
            let mut record = record.clone();
            record.submissions.push(s.clone());
            record.write(&self.exp_dir).with_context(|| {
                format!(
                    "Slurm job {} was submitted but its record could not be written; scancel {} to undo",
                    s.job_id, s.job_id
                )
            })?;
            Ok(s)
        })();
        if submitted.is_err() && created {
            std::fs::remove_file(out_dir.join(RunLock::FILE)).ok();
            std::fs::remove_dir(&out_dir).ok();
        }
        submitted
    }
}

impl Launcher for Slurm {
    /// The runs execute on the cluster's nodes, whose cores this machine cannot see.
    fn runs_here(&self) -> bool {
        false
    }

    fn launch(&self, jobs: Vec<Job>, progress: &ProgressBar) -> Result<Vec<Failure>> {
        self.launch_until(jobs, progress, &Stop::never())
    }

    /// Submits the jobs that are not on the cluster already; those are reported as
    /// [`Unfinished::Queued`]. Returns once sbatch has accepted the array (`sweep --wait` waits).
    fn launch_until(&self, jobs: Vec<Job>, progress: &ProgressBar, _stop: &Stop) -> Result<Vec<Failure>> {
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

        // Runs on the cluster are left alone; failed, cancelled and lost ones go again, said so.
        let mut queued: BTreeMap<String, usize> = BTreeMap::new();
        let mut left = Vec::new();
        let mut again = Vec::new();
        let mut submit: Vec<PathBuf> = Vec::new();
        for job in &jobs {
            let dir = absolute(&job.dir);
            let place = places.get(&dir);
            let standing = Standing::of(&dir, place);
            if standing.on_cluster() || place.is_some_and(Placement::active) {
                let p = place.expect("a run on the cluster has a task");
                *queued.entry(p.job_id.clone()).or_default() += 1;
                left.push(job.unfinished(Unfinished::Queued, format!("pending or running in Slurm job {}", p.id())));
                continue;
            }
            match (&standing, job.state) {
                (Standing::Done, _) | (_, RunState::Done) => continue,
                (_, RunState::InUse(pid)) => {
                    say(format!("skipping {}: in use by process {pid}", job.dir.display()));
                    left.push(job.unfinished(Unfinished::InUse(pid), format!("in use by process {pid}")));
                    continue;
                }
                (s, _) if s.failed() => {
                    let p = place.expect("a failed, cancelled or lost run has a task");
                    again.push(format!(
                        "  {} (Slurm job {} {}: {}; task output {})",
                        job.dir.display(),
                        p.id(),
                        s.name(),
                        s.describe(),
                        p.output.display()
                    ));
                }
                _ => {}
            }
            submit.push(dir);
        }
        for (job, n) in &queued {
            say(format!("{n} runs already pending or running in Slurm job {job}: not submitted again"));
        }
        if !again.is_empty() {
            say(format!(
                "submitting again {} runs that failed, were cancelled or were lost:\n{}",
                again.len(),
                again.join("\n")
            ));
        }
        let Some(exe) = jobs.first().map(|j| j.program.clone()).filter(|_| !submit.is_empty()) else {
            if self.dry_run {
                println!("nothing to submit");
            } else {
                say(format!("{}: nothing to submit", self.name));
            }
            return Ok(left);
        };
        if let Some(said) = &self.flags_said {
            say(said.clone());
        }
        if self.dry_run {
            self.print_plan(&exe, &submit)?;
            return Ok(left);
        }
        let s = self.submit_recorded(&exe, &submit, &record)?;
        let throttle = self.settings.max_parallel.map_or(String::new(), |k| format!(", at most {k} at once"));
        let partition = self.settings.partition.as_ref().map_or(String::new(), |p| format!(" on partition {p}"));
        say(format!(
            "submitted {} runs of {} as Slurm job array {}{partition}{throttle}\n  task output: {}/{}_<index>.out; each \
             run's output: <run>/train.log\n  watch: {}\n  wait: {}\n  cancel: {}",
            submit.len(),
            self.name,
            s.job_id,
            self.out_dir().display(),
            s.job_id,
            self.commands.status(),
            self.commands.wait(),
            self.commands.cancel()
        ));
        Ok(left)
    }

    /// The runs' libtorch threads: their CPUs (`--cpus-per-run`, 1 unless set).
    fn threads_per_run(&self) -> Option<usize> {
        Some(self.settings.cpus_per_run.unwrap_or(1) as usize)
    }

    fn executes(&self) -> bool {
        !self.dry_run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_commands_name_the_spec_the_results_and_the_flags() {
        let c = Commands::new(Path::new("exp/tiny.json"), Path::new("results B"), None);
        assert_eq!(c.status(), "deep-coral sweep exp/tiny.json --out 'results B' --status");
        assert_eq!(c.cancel(), "deep-coral sweep exp/tiny.json --out 'results B' --cancel");
        let flags = Settings { mem: Some("500M".into()), time: Some("00:05:00".into()), ..Default::default() };
        assert_eq!(
            c.submit(&flags),
            "deep-coral sweep exp/tiny.json --out 'results B' --launcher slurm --mem 500M --time 00:05:00"
        );
        let c = Commands::new(Path::new("s.json"), Path::new("r"), Some(Path::new("/d")));
        assert_eq!(c.wait(), "deep-coral sweep s.json --out r --data-root /d --wait");
    }
}
