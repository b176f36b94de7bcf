//! Sweeps end to end without training: `exe` is a shell script that plays `deep-coral train`
//! (reads `--out DIR`, appends its arguments to `<results>/calls.log`, writes
//! `DIR/run.json`), so the state on disk, skipping, resuming after an interruption and
//! failure reporting are checked in milliseconds. A recording launcher checks the grid order.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use deep_coral::config::TrainConfig;
use deep_coral::experiment::launcher::{DryRun, Failure, Job, Launcher, Local};
use deep_coral::experiment::run_state::RunState;
use deep_coral::experiment::spec;
use deep_coral::experiment::sweep::{self, SweepSummary};
use indicatif::ProgressBar;
use tempfile::TempDir;

/// Behaviour switches are files in the results root: `kill_on_call` (N: the N-th call writes
/// status "running" and exits 1, as a killed run leaves it) and `fail_dir` (that run exits 2).
const FAKE_TRAIN: &str = r#"#!/bin/sh
# Plays `deep-coral train` for tests/sweep.rs.
out=""; prev=""
for a in "$@"; do [ "$prev" = "--out" ] && out="$a"; prev="$a"; done
root="$out/../../../.."
echo "$*" >> "$root/calls.log"
n=$(wc -l < "$root/calls.log")
echo "fake train: $*"
if [ -f "$root/kill_on_call" ] && [ "$n" -eq "$(cat "$root/kill_on_call")" ]; then
  echo '{"status": "running"}' > "$out/run.json"; exit 1
fi
if [ -f "$root/fail_dir" ] && [ "$out" = "$(cat "$root/fail_dir")" ]; then
  echo "fake failure" >&2; exit 2
fi
echo '{"status": "done"}' > "$out/run.json"
"#;

/// The script, written once before any test spawns a child: writing an executable while
/// another thread forks can make its exec fail with "text file busy".
fn fake_train() -> &'static Path {
    static SCRIPT: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    &SCRIPT
        .get_or_init(|| {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fake-train");
            std::fs::write(&path, FAKE_TRAIN).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            (dir, path)
        })
        .1
}

/// A spec file, a data root with its domain folders, an (empty) weights file and a results
/// root, all in one temporary folder. 2 transfers x 2 lambdas x 2 seeds = 8 runs.
struct Fixture {
    tmp: TempDir,
    spec: PathBuf,
    results: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        fake_train();
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        for d in ["amazon", "dslr", "webcam"] {
            std::fs::create_dir_all(data.join(d)).unwrap();
        }
        let weights = tmp.path().join("w.safetensors");
        std::fs::write(&weights, b"").unwrap();
        let spec = tmp.path().join("exp.json");
        let text = serde_json::json!({
            "name": "exp",
            "train": { "backbone": "squeezenet1_1", "data_root": data, "weights": weights, "iterations": 10,
                       "batch_size": 4, "eval_every": 5, "lr": 1e-5 },
            "transfers": [
                { "source": "amazon", "target": "dslr", "lambdas": [0, 0.5] },
                { "source": "webcam", "target": "dslr", "lambdas": [0, 0.5] }
            ],
            "seeds": [1, 2]
        });
        std::fs::write(&spec, serde_json::to_string_pretty(&text).unwrap()).unwrap();
        let results = tmp.path().join("results");
        Fixture { tmp, spec, results }
    }

    fn sweep(&self, launcher: &dyn Launcher) -> anyhow::Result<SweepSummary> {
        sweep::sweep(&self.spec, &self.results, launcher, fake_train())
    }

    fn runs(&self) -> Vec<PathBuf> {
        spec::load(&self.spec).unwrap().runs(&self.results).into_iter().map(|r| r.dir).collect()
    }

    fn run(&self, rel: &str) -> PathBuf {
        self.results.join("exp").join(rel)
    }

    /// The `--out` of every call of the fake train, in order.
    fn calls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.results.join("calls.log")).unwrap_or_default();
        text.lines().map(|l| l.split("--out ").nth(1).unwrap().split(' ').next().unwrap().to_string()).collect()
    }

    fn set(&self, switch: &str, value: &str) {
        std::fs::create_dir_all(&self.results).unwrap();
        std::fs::write(self.results.join(switch), value).unwrap();
    }
}

fn state(dir: &Path) -> RunState {
    RunState::read(dir)
}

