//! The experiment folder read from disk: every run folder (`run_id::find_runs`: `<transfer>/
//! [<method>/]lambda_<x>/seed_<n>`) with its `run.json` (read as
//! [`crate::train::metrics::RunRecord`], the one type of that file), sorted into the done runs
//! and the runs not counted; the links of `spec.json`; and the final and best target accuracy
//! of each done run from its `metrics.csv`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{DomainShift, Lambda};
use crate::config::Method;
use crate::experiment::rule::{self, WindowLosses};
use crate::experiment::run_id;
use crate::train::metrics::{self, MetricsRow, RunRecord, Status, StepRow};

/// One run folder whose `run.json` was read.
#[derive(Debug, Clone)]
pub struct FoundRun {
    /// The run folder.
    pub dir: PathBuf,
    /// Its `run.json`.
    pub record: RunRecord,
}

impl FoundRun {
    pub fn transfer(&self) -> DomainShift {
        DomainShift::new(&self.record.config.source, &self.record.config.target)
    }

    pub fn method(&self) -> Method {
        self.record.config.method
    }

    pub fn lambda(&self) -> f64 {
        self.record.config.lambda
    }

    pub fn seed(&self) -> u64 {
        self.record.config.seed
    }
}

/// A run folder that does not count: its status is not `done`, it has no `run.json`, or its
/// `run.json` is JSON but not a run record this version can read (e.g. a status it does not
/// know).
#[derive(Debug, Clone, PartialEq)]
pub struct IncompleteRun {
    /// Path relative to the experiment folder, e.g. `amazon_webcam/lambda_0.8/seed_3`.
    pub rel_dir: PathBuf,
    /// `None` where the folder name could not be read as `<source>_<target>`.
    pub transfer: Option<DomainShift>,
    pub method: Method,
    pub lambda: Option<f64>,
    pub seed: Option<u64>,
    /// The status from `run.json`, `no run.json`, or `run.json not read (<why>)`.
    pub status: String,
    pub iterations: Option<u64>,
    pub iterations_done: Option<u64>,
}

impl IncompleteRun {
    /// e.g. ``- `amazon_webcam/lambda_0.8/seed_3`: running, 1200 of 2000 iterations``.
    pub fn describe(&self) -> String {
        let progress = match (self.iterations_done, self.iterations) {
            (Some(done), Some(all)) => format!(", {done} of {all} iterations"),
            (Some(done), None) => format!(", {done} iterations"),
            _ => String::new(),
        };
        format!("`{}`: {}{progress}", self.rel_dir.display(), self.status)
    }
}

/// Paths named by the experiment's `spec.json` (relative to the current directory).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecLinks {
    pub paper_table: Option<PathBuf>,
    pub paper_curves: Option<PathBuf>,
}

/// A done run whose logs agree with its record, and what the report takes from them.
#[derive(Debug, Clone)]
pub struct DoneRun {
    pub found: FoundRun,
    pub logs: RunLogs,
    pub result: RunResult,
}

/// A done run's logs, read and checked against its `run.json` (`RunLogs::read`).
#[derive(Debug, Clone)]
pub struct RunLogs {
    /// `metrics.csv`: a row at iteration 0, every `eval_every`, and at the last iteration.
    pub rows: Vec<MetricsRow>,
    /// `steps.csv` when the run logged its steps: one row per iteration, in order.
    pub steps: Option<Vec<StepRow>>,
}

impl RunLogs {
    /// Reads a done run's `metrics.csv` (and `steps.csv` under `log_steps`) and checks them
    /// against what its record says was written: the rows at exactly the iterations a run of
    /// `iterations` and `eval_every` evaluates, ending at `iterations_done` = `iterations`; one
    /// step row per iteration. A file cut at a row boundary, or rows of another run, fail here
    /// with what was expected, so no reader takes a damaged run for a finished one.
    pub fn read(run: &FoundRun) -> Result<RunLogs> {
        let cfg = &run.record.config;
        let metrics_path = run.dir.join("metrics.csv");
        let rows = metrics::read_rows(&metrics_path)?;
        let want: Vec<usize> =
            (0..=cfg.iterations).filter(|it| it % cfg.eval_every.max(1) == 0 || *it == cfg.iterations).collect();
        let got: Vec<usize> = rows.iter().map(|r| r.iteration).collect();
        if got != want {
            bail!(
                "{}: {} rows (iterations {}), but a finished run of {} iterations evaluated every {} writes {} ({}): the \
                 file is cut short or not this run's",
                metrics_path.display(),
                got.len(),
                span(&got),
                cfg.iterations,
                cfg.eval_every,
                want.len(),
                span(&want)
            );
        }
        if run.record.iterations_done != cfg.iterations {
            bail!(
                "{}: run.json says done after {} of {} iterations",
                run.dir.join("run.json").display(),
                run.record.iterations_done,
                cfg.iterations
            );
        }
        let steps = if cfg.log_steps {
            let path = run.dir.join("steps.csv");
            let steps = metrics::read_steps(&path)?;
            let in_order = steps.iter().enumerate().all(|(i, s)| s.iteration == i);
            if steps.len() != cfg.iterations || !in_order {
                bail!(
                    "{}: {} rows, but the run logged its steps for {} iterations (one row each, 0 to {}): the file is \
                     cut short or damaged",
                    path.display(),
                    steps.len(),
                    cfg.iterations,
                    cfg.iterations.saturating_sub(1)
                );
            }
            Some(steps)
        } else {
            None
        };
        Ok(RunLogs { rows, steps })
    }
}

