//! Each method against lambda = 0 (the CNN: coral without its term), seed by seed. The two runs
//! of a transfer with the same seed share their initial fc8, their batches, crops, mirrors and
//! dropout masks, and differ only by the method (its loss; DDC's adaptation layer, DAN's frozen
//! convolutions); so the per-seed difference of their final target accuracies is the effect of
//! CORAL with the seed noise of the data order taken out. Per transfer: its mean, a 95%
//! confidence interval and an exact sign-flip test over the seeds (`stats::Effect`), and the
//! verdict the interval gives ("better", "worse", "no difference shown"); over the transfers,
//! the same for each seed's mean difference across them.
//!
//! Beside it, what the CORAL term did to the losses, each the mean over the last 20% of the
//! steps (`rule::WINDOW`): the final CORAL loss l_CORAL (Eq. 2, unweighted) of both runs, whose
//! ratio is the paper's Fig. 3(c) comparison (the "CORAL distance" of a lambda = 0 run there is
//! this quantity, plotted against the CORAL loss of panel (b); the Frobenius norm
//! ‖C_S − C_T‖_F would give about its square root); and the paper's rule for the lambda > 0 run,
//! `lambda * l_CORAL / l_class` pooled over the seeds, which should be within a factor 2 of 1.

use std::collections::{BTreeMap, BTreeSet};

use super::read::RunResult;
use super::stats::{is_baseline, Effect, Stat};
use super::DomainShift;
use crate::config::Method;
use crate::experiment::rule::{self, WindowLosses};

/// One method and lambda of one transfer against that transfer's CNN (coral, lambda = 0), over
/// the seeds both have done.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub transfer: DomainShift,
    pub method: Method,
    pub lambda: f64,
    pub seeds: Vec<u64>,
    /// Final target accuracy of the lambda = 0 and lambda > 0 runs of those seeds, in %.
    pub baseline_acc: Stat,
    pub adapted_acc: Stat,
    /// Final target accuracy, lambda > 0 minus lambda = 0, per seed, in points.
    pub effect: Effect,
    /// Seeds on which lambda > 0 ended higher (strictly).
    pub improved: usize,
    /// Final CORAL loss (the window's mean) of the lambda = 0 and the lambda > 0 runs; `None`
    /// where no run's logs cover the window.
    pub coral_baseline: Option<Stat>,
    pub coral_adapted: Option<Stat>,
    /// The paper's rule at the end of the lambda > 0 runs: `lambda * l_CORAL / l_class` over
    /// the window, pooled over the seeds; `None` where no run's logs cover the window.
    pub rule_ratio: Option<f64>,
}

impl Paired {
    /// Final CORAL loss of lambda = 0 over that of lambda > 0 (means over seeds).
    pub fn coral_ratio(&self) -> Option<f64> {
        match (&self.coral_baseline, &self.coral_adapted) {
            (Some(b), Some(a)) if a.mean > 0.0 => Some(b.mean / a.mean),
            _ => None,
        }
    }

    /// Whether the rule held at the end (within a factor 2), where it could be read.
    pub fn rule_held(&self) -> Option<bool> {
        self.rule_ratio.map(|r| rule::holds(r, rule::FACTOR))
    }
}

