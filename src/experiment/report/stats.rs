//! Statistics per transfer and lambda, from the per-run accuracies alone (no file access):
//! the done runs grouped by cell, mean ± sample sd over seeds, the paper's number beside each
//! cell, and the seeds a cell lacks that other cells have.

use std::collections::{BTreeMap, BTreeSet};

use super::paper::{column_order, paper_method_for, PaperCell, PaperTable};
use super::read::{IncompleteRun, RunResult};
use super::{DomainShift, Lambda};
use crate::config::Method;

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

/// What paired differences (one per seed) say about an effect: their mean, a 95% confidence
/// interval for it, an exact test of "no effect", and the verdict the interval gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effect {
    pub diff: Stat,
    /// 95% confidence interval of the mean difference, Student's t with n - 1 degrees of
    /// freedom: `mean ± t_{0.975, n-1} * sd / sqrt(n)`. `None` for n < 2.
    pub ci95: Option<(f64, f64)>,
    /// Two-sided p-value of the exact sign-flip permutation test over seeds: under "no effect"
    /// each seed's difference is as likely negated, so of the 2^n sign patterns, the share whose
    /// mean is at least as far from 0 as the one observed. With n seeds it is at least
    /// 2 / 2^n (0.0625 for 5 seeds): a seed count that small can never reach 0.05 by it.
    pub p_sign_flip: f64,
}

/// What the interval of an [`Effect`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The whole 95% interval is above 0.
    Better,
    /// The whole 95% interval is below 0.
    Worse,
    /// The interval holds 0 (or there is none, n < 2): the runs do not tell an effect from
    /// seed noise, whatever the sign of the mean.
    NoDifferenceShown,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::NoDifferenceShown => "no difference shown",
        }
    }
}

impl Effect {
    /// The effect of paired differences `diffs`; `None` for none.
    pub fn of(diffs: &[f64]) -> Option<Effect> {
        let diff = Stat::of(diffs)?;
        let ci95 = diff.sd.map(|sd| {
            let half = t_quantile(0.975, diffs.len() - 1) * sd / (diffs.len() as f64).sqrt();
            (diff.mean - half, diff.mean + half)
        });
        Some(Effect { diff, ci95, p_sign_flip: sign_flip_p(diffs) })
    }

    /// From the interval alone, never from the sign of the mean.
    pub fn verdict(&self) -> Verdict {
        match self.ci95 {
            Some((lo, _)) if lo > 0.0 => Verdict::Better,
            Some((_, hi)) if hi < 0.0 => Verdict::Worse,
            _ => Verdict::NoDifferenceShown,
        }
    }
}

/// The `p` quantile of Student's t with `df` degrees of freedom (statrs' inverse CDF).
pub fn t_quantile(p: f64, df: usize) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    StudentsT::new(0.0, 1.0, df as f64).expect("df >= 1").inverse_cdf(p)
}

/// The exact two-sided sign-flip permutation p-value of `diffs` (see [`Effect::p_sign_flip`]):
/// all 2^n sign patterns, n at most 20 (a million patterns); beyond that the first 20.
pub fn sign_flip_p(diffs: &[f64]) -> f64 {
    let d = &diffs[..diffs.len().min(20)];
    let observed = d.iter().sum::<f64>().abs();
    // A pattern "at least as extreme" within rounding of the observed sum counts.
    let tolerance = 1e-9 * d.iter().map(|x| x.abs()).sum::<f64>().max(1e-300);
    let patterns = 1u64 << d.len();
    let extreme = (0..patterns)
        .filter(|mask| {
            let sum: f64 = d.iter().enumerate().map(|(i, x)| if mask >> i & 1 == 1 { -x } else { *x }).sum();
            sum.abs() >= observed - tolerance
        })
        .count();
    extreme as f64 / patterns as f64
}

