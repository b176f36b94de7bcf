//! Shallow CORAL (Sun, Feng & Saenko, "Return of Frustratingly Easy Domain Adaptation", AAAI
//! 2016, Algorithm 1), the CORAL row of the paper's Table 1, on the features of a run's
//! source-only network (a coral run at lambda = 0: the CNN row's own network, as the paper's
//! CORAL used fc7 of a network fine-tuned on the source):
//!
//! ```text
//! C_S = cov(D_S) + I,   C_T = cov(D_T) + I
//! D_S* = D_S C_S^(-1/2) C_T^(1/2)        (whiten the source, re-colour it with the target)
//! ```
//!
//! then a linear SVM trained on `D_S*` with the source labels and tested on `D_T`; beside it the
//! same SVM trained on `D_S` itself (no adaptation on the same features), its own baseline. The
//! matrix powers come from a symmetric eigendecomposition in float64.
//!
//! Features: what fc8 receives (fc7; SqueezeNet's pooled last Fire module), of the centre crop
//! of every image, in eval mode. Preprocessing as the authors' released `Ex_CORAL.m` does it,
//! with the L2 row normalisation their README suggests for deep features: each row scaled to
//! unit length, then each domain z-scored per dimension. The SVM's C is chosen from 1e-3 to
//! 1e4 (factors of 10) by 2-fold cross-validation on the source, as `Ex_CORAL.m` chooses it,
//! separately for each of the two SVMs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::config::Method;
use crate::data::images;
use crate::data::inputs::Inputs;
use crate::data::transfer;
use crate::files::write_atomic;
use crate::infer::features;
use crate::infer::loaded::Loaded;
use crate::infer::svm::{choose_c, LinearSvm};
use crate::train::metrics::Versions;

/// The file shallow CORAL writes into the run folder it read.
pub const FILE: &str = "shallow_coral.json";
/// The SVM's C is chosen from these (`Ex_CORAL.m`'s range).
const C_GRID: [f64; 8] = [1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4];
/// Seed of the SVM solver's coordinate order.
const SVM_SEED: u64 = 1;

/// What shallow CORAL found on one run's network (`shallow_coral.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShallowCoral {
    /// Which features: `fc7`, or SqueezeNet's `pooled last Fire module (fc7's analogue)`.
    pub features: String,
    pub dim: usize,
    pub source_images: usize,
    pub target_images: usize,
    /// The linear SVM on the source features as they are: its C (2-fold CV on the source), its
    /// cross-validated source accuracy, and its target accuracy (0-1).
    pub svm_c: f64,
    pub svm_cv_accuracy: f64,
    pub svm_target_acc: f64,
    /// The same on the CORAL-transformed source features.
    pub coral_c: f64,
    pub coral_cv_accuracy: f64,
    pub coral_target_acc: f64,
    /// The network's own target accuracy on the same crops (its fc8), for comparison.
    pub network_target_acc: f64,
    /// The model file the features came from.
    pub model: PathBuf,
    pub versions: Versions,
}

impl ShallowCoral {
    pub fn read(run_dir: &Path) -> Result<ShallowCoral> {
        let path = run_dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| crate::files::io_context(e, "reading", &path))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))
    }
}

/// `C^p` of a symmetric positive definite `C`, by its eigendecomposition: `V diag(λ^p) Vᵀ`.
/// # Shapes
/// `[d, d]` float64 -> `[d, d]`
pub fn sym_power(c: &Tensor, p: f64) -> Tensor {
    let (values, vectors) = c.linalg_eigh("L");
    let scaled = &vectors * values.clamp_min(1e-300).pow_tensor_scalar(p).unsqueeze(0);
    scaled.matmul(&vectors.transpose(0, 1))
}

/// The covariance of the rows of `d` (samples in rows, `1/(n-1)`), plus the identity.
fn cov_plus_eye(d: &Tensor) -> Tensor {
    let n = d.size()[0];
    let centred = d - d.mean_dim(0, true, Kind::Double);
    let cov = centred.transpose(0, 1).matmul(&centred) / (n - 1) as f64;
    &cov + Tensor::eye(cov.size()[0], (Kind::Double, cov.device()))
}

/// Algorithm 1: the source re-coloured with the target's covariance.
/// # Shapes
/// `source: [n_S, d]`, `target: [n_T, d]`, float64 -> `[n_S, d]`
pub fn transform(source: &Tensor, target: &Tensor) -> Tensor {
    let whiten = sym_power(&cov_plus_eye(source), -0.5);
    let colour = sym_power(&cov_plus_eye(target), 0.5);
    source.matmul(&whiten).matmul(&colour)
}

/// Each row scaled to unit length, then each column z-scored (one domain at a time).
pub fn preprocess(d: &Tensor) -> Tensor {
    let rows = d / d.norm_scalaropt_dim(2, [1i64], true).clamp_min(1e-12);
    let mean = rows.mean_dim(0, true, Kind::Double);
    let std = rows.std_dim(0, true, true).clamp_min(1e-12);
    (rows - mean) / std
}

fn to_rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(Vec::<Vec<f64>>::try_from(t.to_kind(Kind::Double).contiguous())?)
}