/// Every (transfer, method, lambda) but the CNN itself with at least one seed that the CNN
/// also has; in the order of `columns`, then methods (coral, ddc, dan), lambdas ascending.
pub fn pair(results: &[RunResult], columns: &[DomainShift]) -> Vec<Paired> {
    type Cell<'a> = (&'a DomainShift, Method, super::Lambda);
    let mut by_cell: BTreeMap<Cell, BTreeMap<u64, &RunResult>> = BTreeMap::new();
    for r in results {
        by_cell.entry((&r.transfer, r.method, super::Lambda(r.lambda))).or_default().insert(r.seed, r);
    }
    let mut out = Vec::new();
    for transfer in columns {
        let Some(baseline) = by_cell.get(&(transfer, Method::Coral, super::Lambda(0.0))) else { continue };
        for ((t, method, lambda), runs) in &by_cell {
            if *t != transfer || is_baseline(*method, lambda.0) {
                continue;
            }
            let both: Vec<(&RunResult, &RunResult)> =
                runs.iter().filter_map(|(seed, a)| baseline.get(seed).map(|b| (*b, *a))).collect();
            let gains: Vec<f64> = both.iter().map(|(b, a)| 100.0 * (a.final_acc - b.final_acc)).collect();
            let Some(effect) = Effect::of(&gains) else { continue };
            let acc = |pick: fn(&(&RunResult, &RunResult)) -> f64| {
                Stat::of(&both.iter().map(|p| 100.0 * pick(p)).collect::<Vec<_>>()).expect("a seed")
            };
            let coral = |pick: fn(&(&RunResult, &RunResult)) -> Option<WindowLosses>| {
                Stat::of(&both.iter().filter_map(|p| pick(p).map(|w| w.coral_loss)).collect::<Vec<_>>())
            };
            let windows: Vec<WindowLosses> = both.iter().filter_map(|(_, a)| a.window).collect();
            out.push(Paired {
                transfer: transfer.clone(),
                method: *method,
                lambda: lambda.0,
                seeds: both.iter().map(|(b, _)| b.seed).collect(),
                baseline_acc: acc(|(b, _)| b.final_acc),
                adapted_acc: acc(|(_, a)| a.final_acc),
                improved: gains.iter().filter(|&&g| g > 0.0).count(),
                effect,
                coral_baseline: coral(|(b, _)| b.window),
                coral_adapted: coral(|(_, a)| a.window),
                rule_ratio: (!windows.is_empty()).then(|| rule::ratio(lambda.0, &windows)),
            });
        }
    }
    out
}

/// The comparison of one method averaged over transfers: for each seed that every row has, the
/// mean over the rows of that seed's difference, and the effect of those means; beside it the
/// mean over the rows of each side's accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct Average {
    pub method: Method,
    /// The rows averaged (`pair`'s, one adapted lambda per transfer).
    pub transfers: usize,
    pub seeds: Vec<u64>,
    /// Mean over the transfers of the lambda = 0 and lambda > 0 accuracies, in %.
    pub baseline_acc: f64,
    pub adapted_acc: f64,
    pub effect: Effect,
}

/// One [`Average`] per method of `paired` that has it (see [`average`]), in method order.
pub fn averages(paired: &[Paired], results: &[RunResult]) -> Vec<Average> {
    Method::ALL
        .iter()
        .filter_map(|&m| {
            let rows: Vec<Paired> = paired.iter().filter(|p| p.method == m).cloned().collect();
            average(&rows, results)
        })
        .collect()
}

