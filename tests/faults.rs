//! Faults through the real binary on tiny synthetic images and the real SqueezeNet weights:
//! divergence (exit 3), SIGINT/SIGTERM (exit 130, whole rows, checkpoint, no temporary files),
//! exact resume after a signal and after SIGKILL, a sweep resumed after Ctrl-C, and
//! repeatability on CPU; the guarantees that depend on the arithmetic also under
//! `--precision bf16`.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{assert_no_tmp, assert_whole_rows, metrics_sans_elapsed, rows_so_far, tiny_data, tiny_train, wait_for};
use deep_coral::train::metrics::{self, RunRecord, Status};

fn record(dir: &Path) -> RunRecord {
    RunRecord::read(&dir.join("run.json")).unwrap()
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0, "kill {sig}");
}

/// Waits for `child` and returns its exit code (None when a signal ended it) and stderr.
fn finish(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.code(), common::stderr(&out))
}

#[test]
fn a_loss_that_turns_nan_stops_the_run_as_diverged() {
    diverges(&[]);
}

#[test]
fn a_loss_that_turns_nan_stops_a_bf16_run_as_diverged() {
    diverges(&["--precision", "bf16"]);
}

fn diverges(more: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let out = tmp.path().join("run");
    // lr 1e8: the first update blows the weights up and the second step's loss is NaN.
    let extra = [&["--lr", "1e8", "--eval-every", "1", "--iterations", "20"], more].concat();
    let err = common::run_fails(&mut tiny_train(&data, &out, &extra), 3);
    assert!(err.contains("iteration 1: loss is not finite") && err.contains("Diverged"), "{err}");
    let rec = record(&out);
    assert_eq!(rec.status, Status::Diverged);
    assert_eq!(rec.diverged_at, Some(1));
    assert_eq!(rec.iterations_done, 1);
    assert_eq!(assert_whole_rows(&out), 2, "rows of iterations 0 and 1, written before the NaN step");
    let its: Vec<_> = metrics::read_rows(&out.join("metrics.csv")).unwrap().iter().map(|r| r.iteration).collect();
    assert_eq!(its, [0, 1]);
    assert!(!out.join("checkpoint").exists(), "a diverged run is not resumable");
    assert_no_tmp(&out);
}

/// A run of `extra` on `data`, uninterrupted, into `dir`; returns its metrics sans elapsed_s,
/// followed by its steps.csv where it wrote one (`--log-steps`).
fn baseline(data: &Path, dir: &Path, extra: &[&str]) -> String {
    common::run_ok(&mut tiny_train(data, dir, extra));
    assert_eq!(record(dir).status, Status::Done);
    numbers(dir)
}

/// metrics.csv sans elapsed_s, then steps.csv if there is one.
fn numbers(dir: &Path) -> String {
    metrics_sans_elapsed(dir) + &std::fs::read_to_string(dir.join("steps.csv")).unwrap_or_default()
}

/// Stops a run with `sig` once its first rows exist, checks what it leaves, resumes it and
/// compares with an uninterrupted run. A row every iteration: the stop always comes right
/// after a row, the case where a resumed run must not write that row again.
fn interrupt_and_resume(sig: i32, more: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let extra = [&["--iterations", "16", "--eval-every", "1"], more].concat();
    let want = baseline(&data, &tmp.path().join("whole"), &extra);

    let out = tmp.path().join("run");
    let child = spawn(&mut tiny_train(&data, &out, &extra));
    wait_for(120, "the first rows", || rows_so_far(&out) >= 2);
    signal(&child, sig);
    let (code, err) = finish(child);
    assert_eq!(code, Some(130), "{err}");
    let rec = record(&out);
    assert_eq!(rec.status, Status::Interrupted);
    assert!(rec.iterations_done < 16, "the signal came too late to test anything: {err}");
    let rows = assert_whole_rows(&out);
    assert_eq!(rows, rec.iterations_done + 1, "the row of the iteration it stopped at is written");
    assert!(out.join("checkpoint/state.json").is_file());
    assert_no_tmp(&out);

    let res = common::run_ok(common::bin().arg("train").arg("--resume").arg("--out").arg(&out));
    assert!(common::stderr(&res).contains(&format!("at iteration {}", rec.iterations_done)));
    let rec = record(&out);
    assert_eq!((rec.status, rec.iterations_done), (Status::Done, 16));
    assert_eq!(numbers(&out), want, "resumed run differs from the uninterrupted one");
    assert!(!out.join("checkpoint").exists(), "a finished run keeps no checkpoint");
    assert_no_tmp(&out);
}