/// Shallow CORAL on the network kept in run folder `run_dir`, whose own config names the data
/// (`--data-root`, if given, replaces its data root, for a run moved since); writes
/// `shallow_coral.json` there and returns it.
pub fn run(run_dir: &Path, data_root: Option<&Path>, device: Device) -> Result<ShallowCoral> {
    let model = Loaded::open(run_dir, device)?;
    let mut cfg = model.card.config.clone();
    if cfg.method != Method::Coral || cfg.lambda != 0.0 {
        bail!(
            "{}: shallow CORAL takes a source-only network (method coral at lambda 0), this run is {} at lambda {}",
            run_dir.display(),
            cfg.method.name(),
            cfg.lambda
        );
    }
    if let Some(root) = data_root {
        cfg.data_root = root.to_path_buf();
    }
    let (source, target) = transfer::scan(&cfg)?;
    let decode = |d: &crate::data::domain::Domain, name: &str| -> Result<Inputs> {
        Ok(Inputs::Host(images::decode_all(&d.files, name, cfg.skip_bad_images, cfg.resize)?))
    };
    let (s_set, t_set) = (decode(&source, &cfg.source)?, decode(&target, &cfg.target)?);
    let s_out = features::outputs(&model, &s_set, &vec![false; s_set.len()], device)?;
    let t_out = features::outputs(&model, &t_set, &vec![false; t_set.len()], device)?;
    let labels = |set: &Inputs| -> Vec<usize> { set.all_labels().iter().map(|&l| l as usize).collect() };
    let (ys, yt) = (labels(&s_set), labels(&t_set));
    let classes = model.card.classes.len();

    let ds = preprocess(&s_out.features.to_kind(Kind::Double));
    let dt = preprocess(&t_out.features.to_kind(Kind::Double));
    let (xs, xt, xs_coral) = (to_rows(&ds)?, to_rows(&dt)?, to_rows(&transform(&ds, &dt))?);
    let fit = |x: &[Vec<f64>]| -> (f64, f64, f64) {
        let (c, cv) = choose_c(x, &ys, classes, &C_GRID, 2, SVM_SEED);
        let acc = LinearSvm::fit(x, &ys, classes, c, SVM_SEED).accuracy(&xt, &yt);
        (c, cv, acc)
    };
    let (svm_c, svm_cv_accuracy, svm_target_acc) = fit(&xs);
    let (coral_c, coral_cv_accuracy, coral_target_acc) = fit(&xs_coral);
    let predicted: Vec<i64> = Vec::try_from(t_out.logits.argmax(-1, false))?;
    let network_target_acc =
        predicted.iter().zip(&yt).filter(|(p, y)| **p as usize == **y).count() as f64 / yt.len() as f64;
    let result = ShallowCoral {
        features: match model.card.backbone {
            crate::model::backbone::Backbone::Squeezenet1_1 => "pooled last Fire module (fc7's analogue)".into(),
            _ => "fc7".into(),
        },
        dim: xs[0].len(),
        source_images: xs.len(),
        target_images: xt.len(),
        svm_c,
        svm_cv_accuracy,
        svm_target_acc,
        coral_c,
        coral_cv_accuracy,
        coral_target_acc,
        network_target_acc,
        model: std::path::absolute(&model.path).unwrap_or_else(|_| model.path.clone()),
        versions: Versions::default(),
    };
    write_atomic(&run_dir.join(FILE), (serde_json::to_string_pretty(&result)? + "\n").as_bytes())?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The transform gives the source the target's covariance (plus I) when whitened by its own:
    /// `cov(D_S*) = C_T^(1/2) C_S^(-1/2) cov(D_S) C_S^(-1/2) C_T^(1/2)`, which with `cov(D_S) =
    /// C_S - I` is `C_T - C_T^(1/2) C_S^(-1) C_T^(1/2)`; and the power is a matrix power.
    #[test]
    fn the_transform_recolours_the_source() {
        tch::manual_seed(3);
        let a = Tensor::randn([5, 5], (Kind::Double, Device::Cpu));
        let spd = a.matmul(&a.transpose(0, 1)) + Tensor::eye(5, (Kind::Double, Device::Cpu));
        let half = sym_power(&spd, 0.5);
        assert!(half.matmul(&half).allclose(&spd, 1e-10, 1e-10, false));
        let inv_half = sym_power(&spd, -0.5);
        assert!(inv_half.matmul(&spd).matmul(&inv_half).allclose(
            &Tensor::eye(5, (Kind::Double, Device::Cpu)),
            1e-10,
            1e-10,
            false
        ));
        let s = Tensor::randn([400, 5], (Kind::Double, Device::Cpu));
        let t = Tensor::randn([300, 5], (Kind::Double, Device::Cpu)).matmul(&a);
        let out = transform(&s, &t);
        let (cs, ct) = (cov_plus_eye(&s), cov_plus_eye(&t));
        let ct_half = sym_power(&ct, 0.5);
        let want = &ct - ct_half.matmul(&cs.inverse()).matmul(&ct_half);
        let got = cov_plus_eye(&out) - Tensor::eye(5, (Kind::Double, Device::Cpu));
        assert!(got.allclose(&want, 1e-8, 1e-8, false), "{got} {want}");
    }
}
