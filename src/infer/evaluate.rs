//! `deep-coral evaluate`: a kept network on a whole domain, as the run evaluated its target:
//! the centre crop of every image (mirrored by the run's seeded coins, as Caffe's TEST phase,
//! with `mirror`), eval mode, the precision it trained in. Accuracy, accuracy per class and the
//! confusion matrix; on the domain and after the iteration the run ended with, the accuracy is
//! the run's own final target accuracy (`tests/adapted_model.rs`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use tch::Device;

use crate::data::domain::Domain;
use crate::data::images;
use crate::data::inputs::Inputs;
use crate::files::write_atomic;
use crate::infer::features;
use crate::infer::loaded::Loaded;
use crate::train::eval::mirror_coins;

/// What a network did on one domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub domain: String,
    pub classes: Vec<String>,
    /// Fraction of images whose arg-max class is their label.
    pub accuracy: f64,
    /// `confusion[true][predicted]`: image counts.
    pub confusion: Vec<Vec<usize>>,
    pub mirror: bool,
}

impl Evaluation {
    /// Images of class `k` and the fraction of them classified right.
    pub fn per_class(&self, k: usize) -> (usize, f64) {
        let n: usize = self.confusion[k].iter().sum();
        (n, if n == 0 { f64::NAN } else { self.confusion[k][k] as f64 / n as f64 })
    }

    /// `accuracy.csv`: one row per class, then `all`.
    pub fn accuracy_csv(&self) -> String {
        let mut s = String::from("class,images,correct,accuracy\n");
        for (k, c) in self.classes.iter().enumerate() {
            let (n, acc) = self.per_class(k);
            let _ = writeln!(s, "{c},{n},{},{acc:.6}", self.confusion[k][k]);
        }
        let n: usize = self.confusion.iter().flatten().sum();
        let correct: usize = (0..self.classes.len()).map(|k| self.confusion[k][k]).sum();
        let _ = writeln!(s, "all,{n},{correct},{:.6}", self.accuracy);
        s
    }

    /// `confusion.csv`: rows the true class, columns the predicted one.
    pub fn confusion_csv(&self) -> String {
        let mut s = format!("true\\predicted,{}\n", self.classes.join(","));
        for (k, row) in self.confusion.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(|c| c.to_string()).collect();
            let _ = writeln!(s, "{},{}", self.classes[k], cells.join(","));
        }
        s
    }

    /// Writes `accuracy.csv` and `confusion.csv` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join("accuracy.csv"), self.accuracy_csv().as_bytes())?;
        write_atomic(&dir.join("confusion.csv"), self.confusion_csv().as_bytes())
    }
}

/// Evaluates `model` on domain `domain` under `data_root` (its classes must be the network's,
/// by name and order); `mirror` flips each centre crop by the run's coin for its last
/// iteration, as the run's own evaluation under `eval_mirror` did.
pub fn evaluate(
    model: &Loaded,
    data_root: &Path,
    domain: &str,
    mirror: bool,
    skip_bad: bool,
    device: Device,
) -> Result<Evaluation> {
    let card = &model.card;
    let d = Domain::scan(data_root, domain)?;
    if d.classes != card.classes {
        bail!(
            "domain {} has classes [{}], the network was trained on [{}] (in that order)",
            d.dir.display(),
            d.classes.join(", "),
            card.classes.join(", ")
        );
    }
    if let Some(err) = Domain::broken_error(&[&d]) {
        if !skip_bad {
            return Err(err);
        }
    }
    let set = Inputs::Host(images::decode_all(&d.files, domain, skip_bad, card.resize)?);
    let mirrors =
        if mirror { mirror_coins(card.config.seed, card.iteration, set.len()) } else { vec![false; set.len()] };
    let out = features::outputs(model, &set, &mirrors, device)?;
    let predicted: Vec<i64> = Vec::try_from(out.logits.argmax(-1, false))?;
    let k = card.classes.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&p, &y) in predicted.iter().zip(set.all_labels()) {
        confusion[y as usize][p as usize] += 1;
    }
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    Ok(Evaluation {
        domain: domain.to_string(),
        classes: card.classes.clone(),
        accuracy: correct as f64 / set.len() as f64,
        confusion,
        mirror,
    })
}
