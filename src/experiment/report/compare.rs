//! Two experiments run for run: the runs of folder A and folder B with the same transfer,
//! lambda and seed are paired, and each cell (transfer, lambda) says how far B's numbers are
//! from A's. For a change that leaves the sampling alone (the precision, the evaluation's
//! mirror), the two runs of a pair see the same batches, crops, mirrors and dropout masks, so
//! every difference is the change's.
//!
//! Per cell: final target accuracy of A and of B (mean ± sd over the paired seeds) and their
//! per-seed difference; the final CORAL loss of both (last row of `metrics.csv`); and the
//! largest difference of the class loss between the pair at one iteration (`steps.csv`, where
//! both runs wrote one with `log_steps`) or at one row of `metrics.csv` (means over
//! `eval_every` iterations) where they did not: the table says which.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};

use super::read::{self, DoneRun, FoundRun};
use super::render::{fmt_effect, fmt_mean_sd, markdown_table};
use super::stats::{Effect, Stat};
use super::{DomainShift, Lambda};
use crate::train::metrics::{MetricsRow, StepRow};

/// The comparison of one (transfer, lambda) over the seeds both folders have done.
#[derive(Debug, Clone)]
pub struct CellComparison {
    pub transfer: DomainShift,
    pub lambda: f64,
    pub seeds: Vec<u64>,
    /// Final target accuracy (%), A and B.
    pub acc_a: Stat,
    pub acc_b: Stat,
    /// B − A per seed (points): mean, 95% interval, sign-flip test (`stats::Effect`).
    pub acc_diff: Effect,
    /// Final CORAL loss (unweighted, last row), A and B.
    pub coral_a: Stat,
    pub coral_b: Stat,
    /// The largest |class loss B − class loss A| over the pairs' iterations (or rows).
    pub max_class_loss_diff: f64,
    /// The same at the first iteration (or row) alone, over the seeds: there both runs start
    /// from the same weights on the same batch, so this is the change's own effect on one
    /// step, before the trajectories part.
    pub first_class_loss_diff: f64,
    /// Whether `max_class_loss_diff` is per iteration (both runs have `steps.csv`).
    pub per_iteration: bool,
}

/// Everything `compare` found.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub cells: Vec<CellComparison>,
    /// Config fields (other than paths and seed) on which the first pair differs: `field: A -> B`.
    pub config_changes: Vec<String>,
    pub markdown: String,
    /// The files of A and B that were read (an output must not be one of them).
    pub inputs: Vec<std::path::PathBuf>,
}

/// Pairs the done runs of `a` and `b` and compares them; an error if no pair exists. The runs
/// either folder sets aside (not done, or logs that disagree with their record) are listed.
pub fn compare(a: &Path, b: &Path) -> Result<Comparison> {
    let (exp_a, exp_b) = (read::load_experiment(a)?, read::load_experiment(b)?);
    let key = |r: &DoneRun| (r.found.transfer(), Lambda(r.found.lambda()), r.found.seed());
    let by_key: BTreeMap<_, &DoneRun> = exp_b.done.iter().map(|r| (key(r), r)).collect();
    let pairs: Vec<(&DoneRun, &DoneRun)> =
        exp_a.done.iter().filter_map(|r| by_key.get(&key(r)).map(|other| (r, *other))).collect();
    let Some(first) = pairs.first() else {
        bail!("{} and {} have no done run in common (the same transfer, lambda and seed)", a.display(), b.display());
    };
    let config_changes = config_changes(&first.0.found, &first.1.found)?;
    let mut cells: BTreeMap<(DomainShift, Lambda), Vec<PairNumbers>> = BTreeMap::new();
    for (ra, rb) in &pairs {
        cells.entry((ra.found.transfer(), Lambda(ra.found.lambda()))).or_default().push(PairNumbers::of(ra, rb));
    }
    let cells: Vec<CellComparison> = cells
        .into_iter()
        .map(|((transfer, lambda), pairs)| {
            let stat = |f: fn(&PairNumbers) -> f64| Stat::of(&pairs.iter().map(f).collect::<Vec<_>>()).expect("a pair");
            CellComparison {
                transfer,
                lambda: lambda.0,
                seeds: pairs.iter().map(|p| p.seed).collect(),
                acc_a: stat(|p| p.acc.0),
                acc_b: stat(|p| p.acc.1),
                acc_diff: Effect::of(&pairs.iter().map(|p| p.acc.1 - p.acc.0).collect::<Vec<_>>()).expect("a pair"),
                coral_a: stat(|p| p.coral.0),
                coral_b: stat(|p| p.coral.1),
                max_class_loss_diff: pairs.iter().map(|p| p.max_class_loss_diff).fold(0.0, f64::max),
                first_class_loss_diff: pairs.iter().map(|p| p.first_class_loss_diff).fold(0.0, f64::max),
                per_iteration: pairs.iter().all(|p| p.per_iteration),
            }
        })
        .collect();
    let mut markdown = render(a, b, &cells, &config_changes);
    for (dir, exp) in [(a, &exp_a), (b, &exp_b)] {
        if !exp.incomplete.is_empty() {
            let _ = writeln!(markdown, "\nNot compared, in {} ({}):\n", dir.display(), exp.incomplete.len());
            for r in &exp.incomplete {
                let _ = writeln!(markdown, "- {}", r.describe());
            }
        }
    }
    let mut inputs = exp_a.inputs();
    inputs.extend(exp_b.inputs());
    Ok(Comparison { cells, config_changes, markdown, inputs })
}