impl Experiment {
    /// Every file of this experiment that its readers read: each run folder's `run.json`,
    /// `metrics.csv` and `steps.csv`, and `spec.json` (whether or not they exist), so that a
    /// command's output can be refused when it is one of them.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.done.iter().map(|d| d.found.dir.clone()).collect();
        dirs.extend(self.incomplete.iter().map(|r| self.dir.join(&r.rel_dir)));
        let mut files: Vec<PathBuf> = dirs
            .iter()
            .flat_map(|d| ["run.json", "metrics.csv", "steps.csv", "config.json"].map(|f| d.join(f)))
            .collect();
        files.push(self.dir.join("spec.json"));
        files
    }
}

/// `0, 25, ..., 300` for a list of iterations (its first two and its last).
fn span(its: &[usize]) -> String {
    match its {
        [] => "none".into(),
        [a] => a.to_string(),
        [a, b] => format!("{a}, {b}"),
        [a, b, .., z] => format!("{a}, {b}, ..., {z}"),
    }
}

/// Everything found in one experiment folder.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub dir: PathBuf,
    /// Runs with status `done` whose files could be read, sorted by transfer, lambda, seed.
    pub done: Vec<DoneRun>,
    /// Results evaluated on the networks of done runs (shallow CORAL and its SVM baseline, from
    /// a source-only run's `shallow_coral.json`), in the same order.
    pub evaluated: Vec<RunResult>,
    /// All other run folders, sorted by path.
    pub incomplete: Vec<IncompleteRun>,
    pub spec: SpecLinks,
}

/// Reads `spec.json` if present, keeping only `paper_table` and `paper_curves`.
pub fn read_spec_links(experiment_dir: &Path) -> Result<SpecLinks> {
    let path = experiment_dir.join("spec.json");
    if !path.exists() {
        return Ok(SpecLinks::default());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    let link = |key: &str| -> Result<Option<PathBuf>> {
        match value.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(PathBuf::from(s))),
            Some(other) => bail!("{}: `{key}` should be a path string, found {other}", path.display()),
        }
    };
    Ok(SpecLinks { paper_table: link("paper_table")?, paper_curves: link("paper_curves")? })
}

/// A status as `run.json` spells it (`done`, `running`, ...).
fn status_name(status: Status) -> String {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{status:?}").to_lowercase(),
    }
}

/// What one run folder's `run.json` gave.
enum RunFile {
    Read(Box<RunRecord>),
    /// No `run.json`, or one that is JSON but not a record this version reads: the status
    /// shown for it.
    NotRead(String),
}

/// Reads `run.json` of one run folder. A file that cannot be read or is not JSON (cut off,
/// corrupt) is an error naming it; JSON that does not fit [`RunRecord`] (a status this version
/// does not know, a field of the wrong type) leaves the run uncounted, with the reason.
fn read_run_file(json_path: &Path) -> Result<RunFile> {
    if !json_path.exists() {
        return Ok(RunFile::NotRead("no run.json".into()));
    }
    let text = match std::fs::read_to_string(json_path) {
        Ok(text) => text,
        Err(e) => return Ok(RunFile::NotRead(format!("run.json unreadable ({e})"))),
    };
    // JSON first, the record second: serde_json classes some type errors of a record read
    // straight from text (an enum given a number) with the syntax errors.
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(e) => return Ok(RunFile::NotRead(format!("run.json is damaged, not valid JSON ({e})"))),
    };
    Ok(match serde_json::from_value::<RunRecord>(value) {
        Ok(record) => RunFile::Read(Box::new(record)),
        Err(e) => RunFile::NotRead(format!("run.json not read ({e})")),
    })
}

