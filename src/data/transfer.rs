//! The two domains of one run, loaded: scanned (and checked to share their classes), then
//! decoded into memory, or under `--finetune fc|last` read from the feature cache.

use anyhow::Result;
use tch::Device;

use crate::config::TrainConfig;
use crate::data::domain::Domain;
use crate::data::features;
use crate::data::images::{self, SkippedImage};
use crate::data::inputs::Inputs;
use crate::model::backbone::{Finetune, Network};

/// The training data of a run, decoded (or its features computed) once.
pub struct Data {
    pub classes: Vec<String>,
    pub source: Inputs,
    pub target: Inputs,
    /// Files that failed to decode and were skipped (`skip_bad_images`), both domains.
    pub skipped: Vec<SkippedImage>,
}

/// The source and target domains on disk, checked to share their classes.
pub fn scan(cfg: &TrainConfig) -> Result<(Domain, Domain)> {
    let source = Domain::scan(&cfg.data_root, &cfg.source)?;
    let target = Domain::scan(&cfg.data_root, &cfg.target)?;
    // Broken links (and special files) are refused by name, or with --skip-bad-images named
    // and left out.
    if let Some(err) = Domain::broken_error(&[&source, &target]) {
        if !cfg.skip_bad_images {
            return Err(err);
        }
        for (path, why) in source.broken.iter().chain(&target.broken) {
            eprintln!("warning: skipping {}: {why}", path.display());
        }
    }
    Domain::check_same_classes(&source, &target)?;
    // One class: the loss is 0 from the start, every accuracy is 1, and CORAL aligns nothing a
    // classifier uses: a degenerate task, not a result.
    if source.classes.len() < 2 {
        anyhow::bail!(
            "domains {} and {} under {} hold one class ({}): a transfer needs at least two classes to classify; add \
             class folders",
            cfg.source,
            cfg.target,
            cfg.data_root.display(),
            source.classes.join(", ")
        );
    }
    Ok((source, target))
}

/// Decodes both domains into memory (on `device` when it is a GPU and they fit).
pub fn load_images(cfg: &TrainConfig, source: &Domain, target: &Domain, device: Device) -> Result<Data> {
    let s = images::decode_all(&source.files, &cfg.source, cfg.skip_bad_images, cfg.resize)?;
    let t = images::decode_all(&target.files, &cfg.target, cfg.skip_bad_images, cfg.resize)?;
    let skipped = s.skipped.iter().chain(&t.skipped).cloned().collect();
    Ok(Data {
        classes: source.classes.clone(),
        source: Inputs::images(s, device),
        target: Inputs::images(t, device),
        skipped,
    })
}

/// What `cfg.finetune` trains on: decoded images under `all`; under `fc` and `last`, the
/// features of `net`'s frozen trunk from the feature cache (built on the first use).
pub fn load_data(
    cfg: &TrainConfig,
    source: &Domain,
    target: &Domain,
    net: &dyn Network,
    device: Device,
) -> Result<Data> {
    if cfg.finetune == Finetune::All {
        return load_images(cfg, source, target, device);
    }
    let s = features::load_or_build(cfg, source, net, device)?;
    let t = features::load_or_build(cfg, target, net, device)?;
    let skipped = s.skipped.iter().chain(&t.skipped).cloned().collect();
    Ok(Data { classes: source.classes.clone(), source: Inputs::Features(s), target: Inputs::Features(t), skipped })
}
