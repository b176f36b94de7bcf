//! CORAL against lambda = 0, seed by seed. The two runs of a transfer with the same seed share
//! their initial fc8, their batches, crops, mirrors and dropout masks, and differ only by the
//! CORAL term; so the per-seed difference of their final target accuracies is the effect of
//! CORAL with the seed noise of the data order taken out, and its mean ± sd over seeds says
//! whether CORAL helps on that transfer. Beside it, the CORAL distance ‖C_S − C_T‖_F at the end
//! of both runs: the paper's Fig. 3(b) shows it growing without the CORAL term and staying
//! small with it.

use std::collections::BTreeMap;

use super::read::RunResult;
use super::stats::Stat;
use super::Transfer;

/// One adapted lambda of one transfer against that transfer's lambda = 0, over the seeds
/// both have done.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub transfer: Transfer,
    pub lambda: f64,
    pub seeds: Vec<u64>,
    /// Final target accuracy, lambda > 0 minus lambda = 0, per seed: mean ± sd, in points.
    pub gain: Stat,
    /// Seeds on which lambda > 0 ended higher (strictly).
    pub improved: usize,
    /// Final CORAL distance of the lambda = 0 runs and of the lambda > 0 runs (runs without a
    /// logged distance left out).
    pub distance_baseline: Option<Stat>,
    pub distance_adapted: Option<Stat>,
}

impl Paired {
    /// CORAL helps on this transfer when the mean gain is positive.
    pub fn helps(&self) -> bool {
        self.gain.mean > 0.0
    }
}

/// Every (transfer, lambda > 0) with at least one seed that its lambda = 0 also has; in the
/// order of `columns`, lambdas ascending.
pub fn pair(results: &[RunResult], columns: &[Transfer]) -> Vec<Paired> {
    let mut by_cell: BTreeMap<(&Transfer, super::Lambda), BTreeMap<u64, &RunResult>> = BTreeMap::new();
    for r in results {
        by_cell.entry((&r.transfer, super::Lambda(r.lambda))).or_default().insert(r.seed, r);
    }
    let mut out = Vec::new();
    for transfer in columns {
        let Some(baseline) = by_cell.get(&(transfer, super::Lambda(0.0))) else { continue };
        for ((t, lambda), runs) in &by_cell {
            if *t != transfer || lambda.0 == 0.0 {
                continue;
            }
            let both: Vec<(&RunResult, &RunResult)> =
                runs.iter().filter_map(|(seed, a)| baseline.get(seed).map(|b| (*b, *a))).collect();
            let gains: Vec<f64> = both.iter().map(|(b, a)| 100.0 * (a.final_acc - b.final_acc)).collect();
            let Some(gain) = Stat::of(&gains) else { continue };
            let distances = |pick: fn(&(&RunResult, &RunResult)) -> f64| -> Option<Stat> {
                Stat::of(&both.iter().map(pick).filter(|d| d.is_finite()).collect::<Vec<_>>())
            };
            out.push(Paired {
                transfer: transfer.clone(),
                lambda: lambda.0,
                seeds: both.iter().map(|(b, _)| b.seed).collect(),
                improved: gains.iter().filter(|&&g| g > 0.0).count(),
                gain,
                distance_baseline: distances(|(b, _)| b.final_distance),
                distance_adapted: distances(|(_, a)| a.final_distance),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, lambda: f64, seed: u64, acc: f64, distance: f64) -> RunResult {
        RunResult {
            transfer: Transfer::new("amazon", target),
            lambda,
            seed,
            final_acc: acc,
            best_acc: acc,
            final_distance: distance,
        }
    }

    #[test]
    fn pairs_by_seed_and_counts_only_shared_seeds() {
        let results = [
            run("webcam", 0.0, 1, 0.60, 9.0),
            run("webcam", 0.0, 2, 0.70, 11.0),
            run("webcam", 0.8, 1, 0.65, 3.0),
            run("webcam", 0.8, 2, 0.69, 5.0),
            run("webcam", 0.8, 3, 0.99, 1.0), // no lambda = 0 partner: left out
            run("dslr", 0.5, 1, 0.9, 1.0),    // no baseline at all
        ];
        let columns = [Transfer::new("amazon", "webcam"), Transfer::new("amazon", "dslr")];
        let paired = pair(&results, &columns);
        assert_eq!(paired.len(), 1);
        let p = &paired[0];
        assert_eq!((p.lambda, p.seeds.clone(), p.improved), (0.8, vec![1, 2], 1));
        assert!((p.gain.mean - 2.0).abs() < 1e-9, "{:?}", p.gain); // (+5 - 1) / 2 points
        assert!(p.helps());
        assert_eq!(p.distance_baseline.unwrap().mean, 10.0);
        assert_eq!(p.distance_adapted.unwrap().mean, 4.0);
    }
}
