//! An experiment spec: one JSON file that names a grid of training runs (transfers x lambdas x
//! seeds) on top of one shared `TrainConfig`, and the run directory each of them writes to.
//!
//! ```json
//! {
//!   "name": "office31",
//!   "description": "why these choices",
//!   "train": { "backbone": "caffenet", "data_root": "data/office31/domain_adaptation_images" },
//!   "transfers": [ { "source": "amazon", "target": "dslr", "lambdas": [0, 0.05] } ],
//!   "seeds": [1, 2, 3, 4, 5]
//! }
//! ```
//!
//! `train` is parsed as a `TrainConfig` (unknown keys are an error, missing keys keep the
//! paper's protocol); each run gets `source`, `target`, `lambda` and `seed` set on top, so
//! those four may not appear in `train`. Paths are relative to the folder the sweep runs in
//! (the repository root), not to the spec file.
//!
//! An optional `slurm` block ([`SlurmSettings`], also the sweep's Slurm flags) says how the grid runs on a Slurm cluster
//! (`sweep --launcher slurm`: partition, GPUs and CPUs per run, time limit, ...); it does not
//! change what a run computes, and the sweep's flags override each of its keys.
//!
//! Run directory: `<results>/<name>/<source>_<target>/lambda_<x>/seed_<n>/`, `x` written by
//! Rust's `{}` for f64 (`lambda_0`, `lambda_0.8`, `lambda_0.0001`). The run's `seed` is `n`
//! itself, not a hash that includes lambda: the lambda = 0 and lambda > 0 runs of one seed
//! share the new layer's initialisation, the sampling order and the augmentation, so their
//! difference is a paired comparison that isolates the CORAL term.
//!
//! Grid order: seeds outermost, then transfers, then lambdas, so a sweep stopped part-way has
//! whole seeds of the full table (every transfer, with and without CORAL) rather than every
//! seed of a few transfers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Method, TrainConfig};
use crate::experiment::launcher::slurm::settings::Settings as SlurmSettings;
use crate::experiment::run_id::{lambda_dir, positive_zero, RunId};

/// The experiment spec file (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The experiment's folder under the results root.
    pub name: String,
    /// Why the grid and schedule are what they are (JSON has no comments).
    #[serde(default)]
    pub description: String,
    /// Settings shared by every run; missing keys keep `TrainConfig::default()` (the paper's).
    #[serde(default)]
    pub train: TrainConfig,
    /// Source->target pairs, each with the lambdas to run.
    pub transfers: Vec<Transfer>,
    /// One run per seed for every (transfer, lambda).
    pub seeds: Vec<u64>,
    /// More alignment methods, each run at its lambdas on every transfer and seed (Table 1's
    /// DDC and DAN rows beside Deep CORAL); the transfers' own `lambdas` run `train.method`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<MethodRuns>,
    /// Also evaluate shallow CORAL on the lambda = 0 runs' networks after the sweep
    /// (`deep-coral shallow-coral`, the `shallow` step of `make reproduce`): Table 1's CORAL row.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shallow_coral: bool,
    /// The paper's numbers for the report (a JSON table), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper_table: Option<PathBuf>,
    /// The authors' training curves for the plots (CSV), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper_curves: Option<PathBuf>,
    /// How the grid runs on a Slurm cluster (`sweep --launcher slurm`), so the spec says how it
    /// was run; each key is overridden by the sweep's flag of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmSettings>,
    /// The file this spec was read from (empty when built in code); used in error messages.
    #[serde(skip)]
    pub path: PathBuf,
}

/// One source->target pair of a spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Labelled domain: a folder name under `data_root`.
    pub source: String,
    /// Unlabelled domain: a folder name under `data_root`.
    pub target: String,
    /// CORAL weights to run; 0 is the no-adaptation baseline.
    pub lambdas: Vec<f64>,
}

impl Transfer {
    /// `amazon->dslr`.
    pub fn name(&self) -> String {
        format!("{}->{}", self.source, self.target)
    }
}

/// An alignment method of a spec's `methods` and the lambdas it runs at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodRuns {
    pub method: Method,
    /// The lambdas it runs at on every transfer that `by_transfer` does not name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lambdas: Vec<f64>,
    /// Lambdas per transfer, keyed `"amazon->dslr"`: for a method whose lambda is set per
    /// shift by the paper's rule (`deep-coral calibrate`), as D-CORAL's is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_transfer: BTreeMap<String, Vec<f64>>,
}

