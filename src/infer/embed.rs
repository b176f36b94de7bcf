//! `deep-coral embed`: the picture domain-adaptation papers show. A run's network maps every
//! source and target image (centre crop, eval mode) to its penultimate features (what fc8
//! receives); they are reduced to 50 dimensions by PCA and laid out in 2-D by t-SNE (van der
//! Maaten & Hinton 2008, the `bhtsne` crate), so that a lambda = 0 run beside
//! its lambda > 0 twin shows what the alignment did to the features.
//!
//! Repeatable: the initial layout is drawn from `seed` (N(0, 1e-4), as t-SNE's reference code
//! does), and t-SNE is the exact one (all pairs; the crate's Barnes-Hut variant picks the
//! vantage points of its neighbour tree from an unseeded generator) on one thread, so the same
//! runs and seed give the same picture.

use std::path::Path;

use anyhow::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tch::{Device, Kind, Tensor};

use crate::data::images;
use crate::data::inputs::Inputs;
use crate::data::transfer;
use crate::infer::features;
use crate::infer::loaded::Loaded;

/// Dimensions kept by the PCA before t-SNE.
const PCA_DIMS: i64 = 50;

/// One run's features laid out in 2-D.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// e.g. `amazon -> webcam, coral λ = 0.8, seed 1`.
    pub title: String,
    pub source: String,
    pub target: String,
    pub classes: Vec<String>,
    /// One point per image: source images first.
    pub points: Vec<(f64, f64)>,
    /// Whether each point is a target image.
    pub is_target: Vec<bool>,
    pub labels: Vec<usize>,
}

impl Embedding {
    /// `domain,class,x,y` per image.
    pub fn csv(&self) -> String {
        let mut s = String::from("domain,class,x,y\n");
        for ((p, t), l) in self.points.iter().zip(&self.is_target).zip(&self.labels) {
            let domain = if *t { &self.target } else { &self.source };
            s.push_str(&format!("{domain},{},{:.6},{:.6}\n", self.classes[*l], p.0, p.1));
        }
        s
    }
}

/// The rows of `x` (centred) on their first `dims` principal axes, float64: the eigenvectors of
/// the largest eigenvalues of `xᵀx` (eigh sorts them ascending).
fn pca(x: &Tensor, dims: i64) -> Tensor {
    let centred = x - x.mean_dim(0, true, Kind::Double);
    let (_, vectors) = centred.transpose(0, 1).matmul(&centred).linalg_eigh("L"); // [d, d]
    let d = vectors.size()[1];
    let k = dims.min(d);
    centred.matmul(&vectors.slice(1, d - k, d, 1).flip([1]))
}

/// t-SNE of the rows of `x` into 2-D, repeatable for `seed`.
pub fn tsne(x: &Tensor, perplexity: f64, seed: u64) -> Result<Vec<(f64, f64)>> {
    let rows: Vec<Vec<f64>> = Vec::try_from(x.to_kind(Kind::Double).contiguous())?;
    let n = rows.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1e-4).expect("a valid normal");
    let init: Vec<f64> = (0..2 * n).map(|_| normal.sample(&mut rng)).collect();
    // Largest perplexity the sample supports (bhtsne needs 3 * perplexity < n).
    let perplexity = perplexity.min(((n as f64) - 1.0) / 3.0 - 1.0).max(1.0);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let flat = pool.install(|| {
        bhtsne::tSNE::<f64, Vec<f64>>::new(&rows)
            .perplexity(perplexity)
            .epochs(1000)
            .initial_embedding(init)
            .exact(|a, b| a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum::<f64>())
            .embedding()
    });
    Ok(flat.chunks(2).map(|c| (c[0], c[1])).collect())
}

/// The embedding of the run in `run_dir` (its recorded data, or `data_root` instead).
pub fn embed(
    run_dir: &Path,
    data_root: Option<&Path>,
    perplexity: f64,
    seed: u64,
    device: Device,
) -> Result<Embedding> {
    let model = Loaded::open(run_dir, device)?;
    let mut cfg = model.card.config.clone();
    if let Some(root) = data_root {
        cfg.data_root = root.to_path_buf();
    }
    let (source, target) = transfer::scan(&cfg)?;
    let decode = |d: &crate::data::domain::Domain| -> Result<Inputs> {
        Ok(Inputs::Host(images::decode_all(&d.files, &d.name, cfg.skip_bad_images, cfg.resize)?))
    };
    let (s, t) = (decode(&source)?, decode(&target)?);
    let fs = features::outputs(&model, &s, &vec![false; s.len()], device)?.features;
    let ft = features::outputs(&model, &t, &vec![false; t.len()], device)?.features;
    let all = Tensor::cat(&[fs, ft], 0).to_kind(Kind::Double);
    let points = tsne(&pca(&all, PCA_DIMS), perplexity, seed)?;
    let labels = s.all_labels().iter().chain(t.all_labels()).map(|&l| l as usize).collect();
    let is_target = (0..s.len()).map(|_| false).chain((0..t.len()).map(|_| true)).collect();
    Ok(Embedding {
        title: format!("{} -> {}, {} λ = {}, seed {}", cfg.source, cfg.target, cfg.method.name(), cfg.lambda, cfg.seed),
        source: cfg.source.clone(),
        target: cfg.target.clone(),
        classes: model.card.classes.clone(),
        points,
        is_target,
        labels,
    })
}