#[test]
fn a_sweep_runs_everything_once_and_a_second_sweep_launches_nothing() {
    let fx = Fixture::new();
    let s = fx.sweep(&Local { jobs: 2 }).unwrap();
    assert_eq!((s.total, s.done_before, s.new, s.launched), (8, 0, 8, 8));
    assert_eq!(fx.calls().len(), 8);
    for dir in fx.runs() {
        assert_eq!(state(&dir), RunState::Done, "{}", dir.display());
        let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
        assert!(log.contains("==== deep-coral sweep") && log.contains("fake train: train --config"), "{log}");
    }

    // Each run's config.json is the spec's train block with the run's identity on top.
    let c: TrainConfig =
        serde_json::from_str(&std::fs::read_to_string(fx.run("webcam_dslr/lambda_0.5/seed_2/config.json")).unwrap())
            .unwrap();
    assert_eq!((c.source.as_str(), c.target.as_str(), c.lambda, c.seed), ("webcam", "dslr", 0.5, 2));
    assert_eq!((c.iterations, c.batch_size), (10, 4));
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(c.threads, (cores / 2).max(1));
    // spec.json: the effective spec, reloadable, every train field written out.
    let copy = spec::load(&fx.results.join("exp/spec.json")).unwrap();
    assert_eq!(copy.runs(&fx.results).len(), 8);
    assert!(std::fs::read_to_string(fx.results.join("exp/spec.json")).unwrap().contains("\"momentum\""));

    let s = fx.sweep(&Local { jobs: 2 }).unwrap();
    assert_eq!((s.done_before, s.launched), (8, 0));
    assert_eq!(fx.calls().len(), 8, "nothing relaunched");
}

#[test]
fn after_an_interruption_only_incomplete_and_new_runs_are_launched() {
    let fx = Fixture::new();
    // The 3rd run is "killed": run.json stays "running" and the child exits 1.
    fx.set("kill_on_call", "3");
    let err = format!("{:#}", fx.sweep(&Local { jobs: 1 }).unwrap_err());
    let runs = fx.runs();
    assert!(err.contains(&runs[2].display().to_string()), "{err}");
    assert_eq!(fx.calls().len(), 8);
    assert_eq!(state(&runs[2]), RunState::Incomplete);
    // More of what an interruption leaves: a run that never started (no directory) and one
    // killed before run.json was written.
    std::fs::remove_dir_all(&runs[5]).unwrap();
    std::fs::remove_file(runs[6].join("run.json")).unwrap();
    assert_eq!(state(&runs[5]), RunState::New);
    assert_eq!(state(&runs[6]), RunState::Incomplete);
    std::fs::remove_file(fx.results.join("kill_on_call")).unwrap();

    let s = fx.sweep(&Local { jobs: 1 }).unwrap();
    assert_eq!((s.done_before, s.incomplete, s.new, s.launched), (5, 2, 1, 3));
    let again: Vec<String> = fx.calls()[8..].to_vec();
    let expect: Vec<String> = [2, 5, 6].iter().map(|&i| runs[i].display().to_string()).collect();
    assert_eq!(again, expect);
    assert!(runs.iter().all(|d| state(d) == RunState::Done));
}

