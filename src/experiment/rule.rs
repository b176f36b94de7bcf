//! The paper's rule for lambda (§3.3, and the authors' per-shift values): "at the end of
//! training the classification loss and the CORAL loss are roughly the same". Read here as one
//! number per run, or per group of runs:
//!
//! ```text
//! r = mean(lambda * l_align) / mean(l_class)
//! ```
//!
//! (`l_align` is the run's method's loss: `l_CORAL` for Deep CORAL, the MMD for DDC and DAN)
//!
//! both means over the last `WINDOW` (20%) of the iterations, every step of them (`steps.csv`),
//! pooled over the runs of the group (the seeds), so that no handful of batches decides it. The
//! rule holds when `1/factor <= r <= factor` (`FACTOR` = 2 by default). `calibrate` searches
//! lambda with it; `report` checks it for every finished run.
//!
//! A run without `steps.csv` (runs made before pilots logged their steps) is read from the
//! `metrics.csv` rows that lie wholly inside the window, each weighted by the steps it averages:
//! the same quantity, at the rows' granularity; `WindowLosses::from_steps` says which.

use std::path::Path;

use anyhow::Result;

use crate::train::metrics::{self, MetricsRow, RunRecord, StepRow};

/// The fraction of a run's iterations, at its end, that the rule reads.
pub const WINDOW: f64 = 0.2;

/// The rule holds when the ratio is within this factor of 1 (either way).
pub const FACTOR: f64 = 2.0;

/// The mean losses of one run over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowLosses {
    /// Mean classification loss over the window's steps.
    pub class_loss: f64,
    /// Mean unweighted CORAL loss at fc8 over the same steps.
    pub coral_loss: f64,
    /// Mean unweighted loss of the run's method over the same steps (= `coral_loss` for
    /// method coral).
    pub align_loss: f64,
    /// Steps averaged.
    pub steps: usize,
    /// Read from every step (`steps.csv`), or from `metrics.csv` rows.
    pub from_steps: bool,
}

/// The first iteration of the window of a run of `iterations`: the last `ceil(window *
/// iterations)` steps (at least one).
pub fn window_start(iterations: usize, window: f64) -> usize {
    let len = ((window * iterations as f64).ceil() as usize).clamp(1, iterations.max(1));
    iterations - len
}

impl WindowLosses {
    /// From `steps.csv`'s rows: the steps with `iteration >= window_start`. `None` when the
    /// file does not reach the end of the run (a run cut short).
    pub fn of_steps(steps: &[StepRow], iterations: usize, window: f64) -> Option<WindowLosses> {
        let start = window_start(iterations, window);
        let inside: Vec<&StepRow> = steps.iter().filter(|s| s.iteration >= start && s.iteration < iterations).collect();
        if inside.len() != iterations - start {
            return None;
        }
        let n = inside.len() as f64;
        Some(WindowLosses {
            class_loss: inside.iter().map(|s| s.class_loss).sum::<f64>() / n,
            coral_loss: inside.iter().map(|s| s.coral_loss).sum::<f64>() / n,
            align_loss: inside.iter().map(|s| s.align_loss).sum::<f64>() / n,
            steps: inside.len(),
            from_steps: true,
        })
    }

    /// From `metrics.csv`'s rows: each row averages the steps since the row before, so a row
    /// at iteration `i` after one at `p` covers steps `p..i`; the rows whose steps all lie in
    /// the window count, weighted by their steps. `None` when no row does.
    pub fn of_rows(rows: &[MetricsRow], iterations: usize, window: f64) -> Option<WindowLosses> {
        let start = window_start(iterations, window);
        let (mut class, mut coral, mut align, mut steps) = (0.0, 0.0, 0.0, 0usize);
        for pair in rows.windows(2) {
            let (before, row) = (&pair[0], &pair[1]);
            if before.iteration >= start && row.iteration <= iterations && row.iteration > before.iteration {
                let k = row.iteration - before.iteration;
                class += row.class_loss * k as f64;
                coral += row.coral_loss * k as f64;
                align += row.align_loss * k as f64;
                steps += k;
            }
        }
        (steps > 0).then(|| WindowLosses {
            class_loss: class / steps as f64,
            coral_loss: coral / steps as f64,
            align_loss: align / steps as f64,
            steps,
            from_steps: false,
        })
    }

