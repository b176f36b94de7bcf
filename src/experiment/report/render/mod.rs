//! The report as text, from the statistics alone: `table.md` (the comparison with the paper's
//! Table 1, the per-cell detail, the runs not counted) and `summary.csv`; the method against
//! lambda = 0 and `headline.md` in `pairs.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::paired::{Average, Paired};
use super::paper::{PaperCell, PaperTable};
use super::read::IncompleteRun;
use super::stats::{
    find_group, is_baseline, without_adapted, without_baseline, Effect, GroupSummary, MissingRun, Stat, Verdict,
};
use super::{DomainShift, Lambda};
use crate::config::Method;

mod pairs;

use pairs::paired_table;
pub use pairs::{fmt_effect, headline};

// ---------------------------------------------------------------------------------------
// Numbers and tables

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

/// Three significant digits, in fixed point from 0.1 up and in scientific notation below
/// (CORAL distances span from 1e-3 to 1e3 across backbones).
pub fn fmt_sig3(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 || !a.is_finite() {
        format!("{x}")
    } else if a >= 0.1 {
        let decimals = (2 - a.log10().floor() as i64).max(0) as usize;
        format!("{x:.decimals$}")
    } else {
        format!("{x:.2e}")
    }
}

/// A number for `summary.csv`: 4 decimals, empty for none.
fn fmt_csv(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.4}")).unwrap_or_default()
}

/// An average with one decimal, or the dash.
fn fmt_avg(avg: Option<f64>) -> String {
    avg.map_or(DASH.to_string(), |a| format!("{a:.1}"))
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
// summary.csv

/// `summary.csv`: one row per transfer and lambda. Accuracies in %, sd = sample sd over the
/// n seeds.
pub fn summary_csv(groups: &[GroupSummary]) -> String {
    let mut out = String::from(
        "source,target,transfer,method,lambda,n_seeds,seeds,final_acc_pct_mean,final_acc_pct_sd,\
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
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            g.transfer.source,
            g.transfer.target,
            g.transfer.label(),
            g.method.name(),
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

// ---------------------------------------------------------------------------------------
// table.md

/// The inputs of [`table_markdown`].
#[derive(Clone, Copy)]
pub struct ReportParts<'a> {
    pub groups: &'a [GroupSummary],
    pub columns: &'a [DomainShift],
    pub incomplete: &'a [IncompleteRun],
    pub missing: &'a [MissingRun],
    pub paper: Option<&'a PaperTable>,
    pub paired: &'a [Paired],
    pub averages: &'a [Average],
}

/// `table.md`: the comparison with the paper's Table 1, the per-cell detail and the notes on
/// incomplete and missing runs. `title` heads the file (the experiment's folder name).
pub fn table_markdown(report: &ReportParts<'_>, title: &str) -> String {
    let mut md = intro(title, report.paper);
    md.push_str(&main_table(report));
    if !report.paired.is_empty() {
        md.push_str("\n## Each method against λ = 0, paired by seed\n\n");
        md.push_str(&paired_table(report.paired, report.averages));
    }
    md.push_str("\n## Per transfer and λ\n\n");
    md.push_str(&detail_table(report.groups));
    md.push_str("\n## Runs not counted\n\n");
    md.push_str(&runs_not_counted(report));
    while md.ends_with("\n\n") {
        md.pop();
    }
    md
}

/// The heading and the notes on what the numbers are.
fn intro(title: &str, paper: Option<&PaperTable>) -> String {
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
             λ > 0 with D-CORAL, ddc with DDC, dan with DAN, shallow-coral with CORAL (svm, shallow CORAL's \
             classifier without the transform, has no row there); differences are in percentage points.",
            p.title
        );
    }
    md.push('\n');
    md
}

// The main table: one column per transfer plus avg; rows of the paper's numbers, ours, and
// their differences.

/// Which method and lambda each transfer uses in one row of ours: `λ = 0` (the CNN, every
/// transfer), `λ > 0` (one adapted lambda per transfer) or `λ = 0.8` (one row per adapted
/// lambda); rows of other methods carry the method's name (`ddc λ = 0.25`).
struct LambdaRow {
    name: String,
    method: Method,
    lambdas: BTreeMap<DomainShift, f64>,
}

impl LambdaRow {
    /// `λ = 0` on every column.
    fn baseline(columns: &[DomainShift]) -> Self {
        Self {
            name: "λ = 0".into(),
            method: Method::Coral,
            lambdas: columns.iter().map(|t| (t.clone(), 0.0)).collect(),
        }
    }

    /// This row's group on transfer `t`.
    fn group<'a>(&self, groups: &'a [GroupSummary], t: &DomainShift) -> Option<&'a GroupSummary> {
        self.lambdas.get(t).and_then(|l| find_group(groups, t, self.method, *l))
    }
}