impl MethodRuns {
    /// The lambdas this method runs at on `t`.
    pub fn lambdas_for(&self, t: &Transfer) -> &[f64] {
        self.by_transfer.get(&t.name()).map_or(self.lambdas.as_slice(), Vec::as_slice)
    }
}

/// One run of the grid: where it writes and the full config it trains with.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub dir: PathBuf,
    pub config: TrainConfig,
}

/// The keys a run sets on top of `train`, and where in the spec they come from instead.
const PER_RUN_KEYS: [(&str, &str); 4] = [
    ("source", "transfers[].source"),
    ("target", "transfers[].target"),
    ("lambda", "transfers[].lambdas"),
    ("seed", "seeds"),
];

/// Reads and checks a spec file: JSON syntax, unknown keys, types, and every expanded run's
/// `TrainConfig::validate()`. Errors name the file and the key (`train.lr`,
/// `transfers[2].lambdas`) or the transfer.
pub fn load(path: &Path) -> Result<Spec> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading spec {}", path.display()))?;
    parse(&text, path)
}

/// `load` on text already read; `path` is only used in messages and kept in `Spec::path`.
pub fn parse(text: &str, path: &Path) -> Result<Spec> {
    let file = path.display();
    let value: Value = serde_json::from_str(text).with_context(|| format!("spec {file}: not valid JSON"))?;
    if let Some(train) = value.get("train").and_then(Value::as_object) {
        for (key, instead) in PER_RUN_KEYS {
            if train.contains_key(key) {
                bail!("spec {file}: key `train.{key}`: set per run, from `{instead}`, not in `train`");
            }
        }
    }
    if let Some(slurm) = value.get("slurm").filter(|v| !v.is_object() && !v.is_null()) {
        // serde would take an array as the struct's fields in order.
        bail!("spec {file}: key `slurm`: expected an object of Slurm settings (`{{\"partition\": ...}}`), got {slurm}");
    }
    let mut spec: Spec = match serde_json::from_value(value.clone()) {
        Ok(spec) => spec,
        Err(e) => match error_path(&value) {
            Some(key) => bail!("spec {file}: key `{key}`: {e}"),
            None => bail!("spec {file}: {e}"),
        },
    };
    spec.path = path.to_path_buf();
    spec.validate()?;
    Ok(spec)
}

/// Where in the spec's JSON deserialisation fails, as `train.lr` or `transfers[1].lambdas[0]`.
/// serde_json's messages name an unknown key but not its parent, and a wrong type not at all.
fn error_path(spec: &Value) -> Option<String> {
    let top = culprit::<Spec>(spec)?;
    let mut path = top.clone();
    let child = &spec[top.as_str()];
    match top.as_str() {
        "train" => {
            if let Some(key) = culprit::<TrainConfig>(child) {
                path += &format!(".{key}");
            }
        }
        "slurm" => {
            if let Some(key) = culprit::<SlurmSettings>(child) {
                path += &format!(".{key}");
            }
        }
        "methods" => {
            if let Some(i) = culprit::<Vec<MethodRuns>>(child) {
                path += &format!("[{i}]");
                if let Some(key) = child.get(i.parse::<usize>().ok()?).and_then(culprit::<MethodRuns>) {
                    path += &format!(".{key}");
                }
            }
        }
        "seeds" => {
            if let Some(i) = culprit::<Vec<u64>>(child) {
                path += &format!("[{i}]");
            }
        }
        "transfers" => {
            if let Some(i) = culprit::<Vec<Transfer>>(child) {
                path += &format!("[{i}]");
                let transfer = &child[i.parse::<usize>().ok()?];
                if let Some(key) = culprit::<Transfer>(transfer) {
                    path += &format!(".{key}");
                    if key == "lambdas" {
                        if let Some(j) = culprit::<Vec<f64>>(&transfer["lambdas"]) {
                            path += &format!("[{j}]");
                        }
                    }
                }
            }
        }
        _ => {}
    }
    Some(path)
}

/// The first key (of an object) or index (of an array) whose removal changes the error that
/// deserialising `value` as `T` gives: serde stops at the first bad entry, so that is the one.
fn culprit<T: DeserializeOwned>(value: &Value) -> Option<String> {
    let error = serde_json::from_value::<T>(value.clone()).err()?.to_string();
    let differs = |v: Value| serde_json::from_value::<T>(v).map_or_else(|e| e.to_string() != error, |_| true);
    match value {
        Value::Object(map) => map
            .keys()
            .find(|k| {
                let mut without = map.clone();
                without.remove(k.as_str());
                differs(Value::Object(without))
            })
            .cloned(),
        Value::Array(items) => (0..items.len())
            .find(|&i| {
                let mut without = items.clone();
                without.remove(i);
                differs(Value::Array(without))
            })
            .map(|i| i.to_string()),
        _ => None,
    }
}