    /// The window of the finished run in `dir` (its `record`): from `steps.csv` when the run
    /// logged its steps, else from `metrics.csv`. `Ok(None)` when neither covers the window.
    pub fn of_run(dir: &Path, record: &RunRecord, window: f64) -> Result<Option<WindowLosses>> {
        let iterations = record.config.iterations;
        let steps_path = dir.join("steps.csv");
        if record.config.log_steps && steps_path.is_file() {
            return Ok(Self::of_steps(&metrics::read_steps(&steps_path)?, iterations, window));
        }
        Ok(Self::of_rows(&metrics::read_rows(&dir.join("metrics.csv"))?, iterations, window))
    }
}

/// `r` of a group of runs at one `lambda`: `lambda * mean(l_align) / mean(l_class)`, every
/// run's window weighted by its steps. NaN for no runs.
pub fn ratio(lambda: f64, runs: &[WindowLosses]) -> f64 {
    let steps: usize = runs.iter().map(|w| w.steps).sum();
    let mean = |f: fn(&WindowLosses) -> f64| runs.iter().map(|w| f(w) * w.steps as f64).sum::<f64>() / steps as f64;
    lambda * mean(|w| w.align_loss) / mean(|w| w.class_loss)
}

/// Whether ratio `r` is within `factor` of 1.
pub fn holds(r: f64, factor: f64) -> bool {
    r >= 1.0 / factor && r <= factor
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(iteration: usize, class_loss: f64, coral_loss: f64) -> StepRow {
        StepRow { iteration, lr: 1e-3, class_loss, coral_loss, coral_distance: 0.0, correct: 0, align_loss: coral_loss }
    }

    #[test]
    fn the_window_is_the_last_fifth_of_the_steps() {
        assert_eq!(window_start(300, WINDOW), 240);
        assert_eq!(window_start(2000, WINDOW), 1600);
        assert_eq!(window_start(7, WINDOW), 5); // ceil(1.4) = 2 steps
        assert_eq!(window_start(1, WINDOW), 0);
        // Steps 0..10 with class loss = iteration, CORAL = 1: the window is 8 and 9.
        let steps: Vec<StepRow> = (0..10).map(|i| step(i, i as f64, 1.0)).collect();
        let w = WindowLosses::of_steps(&steps, 10, WINDOW).unwrap();
        assert_eq!((w.class_loss, w.coral_loss, w.steps, w.from_steps), (8.5, 1.0, 2, true));
        // A steps.csv cut short does not cover the window.
        assert_eq!(WindowLosses::of_steps(&steps[..9], 10, WINDOW), None);
    }

    #[test]
    fn rows_count_only_where_all_their_steps_are_inside() {
        let row = |iteration: usize, class_loss: f64| MetricsRow {
            iteration,
            epoch: 0.0,
            lr: 1e-3,
            class_loss,
            coral_loss: 2.0 * class_loss,
            weighted_coral_loss: 0.0,
            coral_distance: 0.0,
            source_acc: 0.0,
            target_acc: 0.0,
            target_loss: 0.0,
            elapsed_s: 0.0,
            align_loss: 2.0 * class_loss,
        };
        // 300 iterations, a row every 25: the window starts at 240, so the rows at 275 (steps
        // 250..275) and 300 (275..300) count, the one at 250 (225..250) does not.
        let rows: Vec<MetricsRow> = (0..=12).map(|k| row(25 * k, k as f64)).collect();
        let w = WindowLosses::of_rows(&rows, 300, WINDOW).unwrap();
        assert_eq!((w.class_loss, w.coral_loss, w.steps, w.from_steps), (11.5, 23.0, 50, false));
    }

    #[test]
    fn the_ratio_pools_the_seeds_by_their_steps() {
        let a = WindowLosses { class_loss: 1.0, coral_loss: 1.0, align_loss: 1.0, steps: 60, from_steps: true };
        let b = WindowLosses { class_loss: 3.0, coral_loss: 5.0, align_loss: 5.0, steps: 60, from_steps: true };
        // lambda 0.5 * mean CORAL 3 / mean class 2
        assert_eq!(ratio(0.5, &[a, b]), 0.75);
        assert!(holds(0.75, FACTOR) && holds(2.0, FACTOR) && !holds(0.49, FACTOR) && !holds(2.1, FACTOR));
        assert!(ratio(1.0, &[]).is_nan());
    }
}