/// The adapted rows of each method, in method order: one if every transfer has a single
/// lambda, else one per lambda.
fn adapted_rows(groups: &[GroupSummary]) -> Vec<LambdaRow> {
    Method::ALL.iter().flat_map(|&m| method_rows(groups, m)).collect()
}

fn method_rows(groups: &[GroupSummary], method: Method) -> Vec<LambdaRow> {
    let prefix = if method == Method::Coral { String::new() } else { format!("{} ", method.name()) };
    let mut per_transfer: BTreeMap<DomainShift, Vec<f64>> = BTreeMap::new();
    for g in groups.iter().filter(|g| g.method == method && !is_baseline(g.method, g.lambda)) {
        per_transfer.entry(g.transfer.clone()).or_default().push(g.lambda);
    }
    if per_transfer.is_empty() {
        return Vec::new();
    }
    if per_transfer.values().all(|ls| ls.len() == 1) {
        let lambdas: BTreeMap<DomainShift, f64> = per_transfer.into_iter().map(|(t, ls)| (t, ls[0])).collect();
        let name = match shared_lambda(&lambdas) {
            // Evaluated methods have no lambda of their own.
            _ if !method.trains() => method.name().to_string(),
            Some(l) => format!("{prefix}λ = {l}"),
            None => format!("{prefix}λ > 0"),
        };
        return vec![LambdaRow { name, method, lambdas }];
    }
    let distinct: BTreeSet<Lambda> = per_transfer.values().flatten().map(|l| Lambda(*l)).collect();
    distinct
        .into_iter()
        .map(|l| LambdaRow {
            name: format!("{prefix}λ = {}", l.0),
            method,
            lambdas: per_transfer
                .iter()
                .filter(|(_, ls)| ls.iter().any(|x| Lambda(*x) == l))
                .map(|(t, _)| (t.clone(), l.0))
                .collect(),
        })
        .collect()
}

/// The lambda every transfer of a row runs at, where they share one.
fn shared_lambda(lambdas: &BTreeMap<DomainShift, f64>) -> Option<f64> {
    let distinct: BTreeSet<Lambda> = lambdas.values().map(|l| Lambda(*l)).collect();
    match distinct.len() {
        1 => distinct.first().map(|l| l.0),
        _ => None,
    }
}

/// Which accuracy a row of ours shows.
#[derive(Clone, Copy)]
enum Measure {
    Final,
    Best,
}

impl Measure {
    fn of(self, g: &GroupSummary) -> Stat {
        match self {
            Measure::Final => g.final_acc,
            Measure::Best => g.best_acc,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Measure::Final => "final",
            Measure::Best => "best (not the paper's protocol)",
        }
    }
}

/// The mean of all values; `None` if any is missing or there are none.
fn mean_of_all(values: &[Option<f64>]) -> Option<f64> {
    let v: Option<Vec<f64>> = values.iter().copied().collect();
    v.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

/// The header: an empty corner, the transfers, `avg`.
fn main_header(columns: &[DomainShift]) -> Vec<String> {
    let mut header = vec![String::new()];
    header.extend(columns.iter().map(|t| t.label()));
    header.push("avg".into());
    header
}

/// The table of ours against the paper: the lambdas, then the final accuracies with the
/// paper's and the differences, then the best accuracies.
fn main_table(parts: &ReportParts<'_>) -> String {
    // No λ = 0 row where no transfer has a λ = 0 run (a folder of one method's runs).
    let has_baseline = parts.groups.iter().any(|g| is_baseline(g.method, g.lambda));
    let baseline = has_baseline.then(|| LambdaRow::baseline(parts.columns));
    let adapted = adapted_rows(parts.groups);
    let mut rows = lambda_rows(parts, &adapted);
    rows.extend(final_rows(parts, baseline.as_ref(), &adapted));
    rows.extend(best_rows(parts, baseline.as_ref(), &adapted));
    markdown_table(&main_header(parts.columns), &rows)
}

/// The paper's lambda per transfer, and ours where there is one adapted row.
fn lambda_rows(parts: &ReportParts<'_>, adapted: &[LambdaRow]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let lambda_row = |label: &str, lambda_of: &dyn Fn(&DomainShift) -> Option<f64>| {
        let mut row = vec![label.to_string()];
        row.extend(parts.columns.iter().map(|t| lambda_of(t).map_or(DASH.to_string(), |l| l.to_string())));
        row.push(String::new());
        row
    };
    if let Some(p) = parts.paper {
        rows.push(lambda_row("λ, paper (D-CORAL)", &|t| p.lambda(t)));
    }
    // Ours, for each trained method with one row whose lambda was set per transfer (by the rule).
    for method in Method::ALL.iter().filter(|m| m.trains()) {
        let of_method: Vec<&LambdaRow> = adapted.iter().filter(|r| r.method == *method).collect();
        if let [only] = of_method[..] {
            if *method == Method::Coral || shared_lambda(&only.lambdas).is_none() {
                let label = match method {
                    Method::Coral => "λ, ours (adapted)".to_string(),
                    m => format!("λ, ours {} (adapted)", m.name()),
                };
                rows.push(lambda_row(&label, &|t| only.lambdas.get(t).copied()));
            }
        }
    }
    rows
}