/// A run folder whose `run.json` gave no record: its transfer, method, lambda and seed come
/// from the folder names.
struct UnreadRun {
    transfer_name: String,
    method: Method,
    lambda: Option<f64>,
    seed: Option<u64>,
    rel_dir: PathBuf,
    status: String,
}

impl UnreadRun {
    /// Names the transfer after a known run in the same folder (`known`, by folder name), else
    /// splits `<source>_<target>` when there is exactly one underscore.
    fn into_incomplete(self, known: &BTreeMap<String, DomainShift>) -> IncompleteRun {
        let transfer = known.get(&self.transfer_name).cloned().or_else(|| {
            let parts: Vec<&str> = self.transfer_name.split('_').collect();
            (parts.len() == 2).then(|| DomainShift::new(parts[0], parts[1]))
        });
        IncompleteRun {
            rel_dir: self.rel_dir,
            transfer,
            method: self.method,
            lambda: self.lambda,
            seed: self.seed,
            status: self.status,
            iterations: None,
            iterations_done: None,
        }
    }
}

/// A run whose record says it is not done.
fn incomplete_of(run: &FoundRun, rel_dir: PathBuf) -> IncompleteRun {
    IncompleteRun {
        rel_dir,
        transfer: Some(run.transfer()),
        method: run.method(),
        lambda: Some(run.lambda()),
        seed: Some(run.seed()),
        status: status_name(run.record.status),
        iterations: Some(run.record.config.iterations as u64),
        iterations_done: Some(run.record.iterations_done as u64),
    }
}

/// Finds every run folder `<transfer>/lambda_<x>/seed_<n>` under `experiment_dir` and reads its
/// `run.json`. A run whose `run.json` cannot be read, is not JSON or is not a run record, or
/// whose `metrics.csv` cannot be read, is listed as not counted with the reason (see
/// [`IncompleteRun`]); the rest are reported. A folder with no run at all is an error.
pub fn load_experiment(experiment_dir: &Path) -> Result<Experiment> {
    if !experiment_dir.is_dir() {
        bail!("{} is not a folder (expected an experiment's results folder)", experiment_dir.display());
    }
    let spec = read_spec_links(experiment_dir)?;
    let mut done = Vec::new();
    let mut incomplete = Vec::new();
    let mut unread = Vec::new();
    let found = run_id::find_runs(experiment_dir).with_context(|| format!("listing {}", experiment_dir.display()))?;
    for found in found {
        let run_dir = experiment_dir.join(&found.rel_dir);
        let rel_dir = found.rel_dir.clone();
        match read_run_file(&run_dir.join("run.json"))? {
            RunFile::Read(record) => {
                let run = FoundRun { dir: run_dir, record: *record };
                if run.record.status != Status::Done {
                    incomplete.push(incomplete_of(&run, rel_dir));
                } else {
                    match RunLogs::read(&run).and_then(|logs| Ok((run_result(&run, &logs)?, logs))) {
                        Ok((result, logs)) => done.push(DoneRun { found: run, logs, result }),
                        // Done, but its logs cannot be read or disagree with its record: listed,
                        // the rest reported.
                        Err(e) => {
                            let mut listed = incomplete_of(&run, rel_dir);
                            listed.status = format!("done, but not counted: {e:#}");
                            incomplete.push(listed);
                        }
                    }
                }
            }
            RunFile::NotRead(status) => unread.push(UnreadRun {
                transfer_name: found.transfer_name,
                method: found.method,
                lambda: found.lambda,
                seed: found.seed,
                rel_dir,
                status,
            }),
        }
    }
    if done.is_empty() && incomplete.is_empty() && unread.is_empty() {
        bail!(
            "no run found under {} (expected run folders <source>_<target>/lambda_<x>/seed_<n>/ with a run.json)",
            experiment_dir.display()
        );
    }
    let mut known: BTreeMap<String, DomainShift> = BTreeMap::new();
    for d in &done {
        let t = d.found.transfer();
        known.insert(t.dir_name(), t);
    }
    for r in &incomplete {
        if let Some(t) = &r.transfer {
            known.insert(t.dir_name(), t.clone());
        }
    }
    incomplete.extend(unread.into_iter().map(|u| u.into_incomplete(&known)));
    let key = |d: &DoneRun| (d.found.transfer(), d.found.method(), Lambda(d.found.lambda()), d.found.seed());
    done.sort_by_key(key);
    let mut evaluated = Vec::new();
    for d in &done {
        match evaluations(d) {
            Ok(results) => evaluated.extend(results),
            Err(e) => {
                let mut listed =
                    incomplete_of(&d.found, d.found.dir.strip_prefix(experiment_dir).unwrap_or(&d.found.dir).into());
                listed.method = Method::ShallowCoral;
                listed.status = format!("shallow CORAL not counted: {e:#}");
                incomplete.push(listed);
            }
        }
    }
    incomplete.sort_by(|a, b| a.rel_dir.cmp(&b.rel_dir));
    Ok(Experiment { dir: experiment_dir.to_path_buf(), done, evaluated, incomplete, spec })
}

