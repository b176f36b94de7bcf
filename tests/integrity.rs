//! The run-folder contract on every path (docs/robustness.md, "Closed in the integrity round"):
//! each case a user met, through the real binary on real Office images (2 classes of amazon and
//! webcam from ../shared, linked) and the real SqueezeNet weights, in tiny runs. Each test
//! keeps an `OTHER` folder beside the one it works in and asserts that nothing there changed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{run_fails, run_ok, snapshot, tiny_real_data, tiny_train, wait_for};
use deep_coral::train::metrics::{RunRecord, Status};

fn record(dir: &Path) -> RunRecord {
    RunRecord::read(&dir.join("run.json")).unwrap()
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn")
}

fn kill(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// A run stopped by SIGTERM after its first rows, with a checkpoint every iteration: an
/// interrupted, resumable run folder.
fn interrupted_run(data: &Path, out: &Path) {
    let args = ["--iterations", "60", "--eval-every", "1", "--checkpoint-every", "1"];
    let child = spawn(&mut tiny_train(data, out, &args));
    wait_for(120, "the first rows", || common::rows_so_far(out) >= 3);
    kill(&child, libc::SIGTERM);
    let res = child.wait_with_output().unwrap();
    assert_eq!(res.status.code(), Some(130), "{}", common::stderr(&res));
    assert!(out.join("checkpoint/state.json").is_file());
}

/// 1. A `checkpoint` link planted in a run folder is refused, with and without `--force`; the
/// interrupted run it points at keeps its checkpoint and still resumes.
#[test]
fn a_planted_checkpoint_link_is_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_real_data(tmp.path());
    let other = tmp.path().join("OTHER");
    interrupted_run(&data, &other);
    let before = snapshot(&other);
    let out = tmp.path().join("O");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink(other.join("checkpoint"), out.join("checkpoint")).unwrap();
    for extra in [&["--force"][..], &[], &["--checkpoint-every", "1"], &["--force", "--checkpoint-every", "1"]] {
        let err = run_fails(&mut tiny_train(&data, &out, extra), 1);
        assert!(err.contains("checkpoint") && err.contains("symbolic link"), "{extra:?}: {err}");
        assert_eq!(snapshot(&other), before, "{extra:?} changed the other run");
    }
    run_ok(common::bin().arg("train").arg("--out").arg(&other).arg("--resume"));
    assert_eq!(record(&other).status, Status::Done);
}

/// 2. Two transfers (`a_b -> c`, `a -> b_c`) or two lambdas that map to one run folder are
/// refused when the grid is read: in the dry run, the sweep and calibrate alike.
#[test]
fn two_runs_of_a_grid_never_share_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (domain, name) in [("amazon", "a_b"), ("webcam", "c"), ("amazon", "a"), ("webcam", "b_c")] {
        common::real_subset(&data, domain, name, &["backpack", "mouse"], 2);
    }
    let spec = serde_json::json!({
        "name": "clash", "train": { "backbone": "squeezenet1_1", "data_root": data,
                                    "weights": common::squeezenet_weights(), "iterations": 2, "batch_size": 2 },
        "transfers": [ { "source": "a_b", "target": "c", "lambdas": [0] },
                       { "source": "a", "target": "b_c", "lambdas": [0] } ],
        "seeds": [1]
    });
    let path = tmp.path().join("clash.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let results = tmp.path().join("results");
    for extra in [&["--dry-run"][..], &[]] {
        let err = run_fails(common::bin().arg("sweep").arg(&path).arg("--out").arg(&results).args(extra), 1);
        assert!(err.contains("a_b->c") && err.contains("a->b_c") && err.contains("a_b_c/lambda_0"), "{err}");
    }
    let err = run_fails(common::bin().arg("calibrate").arg(&path).arg("--out").arg(&results), 1);
    assert!(err.contains("share the run folder"), "{err}");
    assert!(!results.exists(), "nothing is written for a grid that is refused");
}