#[test]
fn sigterm_stops_after_a_whole_row_and_resume_is_exact() {
    interrupt_and_resume(libc::SIGTERM, &[]);
}

#[test]
fn sigint_stops_after_a_whole_row_and_resume_is_exact() {
    interrupt_and_resume(libc::SIGINT, &[]);
}

/// Under bf16 too, and steps.csv (one row per iteration) is cut back to the checkpoint and
/// continued like metrics.csv.
#[test]
fn a_bf16_run_resumes_exactly_steps_csv_included() {
    interrupt_and_resume(libc::SIGTERM, &["--precision", "bf16", "--log-steps"]);
}

#[test]
fn resume_after_sigkill_from_a_periodic_checkpoint_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    // Rows every 3 iterations, checkpoints every 2: a checkpoint falls inside a row's window,
    // so the partial step means must be restored too.
    let extra = ["--iterations", "24", "--eval-every", "3", "--checkpoint-every", "2"];
    let want = baseline(&data, &tmp.path().join("whole"), &extra);

    let out = tmp.path().join("run");
    let child = spawn(&mut tiny_train(&data, &out, &extra));
    let state = out.join("checkpoint/state.json");
    wait_for(120, "a checkpoint", || {
        std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["iteration"].as_u64() >= Some(4))
    });
    signal(&child, libc::SIGKILL);
    let (code, _) = finish(child);
    assert_eq!(code, None, "killed by a signal");
    let rec = record(&out);
    assert_eq!(rec.status, Status::Running, "a killed run cannot write its status");
    assert_whole_rows(&out);

    let res = common::run_ok(common::bin().arg("train").arg("--resume").arg("--out").arg(&out));
    assert!(common::stderr(&res).contains("resuming"));
    assert_eq!(record(&out).status, Status::Done);
    assert_eq!(metrics_sans_elapsed(&out), want, "resumed run differs from the uninterrupted one");
    assert_no_tmp(&out);

    // Resuming a finished run is refused, naming the folder.
    let err = common::run_fails(common::bin().arg("train").arg("--resume").arg("--out").arg(&out), 1);
    assert!(err.contains("holds a finished run") && err.contains(&out.display().to_string()), "{err}");
}

#[test]
fn same_seed_same_metrics_other_seed_other_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let run = |name: &str, extra: &[&str]| baseline(&data, &tmp.path().join(name), extra);
    let one = ["--iterations", "4"];
    let a = run("a", &one);
    assert_eq!(a, run("b", &one), "same seed, one thread");
    assert_ne!(a, run("c", &["--iterations", "4", "--seed", "2"]), "another seed");
    let two = ["--iterations", "4", "--threads", "2"];
    assert_eq!(run("d", &two), run("e", &two), "same seed, two threads");
}

/// Batches made one iteration ahead on a second thread (the default) are the batches made
/// inline: every number of metrics.csv and steps.csv is the same, and so is the resume after
/// a checkpoint taken while the next batch was already made (`interrupt_and_resume` runs with
/// prefetching on). The images are decoded into host memory, the path prefetching serves.
#[test]
fn prefetching_batches_changes_no_number() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let run = |name: &str, extra: &[&str]| baseline(&data, &tmp.path().join(name), extra);
    let args = ["--iterations", "6", "--eval-every", "2", "--log-steps"];
    let ahead = run("ahead", &args);
    let inline = run("inline", &[&args[..], &["--prefetch", "false"]].concat());
    assert_eq!(ahead, inline, "prefetching changed the numbers");
    assert!(record(&tmp.path().join("ahead")).config.prefetch, "prefetching is the default");
    assert!(!record(&tmp.path().join("inline")).config.prefetch, "run.json records the setting");
}

