//! The sweep's progress bar (a local sweep's and `sweep --wait`'s): runs ended out of the grid,
//! then each running run's iteration `k/n` (the last row of its metrics.csv, of the iterations
//! its config.json asks for) and an ETA from the runs' own iteration rates: seconds per
//! iteration from the runs that finished (their last row's `elapsed_s` over its iteration),
//! else from the running ones, times the iterations left, shared over the runs that run at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Overall progress: runs ended out of the grid, elapsed time, and the message of [`Progress`].
pub fn progress_bar(total: usize, done_before: usize, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} runs{msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_position(done_before as u64);
    bar.enable_steady_tick(Duration::from_secs(1));
    bar
}

/// Where a run stands, from its folder.
#[derive(Debug, Clone, PartialEq)]
pub struct RunProgress {
    /// The iteration of its last metrics.csv row (0 before the first).
    pub iteration: usize,
    /// Its iterations in all.
    pub iterations: usize,
    /// Its own seconds per iteration so far (`elapsed_s / iteration` of its last row).
    pub secs_per_iteration: Option<f64>,
    /// Seconds since that row was written.
    pub since_row: f64,
}

impl RunProgress {
    /// Reads `dir`'s config.json and metrics.csv; None without a config.
    pub fn read(dir: &Path) -> Option<RunProgress> {
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).ok()?).ok()?;
        let iterations = config.get("iterations")?.as_u64()? as usize;
        let metrics = dir.join("metrics.csv");
        let text = std::fs::read_to_string(&metrics).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().map(|h| h.split(',').collect()).unwrap_or_default();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let last: Vec<&str> = lines.last().map(|l| l.split(',').collect()).unwrap_or_default();
        let value = |name: &str| column(name).and_then(|i| last.get(i)).and_then(|v| v.parse::<f64>().ok());
        let iteration = value("iteration").map_or(0, |i| i as usize);
        let secs_per_iteration = value("elapsed_s").filter(|_| iteration > 0).map(|s| s / iteration as f64);
        let since_row = std::fs::metadata(&metrics)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map_or(0.0, |d| d.as_secs_f64());
        Some(RunProgress { iteration, iterations, secs_per_iteration, since_row })
    }
}

/// The seconds until every run has ended: the running runs' iterations left at their own rate
/// (or `pooled`'s), less the time since their last row, and `waiting` runs of the given
/// iterations at the pooled rate, shared over `parallel` runs at once; never less than the
/// longest running run's time left. `pooled` is the mean seconds per iteration of the runs that
/// finished, else of the running ones. None before any rate is known.
pub fn eta(running: &[RunProgress], waiting: &[usize], finished: &[f64], parallel: usize) -> Option<f64> {
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let own: Vec<f64> = running.iter().filter_map(|r| r.secs_per_iteration).collect();
    let pooled = mean(finished).or_else(|| mean(&own))?;
    let left: Vec<f64> = running
        .iter()
        .map(|r| {
            let rate = r.secs_per_iteration.unwrap_or(pooled);
            (r.iterations.saturating_sub(r.iteration) as f64 * rate - r.since_row).max(0.0)
        })
        .collect();
    let work: f64 = left.iter().sum::<f64>() + waiting.iter().map(|n| *n as f64 * pooled).sum::<f64>();
    let longest = left.iter().copied().fold(0.0, f64::max);
    Some((work / parallel.max(1) as f64).max(longest))
}

