//! A multi-class linear SVM as scikit-learn's `LinearSVC` trains it by default (liblinear's
//! `L2R_L2LOSS_SVC_DUAL`): one-vs-rest, L2-regularised squared hinge loss, the bias a constant
//! feature of 1 that is regularised like the weights, solved in the dual by coordinate descent
//! (Hsieh et al., ICML 2008, Algorithm 1):
//!
//! ```text
//! min_α  ½ αᵀ(Q + D)α − Σ α_i,  α_i >= 0,  Q_ij = y_i y_j x_iᵀx_j,  D_ii = 1/(2C)
//! w = Σ α_i y_i x_i;  per coordinate: G = y_i wᵀx_i − 1 + D_ii α_i,
//! α_i ← max(α_i − G / (Q_ii + D_ii), 0)
//! ```
//!
//! until the projected gradients span less than `TOL` (or `MAX_EPOCHS`), coordinates visited in
//! a seeded random order each epoch. Written here because no maintained crate trains it: linfa-svm
//! is a binary SMO solver for kernels (one-vs-rest wired by hand), smartcore's multi-class SVC is
//! one-vs-one with an approximate online solver, and the liblinear bindings are unmaintained
//! since 2019 (a deprecated error crate, a C++ build). `tests/shallow_coral.rs` checks it against
//! `LinearSVC` on the same features.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Stop when the largest and smallest projected gradient of an epoch differ by less (sklearn's
/// `tol` default, 1e-4).
const TOL: f64 = 1e-4;
/// Epochs at most (sklearn's `max_iter` default, 1000).
const MAX_EPOCHS: usize = 1000;

/// One weight vector per class over the features and the constant 1 (last).
#[derive(Debug, Clone)]
pub struct LinearSvm {
    pub classes: usize,
    /// `[classes][dim + 1]`.
    pub weights: Vec<Vec<f64>>,
}

/// `x` with its constant bias feature appended.
fn with_bias(x: &[f64]) -> Vec<f64> {
    let mut v = x.to_vec();
    v.push(1.0);
    v
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl LinearSvm {
    /// Trains on rows `x` (each of the same length) with labels `y` in `0..classes`, cost `c`,
    /// coordinates visited in an order seeded by `seed`.
    pub fn fit(x: &[Vec<f64>], y: &[usize], classes: usize, c: f64, seed: u64) -> LinearSvm {
        let rows: Vec<Vec<f64>> = x.iter().map(|r| with_bias(r)).collect();
        let norms: Vec<f64> = rows.iter().map(|r| dot(r, r)).collect();
        let weights = (0..classes).map(|k| binary(&rows, &norms, |i| y[i] == k, c, seed ^ k as u64)).collect();
        LinearSvm { classes, weights }
    }

    /// The class with the largest score for each row.
    pub fn predict(&self, x: &[Vec<f64>]) -> Vec<usize> {
        x.iter()
            .map(|r| {
                let r = with_bias(r);
                (0..self.classes)
                    .map(|k| dot(&self.weights[k], &r))
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or(0, |(k, _)| k)
            })
            .collect()
    }

    /// Fraction of rows of `x` predicted as `y`.
    pub fn accuracy(&self, x: &[Vec<f64>], y: &[usize]) -> f64 {
        let hits = self.predict(x).iter().zip(y).filter(|(p, t)| p == t).count();
        hits as f64 / y.len().max(1) as f64
    }
}

/// One binary problem, `positive(i)` against the rest; returns `w` (bias last).
fn binary(rows: &[Vec<f64>], norms: &[f64], positive: impl Fn(usize) -> bool, c: f64, seed: u64) -> Vec<f64> {
    let n = rows.len();
    let dim = rows.first().map_or(0, Vec::len);
    let diag = 0.5 / c;
    let ys: Vec<f64> = (0..n).map(|i| if positive(i) { 1.0 } else { -1.0 }).collect();
    let mut alpha = vec![0.0; n];
    let mut w = vec![0.0; dim];
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..MAX_EPOCHS {
        order.shuffle(&mut rng);
        let (mut pg_max, mut pg_min) = (f64::NEG_INFINITY, f64::INFINITY);
        for &i in &order {
            let g = ys[i] * dot(&w, &rows[i]) - 1.0 + diag * alpha[i];
            let pg = if alpha[i] == 0.0 { g.min(0.0) } else { g };
            pg_max = pg_max.max(pg);
            pg_min = pg_min.min(pg);
            if pg != 0.0 {
                let old = alpha[i];
                alpha[i] = (old - g / (norms[i] + diag)).max(0.0);
                let step = (alpha[i] - old) * ys[i];
                for (wj, xj) in w.iter_mut().zip(&rows[i]) {
                    *wj += step * xj;
                }
            }
        }
        if pg_max - pg_min < TOL {
            break;
        }
    }
    w
}

/// The C of `grid` with the best mean accuracy over `folds`-fold cross-validation on `(x, y)`
/// (folds by position, every `folds`-th row; ties go to the smaller C), and that accuracy.
pub fn choose_c(x: &[Vec<f64>], y: &[usize], classes: usize, grid: &[f64], folds: usize, seed: u64) -> (f64, f64) {
    let mut best = (grid[0], f64::NEG_INFINITY);
    for &c in grid {
        let mut acc = 0.0;
        for f in 0..folds {
            let (train, test): (Vec<usize>, Vec<usize>) = (0..x.len()).partition(|i| i % folds != f);
            let pick = |idx: &[usize]| -> (Vec<Vec<f64>>, Vec<usize>) {
                (idx.iter().map(|&i| x[i].clone()).collect(), idx.iter().map(|&i| y[i]).collect())
            };
            let ((xt, yt), (xv, yv)) = (pick(&train), pick(&test));
            acc += LinearSvm::fit(&xt, &yt, classes, c, seed).accuracy(&xv, &yv);
        }
        let acc = acc / folds as f64;
        if acc > best.1 {
            best = (c, acc);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three separable clusters in 2-D: every point is classified right, and the margins hold.
    #[test]
    fn separable_classes_are_separated() {
        let centres = [(0.0, 0.0), (5.0, 0.0), (0.0, 5.0)];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        use rand::Rng;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (k, (cx, cy)) in centres.iter().enumerate() {
            for _ in 0..30 {
                x.push(vec![cx + rng.gen_range(-1.0..1.0), cy + rng.gen_range(-1.0..1.0)]);
                y.push(k);
            }
        }
        let svm = LinearSvm::fit(&x, &y, 3, 1.0, 7);
        assert_eq!(svm.accuracy(&x, &y), 1.0);
        assert_eq!(svm.predict(&[vec![5.0, 0.2], vec![0.1, 4.8], vec![-0.3, 0.1]]), [1, 2, 0]);
        let (c, acc) = choose_c(&x, &y, 3, &[0.001, 1.0], 2, 7);
        assert!(acc == 1.0 && [0.001, 1.0].contains(&c), "{c} {acc}");
    }
}