/// 3. A full disk when the run's last record is written ends it `failed` (in place), not
/// `running`; so does a SIGINT whose checkpoint does not fit.
#[test]
fn a_full_disk_at_the_end_records_failed_not_running() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_real_data(tmp.path());
    let Some(disk) = common::tmpfs(tmp.path(), 256) else { return };
    let out = disk.0.join("run");
    std::fs::create_dir(&out).unwrap();
    // Room for the lock, run.json and metrics.csv (a page each), not for run.json's last
    // temporary copy: every row fits, the final record does not.
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; (common::free_bytes(&disk.0) - 3 * 4096) as usize]).unwrap();
    // (The network is not kept here: a model file does not fit a 256 KiB disk.)
    let args = ["--iterations", "4", "--eval-every", "2", "--save-model", "false"];
    let err = run_fails(&mut tiny_train(&data, &out, &args), 1);
    assert!(err.contains("run.json") && err.contains("disk is full"), "{err}");
    let rec = record(&out);
    assert_eq!(rec.status, Status::Failed, "{err}");
    assert!(rec.error.unwrap().contains("disk is full"));
    assert_eq!(common::assert_whole_rows(&out), 3, "every row was written: {err}");
    common::assert_no_tmp(&disk.0);

    // SIGINT with no room for the checkpoint: failed, saying why, not interrupted or running.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::create_dir(&out).unwrap();
    std::fs::write(&filler, vec![0u8; (common::free_bytes(&disk.0) - 8 * 4096) as usize]).unwrap();
    let args = ["--iterations", "100000", "--eval-every", "1", "--save-model", "false"];
    let child = spawn(&mut tiny_train(&data, &out, &args));
    wait_for(120, "the first rows", || common::rows_so_far(&out) >= 2);
    kill(&child, libc::SIGINT);
    let res = child.wait_with_output().unwrap();
    let err = common::stderr(&res);
    assert_eq!(res.status.code(), Some(1), "{err}");
    let rec = record(&out);
    assert_eq!(rec.status, Status::Failed, "{err}");
    assert!(rec.error.unwrap().contains("checkpoint"), "{err}");
    common::assert_no_tmp(&disk.0);
}

/// 4. A run whose folder is removed under it stops with an error and recreates nothing; a
/// sweep then sees the run as new, not done.
#[test]
fn a_run_folder_removed_during_the_run_is_not_reported_done() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_real_data(tmp.path());
    let out = tmp.path().join("O");
    let args = ["--iterations", "100000", "--eval-every", "1", "--checkpoint-every", "2"];
    let child = spawn(&mut tiny_train(&data, &out, &args));
    wait_for(120, "the first rows", || common::rows_so_far(&out) >= 2);
    std::fs::remove_dir_all(&out).unwrap();
    let res = child.wait_with_output().unwrap();
    let err = common::stderr(&res);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(err.contains("was removed during the run"), "{err}");
    assert!(!err.contains("Done"), "{err}");
    assert!(!out.exists(), "the run recreated its removed folder");
}

/// A tiny experiment folder `<root>/<name>` with finished runs of two seeds (every step
/// logged), made by the real binary: `<name>/src_tgt/lambda_<l>/seed_<n>`.
fn tiny_experiment(root: &Path, data: &Path, name: &str, lambdas: &[f64]) -> PathBuf {
    let spec = serde_json::json!({
        "name": name, "train": { "backbone": "squeezenet1_1", "data_root": data,
            "weights": common::squeezenet_weights(), "iterations": 6, "eval_every": 2, "batch_size": 2, "lr": 1e-5,
            "device": "cpu", "threads": 1, "log_steps": true },
        "transfers": [ { "source": "src", "target": "tgt", "lambdas": lambdas } ],
        "seeds": [1, 2]
    });
    let path = root.join(format!("{name}.json"));
    std::fs::write(&path, spec.to_string()).unwrap();
    let results = root.join("results");
    run_ok(common::bin().arg("sweep").arg(&path).arg("--out").arg(&results));
    results.join(name)
}

/// Keeps the header and the first `keep` lines of `path`.
fn cut(path: &Path, keep: usize) {
    let text = std::fs::read_to_string(path).unwrap();
    let kept: String = text.lines().take(keep + 1).map(|l| format!("{l}\n")).collect();
    std::fs::write(path, kept).unwrap();
}

