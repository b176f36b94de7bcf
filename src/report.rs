//! Tables from the run records on disk, as pure functions of them: `run.json` and
//! `metrics.csv` of every run -> groups per transfer and lambda -> mean ± sd over seeds ->
//! `summary.csv` and `table.md` in the experiment folder, beside the paper's Table 1.
//!
//! Layout read (written by the sweep):
//! `<experiment>/<source>_<target>/lambda_<x>/seed_<n>/{run.json, metrics.csv}`, and
//! optionally `<experiment>/spec.json` naming `paper_table` and `paper_curves` (paths relative
//! to the current directory). Only runs whose `run.json` says `"status": "done"` count;
//! every other run folder is listed under the table, and so are seeds that other cells of the
//! experiment have but a cell lacks.
//!
//! The paper reports the target accuracy at the last iteration, mean of 5 runs; that is the
//! "final" number here. "best" (the highest target accuracy over a run's evaluations) picks an
//! iteration by looking at target labels, so it is shown only as a diagnostic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::metrics::MetricsRow;

/// The paper's transfers in Table 1's column order (A->D, A->W, D->A, D->W, W->A, W->D).
pub const PAPER_SHIFTS: [(&str, &str); 6] = [
    ("amazon", "dslr"),
    ("amazon", "webcam"),
    ("dslr", "amazon"),
    ("dslr", "webcam"),
    ("webcam", "amazon"),
    ("webcam", "dslr"),
];

/// Short domain name for tables: amazon A, dslr D, webcam W, caltech10 C, else the name.
pub fn domain_short(name: &str) -> &str {
    match name {
        "amazon" => "A",
        "dslr" => "D",
        "webcam" => "W",
        "caltech10" => "C",
        other => other,
    }
}

/// A source -> target domain pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Transfer {
    pub source: String,
    pub target: String,
}

impl Transfer {
    pub fn new(source: &str, target: &str) -> Self {
        Self { source: source.to_string(), target: target.to_string() }
    }

    /// Table label, e.g. `A->W`.
    pub fn label(&self) -> String {
        format!("{}->{}", domain_short(&self.source), domain_short(&self.target))
    }

    /// The experiment's folder for this transfer, e.g. `amazon_webcam`.
    pub fn dir_name(&self) -> String {
        format!("{}_{}", self.source, self.target)
    }
}

/// A lambda usable as a map key: ordered numerically (`f64::total_cmp`).
#[derive(Debug, Clone, Copy)]
pub struct Lambda(pub f64);

