//! The Slurm launcher where no cluster is needed: bad flags and spec blocks, a missing sbatch,
//! the dry run, one task's requeue cap and set-up signal, runs in use by a local process, output
//! into a closed pipe. They always run (the cluster tests are in `tests/slurm.rs`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::slurm::*;
use common::*;
use serde_json::{json, Value};

fn no_cluster_spec(tmp: &Path, slurm: Option<Value>) -> PathBuf {
    let data = domains(tmp);
    let spec = tmp.join("s.json");
    write_spec(&spec, "s", &data, json!([{"source": "src", "target": "tgt", "lambdas": [0, 1]}]), &[1, 2], 2, 2, slurm);
    spec
}

#[test]
fn a_missing_sbatch_is_named_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = no_cluster_spec(tmp.path(), None);
    let empty = tmp.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let results = tmp.path().join("results");
    let e = run_fails(
        bin().env("PATH", &empty).arg("sweep").arg(&spec).arg("--out").arg(&results).args(["--launcher", "slurm"]),
        1,
    );
    assert!(e.contains("sbatch not found on PATH") && e.contains(&empty.display().to_string()), "{e}");
    assert!(!results.exists());
    // 75: runs still to finish (all new), none failed.
    let e = run_fails(bin().env("PATH", &empty).arg("sweep").arg(&spec).arg("--out").arg(&results).arg("--status"), 75);
    assert!(e.is_empty(), "--status without any submission needs no Slurm: {e}");
}

#[test]
fn a_malformed_slurm_block_or_flag_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let cases: [(Value, &[&str], &[&str]); 6] = [
        (json!({"partiton": "gpu"}), &[], &["`slurm.partiton`", "unknown field"]),
        (json!({"gpus_per_run": "one"}), &[], &["`slurm.gpus_per_run`", "invalid type"]),
        (json!({"time": "2 hours"}), &[], &["`slurm.time`", "2 hours"]),
        (json!({"time": "1:00:00"}), &["--time", "90s"], &["--time", "90s", "not a Slurm time limit"]),
        (json!({"max_parallel": 0}), &[], &["`slurm.max_parallel`", "at least 1"]),
        (json!({"sbatch_args": ["--output=/tmp/x"]}), &[], &["`slurm.sbatch_args`", "--output"]),
    ];
    for (block, flags, expect) in cases {
        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        let spec = no_cluster_spec(dir.path(), Some(block.clone()));
        let e = run_fails(
            bin().arg("sweep").arg(&spec).arg("--out").arg(&results).args(["--launcher", "slurm"]).args(flags),
            1,
        );
        for x in expect {
            assert!(e.contains(x), "{block} {flags:?}: {x} in {e}");
        }
        assert!(!results.exists());
    }
    let spec = no_cluster_spec(tmp.path(), None);
    let e = run_fails(bin().arg("sweep").arg(&spec).arg("--out").arg(&results).args(["--partition", "gpu"]), 1);
    assert!(e.contains("need --launcher slurm"), "{e}");
}