/// What was evaluated on a done run's network: for a source-only run (coral, lambda 0) with a
/// `shallow_coral.json`, the SVM on its features and shallow CORAL, as runs of those methods
/// with the run's transfer and seed (lambda 0).
fn evaluations(d: &DoneRun) -> Result<Vec<RunResult>> {
    let path = d.found.dir.join(crate::infer::shallow_coral::FILE);
    if !(d.found.method() == Method::Coral && d.found.lambda() == 0.0 && path.is_file()) {
        return Ok(Vec::new());
    }
    let shallow = crate::infer::shallow_coral::ShallowCoral::read(&d.found.dir)?;
    let result = |method, acc: f64| RunResult {
        method,
        final_acc: acc,
        best_acc: acc,
        final_distance: f64::NAN,
        window: None,
        ..d.result.clone()
    };
    Ok(vec![result(Method::Svm, shallow.svm_target_acc), result(Method::ShallowCoral, shallow.coral_target_acc)])
}

/// What the report takes from one done run (accuracies as fractions), read by [`run_result`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub transfer: DomainShift,
    pub method: Method,
    pub lambda: f64,
    pub seed: u64,
    pub final_acc: f64,
    pub best_acc: f64,
    /// ‖C_S − C_T‖_F of the last row of `metrics.csv` (its mean over the last iterations),
    /// NaN where no row has one.
    pub final_distance: f64,
    /// The mean class and CORAL losses over the last 20% of the steps (`rule::WINDOW`), for the
    /// paper's rule and the final CORAL loss; `None` where the logs do not cover it.
    pub window: Option<WindowLosses>,
}

/// Everything the report takes from one done run's logs.
fn run_result(run: &FoundRun, logs: &RunLogs) -> Result<RunResult> {
    let (final_acc, best_acc, final_distance) = run_numbers_of(run, &logs.rows)?;
    let iterations = run.record.config.iterations;
    let window = match &logs.steps {
        Some(steps) => WindowLosses::of_steps(steps, iterations, rule::WINDOW),
        None => WindowLosses::of_rows(&logs.rows, iterations, rule::WINDOW),
    };
    Ok(RunResult {
        transfer: run.transfer(),
        method: run.method(),
        lambda: run.lambda(),
        seed: run.seed(),
        final_acc,
        best_acc,
        final_distance,
        window,
    })
}