/// The final accuracies: paper CNN, ours λ = 0 and the difference; then per method with runs,
/// its paper row (D-CORAL, DDC, DAN), each adapted row of ours and its difference (paper rows
/// only with a paper table).
fn final_rows(parts: &ReportParts<'_>, baseline: Option<&LambdaRow>, adapted: &[LambdaRow]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    if let Some(p) = parts.paper {
        rows.push(paper_row(parts.columns, p, "CNN"));
    }
    if let Some(baseline) = baseline {
        rows.push(ours_row(parts, baseline, Measure::Final));
        if let Some(p) = parts.paper {
            rows.push(diff_row(parts, baseline, p, "CNN"));
        }
    }
    for method in Method::ALL {
        let of_method: Vec<&LambdaRow> = adapted.iter().filter(|r| r.method == method).collect();
        if of_method.is_empty() && method != Method::Coral {
            continue;
        }
        let paper = parts.paper.zip(method.paper_row());
        if let Some((p, row)) = paper {
            rows.push(paper_row(parts.columns, p, row));
        }
        for a in of_method {
            rows.push(ours_row(parts, a, Measure::Final));
            if let Some((p, row)) = paper {
                rows.push(diff_row(parts, a, p, row));
            }
        }
    }
    rows
}

/// The best accuracies of ours: λ = 0, then each adapted row.
fn best_rows(parts: &ReportParts<'_>, baseline: Option<&LambdaRow>, adapted: &[LambdaRow]) -> Vec<Vec<String>> {
    baseline.into_iter().chain(adapted).map(|r| ours_row(parts, r, Measure::Best)).collect()
}

/// One row of ours: mean ± sd per transfer, the seeds counted in the label (or `(n=k)` on the
/// cells that differ), and the average of the means.
fn ours_row(parts: &ReportParts<'_>, row: &LambdaRow, measure: Measure) -> Vec<String> {
    let stats: Vec<Option<Stat>> =
        parts.columns.iter().map(|t| row.group(parts.groups, t).map(|g| measure.of(g))).collect();
    let ns: BTreeSet<usize> = stats.iter().flatten().map(|s| s.n).collect();
    let row_n = (ns.len() == 1).then(|| *ns.first().expect("one"));
    let spread = match row_n {
        Some(1) => "1 seed, no sd".to_string(),
        Some(n) => format!("mean ± sd over {n} seeds"),
        None => "mean ± sd over n seeds".to_string(),
    };
    let mut cells = vec![format!("ours {}: {}, {spread}", row.name, measure.name())];
    cells.extend(stats.iter().map(|s| s.as_ref().map_or(DASH.to_string(), |s| fmt_cell(s, row_n))));
    cells.push(fmt_avg(mean_of_all(&stats.iter().map(|s| s.map(|s| s.mean)).collect::<Vec<_>>())));
    cells
}

/// The paper's `method` per transfer and its average over the columns.
fn paper_row(columns: &[DomainShift], p: &PaperTable, method: &str) -> Vec<String> {
    let mut cells = vec![format!("paper {method}")];
    cells.extend(columns.iter().map(|t| p.cell(method, t).map_or(DASH.to_string(), |c| fmt_paper(&c))));
    cells.push(fmt_avg(p.avg(method, columns)));
    cells
}