/// `1h 02m`, `3m 20s`, `45s`.
pub fn duration_words(secs: f64) -> String {
    let s = secs.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

/// What the bar says of the runs under way, kept between ticks: the rates of the runs that
/// finished.
#[derive(Debug, Default)]
pub struct Progress {
    finished: Vec<f64>,
    iterations: BTreeMap<PathBuf, usize>,
    /// The most runs seen running at once: how many the launcher runs in parallel, also in the
    /// moment between one run's end and the next one's start.
    most: usize,
}

impl Progress {
    /// `dir` ended: its rate counts from now on, if it finished.
    pub fn ended(&mut self, dir: &Path) {
        if let Some(p) = RunProgress::read(dir).filter(|p| p.iteration > 0 && p.iteration >= p.iterations) {
            self.finished.extend(p.secs_per_iteration);
        }
    }

    /// The iterations `dir`'s run asks for (read once).
    fn iterations(&mut self, dir: &Path) -> Option<usize> {
        if let Some(n) = self.iterations.get(dir) {
            return Some(*n);
        }
        let n = RunProgress::read(dir)?.iterations;
        self.iterations.insert(dir.to_path_buf(), n);
        Some(n)
    }

    /// ` | src_tgt/lambda_1/seed_1 40/2000, ... | ETA 3m 20s`: the running runs (three named,
    /// the rest counted) and the ETA of them and the `waiting` ones, as many at once as were
    /// ever seen running.
    pub fn message(&mut self, running: &[PathBuf], waiting: &[PathBuf]) -> String {
        self.most = self.most.max(running.len());
        let parallel = self.most;
        let runs: Vec<(&PathBuf, RunProgress)> =
            running.iter().filter_map(|d| Some((d, RunProgress::read(d)?))).collect();
        let waiting: Vec<usize> = waiting.iter().filter_map(|d| self.iterations(d)).collect();
        let mut msg = String::new();
        let named: Vec<String> =
            runs.iter().take(3).map(|(d, p)| format!("{} {}/{}", short_name(d), p.iteration, p.iterations)).collect();
        if !named.is_empty() {
            msg += &format!(" | {}", named.join(", "));
            if runs.len() > 3 {
                msg += &format!(" +{} more", runs.len() - 3);
            }
        }
        let progress: Vec<RunProgress> = runs.into_iter().map(|(_, p)| p).collect();
        match eta(&progress, &waiting, &self.finished, parallel) {
            Some(secs) => msg += &format!(" | ETA {}", duration_words(secs)),
            None if !progress.is_empty() || !waiting.is_empty() => msg += " | ETA ?",
            None => {}
        }
        msg
    }
}

/// The last three components of a run folder: `src_tgt/lambda_1/seed_1`.
fn short_name(dir: &Path) -> String {
    let parts: Vec<String> =
        dir.components().rev().take(3).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(iteration: usize, secs_per_iteration: Option<f64>) -> RunProgress {
        RunProgress { iteration, iterations: 100, secs_per_iteration, since_row: 0.0 }
    }

    #[test]
    fn the_eta_shares_the_iterations_left_over_the_runs_at_once() {
        // Nothing known yet.
        assert_eq!(eta(&[run(0, None)], &[100], &[], 2), None);
        // Two runs at 1 s per iteration, half done, two more waiting: (50 + 50 + 200) / 2.
        assert_eq!(eta(&[run(50, Some(1.0)), run(50, Some(1.0))], &[100, 100], &[], 2), Some(150.0));
        // A finished run's rate (2 s, with its evaluations) is the pooled one.
        assert_eq!(eta(&[run(0, None)], &[100], &[2.0], 1), Some(400.0));
        // Never less than the longest running run.
        assert_eq!(eta(&[run(0, Some(3.0)), run(90, Some(1.0))], &[], &[], 2), Some(300.0));
        assert_eq!(duration_words(45.0), "45s");
        assert_eq!(duration_words(200.0), "3m 20s");
        assert_eq!(duration_words(3725.0), "1h 02m");
    }

    /// The office-caltech10 case of issue 24: two runs at once, ~40 s per run of 100
    /// iterations, 24 runs. After the first two finished, the ETA of the other 22 is right
    /// within a factor of 1.5 (it was "ETA 9d" for about 25 minutes left).
    #[test]
    fn after_a_run_finished_the_eta_is_right_within_a_factor_of_one_and_a_half() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |name: &str, rows: &[(usize, f64)]| {
            let dir = tmp.path().join(name).join("lambda_1/seed_1");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("config.json"), r#"{"iterations": 100}"#).unwrap();
            let mut csv = "iteration,epoch,elapsed_s\n".to_string();
            for (i, s) in rows {
                csv += &format!("{i},0.1,{s}\n");
            }
            std::fs::write(dir.join("metrics.csv"), csv).unwrap();
            dir
        };
        let mut p = Progress::default();
        for k in 0..2 {
            p.ended(&write(&format!("done{k}"), &[(0, 1.0), (50, 20.0), (100, 40.0)]));
        }
        let running = vec![write("a_b", &[(0, 1.0), (50, 20.0)]), write("c_d", &[(0, 1.0)])];
        let waiting: Vec<PathBuf> = (0..20).map(|k| write(&format!("w{k}"), &[])).collect();
        let msg = p.message(&running, &waiting);
        assert!(msg.starts_with(" | a_b/lambda_1/seed_1 50/100, c_d/lambda_1/seed_1 0/100 | ETA "), "{msg}");
        let truth = 20.0 + 40.0 + 20.0 * 40.0; // seconds of runs left, two at once below
        let (lo, hi) = (truth / 2.0 / 1.5, truth / 2.0 * 1.5);
        let got =
            eta(&running.iter().map(|d| RunProgress::read(d).unwrap()).collect::<Vec<_>>(), &[100; 20], &[0.4, 0.4], 2)
                .unwrap();
        assert!((lo..=hi).contains(&got), "{got} s against {} s", truth / 2.0);
    }
}
