//! Watching (`sweep --status`), waiting (`sweep --wait`) and cancelling (`sweep --cancel`) an
//! experiment's job arrays. All three read the record and ask `scontrol` where the tasks stand;
//! `sacct` is asked only about a task the controller has forgotten.
//!
//! `--status` and `--wait` end with one tally of the whole grid (done, running, pending, failed,
//! cancelled, lost, incomplete, new) and exit 0 only when every run is done: 1 while any run
//! failed, was cancelled or is lost, [`EXIT_UNFINISHED`] while runs are still to finish.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use super::scheduler::{absolute, client, placements, poll_interval, recorded_status, Placement, Record, Standing};
use super::Commands;
use crate::experiment::launcher::{signal_name, Stop};
use crate::experiment::progress::{progress_bar, Progress};
use crate::experiment::spec::Spec;
pub use crate::train::metrics::EXIT_UNFINISHED;

/// `--wait` stopped by a signal (Ctrl-C): the jobs go on. `deep-coral sweep` exits 128 + signal.
#[derive(Debug)]
pub struct WaitStopped {
    pub signal: i32,
    pub message: String,
}

impl std::fmt::Display for WaitStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WaitStopped {}

/// How many runs of a grid stand where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(pub BTreeMap<&'static str, usize>);

impl Tally {
    fn of<'a>(standings: impl IntoIterator<Item = &'a Standing>) -> Tally {
        let mut t = Tally::default();
        for s in standings {
            *t.0.entry(s.name()).or_default() += 1;
        }
        t
    }

    fn get(&self, name: &str) -> usize {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// `exp: 6 runs: 4 done, 2 failed (Slurm jobs 12, 15)`.
    pub fn line(&self, name: &str, record: &Record) -> String {
        let total: usize = self.0.values().sum();
        let parts: Vec<String> =
            Standing::NAMES.iter().filter(|k| self.get(k) > 0).map(|k| format!("{} {k}", self.get(k))).collect();
        let jobs = record.jobs();
        let jobs = if jobs.is_empty() {
            "no Slurm submissions recorded".to_string()
        } else {
            format!("Slurm jobs {}", jobs.join(", "))
        };
        format!("{name}: {total} runs: {} ({jobs})", parts.join(", "))
    }

    /// 0 when every run is done; 1 while any failed, was cancelled or is lost; else (runs still
    /// pending, running, incomplete or new) [`EXIT_UNFINISHED`].
    pub fn exit_code(&self) -> u8 {
        let total: usize = self.0.values().sum();
        if ["failed", "cancelled", "lost"].iter().any(|k| self.get(k) > 0) {
            1
        } else if self.get("done") == total {
            0
        } else {
            EXIT_UNFINISHED
        }
    }
}

/// Every run of `spec`'s grid with where it stands, from the run folders and the scheduler.
struct Grid {
    exp_dir: PathBuf,
    record: Record,
    places: BTreeMap<PathBuf, Placement>,
    /// (run folder as the spec writes it, absolute folder, standing).
    runs: Vec<(PathBuf, PathBuf, Standing)>,
}

impl Grid {
    fn read(spec: &Spec, results_root: &Path) -> Result<Grid> {
        let exp_dir = absolute(&results_root.join(&spec.name));
        let record = Record::read(&exp_dir)?;
        let places = if record.submissions.is_empty() { BTreeMap::new() } else { placements(&exp_dir, &record)? };
        let runs = spec
            .runs(results_root)
            .into_iter()
            .map(|r| {
                let abs = absolute(&r.dir);
                let s = Standing::of(&abs, places.get(&abs));
                (r.dir, abs, s)
            })
            .collect();
        Ok(Grid { exp_dir, record, places, runs })
    }

    fn tally(&self) -> Tally {
        Tally::of(self.runs.iter().map(|(_, _, s)| s))
    }

    /// One run's line after its state: details, Slurm task, run.json state and logs.
    fn details(&self, dir: &Path, abs: &Path, s: &Standing) -> String {
        let place = self.places.get(abs);
        let task = place.map_or(String::new(), |p| format!(" (Slurm job {})", p.id()));
        let logs = || {
            format!(
                "; {}; log: {}{}",
                recorded_status(abs),
                dir.join("train.log").display(),
                place.map_or(String::new(), |p| format!("; task output: {}", p.output.display()))
            )
        };
        match s {
            Standing::Done | Standing::New => String::new(),
            Standing::Running(_) | Standing::Pending(_) | Standing::Cancelled => format!("{}{task}", s.describe()),
            Standing::Failed(_) | Standing::Lost(_) => format!("{}{task}{}", s.describe(), logs()),
            Standing::Incomplete => format!("{}{}", s.describe(), logs()),
        }
    }

