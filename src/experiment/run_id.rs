//! A run's identity in a grid and its folder, written and read here only:
//!
//! ```text
//! <source>_<target>/lambda_<x>/seed_<n>            method coral (Deep CORAL; the CNN at lambda 0)
//! <source>_<target>/<method>/lambda_<x>/seed_<n>   any other method (ddc, dan)
//! ```
//!
//! `x` is Rust's `{}` for f64 (`lambda_0`, `lambda_0.8`, `lambda_0.0001`). Coral runs keep the
//! layout every run had before methods existed, so old experiment folders read as they are.
//! The run's `seed` is `n` itself, not a hash that includes lambda or the method: the runs of
//! one seed share the new layer's initialisation, the sampling order and the augmentation,
//! so their differences are paired comparisons.

use std::path::{Path, PathBuf};

use crate::config::Method;

/// What a run of a grid is, besides the settings all its runs share.
#[derive(Debug, Clone, PartialEq)]
pub struct RunId {
    pub source: String,
    pub target: String,
    pub method: Method,
    pub lambda: f64,
    pub seed: u64,
}

impl RunId {
    /// The run's folder under its experiment's folder.
    pub fn rel_dir(&self) -> PathBuf {
        let mut dir = PathBuf::from(transfer_dir(&self.source, &self.target));
        if self.method != Method::Coral {
            dir.push(self.method.name());
        }
        dir.join(lambda_dir(self.lambda)).join(format!("seed_{}", self.seed))
    }
}

/// The transfer folder: `amazon_webcam`.
pub fn transfer_dir(source: &str, target: &str) -> String {
    format!("{source}_{target}")
}

/// The lambda folder: `lambda_0`, `lambda_0.8`, `lambda_0.0001` (Rust's `{}` for f64).
pub fn lambda_dir(lambda: f64) -> String {
    format!("lambda_{}", positive_zero(lambda))
}

/// -0.0 -> 0.0, so `lambda_-0` never appears.
pub fn positive_zero(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x
    }
}

/// A run folder found under an experiment folder, as far as its path says: the transfer
/// folder's name (`<source>_<target>`, which a domain with `_` makes ambiguous: readers take
/// the domains from `run.json`), the method, lambda and seed (`None` where a name does not
/// parse).
#[derive(Debug, Clone, PartialEq)]
pub struct FoundDir {
    pub rel_dir: PathBuf,
    pub transfer_name: String,
    pub method: Method,
    pub lambda: Option<f64>,
    pub seed: Option<u64>,
}

/// Every run folder under `experiment_dir`, in both layouts, sorted by path: a
/// `seed_<n>` folder under a `lambda_<x>` folder under a transfer folder, or under a method
/// folder in between. Other folders (`plots/`) are passed over.
pub fn find_runs(experiment_dir: &Path) -> std::io::Result<Vec<FoundDir>> {
    let mut found = Vec::new();
    for (transfer_name, transfer) in subdirs(experiment_dir)? {
        for (name, dir) in subdirs(&transfer)? {
            let (method, lambda_dirs) = match Method::ALL.iter().find(|m| m.name() == name) {
                Some(&m) if m != Method::Coral => (m, subdirs(&dir)?),
                _ => (Method::Coral, vec![(name, dir)]),
            };
            for (lambda_name, lambda_path) in lambda_dirs {
                let Some(lambda_text) = lambda_name.strip_prefix("lambda_") else { continue };
                for (seed_name, run) in subdirs(&lambda_path)? {
                    let Some(seed_text) = seed_name.strip_prefix("seed_") else { continue };
                    found.push(FoundDir {
                        rel_dir: run.strip_prefix(experiment_dir).unwrap_or(&run).to_path_buf(),
                        transfer_name: transfer_name.clone(),
                        method,
                        lambda: lambda_text.parse().ok(),
                        seed: seed_text.parse().ok(),
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| a.rel_dir.cmp(&b.rel_dir));
    Ok(found)
}

/// The subfolders of `dir` with their names, sorted.
fn subdirs(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_written_and_found_in_both_layouts() {
        let id = |method, lambda| RunId { source: "amazon".into(), target: "webcam".into(), method, lambda, seed: 3 };
        assert_eq!(id(Method::Coral, 0.8).rel_dir(), PathBuf::from("amazon_webcam/lambda_0.8/seed_3"));
        assert_eq!(id(Method::Ddc, 0.25).rel_dir(), PathBuf::from("amazon_webcam/ddc/lambda_0.25/seed_3"));
        assert_eq!(lambda_dir(-0.0), "lambda_0");
        let tmp = tempfile::tempdir().unwrap();
        for run in [id(Method::Coral, 0.0), id(Method::Dan, 1.0), id(Method::Ddc, 0.25)] {
            std::fs::create_dir_all(tmp.path().join(run.rel_dir())).unwrap();
        }
        std::fs::create_dir_all(tmp.path().join("plots")).unwrap();
        let found = find_runs(tmp.path()).unwrap();
        let got: Vec<(Method, Option<f64>, Option<u64>)> = found.iter().map(|f| (f.method, f.lambda, f.seed)).collect();
        assert_eq!(
            got,
            [
                (Method::Dan, Some(1.0), Some(3)),
                (Method::Ddc, Some(0.25), Some(3)),
                (Method::Coral, Some(0.0), Some(3))
            ]
        );
        assert!(found.iter().all(|f| f.transfer_name == "amazon_webcam"));
    }
}