#[test]
fn a_run_with_a_checkpoint_is_resumed() {
    let fx = Fixture::new();
    let dir = fx.run("amazon_dslr/lambda_0.5/seed_1");
    std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
    std::fs::write(dir.join("checkpoint/state.json"), "{}").unwrap();
    std::fs::write(dir.join("run.json"), r#"{"status": "interrupted"}"#).unwrap();
    fx.sweep(&Local { jobs: 2 }).unwrap();
    let log = std::fs::read_to_string(fx.results.join("calls.log")).unwrap();
    let line = log.lines().find(|l| l.contains(&dir.display().to_string())).unwrap();
    assert_eq!(line, format!("train --out {} --resume", dir.display()));
    assert_eq!(log.lines().filter(|l| l.contains("--resume")).count(), 1);
}

#[test]
fn a_failed_run_is_named_after_the_others_completed() {
    let fx = Fixture::new();
    let bad = fx.run("amazon_dslr/lambda_0/seed_1");
    fx.set("fail_dir", &bad.display().to_string());
    let err = format!("{:#}", fx.sweep(&Local { jobs: 2 }).unwrap_err());
    assert!(err.contains("1 of 8 runs of exp failed"), "{err}");
    assert!(err.contains(&bad.display().to_string()) && err.contains("exit status: 2"), "{err}");
    assert!(err.contains(&bad.join("train.log").display().to_string()), "{err}");
    assert_eq!(fx.calls().len(), 8);
    for dir in fx.runs() {
        let expect = if dir == bad { RunState::Incomplete } else { RunState::Done };
        assert_eq!(state(&dir), expect, "{}", dir.display());
    }
    assert!(std::fs::read_to_string(bad.join("train.log")).unwrap().contains("fake failure"));
}

#[test]
fn a_changed_spec_is_refused_over_existing_runs() {
    let fx = Fixture::new();
    fx.sweep(&Local { jobs: 2 }).unwrap();
    let text = std::fs::read_to_string(&fx.spec).unwrap().replace("\"iterations\": 10", "\"iterations\": 20");
    std::fs::write(&fx.spec, text).unwrap();
    let err = format!("{:#}", fx.sweep(&Local { jobs: 2 }).unwrap_err());
    assert!(err.contains("no longer matches 8 existing run(s)") && err.contains("differs in: iterations"), "{err}");
    // A different --jobs (threads per run) is not a change of experiment.
    let text = std::fs::read_to_string(&fx.spec).unwrap().replace("\"iterations\": 20", "\"iterations\": 10");
    std::fs::write(&fx.spec, text).unwrap();
    assert_eq!(fx.sweep(&Local { jobs: 1 }).unwrap().launched, 0);
}

#[test]
fn missing_data_stops_the_sweep_before_any_run_but_not_a_dry_run() {
    let fx = Fixture::new();
    std::fs::remove_dir(fx.tmp.path().join("data/webcam")).unwrap();
    std::fs::remove_dir(fx.tmp.path().join("data/dslr")).unwrap();
    let err = format!("{:#}", fx.sweep(&Local { jobs: 2 }).unwrap_err());
    assert!(err.contains("2 of 3 domain folders missing") && err.contains("webcam") && err.contains("dslr"), "{err}");
    assert!(!fx.results.exists(), "nothing written");

    // The dry run lists the runs, then fails as the real sweep would.
    let err = format!("{:#}", fx.sweep(&DryRun).unwrap_err());
    assert!(err.contains("real sweep would stop") && err.contains("2 of 3 domain folders missing"), "{err}");
    assert!(!fx.results.exists(), "a dry run writes nothing");
}

/// Keeps the jobs it is given; runs nothing.
#[derive(Default)]
struct Recorder {
    jobs: Mutex<Vec<Job>>,
}

impl Launcher for Recorder {
    fn launch(&self, jobs: Vec<Job>, progress: &ProgressBar) -> anyhow::Result<Vec<Failure>> {
        progress.inc(jobs.len() as u64);
        self.jobs.lock().unwrap().extend(jobs);
        Ok(Vec::new())
    }
}

#[test]
fn the_launcher_gets_the_grid_in_order_without_done_runs() {
    let fx = Fixture::new();
    let runs = fx.runs();
    let rel: Vec<String> =
        runs.iter().map(|d| d.strip_prefix(fx.results.join("exp")).unwrap().display().to_string()).collect();
    // Seeds outermost, then transfers in spec order, then lambdas.
    assert_eq!(
        rel,
        [
            "amazon_dslr/lambda_0/seed_1",
            "amazon_dslr/lambda_0.5/seed_1",
            "webcam_dslr/lambda_0/seed_1",
            "webcam_dslr/lambda_0.5/seed_1",
            "amazon_dslr/lambda_0/seed_2",
            "amazon_dslr/lambda_0.5/seed_2",
            "webcam_dslr/lambda_0/seed_2",
            "webcam_dslr/lambda_0.5/seed_2",
        ]
    );
    for i in [1, 4] {
        std::fs::create_dir_all(&runs[i]).unwrap();
        std::fs::write(runs[i].join("run.json"), r#"{"status": "done"}"#).unwrap();
    }
    std::fs::create_dir_all(&runs[6]).unwrap();

    let rec = Recorder::default();
    let s = fx.sweep(&rec).unwrap();
    assert_eq!((s.done_before, s.incomplete, s.new, s.launched), (2, 1, 5, 6));
    let jobs = rec.jobs.into_inner().unwrap();
    let got: Vec<&PathBuf> = jobs.iter().map(|j| &j.dir).collect();
    let expect: Vec<&PathBuf> = [0, 2, 3, 5, 6, 7].iter().map(|&i| &runs[i]).collect();
    assert_eq!(got, expect);
    assert_eq!(jobs[4].state, RunState::Incomplete);
    assert_eq!(jobs[0].state, RunState::New);
    assert_eq!((jobs[1].config.source.as_str(), jobs[1].config.lambda, jobs[1].config.seed), ("webcam", 0.0, 1));
    assert_eq!(jobs[0].program, fake_train());
    // The recorder keeps libtorch's default threads; config.json was written for each job.
    assert_eq!(jobs[0].config.threads, 0);
    assert!(jobs.iter().all(|j| j.dir.join("config.json").is_file()));
    assert!(!runs[1].join("config.json").exists(), "a done run is left alone");
}

/// A recorder that, like `DryRun`, only lists.
#[derive(Default)]
struct Lister(Recorder);

impl Launcher for Lister {
    fn launch(&self, jobs: Vec<Job>, progress: &ProgressBar) -> anyhow::Result<Vec<Failure>> {
        self.0.launch(jobs, progress)
    }

    fn executes(&self) -> bool {
        false
    }
}

#[test]
fn a_dry_run_of_office31_lists_60_runs_without_data() {
    let results = tempfile::tempdir().unwrap();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/office31.json");
    let lister = Lister::default();
    // Without the data and weights here, the dry run lists the grid and then says the real
    // sweep would stop.
    let err = format!("{:#}", sweep::sweep(&spec, results.path(), &lister, Path::new("deep-coral")).unwrap_err());
    assert!(err.contains("real sweep would stop") && err.contains("data/office31"), "{err}");
    let jobs = lister.0.jobs.into_inner().unwrap();
    assert_eq!(jobs.len(), 60);
    assert_eq!(jobs[0].dir, results.path().join("office31/amazon_dslr/lambda_0/seed_1"));
    assert_eq!(jobs[59].dir, results.path().join("office31/webcam_dslr/lambda_0.0001/seed_5"));
    assert_eq!(std::fs::read_dir(results.path()).unwrap().count(), 0, "a dry run writes nothing");
    // The real DryRun prints the same 60 lines (state, dir, command), then the same error.
    sweep::sweep(&spec, results.path(), &DryRun, Path::new("deep-coral")).unwrap_err();
}

#[test]
fn a_dry_run_lists_done_runs_too() {
    let fx = Fixture::new();
    fx.sweep(&Local { jobs: 2 }).unwrap();
    let lister = Lister::default();
    let s = fx.sweep(&lister).unwrap();
    assert_eq!((s.done_before, s.launched), (8, 0));
    let jobs = lister.0.jobs.into_inner().unwrap();
    assert_eq!(jobs.len(), 8);
    assert!(jobs.iter().all(|j| j.state == RunState::Done));
}

/// Keeps the jobs it is given, and shares `threads` per run out like `Local`.
struct Sharing {
    threads: usize,
    jobs: Mutex<Vec<Job>>,
}

impl Launcher for Sharing {
    fn launch(&self, jobs: Vec<Job>, progress: &ProgressBar) -> anyhow::Result<Vec<Failure>> {
        progress.inc(jobs.len() as u64);
        self.jobs.lock().unwrap().extend(jobs);
        Ok(Vec::new())
    }

    fn threads_per_run(&self) -> Option<usize> {
        Some(self.threads)
    }
}

#[test]
fn a_grid_keeps_one_thread_count_across_sweeps_with_other_jobs() {
    let fx = Fixture::new();
    let text = std::fs::read_to_string(&fx.spec).unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    spec["train"].as_object_mut().unwrap().remove("threads");
    std::fs::write(&fx.spec, spec.to_string()).unwrap();
    let first = Sharing { threads: 2, jobs: Mutex::new(Vec::new()) };
    fx.sweep(&first).unwrap();
    assert!(first.jobs.into_inner().unwrap().iter().all(|j| j.config.threads == 2));
    // Run again as with `--jobs 2` on this machine (1 thread each): the grid keeps 2.
    let second = Sharing { threads: 1, jobs: Mutex::new(Vec::new()) };
    fx.sweep(&second).unwrap();
    let jobs = second.jobs.into_inner().unwrap();
    assert!(
        !jobs.is_empty() && jobs.iter().all(|j| j.config.threads == 2),
        "{:?}",
        jobs.iter().map(|j| j.config.threads).collect::<Vec<_>>()
    );
}