impl PartialEq for Lambda {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for Lambda {}
impl PartialOrd for Lambda {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Lambda {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

// ---------------------------------------------------------------------------------------
// Records on disk

/// The part of `run.json` a report needs; unknown keys are ignored.
#[derive(Debug, Deserialize)]
struct RunJson {
    config: RunJsonConfig,
    status: String,
    #[serde(default)]
    final_target_acc: Option<f64>,
    #[serde(default)]
    iterations_done: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct RunJsonConfig {
    source: String,
    target: String,
    lambda: f64,
    seed: u64,
    #[serde(default)]
    iterations: Option<u64>,
}

/// One run folder whose `run.json` was read.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The run folder.
    pub dir: PathBuf,
    pub transfer: Transfer,
    pub lambda: f64,
    pub seed: u64,
    /// `done`, `running`, `diverged`, `interrupted`, `failed` (or whatever the file says).
    pub status: String,
    /// Iterations asked for (`config.iterations`).
    pub iterations: Option<u64>,
    pub iterations_done: Option<u64>,
    /// Target accuracy at the last iteration (fraction), from `run.json`.
    pub final_target_acc: Option<f64>,
}

/// A run folder that does not count: its status is not `done`, or it has no `run.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct IncompleteRun {
    /// Path relative to the experiment folder, e.g. `amazon_webcam/lambda_0.8/seed_3`.
    pub rel_dir: PathBuf,
    /// `None` where the folder name could not be read as `<source>_<target>`.
    pub transfer: Option<Transfer>,
    pub lambda: Option<f64>,
    pub seed: Option<u64>,
    /// The status from `run.json`, or `no run.json`.
    pub status: String,
    pub iterations: Option<u64>,
    pub iterations_done: Option<u64>,
}

impl IncompleteRun {
    /// e.g. ``- `amazon_webcam/lambda_0.8/seed_3`: running, 1200 of 2000 iterations``.
    pub fn describe(&self) -> String {
        let progress = match (self.iterations_done, self.iterations) {
            (Some(done), Some(all)) => format!(", {done} of {all} iterations"),
            (Some(done), None) => format!(", {done} iterations"),
            _ => String::new(),
        };
        format!("`{}`: {}{progress}", self.rel_dir.display(), self.status)
    }
}

/// Paths named by the experiment's `spec.json` (relative to the current directory).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecLinks {
    pub paper_table: Option<PathBuf>,
    pub paper_curves: Option<PathBuf>,
}

/// Everything found in one experiment folder.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub dir: PathBuf,
    /// Runs with status `done`, sorted by transfer, lambda, seed.
    pub done: Vec<RunRecord>,
    /// All other run folders, sorted by path.
    pub incomplete: Vec<IncompleteRun>,
    pub spec: SpecLinks,
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if entry.file_type().with_context(|| format!("reading {}", entry.path().display()))?.is_dir() {
            out.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads `spec.json` if present, keeping only `paper_table` and `paper_curves`.
pub fn read_spec_links(experiment_dir: &Path) -> Result<SpecLinks> {
    let path = experiment_dir.join("spec.json");
    if !path.exists() {
        return Ok(SpecLinks::default());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    let link = |key: &str| -> Result<Option<PathBuf>> {
        match value.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(PathBuf::from(s))),
            Some(other) => bail!("{}: `{key}` should be a path string, found {other}", path.display()),
        }
    };
    Ok(SpecLinks { paper_table: link("paper_table")?, paper_curves: link("paper_curves")? })
}

/// Finds every run folder `<transfer>/lambda_<x>/seed_<n>` under `experiment_dir` and reads its
/// `run.json`. A `run.json` that cannot be parsed is an error naming the file.
pub fn load_experiment(experiment_dir: &Path) -> Result<Experiment> {
    if !experiment_dir.is_dir() {
        bail!("{} is not a folder (expected an experiment's results folder)", experiment_dir.display());
    }
    let spec = read_spec_links(experiment_dir)?;
    let mut done = Vec::new();
    let mut incomplete = Vec::new();
    let mut unread = Vec::new(); // run folders without run.json
    for (transfer_name, transfer_dir) in sorted_subdirs(experiment_dir)? {
        for (lambda_name, lambda_dir) in sorted_subdirs(&transfer_dir)? {
            let Some(lambda_text) = lambda_name.strip_prefix("lambda_") else { continue };
            for (seed_name, run_dir) in sorted_subdirs(&lambda_dir)? {
                let Some(seed_text) = seed_name.strip_prefix("seed_") else { continue };
                let rel_dir = PathBuf::from(&transfer_name).join(&lambda_name).join(&seed_name);
                let json_path = run_dir.join("run.json");
                if !json_path.exists() {
                    unread.push((
                        transfer_name.clone(),
                        lambda_text.parse::<f64>().ok(),
                        seed_text.parse().ok(),
                        rel_dir,
                    ));
                    continue;
                }
                let text =
                    std::fs::read_to_string(&json_path).with_context(|| format!("reading {}", json_path.display()))?;
                let run: RunJson = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a valid run record", json_path.display()))?;
                let record = RunRecord {
                    dir: run_dir.clone(),
                    transfer: Transfer::new(&run.config.source, &run.config.target),
                    lambda: run.config.lambda,
                    seed: run.config.seed,
                    status: run.status,
                    iterations: run.config.iterations,
                    iterations_done: run.iterations_done,
                    final_target_acc: run.final_target_acc.filter(|a| a.is_finite()),
                };
                if record.status == "done" {
                    done.push(record);
                } else {
                    incomplete.push(IncompleteRun {
                        rel_dir,
                        transfer: Some(record.transfer),
                        lambda: Some(record.lambda),
                        seed: Some(record.seed),
                        status: record.status,
                        iterations: record.iterations,
                        iterations_done: record.iterations_done,
                    });
                }
            }
        }
    }
    // Folders without run.json: name the transfer after a known run in the same folder, else
    // split `<source>_<target>` when there is exactly one underscore.
    let mut known: BTreeMap<String, Transfer> = BTreeMap::new();
    for r in &done {
        known.insert(r.transfer.dir_name(), r.transfer.clone());
    }
    for r in &incomplete {
        if let Some(t) = &r.transfer {
            known.insert(t.dir_name(), t.clone());
        }
    }
    for (transfer_name, lambda, seed, rel_dir) in unread {
        let transfer = known.get(&transfer_name).cloned().or_else(|| {
            let parts: Vec<&str> = transfer_name.split('_').collect();
            (parts.len() == 2).then(|| Transfer::new(parts[0], parts[1]))
        });
        incomplete.push(IncompleteRun {
            rel_dir,
            transfer,
            lambda,
            seed,
            status: "no run.json".into(),
            iterations: None,
            iterations_done: None,
        });
    }
    done.sort_by(|a, b| (&a.transfer, Lambda(a.lambda), a.seed).cmp(&(&b.transfer, Lambda(b.lambda), b.seed)));
    incomplete.sort_by(|a, b| a.rel_dir.cmp(&b.rel_dir));
    Ok(Experiment { dir: experiment_dir.to_path_buf(), done, incomplete, spec })
}

// ---------------------------------------------------------------------------------------
// The paper's table (experiments/paper-table1.json)

/// Table 1 of the paper as data, with the per-shift lambda of the authors' logs.
#[derive(Debug, Clone, Deserialize)]
pub struct PaperTable {
    pub title: String,
    pub shifts: Vec<PaperShift>,
    pub methods: Vec<PaperMethod>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaperShift {
    pub source: String,
    pub target: String,
    pub label: String,
    /// The authors' lambda for D-CORAL on this shift.
    #[serde(default)]
    pub lambda: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaperMethod {
    pub name: String,
    /// Target accuracy %, one per shift (in `shifts` order).
    pub mean: Vec<f64>,
    /// The spread printed after ± in the paper, one per shift; `None` where none is printed.
    pub pm: Vec<Option<f64>>,
    /// The average printed in the paper.
    #[serde(default)]
    pub avg: Option<f64>,
}

/// One number of the paper's table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperCell {
    pub mean: f64,
    pub pm: Option<f64>,
}

impl PaperTable {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let table: PaperTable =
            serde_json::from_str(&text).with_context(|| format!("{} is not a valid paper table", path.display()))?;
        for m in &table.methods {
            if m.mean.len() != table.shifts.len() || m.pm.len() != table.shifts.len() {
                bail!(
                    "{}: method {} has {} means and {} spreads for {} shifts",
                    path.display(),
                    m.name,
                    m.mean.len(),
                    m.pm.len(),
                    table.shifts.len()
                );
            }
        }
        Ok(table)
    }

    fn shift_index(&self, t: &Transfer) -> Option<usize> {
        self.shifts.iter().position(|s| s.source == t.source && s.target == t.target)
    }