/// The final and best target accuracy (fractions) and the last logged CORAL distance of one
/// done run, from its `metrics.csv` rows, already read. The final accuracy is `run.json`'s
/// `final_target_acc`, else the last row's; best is the maximum over rows.
fn run_numbers_of(run: &FoundRun, rows: &[MetricsRow]) -> Result<(f64, f64, f64)> {
    let path = run.dir.join("metrics.csv");
    let finite: Vec<&MetricsRow> = rows.iter().filter(|r| r.target_acc.is_finite()).collect();
    let best = finite.iter().map(|r| r.target_acc).fold(f64::NAN, f64::max);
    let last = rows.last().map(|r| r.target_acc).filter(|a| a.is_finite());
    let Some(final_acc) = run.record.final_target_acc.filter(|a| a.is_finite()).or(last) else {
        bail!(
            "{}: run is done but has no final target accuracy (run.json final_target_acc is null and the last row of metrics.csv has none)",
            run.dir.display()
        );
    };
    if !best.is_finite() {
        bail!("{}: no target accuracy in any row", path.display());
    }
    let distance = rows.iter().rev().map(|r| r.coral_distance).find(|d| d.is_finite()).unwrap_or(f64::NAN);
    Ok((final_acc, best, distance))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_runs_are_described() {
        let r = IncompleteRun {
            rel_dir: PathBuf::from("amazon_webcam/lambda_0.8/seed_3"),
            transfer: Some(DomainShift::new("amazon", "webcam")),
            method: Method::Coral,
            lambda: Some(0.8),
            seed: Some(3),
            status: "diverged".into(),
            iterations: Some(2000),
            iterations_done: Some(350),
        };
        assert_eq!(r.describe(), "`amazon_webcam/lambda_0.8/seed_3`: diverged, 350 of 2000 iterations");
    }

    fn write_run_json(exp: &Path, rel: &str, json: &str) {
        let dir = exp.join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("run.json"), json).unwrap();
    }

    #[test]
    fn status_names_are_those_of_run_json() {
        for (status, name) in [
            (Status::Running, "running"),
            (Status::Done, "done"),
            (Status::Diverged, "diverged"),
            (Status::Interrupted, "interrupted"),
            (Status::Failed, "failed"),
        ] {
            assert_eq!(status_name(status), name);
        }
    }

    #[test]
    fn partial_records_are_read_and_unknown_statuses_are_listed_not_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let exp = tmp.path();
        // A few fields of the config, the status and the count: read, and counted when done.
        write_run_json(
            exp,
            "amazon_webcam/lambda_0.8/seed_1",
            r#"{"config": {"source": "amazon", "target": "webcam", "lambda": 0.8, "seed": 1, "iterations": 1,
                "eval_every": 1}, "status": "done", "iterations_done": 1}"#,
        );
        // (rows of the 11 columns before `align_loss`, as older runs wrote them)
        let rows = format!(
            "{}\n0,0,0.001,NaN,NaN,NaN,1e-3,0.1,0.5,1,0\n1,0,0.001,2,1,1,1e-3,0.1,0.6,1,0\n",
            crate::train::metrics::COLUMNS[..11].join(",")
        );
        std::fs::write(exp.join("amazon_webcam/lambda_0.8/seed_1/metrics.csv"), rows).unwrap();
        // Partial and running: listed with the iterations of its config.
        write_run_json(
            exp,
            "amazon_webcam/lambda_0.8/seed_2",
            r#"{"config": {"source": "amazon", "target": "webcam", "lambda": 0.8, "seed": 2, "iterations": 300},
                "status": "running", "iterations_done": 50}"#,
        );
        // A status this version does not know: listed with the parse error, not fatal.
        write_run_json(
            exp,
            "amazon_webcam/lambda_0.8/seed_3",
            r#"{"config": {"source": "amazon", "target": "webcam", "lambda": 0.8, "seed": 3}, "status": "paused"}"#,
        );
        // Garbage status of the wrong type, in a folder not named `<source>_<target>`.
        write_run_json(exp, "odd_name_here/lambda_0/seed_4", r#"{"config": {}, "status": 7}"#);
        // A run folder without run.json.
        std::fs::create_dir_all(exp.join("amazon_webcam/lambda_0.8/seed_5")).unwrap();

        let found = load_experiment(exp).unwrap();
        assert_eq!(found.done.len(), 1, "{:#?}", found.incomplete);
        let run = &found.done[0];
        let (run, result) = (&run.found, &run.result);
        assert_eq!((run.transfer(), run.lambda(), run.seed()), (DomainShift::new("amazon", "webcam"), 0.8, 1));
        assert_eq!(run.record.final_target_acc, None);
        assert_eq!(result.final_acc, 0.6, "the last row's, where run.json has none");

        let described: Vec<String> = found.incomplete.iter().map(IncompleteRun::describe).collect();
        assert_eq!(described.len(), 4, "{described:#?}");
        assert_eq!(described[0], "`amazon_webcam/lambda_0.8/seed_2`: running, 50 of 300 iterations");
        assert!(
            described[1].starts_with("`amazon_webcam/lambda_0.8/seed_3`: run.json not read (unknown variant `paused`"),
            "{}",
            described[1]
        );
        assert_eq!(described[2], "`amazon_webcam/lambda_0.8/seed_5`: no run.json");
        assert!(
            described[3].starts_with("`odd_name_here/lambda_0/seed_4`: run.json not read (invalid type"),
            "{}",
            described[3]
        );
        // Unread runs take lambda and seed from the folder names, the transfer from a run read
        // in the same folder or from `<source>_<target>`.
        let unknown = &found.incomplete[1];
        assert_eq!(
            (unknown.transfer.clone(), unknown.lambda, unknown.seed, unknown.iterations_done),
            (Some(DomainShift::new("amazon", "webcam")), Some(0.8), Some(3), None)
        );
        let odd = &found.incomplete[3];
        assert_eq!((odd.transfer.clone(), odd.lambda, odd.seed), (None, Some(0.0), Some(4)));
    }

    #[test]
    fn damaged_runs_are_listed_and_an_empty_folder_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load_experiment(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("no run found"), "{err}");
        let rel = "amazon_webcam/lambda_0/seed_1";
        write_run_json(tmp.path(), rel, r#"{"config": {"source": "amazon","#);
        let found = load_experiment(tmp.path()).unwrap();
        assert!(found.done.is_empty());
        assert!(found.incomplete[0].status.contains("damaged, not valid JSON"), "{:?}", found.incomplete);
    }
}
