//! DAN's loss (Long et al. 2015, "Learning Transferable Features with Deep Adaptation
//! Networks", arXiv 1502.02791): the multi-kernel MMD between source and target at each of
//! fc6, fc7 and fc8, summed over the layers (Eq. 4), each by the paper's unbiased linear-time
//! estimate (section 3.2):
//!
//! ```text
//! d²_k = 2/n Σ_{i=1}^{n/2} g_k(z_i),   z_i = (s_{2i−1}, s_{2i}, t_{2i−1}, t_{2i})
//! g_k(z_i) = k(s_{2i−1}, s_{2i}) + k(t_{2i−1}, t_{2i}) − k(s_{2i−1}, t_{2i}) − k(s_{2i}, t_{2i−1})
//! ```
//!
//! with the kernel a convex combination of Gaussians (Eq. 2), `k(x, y) = Σ_u β_u exp(−‖x −
//! y‖² / γ_u)`. Choices, each with its source:
//! - Kernels: the five of the authors' released Caffe `mmd_layer` (thuml/transfer-caffe):
//!   bandwidths `γ·{1/4, 1/2, 1, 2, 4}` around a base `γ` = the mean squared distance between
//!   the rows of the source and target batch together (all ordered pairs of distinct rows),
//!   computed from the batch and held constant for the gradient (as that layer does). The
//!   paper's family is wider (2^-8 γ to 2^8 γ in steps of √2, around the median distance).
//! - Weights: equal, `β_u = 1/5` (the paper's `Σ β_u = 1`; its kernel-weight optimisation, a
//!   quadratic program per step, is left out; the released code does not run it either).
//! - Pairs: consecutive rows `(2i, 2i+1)` of each batch as the paper writes them (batches are
//!   shuffled); `n` is the smaller batch, rounded down to even. The released code draws random
//!   quadruples instead.

use anyhow::{bail, Result};
use tch::Tensor;

/// The factors of the base bandwidth (the released mmd_layer's five kernels).
pub const BANDWIDTH_FACTORS: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];

/// The base bandwidth `γ`: the mean squared distance between distinct rows of `source` and
/// `target` stacked, detached.
/// # Shapes
/// `source: [n_S, d]`, `target: [n_T, d]` -> scalar
pub fn base_bandwidth(source: &Tensor, target: &Tensor) -> Tensor {
    let all = Tensor::cat(&[source.detach(), target.detach()], 0); // [N, d]
    let n = all.size()[0];
    let sq = all.square().sum_dim_intlist(1, true, all.kind()); // [N, 1]
    let d2 = (&sq + sq.transpose(0, 1) - all.matmul(&all.transpose(0, 1)) * 2.0).clamp_min(0.0); // [N, N]
                                                                                                 // The diagonal is 0: the sum over all pairs is the sum over distinct ones.
    d2.sum(d2.kind()) / (n * (n - 1)) as f64
}

/// The multi-kernel `k(x, y)` for rows paired up: `Σ_u β_u exp(−‖x − y‖² / (γ f_u))`.
/// # Shapes
/// `x: [m, d]`, `y: [m, d]`, `gamma`: scalar -> `[m]`
fn kernel(x: &Tensor, y: &Tensor, gamma: &Tensor) -> Tensor {
    let d2 = (x - y).square().sum_dim_intlist(1, false, x.kind()); // [m]
    let beta = 1.0 / BANDWIDTH_FACTORS.len() as f64;
    BANDWIDTH_FACTORS.iter().map(|f| (-(&d2) / (gamma * *f)).exp() * beta).reduce(|a, b| a + b).expect("kernels")
}

/// The linear-time unbiased MK-MMD estimate `d²_k` between `source` and `target`, a scalar
/// with autograd history (through the rows, not the bandwidth).
/// # Shapes
/// `source: [n_S, d]`, `target: [n_T, d]`, both at least 2 rows -> scalar
pub fn mk_mmd2(source: &Tensor, target: &Tensor) -> Result<Tensor> {
    let (ds, dt) = (source.size(), target.size());
    if ds.len() != 2 || dt.len() != 2 || ds[1] != dt[1] {
        bail!("MK-MMD needs source and target of shape [n, d] with the same d, got {ds:?} and {dt:?}");
    }
    let n = ds[0].min(dt[0]) / 2 * 2;
    if n < 2 {
        bail!("the linear-time MK-MMD needs at least 2 rows per domain, got {} and {}", ds[0], dt[0]);
    }
    let gamma = base_bandwidth(source, target);
    let half = |x: &Tensor, first: i64| x.slice(0, first, n, 2); // rows first, first + 2, ...
    let (s1, s2, t1, t2) = (half(source, 0), half(source, 1), half(target, 0), half(target, 1));
    let g = kernel(&s1, &s2, &gamma) + kernel(&t1, &t2, &gamma) - kernel(&s1, &t2, &gamma) - kernel(&s2, &t1, &gamma);
    Ok(g.mean(g.kind())) // 2/n times the sum over the n/2 quadruples
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn identical_batches_have_no_discrepancy_and_shifted_ones_do() {
        let s = Tensor::randn([8, 5], (Kind::Double, Device::Cpu));
        assert!(mk_mmd2(&s, &s).unwrap().double_value(&[]).abs() < 1e-12);
        let far = mk_mmd2(&s, &(&s + 3.0)).unwrap().double_value(&[]);
        assert!(far > 0.1, "{far}");
        // Odd and unequal sizes use the first even count of the smaller batch.
        assert!(mk_mmd2(&s, &s.slice(0, 0, 5, 1)).is_ok());
        assert!(mk_mmd2(&s.slice(0, 0, 1, 1), &s).is_err());
    }

    /// The bandwidth by hand: rows 0, 1 and 3 on a line: squared distances 1, 9, 4 (each
    /// twice), mean 14 * 2 / 6.
    #[test]
    fn the_base_bandwidth_is_the_mean_squared_distance() {
        let s = Tensor::from_slice(&[0.0f64, 1.0]).view([2, 1]);
        let t = Tensor::from_slice(&[3.0f64]).view([1, 1]);
        assert!((base_bandwidth(&s, &t).double_value(&[]) - 28.0 / 6.0).abs() < 1e-12);
    }
}