    /// The paper's number for `method` on transfer `t`, if the paper has one.
    pub fn cell(&self, method: &str, t: &Transfer) -> Option<PaperCell> {
        let m = self.methods.iter().find(|m| m.name == method)?;
        let i = self.shift_index(t)?;
        Some(PaperCell { mean: m.mean[i], pm: m.pm[i] })
    }

    /// The authors' lambda on transfer `t`.
    pub fn lambda(&self, t: &Transfer) -> Option<f64> {
        self.shift_index(t).and_then(|i| self.shifts[i].lambda)
    }

    /// The paper's average over `columns`: the printed one when `columns` are exactly the
    /// paper's shifts, else the mean over `columns` (`None` if the paper lacks one of them).
    pub fn avg(&self, method: &str, columns: &[Transfer]) -> Option<f64> {
        let m = self.methods.iter().find(|m| m.name == method)?;
        let same = columns.len() == self.shifts.len()
            && columns.iter().zip(&self.shifts).all(|(c, s)| c.source == s.source && c.target == s.target);
        if same && m.avg.is_some() {
            return m.avg;
        }
        let values: Option<Vec<f64>> = columns.iter().map(|c| self.shift_index(c).map(|i| m.mean[i])).collect();
        values.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// The paper method our runs are compared with: lambda = 0 is the paper's CNN (no
/// adaptation), lambda > 0 is D-CORAL.
pub fn paper_method_for(lambda: f64) -> &'static str {
    if lambda == 0.0 {
        "CNN"
    } else {
        "D-CORAL"
    }
}

// ---------------------------------------------------------------------------------------
// Statistics and formatting

/// Mean and sample standard deviation (n - 1) of n values; `sd` is `None` for n < 2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub n: usize,
    pub mean: f64,
    pub sd: Option<f64>,
}

impl Stat {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = (n >= 2).then(|| {
            let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
            (ss / (n - 1) as f64).sqrt()
        });
        Some(Stat { n, mean, sd })
    }
}

/// `66.8 ± 0.6`; one decimal like the paper; just the mean where there is no sd (n = 1).
pub fn fmt_mean_sd(stat: &Stat) -> String {
    match stat.sd {
        Some(sd) => format!("{:.1} ± {:.1}", stat.mean, sd),
        None => format!("{:.1}", stat.mean),
    }
}

/// A cell of the table: `fmt_mean_sd`, plus `(n=k)` when k differs from the row's `n`.
fn fmt_cell(stat: &Stat, row_n: Option<usize>) -> String {
    if row_n == Some(stat.n) {
        fmt_mean_sd(stat)
    } else {
        format!("{} (n={})", fmt_mean_sd(stat), stat.n)
    }
}

/// `66.8 ± 0.6` or `65.7` (no spread printed).
pub fn fmt_paper(cell: &PaperCell) -> String {
    match cell.pm {
        Some(pm) => format!("{:.1} ± {:.1}", cell.mean, pm),
        None => format!("{:.1}", cell.mean),
    }
}

/// A difference in percentage points with its sign: `+2.1`, `-0.3`, `0.0`.
pub fn fmt_diff(d: f64) -> String {
    let s = format!("{d:+.1}");
    if s == "+0.0" || s == "-0.0" {
        "0.0".into()
    } else {
        s
    }
}

/// A number for `summary.csv`: 4 decimals, empty for none.
fn fmt_csv(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.4}")).unwrap_or_default()
}

const DASH: &str = "—";

/// A markdown table, columns padded to their widths (counted in characters).
pub fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = String::from("|");
        for (cell, w) in cells.iter().zip(&widths) {
            let pad = w - cell.chars().count();
            let _ = write!(s, " {cell}{} |", " ".repeat(pad));
        }
        s.push('\n');
        s
    };
    let mut out = line(header);
    out.push('|');
    for w in &widths {
        let _ = write!(out, "{}|", "-".repeat(w + 2));
    }
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Grouping

/// One transfer and lambda over its done seeds. Accuracies in %.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSummary {
    pub transfer: Transfer,
    pub lambda: f64,
    /// Seeds of the done runs.
    pub seeds: Vec<u64>,
    /// Target accuracy at the last iteration (the paper's protocol).
    pub final_acc: Stat,
    /// Highest target accuracy over each run's evaluations, then over seeds. Not the paper's
    /// protocol.
    pub best_acc: Stat,
    /// Run folders of this cell that are not done.
    pub n_incomplete: usize,
    /// `CNN` for lambda = 0, `D-CORAL` for lambda > 0, with the paper's number if it has one.
    pub paper: Option<(String, PaperCell)>,
    /// The authors' lambda for this transfer.
    pub paper_lambda: Option<f64>,
}

impl GroupSummary {
    /// ours - paper, in percentage points.
    pub fn diff_vs_paper(&self) -> Option<f64> {
        self.paper.as_ref().map(|(_, p)| self.final_acc.mean - p.mean)
    }
}

/// Final and best target accuracy (fractions) of one done run. The final one is `run.json`'s
/// `final_target_acc`, else the last row of `metrics.csv`; best is the maximum over rows.
pub fn run_accuracies(run: &RunRecord) -> Result<(f64, f64)> {
    let path = run.dir.join("metrics.csv");
    let rows = crate::metrics::read_rows(&path)?;
    let finite: Vec<&MetricsRow> = rows.iter().filter(|r| r.target_acc.is_finite()).collect();
    let best = finite.iter().map(|r| r.target_acc).fold(f64::NAN, f64::max);
    let last = rows.last().map(|r| r.target_acc).filter(|a| a.is_finite());
    let Some(final_acc) = run.final_target_acc.or(last) else {
        bail!(
            "{}: run is done but has no final target accuracy (run.json final_target_acc is null and the last row of metrics.csv has none)",
            run.dir.display()
        );
    };
    if !best.is_finite() {
        bail!("{}: no target accuracy in any row", path.display());
    }
    Ok((final_acc, best))
}

