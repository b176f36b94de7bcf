//! `deep-coral predict`: a kept network on image files (or every file under folders, hidden
//! ones passed over, as a domain's class folders are read): the centre crop of each, eval mode,
//! the class probabilities (softmax) and the `top_k` classes, one CSV row per image. Files
//! that do not decode stop it, naming them, or with `skip_bad` are named and left out, as in
//! training.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tch::{Device, Kind};

use crate::data::domain;
use crate::data::images::{self, SkippedImage};
use crate::data::inputs::Inputs;
use crate::infer::features::{self, Pass};
use crate::infer::loaded::Loaded;

/// One image's prediction: its `top` classes, most probable first, with their probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub path: PathBuf,
    pub top: Vec<(String, f64)>,
}

/// The images of `paths`: files as given, folders searched recursively (sorted, hidden entries
/// and broken links passed over with a warning).
pub fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_file() {
            files.push(p.clone());
        } else if p.is_dir() {
            let (found, broken) = domain::files_under(p)?;
            for (path, why) in broken {
                eprintln!("warning: passing over {}: {why}", path.display());
            }
            files.extend(found);
        } else {
            bail!("{} is neither an image file nor a folder", p.display());
        }
    }
    if files.is_empty() {
        bail!("no image files under {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok(files)
}

/// Predicts every file of `files` with `model`; returns the predictions in file order and the
/// files left out (with `skip_bad`).
pub fn predict(
    model: &Loaded,
    files: &[PathBuf],
    top_k: usize,
    skip_bad: bool,
    device: Device,
    pass: Pass,
) -> Result<(Vec<Prediction>, Vec<SkippedImage>)> {
    let labelled: Vec<(PathBuf, i64)> = files.iter().map(|f| (f.clone(), 0)).collect();
    let set = images::decode_all(&labelled, "predict", skip_bad, model.card.resize)?;
    let skipped = set.skipped.clone();
    let kept: Vec<&PathBuf> = files.iter().filter(|f| !skipped.iter().any(|s| &s.path == *f)).collect();
    let inputs = Inputs::Host(set);
    let out = features::outputs_in(model, &inputs, &vec![false; inputs.len()], device, pass)?;
    let probs = out.logits.softmax(-1, Kind::Double);
    let k = top_k.clamp(1, model.card.classes.len()) as i64;
    let (values, indices) = probs.topk(k, -1, true, true);
    let values: Vec<Vec<f64>> = Vec::try_from(values)?;
    let indices: Vec<Vec<i64>> = Vec::try_from(indices)?;
    let predictions = kept
        .into_iter()
        .zip(values.into_iter().zip(indices))
        .map(|(path, (v, i))| Prediction {
            path: path.clone(),
            top: i.iter().zip(v).map(|(&c, p)| (model.card.classes[c as usize].clone(), p)).collect(),
        })
        .collect();
    Ok((predictions, skipped))
}

/// The CSV: `path,predicted,probability` and for ranks 2..k `top<r>,top<r>_probability`.
pub fn write_csv(predictions: &[Prediction], top_k: usize, out: &Path) -> Result<()> {
    let mut header = vec!["path".to_string(), "predicted".into(), "probability".into()];
    for r in 2..=top_k {
        header.push(format!("top{r}"));
        header.push(format!("top{r}_probability"));
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header)?;
    for p in predictions {
        let mut row = vec![p.path.display().to_string()];
        for (class, prob) in &p.top {
            row.push(class.clone());
            row.push(format!("{prob:.6}"));
        }
        w.write_record(&row)?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("formatting {}: {e}", out.display()))?;
    crate::files::write_atomic(out, &bytes)
}