/// 5. Logs cut short at a row boundary, or torn, are checked against the run's own record by
/// every reader: `report`, `plot` and `compare` set the run aside and list it with the reason.
#[test]
fn readers_set_aside_runs_whose_logs_disagree_with_their_record() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_real_data(tmp.path());
    let a = tiny_experiment(tmp.path(), &data, "a", &[0.0, 1.0]);
    let b = tmp.path().join("b");
    run_ok(Command::new("cp").arg("-r").arg(&a).arg(&b));
    // In B: seed 2 at lambda 1 keeps 1 of its 4 rows, seed 1 at lambda 0 1 of its 6 steps,
    // seed 2 at lambda 0 a torn steps.csv.
    cut(&b.join("src_tgt/lambda_1/seed_2/metrics.csv"), 1);
    cut(&b.join("src_tgt/lambda_0/seed_1/steps.csv"), 1);
    let torn = b.join("src_tgt/lambda_0/seed_2/steps.csv");
    let text = std::fs::read_to_string(&torn).unwrap();
    // The last row stops after its third field, as a write cut short leaves it.
    let last = text.trim_end().rfind('\n').unwrap() + 1;
    let third = last + text[last..].match_indices(',').nth(2).unwrap().0;
    std::fs::write(&torn, &text[..third]).unwrap();

    let report = run_ok(common::bin().arg("report").arg(&b));
    let table = std::fs::read_to_string(b.join("table.md")).unwrap();
    assert!(table.contains("Incomplete (status other than done; left out of the tables): 3"), "{table}");
    assert!(table.contains("lambda_1/seed_2`: done, but not counted") && table.contains("a finished run"), "{table}");
    assert!(table.contains("lambda_0/seed_1`: done, but not counted") && table.contains("steps.csv"), "{table}");
    assert!(String::from_utf8_lossy(&report.stdout).contains("lambda_0/seed_2`: done, but not counted"));

    let plot = run_ok(common::bin().arg("plot").arg(&b));
    assert!(common::stderr(&plot).contains("not plotted: `src_tgt/lambda_1/seed_2`"), "{}", common::stderr(&plot));

    let compared = run_ok(common::bin().arg("compare").arg(&a).arg(&b));
    let md = String::from_utf8_lossy(&compared.stdout);
    assert!(md.contains(&format!("Not compared, in {} (3)", b.display())), "{md}");
    // Only seed 1 of lambda 1 is left to pair; lambda 0 has no pair at all.
    let row = md.lines().find(|l| l.starts_with("| src->tgt | 1 ")).unwrap();
    assert!(row.contains("| 1     |"), "{row}");
    assert!(!md.lines().any(|l| l.starts_with("| src->tgt | 0 ")), "{md}");
}

/// Trains `finetune last` on the tiny real data with its feature cache in `cache`.
fn last_run(data: &Path, cache: &Path, out: &Path) -> std::process::Output {
    run_ok(&mut tiny_train(
        data,
        out,
        &["--finetune", "last", "--feature-cache", cache.to_str().unwrap(), "--lambda", "0", "--force"],
    ))
}

/// 6. The feature cache is bound to what it was computed from, not to its file name: the
/// target's cache copied over the source's name is rebuilt, and the run trains on source
/// features as before.
#[test]
fn a_feature_cache_copied_over_another_name_is_rebuilt_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_real_data(tmp.path());
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("run");
    last_run(&data, &cache, &out);
    let want = common::metrics_sans_elapsed(&out);
    let file = |domain: &str, ext: &str| -> PathBuf {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                n.contains(&format!("-{domain}-")) && n.ends_with(ext)
            })
            .unwrap()
    };
    for ext in [".safetensors", ".json"] {
        std::fs::copy(file("tgt", ext), file("src", ext)).unwrap();
    }
    let res = last_run(&data, &cache, &out);
    let err = common::stderr(&res);
    assert!(err.contains("warning: rebuilding") && err.contains("-src-") && err.contains("other inputs"), "{err}");
    assert_eq!(common::metrics_sans_elapsed(&out), want, "trained on what it read from the copied file");
}