/// The average over `paired`, rows of one method (see [`Average`]); `None` when a transfer has
/// several lambdas (which one would count?) or no seed is common to every row.
pub fn average(paired: &[Paired], results: &[RunResult]) -> Option<Average> {
    let transfers: BTreeSet<&DomainShift> = paired.iter().map(|p| &p.transfer).collect();
    if paired.is_empty() || transfers.len() != paired.len() || paired.iter().any(|p| p.method != paired[0].method) {
        return None;
    }
    let mut seeds: BTreeSet<u64> = paired[0].seeds.iter().copied().collect();
    for p in paired {
        seeds = seeds.intersection(&p.seeds.iter().copied().collect()).copied().collect();
    }
    if seeds.is_empty() {
        return None;
    }
    let method = paired[0].method;
    let acc = |t: &DomainShift, method: Method, lambda: f64, seed: u64| {
        results
            .iter()
            .find(|r| {
                &r.transfer == t
                    && r.method == method
                    && super::Lambda(r.lambda) == super::Lambda(lambda)
                    && r.seed == seed
            })
            .map(|r| 100.0 * r.final_acc)
            .expect("a paired run")
    };
    let adapted = |p: &Paired, s: u64| acc(&p.transfer, p.method, p.lambda, s);
    let baseline = |p: &Paired, s: u64| acc(&p.transfer, Method::Coral, 0.0, s);
    let per_seed: Vec<f64> = seeds
        .iter()
        .map(|&s| paired.iter().map(|p| adapted(p, s) - baseline(p, s)).sum::<f64>())
        .map(|sum| sum / paired.len() as f64)
        .collect();
    let side = |of: &dyn Fn(&Paired, u64) -> f64| {
        let per_row: Vec<f64> =
            paired.iter().map(|p| seeds.iter().map(|&s| of(p, s)).sum::<f64>() / seeds.len() as f64).collect();
        per_row.iter().sum::<f64>() / per_row.len() as f64
    };
    let (baseline_acc, adapted_acc) = (side(&baseline), side(&adapted));
    Some(Average {
        method,
        transfers: paired.len(),
        seeds: seeds.into_iter().collect(),
        baseline_acc,
        adapted_acc,
        effect: Effect::of(&per_seed).expect("a seed"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::report::stats::Verdict;

    fn run(target: &str, lambda: f64, seed: u64, acc: f64, coral: f64) -> RunResult {
        RunResult {
            transfer: DomainShift::new("amazon", target),
            method: Method::Coral,
            lambda,
            seed,
            final_acc: acc,
            best_acc: acc,
            final_distance: coral.sqrt(),
            window: Some(WindowLosses {
                class_loss: 0.5,
                coral_loss: coral,
                align_loss: coral,
                steps: 60,
                from_steps: true,
            }),
        }
    }

    #[test]
    fn pairs_by_seed_and_counts_only_shared_seeds() {
        let results = [
            run("webcam", 0.0, 1, 0.60, 9.0),
            run("webcam", 0.0, 2, 0.70, 11.0),
            run("webcam", 0.8, 1, 0.65, 0.5),
            run("webcam", 0.8, 2, 0.69, 0.75),
            run("webcam", 0.8, 3, 0.99, 1.0), // no lambda = 0 partner: left out
            run("dslr", 0.5, 1, 0.9, 1.0),    // no baseline at all
        ];
        let columns = [DomainShift::new("amazon", "webcam"), DomainShift::new("amazon", "dslr")];
        let paired = pair(&results, &columns);
        assert_eq!(paired.len(), 1);
        let p = &paired[0];
        assert_eq!((p.lambda, p.seeds.clone(), p.improved), (0.8, vec![1, 2], 1));
        assert!((p.effect.diff.mean - 2.0).abs() < 1e-9, "{:?}", p.effect); // (+5 - 1) / 2 points
                                                                            // Differences +5 and -1: the interval holds 0.
        assert_eq!(p.effect.verdict(), Verdict::NoDifferenceShown);
        assert_eq!((p.baseline_acc.mean, p.adapted_acc.mean), (65.0, 67.0));
        assert_eq!(p.coral_baseline.unwrap().mean, 10.0);
        assert_eq!(p.coral_adapted.unwrap().mean, 0.625);
        assert_eq!(p.coral_ratio(), Some(16.0));
        // 0.8 * mean CORAL 0.625 / mean class loss 0.5
        assert!((p.rule_ratio.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(p.rule_held(), Some(true));
    }

    #[test]
    fn the_average_pairs_each_seeds_mean_over_transfers() {
        let results = [
            run("webcam", 0.0, 1, 0.60, 9.0),
            run("webcam", 0.0, 2, 0.70, 9.0),
            run("webcam", 0.8, 1, 0.64, 1.0),
            run("webcam", 0.8, 2, 0.72, 1.0),
            run("dslr", 0.0, 1, 0.80, 9.0),
            run("dslr", 0.0, 2, 0.82, 9.0),
            run("dslr", 0.1, 1, 0.82, 1.0),
            run("dslr", 0.1, 2, 0.86, 1.0),
            run("dslr", 0.1, 3, 0.99, 1.0), // seed 3 is not in every row
        ];
        let columns = [DomainShift::new("amazon", "webcam"), DomainShift::new("amazon", "dslr")];
        let paired = pair(&results, &columns);
        let avg = average(&paired, &results).unwrap();
        assert_eq!((avg.transfers, avg.seeds.clone()), (2, vec![1, 2]));
        // Seed 1: (+4 + 2) / 2 = 3; seed 2: (+2 + 4) / 2 = 3.
        assert!((avg.effect.diff.mean - 3.0).abs() < 1e-9 && avg.effect.diff.sd.unwrap() < 1e-9);
        assert!((avg.baseline_acc - 73.0).abs() < 1e-9 && (avg.adapted_acc - 76.0).abs() < 1e-9);
        // Two adapted lambdas on one transfer: no single average.
        let mut more = results.to_vec();
        more.push(run("webcam", 1.0, 1, 0.5, 1.0));
        assert_eq!(average(&pair(&more, &columns), &more), None);
    }
}
