//! The alignment losses of the paper's Table 1, one file each, behind the `config::Method`
//! registry: each file owns its loss and its formula, and this table says where it attaches
//! and with which hyper-parameters (all in one place, DomainBed's `hparams_registry` style):
//!
//! | method | loss | attaches to | lambda in its paper | network change |
//! |---|---|---|---|---|
//! | `coral` ([`coral`]) | CORAL, Eq. 1 of Sun & Saenko | fc8 | per shift (0.0001 to 0.8) | none |
//! | `ddc` ([`mmd`]) | squared MMD, linear kernel | `fc_adapt` (256) | 0.25 | `fc_adapt` between fc7 and fc8 |
//! | `dan` ([`mk_mmd`]) | MK-MMD, 5 Gaussians, linear-time | fc6 + fc7 + fc8, summed | 1 (the released code) | conv1-conv3 frozen |
//!
//! SqueezeNet has no fc6/fc7: its analogues are the pooled outputs of its last two Fire
//! modules (`model::backbone::Taps`), and `fc_adapt` sits between its pooled features and its
//! 1x1 fc8. lambda = 0 is the no-adaptation CNN for every method.
//!
//! Every run logs the CORAL loss at fc8 besides its own method's loss (`align_loss`), so the
//! CORAL distance can be compared across methods.

/// The CORAL loss (Eq. 1-2) and its closed-form gradient (Eq. 4).
pub mod coral;
/// DAN's multi-kernel MMD, linear-time unbiased estimate.
pub mod mk_mmd;
/// DDC's MMD with a linear kernel.
pub mod mmd;

use anyhow::{Context, Result};
use tch::Tensor;

use crate::config::Method;
use crate::model::backbone::Taps;

/// Whether `method` reads fc6 and fc7 (DAN).
pub fn wants_fc67(method: Method) -> bool {
    method == Method::Dan
}

/// The unweighted loss of `method` between the taps of a source and a target batch; `coral`
/// is the CORAL loss at fc8, which the caller has already computed (every run logs it).
pub fn loss(method: Method, source: &Taps, target: &Taps, coral: &Tensor) -> Result<Tensor> {
    match method {
        Method::Coral => Ok(coral.shallow_clone()),
        Method::Ddc => {
            let (s, t) = source.bottleneck.as_ref().zip(target.bottleneck.as_ref()).context("ddc needs fc_adapt")?;
            mmd::linear_mmd2(s, t)
        }
        Method::Dan => {
            let (s6, t6) = source.fc6.as_ref().zip(target.fc6.as_ref()).context("dan needs fc6")?;
            let (s7, t7) = source.fc7.as_ref().zip(target.fc7.as_ref()).context("dan needs fc7")?;
            Ok(mk_mmd::mk_mmd2(s6, t6)? + mk_mmd::mk_mmd2(s7, t7)? + mk_mmd::mk_mmd2(&source.logits, &target.logits)?)
        }
        Method::ShallowCoral | Method::Svm => {
            anyhow::bail!("method {} is evaluated on a trained network, not trained", method.name())
        }
    }
}