/// The transfers in column order: the paper's order (its table's, or [`PAPER_SHIFTS`]) for
/// those it has, then the others sorted by source and target.
pub fn column_order(transfers: &BTreeSet<Transfer>, paper: Option<&PaperTable>) -> Vec<Transfer> {
    let paper_order: Vec<Transfer> = match paper {
        Some(p) => p.shifts.iter().map(|s| Transfer::new(&s.source, &s.target)).collect(),
        None => PAPER_SHIFTS.iter().map(|(s, t)| Transfer::new(s, t)).collect(),
    };
    let mut out: Vec<Transfer> = paper_order.iter().filter(|t| transfers.contains(t)).cloned().collect();
    out.extend(transfers.iter().filter(|t| !paper_order.contains(t)).cloned());
    out
}

/// A seed that other cells of the experiment have but this transfer and lambda lacks.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingRun {
    pub transfer: Transfer,
    pub lambda: f64,
    pub seed: u64,
}

/// Everything `report` found and wrote.
#[derive(Debug, Clone)]
pub struct Report {
    /// One per transfer and lambda with at least one done run; transfers in column order,
    /// lambdas ascending.
    pub groups: Vec<GroupSummary>,
    /// Transfers in column order (including those with only incomplete runs).
    pub columns: Vec<Transfer>,
    pub incomplete: Vec<IncompleteRun>,
    pub missing: Vec<MissingRun>,
    /// Transfers with no done lambda = 0 run, and with no done lambda > 0 run.
    pub no_baseline: Vec<Transfer>,
    pub no_adapted: Vec<Transfer>,
    pub paper: Option<PaperTable>,
    /// The contents of `table.md`.
    pub markdown: String,
    /// The contents of `summary.csv`.
    pub csv: String,
    pub summary_csv: PathBuf,
    pub table_md: PathBuf,
}

/// Per-run accuracies (fractions) of the done runs, as read by [`run_accuracies`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub transfer: Transfer,
    pub lambda: f64,
    pub seed: u64,
    pub final_acc: f64,
    pub best_acc: f64,
}

/// The grouping and comparison part of the report: no file access.
pub fn summarize(
    results: &[RunResult],
    incomplete: &[IncompleteRun],
    paper: Option<&PaperTable>,
) -> (Vec<GroupSummary>, Vec<Transfer>, Vec<MissingRun>) {
    let mut cells: BTreeMap<(Transfer, Lambda), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        cells.entry((r.transfer.clone(), Lambda(r.lambda))).or_default().push(r);
    }
    let mut incomplete_cells: BTreeMap<(Transfer, Lambda), Vec<Option<u64>>> = BTreeMap::new();
    for r in incomplete {
        if let (Some(t), Some(l)) = (&r.transfer, r.lambda) {
            incomplete_cells.entry((t.clone(), Lambda(l))).or_default().push(r.seed);
        }
    }
    let mut transfers: BTreeSet<Transfer> = cells.keys().map(|(t, _)| t.clone()).collect();
    transfers.extend(incomplete_cells.keys().map(|(t, _)| t.clone()));
    let columns = column_order(&transfers, paper);

    let mut groups = Vec::new();
    for t in &columns {
        for ((_, lambda), runs) in
            cells.range((t.clone(), Lambda(f64::NEG_INFINITY))..=(t.clone(), Lambda(f64::INFINITY)))
        {
            let pct = |f: fn(&RunResult) -> f64| -> Vec<f64> { runs.iter().map(|r| 100.0 * f(r)).collect() };
            let method = paper_method_for(lambda.0);
            groups.push(GroupSummary {
                transfer: t.clone(),
                lambda: lambda.0,
                seeds: runs.iter().map(|r| r.seed).collect(),
                final_acc: Stat::of(&pct(|r| r.final_acc)).expect("a cell has runs"),
                best_acc: Stat::of(&pct(|r| r.best_acc)).expect("a cell has runs"),
                n_incomplete: incomplete_cells.get(&(t.clone(), *lambda)).map_or(0, |v| v.len()),
                paper: paper.and_then(|p| p.cell(method, t)).map(|c| (method.to_string(), c)),
                paper_lambda: paper.and_then(|p| p.lambda(t)),
            });
        }
    }

    // Seeds present somewhere in the experiment but absent from a cell (done or not).
    let mut all_seeds: BTreeSet<u64> = results.iter().map(|r| r.seed).collect();
    all_seeds.extend(incomplete.iter().filter_map(|r| r.seed));
    let mut all_cells: BTreeSet<(Transfer, Lambda)> = cells.keys().cloned().collect();
    all_cells.extend(incomplete_cells.keys().cloned());
    let mut missing = Vec::new();
    for t in &columns {
        for (_, lambda) in all_cells.iter().filter(|(ct, _)| ct == t) {
            let key = (t.clone(), *lambda);
            let mut present: BTreeSet<u64> = cells.get(&key).into_iter().flatten().map(|r| r.seed).collect();
            present.extend(incomplete_cells.get(&key).into_iter().flatten().flatten());
            for seed in all_seeds.difference(&present) {
                missing.push(MissingRun { transfer: t.clone(), lambda: lambda.0, seed: *seed });
            }
        }
    }
    (groups, columns, missing)
}