    /// The runs not done, one line each with where they stand and their logs.
    fn unfinished(&self) -> Vec<String> {
        self.runs
            .iter()
            .filter(|(_, _, s)| *s != Standing::Done)
            .map(|(dir, abs, s)| format!("  {} {} ({})", s.name(), dir.display(), self.details(dir, abs, s)))
            .collect()
    }
}

/// `sweep --status`: one line per run (done / running with its last logged iteration /
/// pending / failed with exit code, run.json state and logs / cancelled / lost / incomplete /
/// new), then the tally. Returns the tally ([`Tally::exit_code`] is the command's exit code).
pub fn print_status(spec: &Spec, results_root: &Path) -> Result<Tally> {
    let grid = Grid::read(spec, results_root)?;
    for (dir, abs, s) in &grid.runs {
        let details = grid.details(dir, abs, s);
        let details = if details.is_empty() { details } else { format!("  {details}") };
        println!("{:<10} {}{details}", s.name(), dir.display());
    }
    let tally = grid.tally();
    println!("{}", tally.line(&spec.name, &grid.record));
    Ok(tally)
}

/// `sweep --wait` (also after `--launcher slurm` submitted): waits for the grid's runs that are
/// on the cluster, then prints the tally of the whole grid and fails naming every run that is
/// not done (failed, cancelled, lost, or never submitted), with its run.json state and logs.
pub fn wait(spec: &Spec, results_root: &Path, commands: &Commands) -> Result<Tally> {
    // Caught from the start: a Ctrl-C while the grid is read stops the waiting all the same.
    let stop = Stop::never();
    let ids: Vec<_> = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
        .into_iter()
        .filter_map(|sig| signal_hook::flag::register_usize(sig, stop.flag(), sig as usize).ok())
        .collect();
    let waited = wait_caught(spec, results_root, commands, &stop);
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    waited
}

fn wait_caught(spec: &Spec, results_root: &Path, commands: &Commands, stop: &Stop) -> Result<Tally> {
    let grid = Grid::read(spec, results_root)?;
    if grid.record.submissions.is_empty() {
        bail!(
            "nothing to wait for: no Slurm submissions recorded for {} (in {}); submit with `{}`",
            spec.name,
            Record::path(&grid.exp_dir).display(),
            commands.submit(&Default::default())
        );
    }
    let waited: Vec<PathBuf> = grid
        .runs
        .iter()
        .filter(|(_, abs, s)| s.on_cluster() || grid.places.get(abs).is_some_and(Placement::active))
        .map(|(_, abs, _)| abs.clone())
        .collect();
    let bar = progress_bar(grid.runs.len(), grid.runs.len() - waited.len(), true);
    let waiting = Waiting { exp_dir: &grid.exp_dir, record: &grid.record, commands, poll: poll_interval() };
    let ended = waiting.wait_for(&waited, &bar, stop);
    bar.finish_and_clear();
    ended?;

    let grid = Grid::read(spec, results_root)?;
    let tally = grid.tally();
    eprintln!("{}", tally.line(&spec.name, &grid.record));
    let left = grid.unfinished();
    if !left.is_empty() {
        let flags = &grid.record.submissions.last().map(|s| s.flags.clone()).unwrap_or_default();
        bail!(
            "{} of {} runs of {} did not finish (`{}` submits them again):\n{}",
            left.len(),
            grid.runs.len(),
            spec.name,
            commands.submit(flags),
            left.join("\n")
        );
    }
    Ok(tally)
}

/// What `wait_for` needs to know of the sweep.
struct Waiting<'a> {
    exp_dir: &'a Path,
    record: &'a Record,
    commands: &'a Commands,
    poll: Duration,
}

