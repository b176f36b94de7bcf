//! DDC's loss (Tzeng et al. 2014, "Deep Domain Confusion", arXiv 1412.3474): the maximum mean
//! discrepancy between the source and target outputs of the adaptation layer (`fc_adapt`,
//! 256 wide, between fc7 and fc8), with a linear kernel, as the Deep CORAL paper describes
//! DDC ("a single linear kernel to one layer", section 2). With the linear kernel the squared
//! MMD is the squared distance between the two means:
//!
//! ```text
//! MMD²(X_S, X_T) = ‖ 1/n_S Σ_i x_s_i − 1/n_T Σ_j x_t_j ‖²
//! ```
//!
//! and the objective `l_CLASS + lambda * MMD²` (lambda = 0.25 in DDC's Office experiments).
//! Source and target may differ in size. The gradient reaches both branches:
//! `∂/∂x_s_i = 2/n_S (μ_S − μ_T)`, the target's the same with the opposite sign and 1/n_T.

use anyhow::{bail, Result};
use tch::Tensor;

/// `‖mean(source) − mean(target)‖²`, a scalar with autograd history.
/// # Shapes
/// `source: [n_S, d]`, `target: [n_T, d]` -> scalar
pub fn linear_mmd2(source: &Tensor, target: &Tensor) -> Result<Tensor> {
    let (ds, dt) = (source.size(), target.size());
    if ds.len() != 2 || dt.len() != 2 || ds[1] != dt[1] || ds[0] < 1 || dt[0] < 1 {
        bail!("linear MMD needs source and target of shape [n, d] with the same d, got {ds:?} and {dt:?}");
    }
    let diff = source.mean_dim(0, false, source.kind()) - target.mean_dim(0, false, target.kind()); // [d]
    Ok(diff.square().sum(diff.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn the_squared_distance_of_the_means() {
        // means (2, 3) and (1, 1): (1)^2 + (2)^2 = 5; sizes may differ.
        let s = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0]).view([2, 2]);
        let t = Tensor::from_slice(&[1.0f64, 1.0, 0.0, 2.0, 2.0, 0.0]).view([3, 2]);
        assert_eq!(linear_mmd2(&s, &t).unwrap().double_value(&[]), 5.0);
        assert!(linear_mmd2(&s, &Tensor::zeros([2, 3], (Kind::Double, Device::Cpu))).is_err());
    }
}