/// What one pair of runs contributes.
struct PairNumbers {
    seed: u64,
    acc: (f64, f64),
    coral: (f64, f64),
    max_class_loss_diff: f64,
    first_class_loss_diff: f64,
    per_iteration: bool,
}

impl PairNumbers {
    fn of(a: &DoneRun, b: &DoneRun) -> Self {
        let (rows_a, rows_b) = (&a.logs.rows, &b.logs.rows);
        let last_coral = |rows: &[MetricsRow]| rows.iter().rev().map(|r| r.coral_loss).find(|c| c.is_finite());
        let (losses_a, losses_b, per_iteration) = match (&a.logs.steps, &b.logs.steps) {
            (Some(sa), Some(sb)) => {
                let losses = |steps: &[StepRow]| steps.iter().map(|r| r.class_loss).collect::<Vec<_>>();
                (losses(sa), losses(sb), true)
            }
            _ => {
                let losses = |rows: &[MetricsRow]| rows.iter().map(|r| r.class_loss).collect::<Vec<_>>();
                (losses(rows_a), losses(rows_b), false)
            }
        };
        let diffs: Vec<f64> = losses_a
            .iter()
            .zip(&losses_b)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (x - y).abs())
            .collect();
        let max_class_loss_diff = diffs.iter().copied().fold(0.0, f64::max);
        let first_class_loss_diff = diffs.first().copied().unwrap_or(f64::NAN);
        Self {
            seed: a.found.seed(),
            acc: (100.0 * a.result.final_acc, 100.0 * b.result.final_acc),
            coral: (last_coral(rows_a).unwrap_or(f64::NAN), last_coral(rows_b).unwrap_or(f64::NAN)),
            max_class_loss_diff,
            first_class_loss_diff,
            per_iteration,
        }
    }
}

/// The config fields on which two runs differ, paths and the seed aside (they differ between
/// any two folders and within a cell), as `field: A -> B`.
fn config_changes(a: &FoundRun, b: &FoundRun) -> Result<Vec<String>> {
    const IGNORED: [&str; 4] = ["data_root", "weights", "feature_cache", "seed"];
    let (va, vb) = (serde_json::to_value(&a.record.config)?, serde_json::to_value(&b.record.config)?);
    let (Some(ma), Some(mb)) = (va.as_object(), vb.as_object()) else { return Ok(Vec::new()) };
    Ok(ma
        .iter()
        .filter(|(k, v)| !IGNORED.contains(&k.as_str()) && mb.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: {v} -> {}", mb.get(k).map_or("(absent)".to_string(), |x| x.to_string())))
        .collect())
}

fn render(a: &Path, b: &Path, cells: &[CellComparison], changes: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {} (A) against {} (B), run for run\n", a.display(), b.display());
    let _ = writeln!(
        md,
        "Runs paired by transfer, λ and seed. Config changes A -> B: {}.\n",
        if changes.is_empty() { "none".to_string() } else { changes.join("; ") }
    );
    let header = [
        "transfer",
        "λ",
        "seeds",
        "final acc A",
        "final acc B",
        "B − A (points) [95% CI]",
        "verdict",
        "final CORAL loss A",
        "final CORAL loss B",
        "max Δ class loss",
        "Δ class loss, first",
    ]
    .map(String::from);
    let rows: Vec<Vec<String>> = cells
        .iter()
        .map(|c| {
            let coral = |s: &Stat| match s.sd {
                Some(sd) => format!("{:.4} ± {sd:.4}", s.mean),
                None => format!("{:.4}", s.mean),
            };
            vec![
                c.transfer.label(),
                c.lambda.to_string(),
                c.seeds.len().to_string(),
                fmt_mean_sd(&c.acc_a),
                fmt_mean_sd(&c.acc_b),
                fmt_effect(&c.acc_diff),
                c.acc_diff.verdict().name().to_string(),
                coral(&c.coral_a),
                coral(&c.coral_b),
                format!("{:.4} ({})", c.max_class_loss_diff, if c.per_iteration { "per iteration" } else { "per row" }),
                format!("{:.2e}", c.first_class_loss_diff),
            ]
        })
        .collect();
    md.push_str(&markdown_table(&header, &rows));
    md.push_str(
        "\nfinal acc: target accuracy (%) at the last iteration, mean ± sd over the paired seeds; B − A: the \
         per-seed difference, mean [95% confidence interval, Student's t over the seeds]; verdict: from the \
         interval alone (\"better\" or \"worse\" for B when it excludes 0, else \"no difference shown\"). final CORAL loss: 1/(4d²)‖C_S − C_T‖²_F, the last row's mean. max Δ class \
         loss: the largest absolute difference of the source cross-entropy between the two runs of a pair, over \
         every iteration (steps.csv, both runs with log_steps) or every row of metrics.csv (means over eval_every \
         iterations), and over the seeds; first: the same at the first iteration alone, where both runs step from \
         the same weights on the same batch (per row: the first row's mean).\n",
    );
    md
}