impl Waiting<'_> {
    /// Polls until none of `dirs` is on the cluster, `progress.inc(1)` as each ends and a line
    /// for it; when stderr is no terminal (a log, CI), also a line for each change of state.
    fn wait_for(&self, dirs: &[PathBuf], progress: &ProgressBar, stop: &Stop) -> Result<()> {
        let mut seen: BTreeMap<PathBuf, &'static str> = BTreeMap::new();
        let mut ended: BTreeSet<PathBuf> = BTreeSet::new();
        let lines = !std::io::stderr().is_terminal();
        let mut tracker = Progress::default();
        let mut errors = 0;
        loop {
            match placements(self.exp_dir, self.record) {
                Ok(places) => {
                    errors = 0;
                    let mut running = Vec::new();
                    let open: Vec<&PathBuf> = dirs.iter().filter(|d| !ended.contains(*d)).collect();
                    for dir in open {
                        let place = places.get(dir);
                        let standing = Standing::of(dir, place);
                        let task = place.map_or(String::new(), |p| format!(" (Slurm job {})", p.id()));
                        // A run done on disk whose task has not exited yet is still the cluster's.
                        if standing.on_cluster() || place.is_some_and(Placement::active) {
                            if lines && seen.get(dir) != Some(&standing.name()) {
                                eprintln!("{:<10} {}{task}", standing.name(), dir.display());
                            }
                            seen.insert(dir.clone(), standing.name());
                            if matches!(standing, Standing::Running(_)) {
                                running.push(dir.clone());
                            }
                            continue;
                        }
                        progress.suspend(|| match &standing {
                            Standing::Done => eprintln!("done       {}", dir.display()),
                            s => eprintln!(
                                "{:<10} {} ({}{task}); {}; log: {}{}",
                                s.name().to_uppercase(),
                                dir.display(),
                                s.describe(),
                                recorded_status(dir),
                                dir.join("train.log").display(),
                                place.map_or(String::new(), |p| format!("; task output: {}", p.output.display()))
                            ),
                        });
                        progress.inc(1);
                        ended.insert(dir.clone());
                        tracker.ended(dir);
                    }
                    let waiting: Vec<PathBuf> =
                        dirs.iter().filter(|d| !ended.contains(*d) && !running.contains(d)).cloned().collect();
                    progress.set_message(tracker.message(&running, &waiting));
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
                return Ok(());
            }
            let until = Instant::now() + self.poll;
            while Instant::now() < until {
                if let Some(sig) = stop.signal() {
                    progress.finish_and_clear();
                    return Err(WaitStopped {
                        signal: sig,
                        message: format!(
                            "{}: stopped waiting; the Slurm jobs go on ({} of {} runs still pending or running, job {}): \
                             `{}` to watch them, `{}` to wait again, `{}` to cancel them",
                            signal_name(sig),
                            dirs.len() - ended.len(),
                            dirs.len(),
                            self.record.jobs().join(", "),
                            self.commands.status(),
                            self.commands.wait(),
                            self.commands.cancel()
                        ),
                    }
                    .into());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `sweep --cancel`: `scancel` of this experiment's own job arrays that still have runs pending
/// or running (no other job is touched), then waits for them to leave the cluster. A running
/// run gets SIGTERM: it checkpoints and its run.json says "interrupted" (never "done"); its
/// task does not requeue itself for a cancel.
pub fn cancel(spec: &Spec, results_root: &Path, commands: &Commands) -> Result<()> {
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
    let grid = Grid::read(spec, results_root)?;
    let done = grid.tally().get("done");
    let flags = record.submissions.last().map(|s| s.flags.clone()).unwrap_or_default();
    eprintln!(
        "{}: {} runs: {done} done, {} not finished; runs stopped part-way kept their checkpoint (run.json \
         \"interrupted\"): `{}` submits them again and they resume",
        spec.name,
        grid.runs.len(),
        grid.runs.len() - done,
        commands.submit(&flags)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_exits_zero_only_when_every_run_is_done() {
        let t = |s: &[Standing]| Tally::of(s);
        assert_eq!(t(&[Standing::Done, Standing::Done]).exit_code(), 0);
        assert_eq!(t(&[Standing::Done, Standing::Lost("x".into())]).exit_code(), 1);
        assert_eq!(t(&[Standing::Done, Standing::Cancelled, Standing::New]).exit_code(), 1);
        assert_eq!(t(&[Standing::Done, Standing::Running(None)]).exit_code(), EXIT_UNFINISHED);
        assert_eq!(t(&[Standing::Incomplete]).exit_code(), EXIT_UNFINISHED);
        let tally = t(&[Standing::Done, Standing::Failed("x".into()), Standing::Done, Standing::New]);
        assert_eq!(
            tally.line("exp", &Record::default()),
            "exp: 4 runs: 2 done, 1 failed, 1 new (no Slurm submissions recorded)"
        );
    }
}