/// One transfer, method and lambda over its done seeds. Accuracies in %.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSummary {
    pub transfer: DomainShift,
    pub method: Method,
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
    /// The paper's row it stands beside (`CNN` for coral at lambda = 0, else the method's:
    /// `D-CORAL`, `DDC`, `DAN`), with the paper's number if it has one.
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

/// A seed that other cells of the experiment have but this transfer, method and lambda lacks.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingRun {
    pub transfer: DomainShift,
    pub method: Method,
    pub lambda: f64,
    pub seed: u64,
}

/// The grouping and comparison part of the report: no file access.
pub fn summarize(
    results: &[RunResult],
    incomplete: &[IncompleteRun],
    paper: Option<&PaperTable>,
) -> (Vec<GroupSummary>, Vec<DomainShift>, Vec<MissingRun>) {
    let mut cells: BTreeMap<(DomainShift, Method, Lambda), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        cells.entry((r.transfer.clone(), r.method, Lambda(r.lambda))).or_default().push(r);
    }
    let mut incomplete_cells: BTreeMap<(DomainShift, Method, Lambda), Vec<Option<u64>>> = BTreeMap::new();
    for r in incomplete {
        if let (Some(t), Some(l)) = (&r.transfer, r.lambda) {
            incomplete_cells.entry((t.clone(), r.method, Lambda(l))).or_default().push(r.seed);
        }
    }
    let mut transfers: BTreeSet<DomainShift> = cells.keys().map(|(t, _, _)| t.clone()).collect();
    transfers.extend(incomplete_cells.keys().map(|(t, _, _)| t.clone()));
    let columns = column_order(&transfers, paper);

    let mut groups = Vec::new();
    for t in &columns {
        for ((_, method, lambda), runs) in cells.iter().filter(|((ct, _, _), _)| ct == t) {
            let pct = |f: fn(&RunResult) -> f64| -> Vec<f64> { runs.iter().map(|r| 100.0 * f(r)).collect() };
            let row = paper_method_for(*method, lambda.0);
            groups.push(GroupSummary {
                transfer: t.clone(),
                method: *method,
                lambda: lambda.0,
                seeds: runs.iter().map(|r| r.seed).collect(),
                final_acc: Stat::of(&pct(|r| r.final_acc)).expect("a cell has runs"),
                best_acc: Stat::of(&pct(|r| r.best_acc)).expect("a cell has runs"),
                n_incomplete: incomplete_cells.get(&(t.clone(), *method, *lambda)).map_or(0, |v| v.len()),
                paper: paper.zip(row).and_then(|(p, row)| p.cell(row, t).map(|c| (row.to_string(), c))),
                paper_lambda: paper.and_then(|p| p.lambda(t)).filter(|_| *method == Method::Coral),
            });
        }
    }

    // Seeds present somewhere in the experiment but absent from a cell (done or not).
    let mut all_seeds: BTreeSet<u64> = results.iter().map(|r| r.seed).collect();
    all_seeds.extend(incomplete.iter().filter_map(|r| r.seed));
    let mut all_cells: BTreeSet<(DomainShift, Method, Lambda)> = cells.keys().cloned().collect();
    all_cells.extend(incomplete_cells.keys().cloned());
    let mut missing = Vec::new();
    for t in &columns {
        for (_, method, lambda) in all_cells.iter().filter(|(ct, _, _)| ct == t) {
            let key = (t.clone(), *method, *lambda);
            let mut present: BTreeSet<u64> = cells.get(&key).into_iter().flatten().map(|r| r.seed).collect();
            present.extend(incomplete_cells.get(&key).into_iter().flatten().flatten());
            for seed in all_seeds.difference(&present) {
                missing.push(MissingRun { transfer: t.clone(), method: *method, lambda: lambda.0, seed: *seed });
            }
        }
    }
    (groups, columns, missing)
}

/// The group of transfer `t`, `method` and exactly `lambda`.
pub fn find_group<'a>(
    groups: &'a [GroupSummary],
    t: &DomainShift,
    method: Method,
    lambda: f64,
) -> Option<&'a GroupSummary> {
    groups.iter().find(|g| &g.transfer == t && g.method == method && Lambda(g.lambda) == Lambda(lambda))
}