/// bf16 is as repeatable as fp32, to the byte, and it is not fp32: the per-iteration losses
/// differ by bf16's rounding, not more.
#[test]
fn a_bf16_run_repeats_to_the_byte_and_differs_from_fp32_by_rounding_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let run = |name: &str, precision: &str| {
        baseline(&data, &tmp.path().join(name), &["--iterations", "4", "--log-steps", "--precision", precision]);
        let rows = std::fs::read_to_string(tmp.path().join(name).join("steps.csv")).unwrap();
        rows.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse::<f64>().unwrap()).collect::<Vec<f64>>()
    };
    let bf16 = run("a", "bf16");
    run("b", "bf16");
    assert_eq!(numbers(&tmp.path().join("a")), numbers(&tmp.path().join("b")), "same seed, other bytes");
    let fp32 = run("c", "fp32");
    assert_eq!(bf16.len(), 4);
    assert_ne!(bf16, fp32, "bf16 computed exactly what fp32 did: autocast did not take effect");
    for (i, (b, f)) in bf16.iter().zip(&fp32).enumerate() {
        assert!((b - f).abs() <= 0.05 * f.abs(), "iteration {i}: class loss {b} under bf16, {f} under fp32");
    }
}

/// `deep-coral sweep` of a 2-run spec, stopped by Ctrl-C (SIGINT to its process group) while the
/// second run trains, then run again: the finished run is left alone, the other resumes from its
/// checkpoint and ends as an uninterrupted run of its config would.
#[test]
fn a_sweep_after_ctrl_c_resumes_only_the_unfinished_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let spec = tmp.path().join("tiny.json");
    let text = serde_json::json!({
        "name": "tiny",
        "train": { "backbone": "squeezenet1_1", "data_root": data, "weights": common::squeezenet_weights(),
                   "iterations": 16, "batch_size": 2, "eval_every": 2, "lr": 1e-5, "device": "cpu", "threads": 1 },
        "transfers": [ { "source": "src", "target": "tgt", "lambdas": [0, 1] } ],
        "seeds": [1]
    });
    std::fs::write(&spec, serde_json::to_string_pretty(&text).unwrap()).unwrap();
    let results = tmp.path().join("results");
    let sweep = || {
        let mut cmd = common::bin();
        cmd.arg("sweep").arg(&spec).arg("--out").arg(&results);
        cmd
    };
    let (first, second) = (results.join("tiny/src_tgt/lambda_0/seed_1"), results.join("tiny/src_tgt/lambda_1/seed_1"));

    let child = spawn(sweep().process_group(0));
    wait_for(300, "the second run's first rows", || rows_so_far(&second) >= 2);
    // SAFETY: kill(2) on the process group of our own child, as a terminal's Ctrl-C does.
    assert_eq!(unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) }, 0);
    let (code, _) = finish(child);
    assert_ne!(code, Some(0), "the sweep was interrupted");
    // The train child finishes its row, checkpoints and exits on its own.
    wait_for(120, "the second run to stop", || {
        RunRecord::read(&second.join("run.json")).is_ok_and(|r| r.status != Status::Running)
    });
    assert_eq!(record(&first).status, Status::Done);
    let rec = record(&second);
    assert_eq!(rec.status, Status::Interrupted);
    assert!(rec.iterations_done < 16);
    assert!(second.join("checkpoint/state.json").is_file());
    assert_no_tmp(&results);

    let first_json = std::fs::read(first.join("run.json")).unwrap();
    let first_mtime = std::fs::metadata(first.join("run.json")).unwrap().modified().unwrap();
    let first_metrics = std::fs::read(first.join("metrics.csv")).unwrap();
    let res = common::run_ok(&mut sweep());
    assert!(common::stderr(&res).contains("1 done before, 1 launched, 0 failed"), "{}", common::stderr(&res));
    assert_eq!(std::fs::read(first.join("run.json")).unwrap(), first_json);
    assert_eq!(std::fs::metadata(first.join("run.json")).unwrap().modified().unwrap(), first_mtime);
    assert_eq!(std::fs::read(first.join("metrics.csv")).unwrap(), first_metrics);
    let log = std::fs::read_to_string(second.join("train.log")).unwrap();
    assert!(log.contains("--resume") && log.contains("resuming"), "{log}");
    assert_eq!(record(&second).status, Status::Done);
    assert_no_tmp(&results);

    // The resumed run equals a fresh, uninterrupted run of the same config.
    let whole = tmp.path().join("whole");
    common::run_ok(common::bin().arg("train").arg("--config").arg(second.join("config.json")).arg("--out").arg(&whole));
    assert_eq!(metrics_sans_elapsed(&second), metrics_sans_elapsed(&whole));
}