/// Ours (final) minus the paper's `method`, per transfer and on the averages.
fn diff_row(parts: &ReportParts<'_>, row: &LambdaRow, p: &PaperTable, method: &str) -> Vec<String> {
    let ours: Vec<Option<f64>> =
        parts.columns.iter().map(|t| row.group(parts.groups, t).map(|g| g.final_acc.mean)).collect();
    let diffs: Vec<Option<f64>> =
        parts.columns.iter().zip(&ours).map(|(t, o)| o.zip(p.cell(method, t)).map(|(o, c)| o - c.mean)).collect();
    let mut cells = vec![format!("ours {} - paper {method}", row.name)];
    cells.extend(diffs.iter().map(|d| d.map_or(DASH.to_string(), fmt_diff)));
    let avg = mean_of_all(&ours).zip(p.avg(method, parts.columns)).map(|(o, q)| o - q);
    cells.push(avg.map_or(DASH.to_string(), fmt_diff));
    cells
}

// The detail table and the notes.

/// One row per transfer and lambda: seeds, final and best, incomplete runs, the paper.
fn detail_table(groups: &[GroupSummary]) -> String {
    let header: Vec<String> = [
        "transfer",
        "method",
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
    let rows: Vec<Vec<String>> = groups.iter().map(detail_row).collect();
    markdown_table(&header, &rows)
}

fn detail_row(g: &GroupSummary) -> Vec<String> {
    let seeds: Vec<String> = g.seeds.iter().map(|s| s.to_string()).collect();
    vec![
        g.transfer.label(),
        g.method.name().to_string(),
        g.lambda.to_string(),
        format!("{} ({})", g.seeds.len(), seeds.join(", ")),
        fmt_mean_sd(&g.final_acc),
        fmt_mean_sd(&g.best_acc),
        g.n_incomplete.to_string(),
        g.paper.as_ref().map_or(DASH.to_string(), |(m, c)| format!("{m} {}", fmt_paper(c))),
        g.diff_vs_paper().map_or(DASH.to_string(), fmt_diff),
    ]
}

/// The runs left out: incomplete run folders, missing seeds, transfers without a baseline or
/// an adapted run; or `None: ...`. Each part ends in a blank line.
fn runs_not_counted(parts: &ReportParts<'_>) -> String {
    let labels = |ts: Vec<DomainShift>| -> Vec<String> { ts.iter().map(DomainShift::label).collect() };
    let no_baseline = labels(without_baseline(parts.groups, parts.columns));
    let no_adapted = labels(without_adapted(parts.groups, parts.columns));
    let mut md = String::new();
    if parts.incomplete.is_empty() && parts.missing.is_empty() && no_baseline.is_empty() && no_adapted.is_empty() {
        md.push_str("None: every run folder found is done, and no cell lacks a seed that another cell has.\n");
    }
    md.push_str(&incomplete_list(parts.incomplete));
    md.push_str(&missing_list(parts.missing));
    if !no_baseline.is_empty() {
        let _ = writeln!(md, "No done λ = 0 run: {}\n", no_baseline.join(", "));
    }
    if !no_adapted.is_empty() {
        let _ = writeln!(md, "No done λ > 0 run: {}\n", no_adapted.join(", "));
    }
    md
}

/// `Incomplete (...): n` and one line per run folder; nothing when there are none.
fn incomplete_list(incomplete: &[IncompleteRun]) -> String {
    let mut md = String::new();
    if !incomplete.is_empty() {
        let _ = writeln!(md, "Incomplete (status other than done; left out of the tables): {}\n", incomplete.len());
        for r in incomplete {
            let _ = writeln!(md, "- {}", r.describe());
        }
        md.push('\n');
    }
    md
}

/// `Missing (...): n` and one line per missing seed; nothing when there are none.
fn missing_list(missing: &[MissingRun]) -> String {
    let mut md = String::new();
    if !missing.is_empty() {
        let _ = writeln!(md, "Missing (a seed other cells have, with no run folder here): {}\n", missing.len());
        for m in missing {
            let method = if m.method == Method::Coral { String::new() } else { format!(" {}", m.method.name()) };
            let _ = writeln!(md, "- {}{method} λ = {}: seed {}", m.transfer.label(), m.lambda, m.seed);
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests;