/// The first group of transfer `t` that passes `pred`.
fn find_any<'a>(
    groups: &'a [GroupSummary],
    t: &DomainShift,
    pred: impl Fn(&GroupSummary) -> bool,
) -> Option<&'a GroupSummary> {
    groups.iter().find(|g| &g.transfer == t && pred(g))
}

/// The `columns` with no done CNN run (coral, lambda = 0).
pub fn without_baseline(groups: &[GroupSummary], columns: &[DomainShift]) -> Vec<DomainShift> {
    columns.iter().filter(|t| find_any(groups, t, |g| is_baseline(g.method, g.lambda)).is_none()).cloned().collect()
}

/// The `columns` with no done adapted run (any method at lambda > 0).
pub fn without_adapted(groups: &[GroupSummary], columns: &[DomainShift]) -> Vec<DomainShift> {
    columns.iter().filter(|t| find_any(groups, t, |g| g.lambda > 0.0).is_none()).cloned().collect()
}

/// The no-adaptation baseline every method is paired with: coral at lambda = 0 (the CNN).
pub fn is_baseline(method: Method, lambda: f64) -> bool {
    method == Method::Coral && lambda == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_uses_the_sample_standard_deviation() {
        assert_eq!(Stat::of(&[]), None);
        let s = Stat::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.n, s.mean), (4, 2.5));
        // sum of squares 5, over n - 1 = 3
        assert!((s.sd.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(Stat::of(&[7.0]).unwrap().sd, None);
    }

    /// Reference values: the t quantiles are `scipy.stats.t.ppf(0.975, df)` (tables give 2.776
    /// and 4.303); the interval is NumPy's `d.mean() -+ 2.7764451051977987 * d.std(ddof=1) /
    /// sqrt(5)` for `d = [1.5, 0.7, 2.1, 1.0, 1.8]`.
    #[test]
    fn t_intervals_match_scipy() {
        assert!((t_quantile(0.975, 4) - 2.7764451051977987).abs() < 1e-9);
        assert!((t_quantile(0.975, 2) - 4.302652729749464).abs() < 1e-9);
        let e = Effect::of(&[1.5, 0.7, 2.1, 1.0, 1.8]).unwrap();
        let (lo, hi) = e.ci95.unwrap();
        assert!((lo - 0.7099679293085674).abs() < 1e-12 && (hi - 2.130032070691433).abs() < 1e-12, "{lo} {hi}");
        assert_eq!(e.verdict(), Verdict::Better);
        let e = Effect::of(&[1.5, -0.7, 2.1]).unwrap();
        assert_eq!(e.verdict(), Verdict::NoDifferenceShown, "{e:?}");
        assert_eq!(Effect::of(&[-1.0, -2.0, -1.5, -1.2]).unwrap().verdict(), Verdict::Worse);
        assert_eq!(Effect::of(&[3.0]).unwrap().verdict(), Verdict::NoDifferenceShown);
        assert_eq!(Effect::of(&[]), None);
    }

    #[test]
    fn the_sign_flip_test_is_exact() {
        // All five positive: only the observed pattern and its mirror are as extreme.
        assert_eq!(sign_flip_p(&[1.5, 0.7, 2.1, 1.0, 1.8]), 2.0 / 32.0);
        // 3 seeds: at least 2/8.
        assert_eq!(sign_flip_p(&[1.0, 2.0, 3.0]), 0.25);
        // [1, -1, 2]: sums of +-1 +-1 +-2 with |sum| >= 2: all but the two where 1 and -1 agree in
        // sign against 2 (+1 +1 -2 = 0 and -1 -1 +2 = 0): 6 of 8.
        assert_eq!(sign_flip_p(&[1.0, -1.0, 2.0]), 0.75);
        assert_eq!(sign_flip_p(&[0.0, 0.0]), 1.0);
    }
}