impl Spec {
    /// The spec file for messages, or `<spec NAME>` for one built in code.
    pub fn file(&self) -> String {
        if self.path.as_os_str().is_empty() {
            format!("<spec {}>", self.name)
        } else {
            self.path.display().to_string()
        }
    }

    /// Checks the grid: a usable name, at least one transfer, lambda and seed, plain domain
    /// names, no run listed twice, and every expanded config passing `TrainConfig::validate()`.
    pub fn validate(&self) -> Result<()> {
        let file = self.file();
        if !is_plain_name(&self.name) {
            bail!("spec {file}: `name` must be a plain folder name (no `/`, not `.` or `..`), got {:?}", self.name);
        }
        if self.transfers.is_empty() {
            bail!("spec {file}: `transfers` is empty");
        }
        if self.seeds.is_empty() {
            bail!("spec {file}: `seeds` is empty");
        }
        let mut seen = BTreeSet::new();
        for &seed in &self.seeds {
            if !seen.insert(seed) {
                bail!("spec {file}: seed {seed} is listed twice in `seeds`");
            }
        }
        let mut pairs = BTreeSet::new();
        // Every run folder belongs to one run: `<s>_<t>` and `lambda_<x>` must not coincide for
        // two transfers (`a_b -> c` and `a -> b_c`) or two lambdas, and must be names a file
        // system takes.
        let mut folders: std::collections::BTreeMap<(String, String), (String, f64)> = Default::default();
        for (i, t) in self.transfers.iter().enumerate() {
            let name = t.name();
            for domain in [&t.source, &t.target] {
                if !is_plain_name(domain) {
                    bail!("spec {file}: transfer {name} (transfers[{i}]): domain {domain:?} must be a plain folder name under data_root");
                }
            }
            if !pairs.insert((&t.source, &t.target)) {
                bail!("spec {file}: transfer {name} (transfers[{i}]) is listed twice");
            }
            if t.lambdas.is_empty() {
                bail!("spec {file}: transfer {name} (transfers[{i}]) has no lambdas");
            }
            for (method, lambdas) in self.method_lambdas(t) {
                let mut dirs = BTreeSet::new();
                for &lambda in lambdas {
                    let name = format!("{name} {}", method.name());
                    if !dirs.insert(lambda_dir(lambda)) {
                        bail!("spec {file}: transfer {name} (transfers[{i}]) lists lambda {lambda} twice");
                    }
                    let id = RunId { source: t.source.clone(), target: t.target.clone(), method, lambda, seed: 0 };
                    let rel = id.rel_dir();
                    let parts: Vec<String> =
                        rel.parent().expect("seed folder").iter().map(|p| p.to_string_lossy().into_owned()).collect();
                    let folder = (parts[0].clone(), parts[1..].join("/"));
                    for part in &parts {
                        if !is_plain_name(part) {
                            let start: String = part.chars().take(24).collect();
                            bail!(
                            "spec {file}: transfer {name} (transfers[{i}]), lambda {lambda:e}: the run folder name \
                             {start}... is {} bytes, longer than the 255 a file system takes (folder names write \
                             lambda in full decimal)",
                            part.len()
                        );
                        }
                    }
                    if let Some((other, other_lambda)) = folders.insert(folder.clone(), (name.clone(), lambda)) {
                        bail!(
                        "spec {file}: transfer {other} lambda {other_lambda} and transfer {name} lambda {lambda} would \
                         share the run folder {}/{}: rename a domain (the folder joins source and target with `_`) \
                         or drop one",
                        folder.0,
                        folder.1
                    );
                    }
                    let config = self.config_for(t, method, lambda, self.seeds[0]);
                    config
                        .validate()
                        .with_context(|| format!("spec {file}: transfer {name} (transfers[{i}]), lambda {lambda}"))?;
                }
            }
        }
        for (i, m) in self.methods.iter().enumerate() {
            if let Some(key) = m.by_transfer.keys().find(|k| !self.transfers.iter().any(|t| &t.name() == *k)) {
                let names: Vec<String> = self.transfers.iter().map(Transfer::name).collect();
                bail!(
                    "spec {file}: methods[{i}].by_transfer names {key}, which is not a transfer of the spec \
                     (expected one of {})",
                    names.join(", ")
                );
            }
            if let Some(t) = self.transfers.iter().find(|t| m.lambdas_for(t).is_empty()) {
                bail!("spec {file}: methods[{i}] ({}) has no lambdas for transfer {}", m.method.name(), t.name());
            }
            if m.method == self.train.method {
                bail!(
                    "spec {file}: methods[{i}] is {}, the method the transfers' lambdas already run (`train.method`); \
                     list its lambdas there",
                    m.method.name()
                );
            }
        }
        Ok(())
    }