#[test]
fn a_dry_run_prints_the_sbatch_command_and_its_script() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = no_cluster_spec(tmp.path(), Some(json!({"partition": "cpu", "time": "02:00:00", "max_parallel": 3})));
    let results = tmp.path().join("results");
    let out = run_ok(bin().arg("sweep").arg(&spec).arg("--out").arg(&results).args([
        "--launcher",
        "slurm",
        "--dry-run",
        "--partition",
        "gpu",
        "--gpus-per-run",
        "1",
        "--cpus-per-run",
        "4",
        "--mem",
        "16G",
        "--account",
        "lab",
        "--qos",
        "normal",
        "--sbatch-arg=--constraint=a100",
        "--sbatch-arg",
        "--exclusive",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    for x in [
        "would submit 4 runs of s",
        "--array=0-3%3",
        "--partition=gpu",
        "--time=02:00:00",
        "--gres=gpu:1",
        "--cpus-per-task=4",
        "--mem=16G",
        "--account=lab",
        "--qos=normal",
        "--signal=B:USR1@120",
        "--requeue",
        "--open-mode=append",
        "--constraint=a100",
        "--exclusive",
        "sweep-task --max-requeues 3",
        "exec ",
    ] {
        assert!(text.contains(x), "{x} in {text}");
    }
    let first = runs(&results, &spec).remove(0);
    assert!(
        text.contains(&format!(
            "0) run={} label=src_tgt-lambda_0-seed_1 ;;",
            std::path::absolute(&first).unwrap().display()
        )),
        "{text}"
    );
    assert!(text.contains(r#"ln -sfn "$task.out""#) && text.contains(r#"/"$task.$label.out""#), "{text}");
    assert!(text.contains("--job-name=s "), "the job is named for the experiment: {text}");
    assert!(!results.exists(), "a dry run writes nothing");
}

/// A run folder as the sweep leaves it for a task: a config.json of 200 tiny iterations.
fn task_run(tmp: &Path) -> PathBuf {
    let data = domains(tmp);
    let dir = tmp.join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let config = json!({ "data_root": data, "source": "src", "target": "tgt", "backbone": "squeezenet1_1",
        "weights": squeezenet_weights(), "lambda": 1, "iterations": 200, "eval_every": 2, "batch_size": 2, "lr": 1e-5,
        "seed": 1, "threads": 1, "device": "cpu" });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn a_task_past_its_requeue_cap_fails_saying_the_run_cannot_fit_its_time_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = task_run(tmp.path());
    // As Slurm starts a task that was requeued 3 times already.
    let mut task = bin()
        .args(["sweep-task", "--max-requeues", "3"])
        .arg(&dir)
        .env("SLURM_JOB_ID", "999")
        .env("SLURM_ARRAY_JOB_ID", "990")
        .env("SLURM_ARRAY_TASK_ID", "9")
        .env("SLURM_RESTART_COUNT", "3")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(120, "the run to log a row", || rows_so_far(&dir) >= 2);
    unsafe { libc::kill(task.id() as i32, libc::SIGUSR1) };
    let code = task.wait().unwrap().code();
    assert_eq!(code, Some(1));
    let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
    assert!(log.contains("==== Slurm job 990_9, restart 3"), "{log}");
    assert!(log.contains("after 3 requeues") && log.contains("can never fit its time limit"), "{log}");
    assert!(std::fs::read_to_string(dir.join("run.json")).unwrap().contains("\"interrupted\""));
    assert!(dir.join("checkpoint/state.json").is_file(), "it checkpointed all the same");
    assert!(rows_so_far(&dir) < 101);
}

#[test]
fn a_slurm_sweep_refuses_runs_that_a_local_process_has_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = no_cluster_spec(tmp.path(), None);
    let results = tmp.path().join("results");
    let dir = runs(&results, &spec).remove(0);
    std::fs::create_dir_all(&dir).unwrap();
    let lock = deep_coral::files::RunLock::acquire(&dir).unwrap();
    let e = run_fails(bin().arg("sweep").arg(&spec).arg("--out").arg(&results).args(["--launcher", "slurm"]), 1);
    assert!(e.contains("in use by processes that are no Slurm task of this experiment"), "{e}");
    assert!(e.contains(&format!("{} (in use by process {})", dir.display(), std::process::id())), "{e}");
    assert!(!results.join("s/spec.json").exists(), "nothing written");
    drop(lock);
}

#[test]
fn output_into_a_pipe_closed_early_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = no_cluster_spec(tmp.path(), None);
    let results = tmp.path().join("results");
    for args in [&["--dry-run"][..], &["--dry-run", "--launcher", "slurm"], &["--status"]] {
        for _ in 0..3 {
            // As `deep-coral sweep ... | head -0`: the reader is gone before the first line.
            let mut child = bin()
                .arg("sweep")
                .arg(&spec)
                .arg("--out")
                .arg(&results)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            drop(child.stdout.take());
            let out = child.wait_with_output().unwrap();
            let err = stderr(&out);
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert!(matches!(out.status.code(), Some(0) | Some(141) | Some(75)), "{args:?}: {:?} {err}", out.status);
        }
    }
}

#[test]
fn a_signal_during_a_tasks_set_up_says_there_was_nothing_to_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = task_run(tmp.path());
    // Not under Slurm (no SLURM_* variables): the task cannot requeue, and says so.
    let mut task =
        bin().args(["sweep-task"]).arg(&dir).env_remove("SLURM_JOB_ID").stdout(Stdio::piped()).spawn().unwrap();
    // The task opens train.log as it starts train: the signal finds train setting up.
    wait_for(60, "the task to start train", || dir.join("train.log").is_file());
    unsafe { libc::kill(task.id() as i32, libc::SIGUSR1) };
    assert_eq!(task.wait().unwrap().code(), Some(130));
    let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
    assert!(
        log.contains("stopped by SIGUSR1: during set-up, before its first row: nothing new to checkpoint"),
        "{log}"
    );
    assert!(!log.contains("iteration ?"), "{log}");
}
