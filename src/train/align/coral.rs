//! The CORAL loss of Sun & Saenko (2016), computed on the last layer's outputs.
//!
//! For a batch `D` of `n` rows (images) and `d` columns (last-layer outputs), Eq. 2:
//!
//! ```text
//! C = 1/(n-1) * (DᵀD − (1/n) (1ᵀD)ᵀ(1ᵀD))
//! ```
//!
//! and Eq. 1, the loss between the source covariance `C_S` and the target covariance `C_T`:
//!
//! ```text
//! l_CORAL = 1/(4 d²) * ‖C_S − C_T‖²_F        (squared Frobenius norm)
//! ```
//!
//! The gradient reaches both branches (Eq. 3-4): `∂l/∂D_S = 1/(d² (n_S−1)) (D_S − 1 mean(D_S)) (C_S − C_T)`
//! and the target gradient has the opposite sign. Rows are samples and columns variables:
//! libtorch's `cov` takes the transposed orientation, one of the public mistakes this
//! module avoids (others: no `1/(n-1)`, a mean where the sum belongs, a square root).

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// Covariance of the columns of `d` (Eq. 2). Computed as `(D − 1 mean(D))ᵀ(D − 1 mean(D)) / (n−1)`,
/// which is algebraically Eq. 2 (expand the product) and loses less precision in float32.
/// # Shapes
/// `[n, d]` -> `[d, d]`, `n >= 2`
pub fn covariance(d: &Tensor) -> Result<Tensor> {
    let size = d.size();
    if size.len() != 2 {
        bail!("CORAL covariance needs a [rows, features] matrix, got shape {size:?}");
    }
    let n = size[0];
    if n < 2 {
        bail!("CORAL covariance needs at least 2 rows (it divides by n - 1), got {n}");
    }
    let centred = d - d.mean_dim(0, true, d.kind()); // [n, d]
    Ok(centred.transpose(0, 1).matmul(&centred) / (n - 1) as f64)
}

/// The CORAL loss (Eq. 1) and the Frobenius distance ‖C_S − C_T‖_F it is made of.
pub struct Coral {
    /// `1/(4 d²) ‖C_S − C_T‖²_F`, a scalar tensor with autograd history.
    pub loss: Tensor,
    /// `‖C_S − C_T‖²_F`, detached, still on the inputs' device: a training step reads it back
    /// together with its other logged scalars, in one copy after the backward pass.
    pub squared_distance: Tensor,
}

impl Coral {
    /// `‖C_S − C_T‖_F`, without the `1/(4d²)` scale: the "CORAL distance" that is logged for
    /// every run, lambda = 0 included.
    pub fn distance(&self) -> f64 {
        self.squared_distance.to_kind(Kind::Double).double_value(&[]).sqrt()
    }
}

/// CORAL between source and target last-layer outputs (Eq. 1).
/// # Shapes
/// `source: [n_S, d]`, `target: [n_T, d]` -> scalar
pub fn coral(source: &Tensor, target: &Tensor) -> Result<Coral> {
    let (ds, dt) = (source.size(), target.size());
    if ds.len() != 2 || dt.len() != 2 || ds[1] != dt[1] {
        bail!("CORAL needs source and target of shape [n, d] with the same d, got {ds:?} and {dt:?}");
    }
    let d = ds[1] as f64;
    let diff = covariance(source)? - covariance(target)?;
    let squared = diff.square().sum(diff.kind());
    Ok(Coral { squared_distance: squared.detach(), loss: squared / (4.0 * d * d) })
}