    /// The methods a transfer runs and their lambdas: `train.method` at the transfer's own
    /// lambdas, then each of `methods` at its lambdas for that transfer.
    pub fn method_lambdas<'a>(&'a self, t: &'a Transfer) -> Vec<(Method, &'a [f64])> {
        let mut out = vec![(self.train.method, t.lambdas.as_slice())];
        out.extend(self.methods.iter().map(|m| (m.method, m.lambdas_for(t))));
        out
    }

    /// Every run of the grid, seeds outermost, then transfers, then methods (`train.method`
    /// first), then lambdas.
    pub fn runs(&self, results_root: &Path) -> Vec<RunSpec> {
        let mut runs = Vec::new();
        for &seed in &self.seeds {
            for t in &self.transfers {
                for (method, lambdas) in self.method_lambdas(t) {
                    for &lambda in lambdas {
                        let id = RunId { source: t.source.clone(), target: t.target.clone(), method, lambda, seed };
                        let dir = results_root.join(&self.name).join(id.rel_dir());
                        runs.push(RunSpec { dir, config: self.config_for(t, method, lambda, seed) });
                    }
                }
            }
        }
        runs
    }

    /// `train` with one run's source, target, method, lambda and seed set.
    fn config_for(&self, t: &Transfer, method: Method, lambda: f64, seed: u64) -> TrainConfig {
        TrainConfig {
            source: t.source.clone(),
            target: t.target.clone(),
            method,
            lambda: positive_zero(lambda),
            seed,
            ..self.train.clone()
        }
    }

    /// The spec as a spec file, with every `train` field written out (the effective protocol,
    /// not just what the file set) except the per-run keys; `parse` reads it back.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("a Spec serialises");
        if let Some(train) = value.get_mut("train").and_then(Value::as_object_mut) {
            for (key, _) in PER_RUN_KEYS {
                train.remove(key);
            }
        }
        serde_json::to_string_pretty(&value).expect("a Spec serialises") + "\n"
    }

    /// Replaces `train.data_root` for every run (the sweep's `--data-root`).
    pub fn set_data_root(&mut self, data_root: PathBuf) {
        self.train.data_root = data_root;
    }

    /// Every domain the transfers use must be a folder `<data_root>/<domain>`; one error lists
    /// all that are missing. Run by the sweep before any run starts (not by a dry run).
    pub fn check_domains(&self) -> Result<()> {
        let root = &self.train.data_root;
        let mut domains: Vec<&str> = Vec::new();
        for t in &self.transfers {
            for d in [t.source.as_str(), t.target.as_str()] {
                if !domains.contains(&d) {
                    domains.push(d);
                }
            }
        }
        let missing: Vec<String> =
            domains.iter().map(|d| root.join(d)).filter(|p| !p.is_dir()).map(|p| p.display().to_string()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let root_note = if root.is_dir() { String::new() } else { format!(" ({} does not exist)", root.display()) };
        bail!(
            "spec {}: {} of {} domain folders missing under data_root {}{root_note}: {}; set `train.data_root` in the \
             spec or pass --data-root",
            self.file(),
            missing.len(),
            domains.len(),
            root.display(),
            missing.join(", ")
        )
    }

    /// The pretrained weights file every run loads must exist. Run by the sweep with
    /// `check_domains`, so a missing file fails once, not once per run.
    pub fn check_weights(&self) -> Result<()> {
        let w = &self.train.weights;
        if !w.is_file() {
            bail!("spec {}: weights file {} not found (`train.weights`)", self.file(), w.display());
        }
        Ok(())
    }
}

/// A single path component that stays inside its parent and that file systems accept (at most
/// 255 bytes, no NUL).
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s != "." && s != ".." && !s.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests;