/// 7. No command writes over a file it reads: `compare --out` naming a run's metrics.csv or
/// run.json, `plot` through a planted `plots` link (`calibrate --write SPEC`: tests/calibrate.rs).
#[test]
fn outputs_never_overwrite_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_real_data(tmp.path());
    let a = tiny_experiment(tmp.path(), &data, "a", &[0.0]);
    let before = snapshot(&a);
    for file in ["metrics.csv", "run.json", "steps.csv"] {
        let target = a.join("src_tgt/lambda_0/seed_1").join(file);
        let err = run_fails(common::bin().arg("compare").arg(&a).arg(&a).arg("--out").arg(&target), 1);
        assert!(err.contains("--out") && err.contains("is the input"), "{err}");
    }
    assert_eq!(snapshot(&a), before);
    let other = tmp.path().join("OTHER");
    std::fs::create_dir(&other).unwrap();
    std::os::unix::fs::symlink(&other, a.join("plots")).unwrap();
    let err = run_fails(common::bin().arg("plot").arg(&a), 1);
    assert!(err.contains("plots") && err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 0, "plot wrote through the link");
}

/// 8. Checkpoint files of no known run (no run.json, no readable state.json) are not deleted
/// by a plain `train`; `--force` removes exactly those.
#[test]
fn checkpoint_files_of_no_known_run_are_kept_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_real_data(tmp.path());
    let out = tmp.path().join("O");
    let ckpt = out.join("checkpoint");
    std::fs::create_dir_all(&ckpt).unwrap();
    for (name, bytes) in [("model-5.safetensors", &b"w"[..]), ("optimizer-5.safetensors", b"v"), ("state.json", b"{x")]
    {
        std::fs::write(ckpt.join(name), bytes).unwrap();
    }
    let before = snapshot(&out);
    let err = run_fails(&mut tiny_train(&data, &out, &[]), 1);
    assert!(
        err.contains("cannot be resumed") && err.contains("model-5.safetensors") && err.contains("--force"),
        "{err}"
    );
    // The refused run took the folder's lock (and left its lock file); nothing else changed.
    let mut after = snapshot(&out);
    after.remove(Path::new("lock"));
    assert_eq!(after, before);
    run_ok(&mut tiny_train(&data, &out, &["--force"]));
    assert!(!ckpt.exists());
    assert_eq!(record(&out).status, Status::Done);
}

/// 9. `--threads` beyond the cores here is refused at once, in `train`, `sweep` (also dry) and
/// `bench`, before anything starts.
#[test]
fn threads_are_capped_at_the_cores_available() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_real_data(tmp.path());
    let out = tmp.path().join("O");
    let cores = std::thread::available_parallelism().unwrap().get();
    for threads in ["100000".to_string(), (cores + 1).to_string()] {
        let started = std::time::Instant::now();
        let err = run_fails(&mut tiny_train(&data, &out, &["--threads", &threads]), 1);
        assert!(err.contains(&format!("--threads {threads}")) && err.contains("core"), "{err}");
        assert!(started.elapsed().as_secs() < 30, "refused only after {:?}", started.elapsed());
        assert!(!out.exists());
    }
    let spec = serde_json::json!({
        "name": "many", "train": { "backbone": "squeezenet1_1", "data_root": data,
            "weights": common::squeezenet_weights(), "threads": 100000 },
        "transfers": [ { "source": "src", "target": "tgt", "lambdas": [0] } ], "seeds": [1]
    });
    let path = tmp.path().join("many.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let results = tmp.path().join("results");
    for extra in [&["--dry-run"][..], &[]] {
        let err = run_fails(common::bin().arg("sweep").arg(&path).arg("--out").arg(&results).args(extra), 1);
        assert!(err.contains("--threads 100000") && err.contains("train.threads"), "{err}");
    }
    assert!(!results.exists());
    let err = run_fails(common::bin().args(["bench", "--threads", "100000", "--iterations", "1"]), 1);
    assert!(err.contains("--threads 100000"), "{err}");
}

/// 10. A transfer of one class is refused up front, saying why.
#[test]
fn one_class_is_no_task() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::real_subset(&data, "amazon", "src", &["mug"], 3);
    common::real_subset(&data, "webcam", "tgt", &["mug"], 3);
    let out = tmp.path().join("O");
    let err = run_fails(&mut tiny_train(&data, &out, &[]), 1);
    assert!(err.contains("one class (mug)") && err.contains("at least two classes"), "{err}");
    assert!(!out.exists());
}
