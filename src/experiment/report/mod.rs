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
//!
//! The steps, one file each, each a function of the one before:
//! [`read`] (the experiment folder -> runs found, runs not counted, `spec.json`'s links; then
//! each done run's accuracies) -> [`stats`] (groups per transfer and lambda, mean ± sd, seeds
//! missing) and [`paired`] (lambda > 0 against lambda = 0 on the same seeds: intervals, tests,
//! verdicts, the paper's rule) -> [`render`] (`table.md`, `summary.csv` and `headline.md`, the
//! paired comparison that the README's headline copies, as text). [`paper`] is the paper's
//! Table 1 as data. [`report`] runs them in order and writes the two files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::Method;

/// Two experiments run for run (`deep-coral compare`): accuracy, CORAL loss, class loss.
pub mod compare;
/// CORAL against lambda = 0 on the same seeds: accuracy gained, CORAL distance.
pub mod paired;
/// The paper's Table 1 (`experiments/paper-table1.json`), its shifts and column order.
pub mod paper;
/// The experiment folder read from disk: run records, `spec.json`, per-run accuracies.
pub mod read;
/// `table.md` and `summary.csv` as text.
pub mod render;
/// Groups per transfer and lambda: mean ± sd over seeds, seeds missing from a cell.
pub mod stats;

use paper::PaperTable;
use read::IncompleteRun;
use render::ReportParts;
use stats::{GroupSummary, MissingRun};

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

/// A source -> target domain pair, as the report's columns and the paper's table have them
/// (the paper's word: a domain shift). The spec's block of a pair and its lambdas is
/// `spec::Transfer`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainShift {
    pub source: String,
    pub target: String,
}

impl DomainShift {
    pub fn new(source: &str, target: &str) -> Self {
        Self { source: source.to_string(), target: target.to_string() }
    }

    /// Table label, e.g. `A->W`.
    pub fn label(&self) -> String {
        format!("{}->{}", domain_short(&self.source), domain_short(&self.target))
    }

    /// The experiment's folder for this transfer, e.g. `amazon_webcam`.
    pub fn dir_name(&self) -> String {
        crate::experiment::run_id::transfer_dir(&self.source, &self.target)
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

/// Everything `report` found and wrote.
#[derive(Debug, Clone)]
pub struct Report {
    /// One per transfer and lambda with at least one done run; transfers in column order,
    /// lambdas ascending.
    pub groups: Vec<GroupSummary>,
    /// Transfers in column order (including those with only incomplete runs).
    pub columns: Vec<DomainShift>,
    pub incomplete: Vec<IncompleteRun>,
    pub missing: Vec<MissingRun>,
    /// Transfers with no done lambda = 0 run, and with no done lambda > 0 run.
    pub no_baseline: Vec<DomainShift>,
    pub no_adapted: Vec<DomainShift>,
    pub paper: Option<PaperTable>,
    /// CORAL against lambda = 0, per transfer and adapted lambda.
    pub paired: Vec<paired::Paired>,
    /// The same averaged over transfers, per method (one lambda per transfer each).
    pub averages: Vec<paired::Average>,
    /// The contents of `headline.md` (written when there is a paired comparison).
    pub headline: Option<String>,
    /// The contents of `table.md`.
    pub markdown: String,
    /// The contents of `summary.csv`.
    pub csv: String,
    pub summary_csv: PathBuf,
    pub table_md: PathBuf,
}

/// Reads the experiment at `experiment_dir`, writes `summary.csv` and `table.md` into it and
/// returns what it found. `paper_table` overrides the `paper_table` named by the experiment's
/// `spec.json`; with neither, the table has no paper rows.
pub fn report(experiment_dir: &Path, paper_table: Option<&Path>) -> Result<Report> {
    // read
    let exp = read::load_experiment(experiment_dir)?;
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
    let mut results: Vec<read::RunResult> = exp.done.iter().map(|d| d.result.clone()).collect();
    results.extend(exp.evaluated.iter().cloned());
    let results = &results;

    // stats
    let (groups, columns, missing) = stats::summarize(results, &exp.incomplete, paper.as_ref());
    let no_baseline = stats::without_baseline(&groups, &columns);
    let no_adapted = stats::without_adapted(&groups, &columns);
    let paired = paired::pair(results, &columns);
    let averages = paired::averages(&paired, results);

    // render
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
        paired: &paired,
        averages: &averages,
    };
    let markdown = render::table_markdown(&parts, &title);
    let csv = render::summary_csv(&groups);
    // The README's headline: Deep CORAL against the CNN.
    let coral: Vec<paired::Paired> = paired.iter().filter(|p| p.method == Method::Coral).cloned().collect();
    let coral_avg = averages.iter().find(|a| a.method == Method::Coral);
    let headline = (!coral.is_empty()).then(|| render::headline(&coral, coral_avg, &title));

    // write
    let summary_path = experiment_dir.join("summary.csv");
    let table_path = experiment_dir.join("table.md");
    crate::files::write_atomic(&summary_path, csv.as_bytes())?;
    crate::files::write_atomic(&table_path, markdown.as_bytes())?;
    if let Some(text) = &headline {
        crate::files::write_atomic(&experiment_dir.join("headline.md"), text.as_bytes())?;
    }
    Ok(Report {
        groups,
        columns,
        incomplete: exp.incomplete,
        missing,
        no_baseline,
        no_adapted,
        paper,
        paired,
        averages,
        headline,
        markdown,
        csv,
        summary_csv: summary_path,
        table_md: table_path,
    })
}