/// `summary.csv`: one row per transfer and lambda. Accuracies in %, sd = sample sd over the
/// n seeds.
pub fn summary_csv(groups: &[GroupSummary]) -> String {
    let mut out = String::from(
        "source,target,transfer,lambda,n_seeds,seeds,final_acc_pct_mean,final_acc_pct_sd,\
         best_acc_pct_mean,best_acc_pct_sd,n_incomplete,paper_method,paper_lambda,paper_acc_pct,\
         paper_acc_pm,final_minus_paper\n",
    );
    for g in groups {
        let seeds: Vec<String> = g.seeds.iter().map(|s| s.to_string()).collect();
        let (method, paper_mean, paper_pm) = match &g.paper {
            Some((m, c)) => (m.clone(), Some(c.mean), c.pm),
            None => (String::new(), None, None),
        };
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            g.transfer.source,
            g.transfer.target,
            g.transfer.label(),
            g.lambda,
            g.final_acc.n,
            seeds.join(";"),
            fmt_csv(Some(g.final_acc.mean)),
            fmt_csv(g.final_acc.sd),
            fmt_csv(Some(g.best_acc.mean)),
            fmt_csv(g.best_acc.sd),
            g.n_incomplete,
            method,
            g.paper_lambda.map(|l| l.to_string()).unwrap_or_default(),
            fmt_csv(paper_mean),
            fmt_csv(paper_pm),
            fmt_csv(g.diff_vs_paper()),
        );
    }
    out
}

/// Which lambda each transfer uses in one "adapted" row of the main table.
struct AdaptedRow {
    /// `λ > 0` (one adapted lambda per transfer) or `λ = 0.8` (one row per lambda).
    name: String,
    lambdas: BTreeMap<Transfer, f64>,
}

fn adapted_rows(groups: &[GroupSummary]) -> Vec<AdaptedRow> {
    let mut per_transfer: BTreeMap<Transfer, Vec<f64>> = BTreeMap::new();
    for g in groups.iter().filter(|g| g.lambda > 0.0) {
        per_transfer.entry(g.transfer.clone()).or_default().push(g.lambda);
    }
    if per_transfer.is_empty() {
        return Vec::new();
    }
    if per_transfer.values().all(|ls| ls.len() == 1) {
        let lambdas: BTreeMap<Transfer, f64> = per_transfer.into_iter().map(|(t, ls)| (t, ls[0])).collect();
        let distinct: BTreeSet<Lambda> = lambdas.values().map(|l| Lambda(*l)).collect();
        let name = match distinct.len() {
            1 => format!("λ = {}", distinct.first().expect("one").0),
            _ => "λ > 0".to_string(),
        };
        return vec![AdaptedRow { name, lambdas }];
    }
    let distinct: BTreeSet<Lambda> = per_transfer.values().flatten().map(|l| Lambda(*l)).collect();
    distinct
        .into_iter()
        .map(|l| AdaptedRow {
            name: format!("λ = {}", l.0),
            lambdas: per_transfer
                .iter()
                .filter(|(_, ls)| ls.iter().any(|x| Lambda(*x) == l))
                .map(|(t, _)| (t.clone(), l.0))
                .collect(),
        })
        .collect()
}

