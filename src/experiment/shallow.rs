//! `deep-coral shallow-coral`: shallow CORAL (`infer::shallow_coral`) on the source-only networks
//! of an experiment, or of single run folders: every done coral run at lambda = 0 that kept its
//! network. Its result lands in the run folder (`shallow_coral.json`), where `report` reads it
//! as the rows "CORAL (shallow)" and "SVM (no adaptation)".

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tch::Device;

use crate::config::Method;
use crate::experiment::report::read;
use crate::infer::shallow_coral::{self, ShallowCoral};
use crate::train::saved_model;

/// The run folders `paths` name: a run folder itself (it holds a run.json), or every done coral
/// run at lambda = 0 of an experiment folder.
pub fn source_only_runs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut runs = Vec::new();
    for path in paths {
        if path.join("run.json").is_file() {
            runs.push(path.clone());
            continue;
        }
        let exp = read::load_experiment(path)?;
        let found: Vec<PathBuf> = exp
            .done
            .iter()
            .filter(|d| d.found.method() == Method::Coral && d.found.lambda() == 0.0)
            .map(|d| d.found.dir.clone())
            .collect();
        if found.is_empty() {
            bail!(
                "{} holds no done coral run at lambda 0 (the source-only network shallow CORAL takes)",
                path.display()
            );
        }
        runs.extend(found);
    }
    Ok(runs)
}

/// Shallow CORAL on every run of `paths` that has no result yet (or all, with `again`); runs
/// that kept no network are named and passed over. Returns each run with its result.
pub fn run_all(
    paths: &[PathBuf],
    data_root: Option<&Path>,
    device: Device,
    again: bool,
) -> Result<Vec<(PathBuf, ShallowCoral)>> {
    let mut done = Vec::new();
    for dir in source_only_runs(paths)? {
        if !again && dir.join(shallow_coral::FILE).is_file() {
            done.push((dir.clone(), ShallowCoral::read(&dir)?));
            continue;
        }
        if !dir.join(saved_model::FILE).is_file() {
            eprintln!(
                "skipping {}: it kept no {} (trained before runs kept their network?)",
                dir.display(),
                saved_model::FILE
            );
            continue;
        }
        let result = shallow_coral::run(&dir, data_root, device)?;
        eprintln!(
            "{}: SVM {:.1}%, shallow CORAL {:.1}% (the network's own fc8: {:.1}%)",
            dir.display(),
            100.0 * result.svm_target_acc,
            100.0 * result.coral_target_acc,
            100.0 * result.network_target_acc
        );
        done.push((dir, result));
    }
    Ok(done)
}