/// Eq. 4's closed-form gradient of the loss with respect to the source batch (the target's
/// is the same with the roles swapped, hence the opposite sign).
pub fn source_gradient(source: &Tensor, target: &Tensor) -> Result<Tensor> {
    let (n, d) = (source.size()[0] as f64, source.size()[1] as f64);
    let centred = source - source.mean_dim(0, true, source.kind());
    let diff = covariance(source)? - covariance(target)?;
    Ok(centred.matmul(&diff) / (d * d * (n - 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

    /// Eq. 1-2 literally, in plain float64 loops: the reference the tensor code must meet.
    fn reference(s: &[Vec<f64>], t: &[Vec<f64>]) -> f64 {
        let cov = |rows: &[Vec<f64>]| {
            let (n, d) = (rows.len(), rows[0].len());
            let mut c = vec![vec![0.0; d]; d];
            let colsum: Vec<f64> = (0..d).map(|j| rows.iter().map(|r| r[j]).sum()).collect();
            for i in 0..d {
                for j in 0..d {
                    let dtd: f64 = rows.iter().map(|r| r[i] * r[j]).sum();
                    c[i][j] = (dtd - colsum[i] * colsum[j] / n as f64) / (n as f64 - 1.0);
                }
            }
            c
        };
        let (cs, ct) = (cov(s), cov(t));
        let d = s[0].len() as f64;
        let mut sq = 0.0;
        for i in 0..cs.len() {
            for j in 0..cs.len() {
                sq += (cs[i][j] - ct[i][j]).powi(2);
            }
        }
        sq / (4.0 * d * d)
    }

    fn rows(t: &Tensor) -> Vec<Vec<f64>> {
        Vec::<Vec<f64>>::try_from(t.to_kind(Kind::Double)).unwrap()
    }

    #[test]
    fn equals_the_float64_reference() {
        tch::manual_seed(3);
        for (n, d) in [(2, 3), (16, 10), (128, 31), (64, 1000)] {
            let s = Tensor::randn([n, d], F64) * 2.0 + 0.5;
            let t = Tensor::randn([n, d], F64).exp();
            let want = reference(&rows(&s), &rows(&t));
            let got = coral(&s, &t).unwrap().loss.double_value(&[]);
            assert!((got - want).abs() <= 1e-6 * want.abs(), "n={n} d={d}: {got} vs {want}");
            // float32, as training runs it: same value to float32 precision.
            let got32 = coral(&s.to_kind(Kind::Float), &t.to_kind(Kind::Float)).unwrap().loss.double_value(&[]);
            assert!((got32 - want).abs() <= 1e-4 * want.abs(), "float32 n={n} d={d}: {got32} vs {want}");
        }
    }

    #[test]
    fn autograd_gradient_is_the_closed_form() {
        tch::manual_seed(4);
        let s = Tensor::randn([20, 6], F64).set_requires_grad(true);
        let t = (Tensor::randn([20, 6], F64) * 3.0).set_requires_grad(true);
        coral(&s, &t).unwrap().loss.backward();
        let want_s = source_gradient(&s.detach(), &t.detach()).unwrap();
        let want_t = source_gradient(&t.detach(), &s.detach()).unwrap();
        assert!(s.grad().allclose(&want_s, 1e-10, 1e-12, false));
        assert!(t.grad().allclose(&want_t, 1e-10, 1e-12, false));
        // Opposite signs for the two branches: the gradient truly reaches the target.
        assert!(t.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0);
    }

    #[test]
    fn unchanged_by_a_constant_added_to_every_row() {
        tch::manual_seed(5);
        let s = Tensor::randn([32, 8], F64);
        let t = Tensor::randn([32, 8], F64) * 0.5;
        let shift = Tensor::randn([1, 8], F64) * 100.0;
        let a = coral(&s, &t).unwrap().loss.double_value(&[]);
        let b = coral(&(&s + &shift), &(&t - &shift)).unwrap().loss.double_value(&[]);
        assert!((a - b).abs() <= 1e-9 * a, "{a} vs {b}");
    }

    #[test]
    fn zero_for_identical_batches() {
        let s = Tensor::randn([16, 5], F64);
        let c = coral(&s, &s.copy()).unwrap();
        assert_eq!(c.loss.double_value(&[]), 0.0);
        assert_eq!(c.distance(), 0.0);
    }

    /// By hand: D_S = [[0,0],[2,2]] -> C_S = [[2,2],[2,2]]; D_T = [[0,0],[2,0]] -> C_T = [[2,0],[0,0]];
    /// ‖C_S − C_T‖²_F = 0 + 4 + 4 + 4 = 12; l = 12 / (4·2²) = 0.75; distance = √12.
    #[test]
    fn hand_worked_case() {
        let s = Tensor::from_slice(&[0.0f64, 0.0, 2.0, 2.0]).view([2, 2]);
        let t = Tensor::from_slice(&[0.0f64, 0.0, 2.0, 0.0]).view([2, 2]);
        let cs = covariance(&s).unwrap();
        assert_eq!(Vec::<f64>::try_from(cs.flatten(0, -1)).unwrap(), [2.0, 2.0, 2.0, 2.0]);
        let c = coral(&s, &t).unwrap();
        assert_eq!(c.loss.double_value(&[]), 0.75);
        assert!((c.distance() - 12f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn fewer_than_two_rows_is_an_error() {
        let one = Tensor::randn([1, 4], F64);
        let err = coral(&one, &one).err().unwrap().to_string();
        assert!(err.contains("at least 2 rows"), "{err}");
        let err = coral(&Tensor::randn([4, 3], F64), &Tensor::randn([4, 2], F64)).err().unwrap().to_string();
        assert!(err.contains("same d"), "{err}");
    }
}