/// `table.md`: the comparison with the paper's Table 1, the per-cell detail and the notes on
/// incomplete and missing runs. `title` heads the file (the experiment's folder name).
pub fn table_markdown(report: &ReportParts<'_>, title: &str) -> String {
    let ReportParts { groups, columns, incomplete, missing, paper } = *report;
    let find =
        |t: &Transfer, lambda: f64| groups.iter().find(|g| &g.transfer == t && Lambda(g.lambda) == Lambda(lambda));
    let mut header = vec![String::new()];
    header.extend(columns.iter().map(|t| t.label()));
    header.push("avg".into());

    // A row of our numbers: `lambda_of` picks the cell per transfer, `value` reads it.
    let mean_of_all = |values: &[Option<f64>]| -> Option<f64> {
        let v: Option<Vec<f64>> = values.iter().copied().collect();
        v.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
    };
    let ours_row = |label_stub: &str, lambda_of: &dyn Fn(&Transfer) -> Option<f64>, best: bool| -> Vec<String> {
        let stats: Vec<Option<Stat>> = columns
            .iter()
            .map(|t| lambda_of(t).and_then(|l| find(t, l)).map(|g| if best { g.best_acc } else { g.final_acc }))
            .collect();
        let ns: BTreeSet<usize> = stats.iter().flatten().map(|s| s.n).collect();
        let row_n = (ns.len() == 1).then(|| *ns.first().expect("one"));
        let what = if best { "best (not the paper's protocol)" } else { "final" };
        let spread = match row_n {
            Some(1) => "1 seed, no sd".to_string(),
            Some(n) => format!("mean ± sd over {n} seeds"),
            None => "mean ± sd over n seeds".to_string(),
        };
        let mut row = vec![format!("ours {label_stub}: {what}, {spread}")];
        row.extend(stats.iter().map(|s| s.as_ref().map_or(DASH.to_string(), |s| fmt_cell(s, row_n))));
        let avg = mean_of_all(&stats.iter().map(|s| s.map(|s| s.mean)).collect::<Vec<_>>());
        row.push(avg.map_or(DASH.to_string(), |a| format!("{a:.1}")));
        row
    };
    let ours_means = |lambda_of: &dyn Fn(&Transfer) -> Option<f64>| -> Vec<Option<f64>> {
        columns.iter().map(|t| lambda_of(t).and_then(|l| find(t, l)).map(|g| g.final_acc.mean)).collect()
    };
    let paper_row = |p: &PaperTable, method: &str| -> Vec<String> {
        let mut row = vec![format!("paper {method}")];
        row.extend(columns.iter().map(|t| p.cell(method, t).map_or(DASH.to_string(), |c| fmt_paper(&c))));
        row.push(p.avg(method, columns).map_or(DASH.to_string(), |a| format!("{a:.1}")));
        row
    };
    let diff_row = |label: String, ours: &[Option<f64>], p: &PaperTable, method: &str| -> Vec<String> {
        let diffs: Vec<Option<f64>> =
            columns.iter().zip(ours).map(|(t, o)| o.zip(p.cell(method, t)).map(|(o, c)| o - c.mean)).collect();
        let mut row = vec![label];
        row.extend(diffs.iter().map(|d| d.map_or(DASH.to_string(), fmt_diff)));
        let avg = mean_of_all(ours).zip(p.avg(method, columns)).map(|(o, q)| o - q);
        row.push(avg.map_or(DASH.to_string(), fmt_diff));
        row
    };

    let zero = |_: &Transfer| Some(0.0);
    let adapted = adapted_rows(groups);
    let mut rows: Vec<Vec<String>> = Vec::new();
    if let Some(p) = paper {
        let mut row = vec!["λ, paper (D-CORAL)".to_string()];
        row.extend(columns.iter().map(|t| p.lambda(t).map_or(DASH.to_string(), |l| l.to_string())));
        row.push(String::new());
        rows.push(row);
    }
    if let [only] = adapted.as_slice() {
        let mut row = vec!["λ, ours (adapted)".to_string()];
        row.extend(columns.iter().map(|t| only.lambdas.get(t).map_or(DASH.to_string(), |l| l.to_string())));
        row.push(String::new());
        rows.push(row);
    }
    if let Some(p) = paper {
        rows.push(paper_row(p, "CNN"));
    }
    rows.push(ours_row("λ = 0", &zero, false));
    if let Some(p) = paper {
        rows.push(diff_row("ours λ = 0 - paper CNN".into(), &ours_means(&zero), p, "CNN"));
        rows.push(paper_row(p, "D-CORAL"));
    }
    for a in &adapted {
        let lambda_of = |t: &Transfer| a.lambdas.get(t).copied();
        rows.push(ours_row(&a.name, &lambda_of, false));
        if let Some(p) = paper {
            rows.push(diff_row(format!("ours {} - paper D-CORAL", a.name), &ours_means(&lambda_of), p, "D-CORAL"));
        }
    }
    rows.push(ours_row("λ = 0", &zero, true));
    for a in &adapted {
        let lambda_of = |t: &Transfer| a.lambdas.get(t).copied();
        rows.push(ours_row(&a.name, &lambda_of, true));
    }

    let mut md = String::new();
    let _ = writeln!(md, "# Target accuracy (%): {title}\n");
    md.push_str(
        "- **final**: target accuracy at the last iteration (the paper's protocol), mean ± sd over the \
         n seeds; sd is the sample standard deviation (n - 1).\n\
         - **best**: the highest target accuracy among a run's evaluations, then mean ± sd over seeds. \
         **Not the paper's protocol**: it chooses the iteration by the target labels.\n\
         - avg: mean over the transfers shown; — where a transfer has no value. Cells marked (n=k) \
         have a different number of seeds than the rest of their row.\n",
    );
    if let Some(p) = paper {
        let _ = writeln!(
            md,
            "- paper: {} (± as printed there). Our λ = 0 is compared with the paper's CNN (no adaptation), \
             λ > 0 with D-CORAL; differences are in percentage points.",
            p.title
        );
    }
    md.push('\n');
    md.push_str(&markdown_table(&header, &rows));

    md.push_str("\n## Per transfer and λ\n\n");
    let detail_header: Vec<String> = [
        "transfer",
        "λ",
        "seeds (done)",
        "final, mean ± sd",
        "best, mean ± sd (not the paper's protocol)",
        "incomplete",
        "paper",
        "final - paper",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let detail_rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            let seeds: Vec<String> = g.seeds.iter().map(|s| s.to_string()).collect();
            vec![
                g.transfer.label(),
                g.lambda.to_string(),
                format!("{} ({})", g.seeds.len(), seeds.join(", ")),
                fmt_mean_sd(&g.final_acc),
                fmt_mean_sd(&g.best_acc),
                g.n_incomplete.to_string(),
                g.paper.as_ref().map_or(DASH.to_string(), |(m, c)| format!("{m} {}", fmt_paper(c))),
                g.diff_vs_paper().map_or(DASH.to_string(), fmt_diff),
            ]
        })
        .collect();
    md.push_str(&markdown_table(&detail_header, &detail_rows));

    md.push_str("\n## Runs not counted\n\n");
    let no_baseline: Vec<String> =
        columns.iter().filter(|t| find_any(groups, t, |l| l == 0.0).is_none()).map(|t| t.label()).collect();
    let no_adapted: Vec<String> =
        columns.iter().filter(|t| find_any(groups, t, |l| l > 0.0).is_none()).map(|t| t.label()).collect();
    if incomplete.is_empty() && missing.is_empty() && no_baseline.is_empty() && no_adapted.is_empty() {
        md.push_str("None: every run folder found is done, and no cell lacks a seed that another cell has.\n");
    }
    if !incomplete.is_empty() {
        let _ = writeln!(md, "Incomplete (status other than done; left out of the tables): {}\n", incomplete.len());
        for r in incomplete {
            let _ = writeln!(md, "- {}", r.describe());
        }
        md.push('\n');
    }
    if !missing.is_empty() {
        let _ = writeln!(md, "Missing (a seed other cells have, with no run folder here): {}\n", missing.len());
        for m in missing {
            let _ = writeln!(md, "- {} λ = {}: seed {}", m.transfer.label(), m.lambda, m.seed);
        }
        md.push('\n');
    }
    if !no_baseline.is_empty() {
        let _ = writeln!(md, "No done λ = 0 run: {}\n", no_baseline.join(", "));
    }
    if !no_adapted.is_empty() {
        let _ = writeln!(md, "No done λ > 0 run: {}\n", no_adapted.join(", "));
    }
    while md.ends_with("\n\n") {
        md.pop();
    }
    md
}

