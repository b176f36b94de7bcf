//! Figures: the training curves of an experiment like the paper's Fig. 3 ([`curves`]), its
//! methods side by side ([`methods`]), a network's confusion matrix ([`confusion`]) and the
//! t-SNE picture of its features ([`embedding`]); what they share ([`canvas`]).

pub mod canvas;
pub mod confusion;
pub mod curves;
pub mod embedding;
pub mod methods;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::experiment::report;

pub use curves::{band, BandPoint, LambdaCurves, TransferFigure};

/// Draws `plots/<source>_<target>.png` and `.svg` (Fig. 3, Deep CORAL's runs) for every
/// transfer of the experiment at `experiment_dir`, and `plots/<source>_<target>-methods.png`
/// and `.svg` where it holds more than one trained method; done runs only (the others are
/// named). `paper_curves` overrides the authors' curves named by `spec.json`. Returns the paths
/// written.
pub fn plot(experiment_dir: &Path, paper_curves: Option<&Path>) -> Result<Vec<PathBuf>> {
    let exp = report::read::load_experiment(experiment_dir)?;
    for run in &exp.incomplete {
        eprintln!("not plotted: {}", run.describe());
    }
    let authors = paper_curves.map(Path::to_path_buf).or_else(|| exp.spec.paper_curves.clone());
    let figs = curves::figures(&exp, authors.as_deref())?;
    let by_method = methods::figures(&exp);
    if figs.is_empty() && by_method.is_empty() {
        bail!("{}: no done runs to plot", experiment_dir.display());
    }
    let out_dir = experiment_dir.join("plots");
    crate::files::create_own_dir(&out_dir)?;
    let mut written = Vec::new();
    for fig in &figs {
        written.extend(canvas::render_both(fig, &out_dir, &fig.transfer.dir_name())?);
    }
    for fig in &by_method {
        written.extend(canvas::render_both(fig, &out_dir, &format!("{}-methods", fig.transfer.dir_name()))?);
    }
    Ok(written)
}