fn find_any<'a>(groups: &'a [GroupSummary], t: &Transfer, pred: impl Fn(f64) -> bool) -> Option<&'a GroupSummary> {
    groups.iter().find(|g| &g.transfer == t && pred(g.lambda))
}

/// The inputs of [`table_markdown`].
#[derive(Clone, Copy)]
pub struct ReportParts<'a> {
    pub groups: &'a [GroupSummary],
    pub columns: &'a [Transfer],
    pub incomplete: &'a [IncompleteRun],
    pub missing: &'a [MissingRun],
    pub paper: Option<&'a PaperTable>,
}

/// Reads the experiment at `experiment_dir`, writes `summary.csv` and `table.md` into it and
/// returns what it found. `paper_table` overrides the `paper_table` named by the experiment's
/// `spec.json`; with neither, the table has no paper rows.
pub fn report(experiment_dir: &Path, paper_table: Option<&Path>) -> Result<Report> {
    let exp = load_experiment(experiment_dir)?;
    let paper_path = paper_table.map(Path::to_path_buf).or_else(|| exp.spec.paper_table.clone());
    let paper = match &paper_path {
        Some(p) => Some(PaperTable::read(p).with_context(|| {
            format!(
                "loading the paper table for {} (paths in spec.json are relative to the current directory)",
                experiment_dir.display()
            )
        })?),
        None => None,
    };
    let mut results = Vec::with_capacity(exp.done.len());
    for run in &exp.done {
        let (final_acc, best_acc) = run_accuracies(run)?;
        results.push(RunResult {
            transfer: run.transfer.clone(),
            lambda: run.lambda,
            seed: run.seed,
            final_acc,
            best_acc,
        });
    }
    let (groups, columns, missing) = summarize(&results, &exp.incomplete, paper.as_ref());
    let title = experiment_dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| experiment_dir.display().to_string());
    let parts = ReportParts {
        groups: &groups,
        columns: &columns,
        incomplete: &exp.incomplete,
        missing: &missing,
        paper: paper.as_ref(),
    };
    let markdown = table_markdown(&parts, &title);
    let csv = summary_csv(&groups);
    let summary_path = experiment_dir.join("summary.csv");
    let table_path = experiment_dir.join("table.md");
    crate::metrics::write_atomic(&summary_path, csv.as_bytes())?;
    crate::metrics::write_atomic(&table_path, markdown.as_bytes())?;
    let no_baseline = columns.iter().filter(|t| find_any(&groups, t, |l| l == 0.0).is_none()).cloned().collect();
    let no_adapted = columns.iter().filter(|t| find_any(&groups, t, |l| l > 0.0).is_none()).cloned().collect();
    Ok(Report {
        groups,
        columns,
        incomplete: exp.incomplete,
        missing,
        no_baseline,
        no_adapted,
        paper,
        markdown,
        csv,
        summary_csv: summary_path,
        table_md: table_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paper() -> PaperTable {
        serde_json::from_str(include_str!("../experiments/paper-table1.json")).unwrap()
    }

    fn run(source: &str, target: &str, lambda: f64, seed: u64, final_acc: f64, best_acc: f64) -> RunResult {
        RunResult { transfer: Transfer::new(source, target), lambda, seed, final_acc, best_acc }
    }

    #[test]
    fn mean_sd_formatting() {
        assert_eq!(fmt_mean_sd(&Stat { n: 5, mean: 66.8, sd: Some(0.6) }), "66.8 ± 0.6");
        assert_eq!(fmt_mean_sd(&Stat::of(&[60.0, 62.0]).unwrap()), "61.0 ± 1.4");
        assert_eq!(fmt_mean_sd(&Stat::of(&[61.04]).unwrap()), "61.0");
        assert_eq!(fmt_cell(&Stat::of(&[61.04]).unwrap(), Some(2)), "61.0 (n=1)");
        assert_eq!(fmt_paper(&PaperCell { mean: 65.7, pm: None }), "65.7");
        assert_eq!(fmt_diff(0.6), "+0.6");
        assert_eq!(fmt_diff(-2.0), "-2.0");
        assert_eq!(fmt_diff(-0.04), "0.0");
    }

    #[test]
    fn stat_uses_the_sample_standard_deviation() {
        assert_eq!(Stat::of(&[]), None);
        let s = Stat::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.n, s.mean), (4, 2.5));
        // sum of squares 5, over n - 1 = 3
        assert!((s.sd.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(Stat::of(&[7.0]).unwrap().sd, None);
    }

    #[test]
    fn short_names_and_column_order() {
        assert_eq!(Transfer::new("amazon", "webcam").label(), "A->W");
        assert_eq!(Transfer::new("caltech10", "dslr").label(), "C->D");
        assert_eq!(Transfer::new("clipart", "amazon").label(), "clipart->A");
        let set: BTreeSet<Transfer> =
            [("webcam", "dslr"), ("caltech10", "amazon"), ("amazon", "dslr"), ("amazon", "caltech10")]
                .iter()
                .map(|(s, t)| Transfer::new(s, t))
                .collect();
        let labels: Vec<String> = column_order(&set, None).iter().map(Transfer::label).collect();
        assert_eq!(labels, ["A->D", "W->D", "A->C", "C->A"]);
    }

    #[test]
    fn paper_table_cells_and_averages() {
        let p = paper();
        let aw = Transfer::new("amazon", "webcam");
        assert_eq!(p.cell("D-CORAL", &aw), Some(PaperCell { mean: 66.4, pm: Some(0.4) }));
        assert_eq!(p.cell("CORAL", &aw), Some(PaperCell { mean: 64.3, pm: None }));
        assert_eq!(p.lambda(&Transfer::new("dslr", "webcam")), Some(0.0001));
        assert_eq!(p.cell("CNN", &Transfer::new("amazon", "caltech10")), None);
        // All six columns: the printed average (DDC prints 70.6; its six means give 70.67).
        let all: Vec<Transfer> = PAPER_SHIFTS.iter().map(|(s, t)| Transfer::new(s, t)).collect();
        assert_eq!(p.avg("DDC", &all), Some(70.6));
        // A subset: the mean over it.
        assert!((p.avg("CNN", &all[..2]).unwrap() - 62.7).abs() < 1e-9);
        assert_eq!(p.avg("CNN", &[Transfer::new("amazon", "caltech10")]), None);
    }

    #[test]
    fn markdown_table_pads_by_characters() {
        let header = vec!["".to_string(), "A->W".to_string()];
        let rows = vec![vec!["ours".to_string(), "61.0 ± 1.4".to_string()]];
        assert_eq!(
            markdown_table(&header, &rows),
            "|      | A->W       |\n|------|------------|\n| ours | 61.0 ± 1.4 |\n"
        );
    }

    #[test]
    fn small_table_without_paper() {
        let results = vec![
            run("amazon", "webcam", 0.0, 1, 0.60, 0.62),
            run("amazon", "webcam", 0.0, 2, 0.62, 0.63),
            run("amazon", "webcam", 0.8, 1, 0.66, 0.67),
        ];
        let (groups, columns, missing) = summarize(&results, &[], None);
        assert_eq!(missing, vec![MissingRun { transfer: Transfer::new("amazon", "webcam"), lambda: 0.8, seed: 2 }]);
        let parts = ReportParts { groups: &groups, columns: &columns, incomplete: &[], missing: &missing, paper: None };
        let md = table_markdown(&parts, "tiny");
        let expected = "\
# Target accuracy (%): tiny

- **final**: target accuracy at the last iteration (the paper's protocol), mean ± sd over the n seeds; sd is the sample standard deviation (n - 1).
- **best**: the highest target accuracy among a run's evaluations, then mean ± sd over seeds. **Not the paper's protocol**: it chooses the iteration by the target labels.
- avg: mean over the transfers shown; — where a transfer has no value. Cells marked (n=k) have a different number of seeds than the rest of their row.

|                                                                     | A->W       | avg  |
|---------------------------------------------------------------------|------------|------|
| λ, ours (adapted)                                                   | 0.8        |      |
| ours λ = 0: final, mean ± sd over 2 seeds                           | 61.0 ± 1.4 | 61.0 |
| ours λ = 0.8: final, 1 seed, no sd                                  | 66.0       | 66.0 |
| ours λ = 0: best (not the paper's protocol), mean ± sd over 2 seeds | 62.5 ± 0.7 | 62.5 |
| ours λ = 0.8: best (not the paper's protocol), 1 seed, no sd        | 67.0       | 67.0 |

## Per transfer and λ

| transfer | λ   | seeds (done) | final, mean ± sd | best, mean ± sd (not the paper's protocol) | incomplete | paper | final - paper |
|----------|-----|--------------|------------------|--------------------------------------------|------------|-------|---------------|
| A->W     | 0   | 2 (1, 2)     | 61.0 ± 1.4       | 62.5 ± 0.7                                 | 0          | —     | —             |
| A->W     | 0.8 | 1 (1)        | 66.0             | 67.0                                       | 0          | —     | —             |

## Runs not counted

Missing (a seed other cells have, with no run folder here): 1

- A->W λ = 0.8: seed 2
";
        assert_eq!(md, expected);
    }

    #[test]
    fn several_adapted_lambdas_get_a_row_each_and_gaps_show_a_dash() {
        let results = vec![
            run("amazon", "webcam", 0.0, 1, 0.60, 0.62),
            run("amazon", "webcam", 0.1, 1, 0.64, 0.65),
            run("amazon", "webcam", 1.0, 1, 0.66, 0.67),
            run("webcam", "dslr", 0.1, 1, 0.98, 0.99),
        ];
        let (groups, columns, missing) = summarize(&results, &[], Some(&paper()));
        assert!(missing.is_empty());
        let p = paper();
        let parts = ReportParts { groups: &groups, columns: &columns, incomplete: &[], missing: &[], paper: Some(&p) };
        let md = table_markdown(&parts, "sweep");
        assert!(!md.contains("λ, ours (adapted)"), "{md}");
        assert!(md.contains("| ours λ = 0.1: final, 1 seed, no sd "), "{md}");
        assert!(md.contains("| ours λ = 1 - paper D-CORAL "), "{md}");
        // λ = 1 has no W->D run: dash in the cell and in the average.
        let row = md.lines().find(|l| l.starts_with("| ours λ = 1: final")).unwrap();
        assert!(row.ends_with("| 66.0       | —          | —    |"), "{row}");
        assert!(md.contains("No done λ = 0 run: W->D"), "{md}");
    }

    #[test]
    fn incomplete_runs_are_described() {
        let r = IncompleteRun {
            rel_dir: PathBuf::from("amazon_webcam/lambda_0.8/seed_3"),
            transfer: Some(Transfer::new("amazon", "webcam")),
            lambda: Some(0.8),
            seed: Some(3),
            status: "diverged".into(),
            iterations: Some(2000),
            iterations_done: Some(350),
        };
        assert_eq!(r.describe(), "`amazon_webcam/lambda_0.8/seed_3`: diverged, 350 of 2000 iterations");
    }
}
