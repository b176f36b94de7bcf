//! Run folders that cannot be corrupted, through the real binary on tiny synthetic images and
//! the real SqueezeNet weights: one writer per folder, a full disk, resumes that check what
//! they resume, planted links, batch sizes the data cannot fill, what `train` may delete. No
//! case may end in a panic.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{assert_no_tmp, assert_whole_rows, rows_so_far, tiny_data, tiny_train, wait_for};
use deep_coral::train::metrics::{RunRecord, Status};

fn record(dir: &Path) -> RunRecord {
    RunRecord::read(&dir.join("run.json")).unwrap()
}

/// Runs `cmd`, expects exit 1 and no panic; returns stderr.
fn refused(cmd: &mut Command) -> String {
    let err = common::run_fails(cmd, 1);
    assert!(!err.contains("panicked"), "a panic on user input:\n{err}");
    err
}

/// `deep-coral train --out OUT --resume` and `extra`: no other flag, as a resume takes none
/// that would change the run.
fn resume(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = common::bin();
    cmd.arg("train").arg("--out").arg(out).arg("--resume").args(extra);
    cmd
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn")
}

/// A run stopped by SIGTERM after its first rows, with a checkpoint every iteration: an
/// interrupted, resumable run folder.
fn interrupted_run(data: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["--iterations", "40", "--eval-every", "1", "--checkpoint-every", "1"];
    args.extend_from_slice(extra);
    let child = spawn(&mut tiny_train(data, out, &args));
    wait_for(120, "the first rows", || rows_so_far(out) >= 3);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out_put = child.wait_with_output().unwrap();
    assert_eq!(out_put.status.code(), Some(130), "{}", common::stderr(&out_put));
    assert_eq!(record(out).status, Status::Interrupted);
    assert!(out.join("checkpoint/state.json").is_file());
}

#[test]
fn a_second_writer_is_refused_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let out = tmp.path().join("run");
    let first = spawn(&mut tiny_train(&data, &out, &["--iterations", "30", "--eval-every", "1"]));
    wait_for(120, "the first rows", || rows_so_far(&out) >= 1);
    let err = refused(&mut tiny_train(&data, &out, &["--lambda", "0", "--force"]));
    assert!(err.contains(&format!("in use by process {}", first.id())), "{err}");
    let err = refused(&mut resume(&out, &[]));
    assert!(err.contains("in use by process"), "{err}");
    let res = first.wait_with_output().unwrap();
    assert!(res.status.success(), "{}", common::stderr(&res));
    assert_eq!(assert_whole_rows(&out), 31);
    assert_eq!(record(&out).config.lambda, 1.0);
    // The lock went with its process: the folder takes a writer again.
    common::run_ok(&mut tiny_train(&data, &out, &["--force", "--iterations", "2"]));
}

#[test]
fn resume_refuses_changed_flags_and_other_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let out = tmp.path().join("run");
    interrupted_run(&data, &out, &[]);

    let err = refused(&mut resume(&out, &["--iterations", "10", "--lambda", "5"]));
    assert!(
        err.contains("--iterations 10 (the run has 40)") && err.contains("--lambda 5.0 (the run has 1.0)"),
        "{err}"
    );

    // Other classes under another data root.
    let other = tmp.path().join("other");
    for d in ["src", "tgt"] {
        common::write_domain(&other, d, &["a", "c"], 3);
    }
    let err = refused(&mut resume(&out, &["--data-root", other.to_str().unwrap()]));
    assert!(err.contains("classes were [a, b], now [a, c]"), "{err}");

    // The same classes and counts, other images.
    let same_shape = tmp.path().join("same-shape");
    for d in ["src", "tgt"] {
        common::write_domain(&same_shape, d, &["a", "b"], 3);
    }
    let img = image::RgbImage::from_pixel(40, 40, image::Rgb([9, 9, 9]));
    img.save(same_shape.join("src/a/0.png")).unwrap();
    let err = refused(&mut resume(&out, &["--data-root", same_shape.to_str().unwrap()]));
    assert!(err.contains("other file names or sizes"), "{err}");

    // The recorded paths are absolute: a resume from another directory finds everything.
    let rec = record(&out);
    assert!(rec.config.data_root.is_absolute() && rec.config.weights.is_absolute());
    let mut cmd = common::bin();
    cmd.current_dir("/").arg("train").arg("--out").arg(&out).arg("--resume");
    common::run_ok(&mut cmd);
    assert_eq!(record(&out).status, Status::Done);
    assert_eq!(assert_whole_rows(&out), 41);
}

#[test]
fn resume_needs_no_pretrained_weights_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let weights = tmp.path().join("w.safetensors");
    std::fs::copy(common::squeezenet_weights(), &weights).unwrap();
    let out = tmp.path().join("run");
    interrupted_run(&data, &out, &["--weights", weights.to_str().unwrap()]);
    std::fs::remove_file(&weights).unwrap();
    common::run_ok(&mut resume(&out, &[]));
    assert_eq!(record(&out).status, Status::Done);
}

#[test]
fn train_protects_an_interrupted_run_and_force_removes_only_its_own_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let out = tmp.path().join("run");
    interrupted_run(&data, &out, &[]);
    let mine = out.join("checkpoint/my-notes.txt");
    std::fs::write(&mine, b"keep me").unwrap();
    let err = refused(&mut tiny_train(&data, &out, &[]));
    assert!(err.contains("interrupted run") && err.contains("--resume") && err.contains("--force"), "{err}");
    assert!(out.join("checkpoint/state.json").is_file(), "the refused run deleted the checkpoint");
    let res = common::run_ok(&mut tiny_train(&data, &out, &["--force"]));
    assert!(common::stderr(&res).contains("my-notes.txt"));
    assert_eq!(std::fs::read(&mine).unwrap(), b"keep me");
    assert!(!out.join("checkpoint/state.json").exists());
    assert_eq!(record(&out).status, Status::Done);
}

#[test]
fn a_planted_link_is_not_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let outside = tmp.path().join("precious.csv");
    std::fs::write(&outside, b"do not overwrite").unwrap();
    for name in ["metrics.csv", "run.json"] {
        let out = tmp.path().join(format!("run-{name}"));
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(&outside, out.join(name)).unwrap();
        let err = refused(&mut tiny_train(&data, &out, &[]));
        assert!(err.contains(name) && err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&outside).unwrap(), b"do not overwrite");
    }
}

#[test]
fn a_batch_larger_than_a_domain_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let out = tmp.path().join("run");
    let err = refused(&mut tiny_train(&data, &out, &["--batch-size", "100000"]));
    assert!(err.contains("batch size 100000 is larger than domain") && err.contains("6 images"), "{err}");
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}

#[test]
fn a_full_disk_leaves_whole_rows_a_failed_record_and_no_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let Some(disk) = common::tmpfs(tmp.path(), 256) else { return };
    let out = disk.0.join("run");
    std::fs::create_dir(&out).unwrap();
    // Leave four pages: the lock file, run.json, its temporary copy, and a page or so of rows.
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; (common::free_bytes(&disk.0) - 4 * 4096) as usize]).unwrap();
    let err =
        refused(&mut tiny_train(&data, &out, &["--iterations", "200", "--eval-every", "1", "--save-model", "false"]));
    assert!(err.contains("metrics.csv") && err.contains("disk is full"), "{err}");
    let rows = assert_whole_rows(&out);
    assert!(rows > 10 && rows < 200, "{rows} rows");
    assert_eq!(record(&out).status, Status::Failed);
    assert_no_tmp(&disk.0);

    // A checkpoint that does not fit: the error names it, and no partial file stays.
    std::fs::remove_file(&filler).unwrap();
    let err = refused(&mut tiny_train(
        &data,
        &out,
        &["--force", "--iterations", "4", "--checkpoint-every", "2", "--save-model", "false"],
    ));
    assert!(err.contains("checkpoint") && err.contains("disk is full"), "{err}");
    assert_eq!(record(&out).status, Status::Failed);
    assert_no_tmp(&disk.0);
}

#[test]
fn a_dry_run_checks_what_the_real_run_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let results = tmp.path().join("results");
    let spec_with = |weights: &Path, lambda: f64| {
        let spec = serde_json::json!({
            "name": "dry", "train": { "backbone": "squeezenet1_1", "data_root": data, "weights": weights },
            "transfers": [ { "source": "src", "target": "tgt", "lambdas": [0, lambda] } ], "seeds": [1]
        });
        let path = tmp.path().join("dry.json");
        std::fs::write(&path, spec.to_string()).unwrap();
        path
    };
    let dry = |spec: &Path| {
        let mut cmd = common::bin();
        cmd.arg("sweep").arg(spec).arg("--out").arg(&results).arg("--dry-run");
        cmd
    };
    let missing = tmp.path().join("no-such.safetensors");
    let err = refused(&mut dry(&spec_with(&missing, 0.5)));
    assert!(err.contains("no-such.safetensors") && err.contains("real sweep would stop"), "{err}");
    let err = refused(&mut dry(&spec_with(&common::squeezenet_weights(), 1e9)));
    assert!(err.contains("sane CORAL weight"), "{err}");
    assert!(!results.exists(), "a dry run writes nothing");
    common::run_ok(&mut dry(&spec_with(&common::squeezenet_weights(), 0.5)));
}

#[test]
fn a_bare_train_takes_the_papers_lambda_or_asks_for_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for d in ["amazon", "webcam", "caltech10"] {
        common::write_domain(&data, d, &["a", "b"], 2);
    }
    let bare = |source: &str, target: &str, out: &Path| {
        let mut cmd = common::bin();
        cmd.arg("train").arg("--data-root").arg(&data).args(["--source", source, "--target", target]);
        cmd.args(["--backbone", "squeezenet1_1", "--iterations", "2", "--batch-size", "2", "--eval-every", "2"]);
        cmd.args(["--device", "cpu", "--threads", "1"]).arg("--weights").arg(common::squeezenet_weights());
        cmd.arg("--out").arg(out);
        cmd
    };
    let out = tmp.path().join("aw");
    let res = common::run_ok(&mut bare("amazon", "webcam", &out));
    assert!(common::stderr(&res).contains("lambda 0.8: the paper's for amazon -> webcam"));
    assert_eq!(record(&out).config.lambda, 0.8);
    let out = tmp.path().join("ac");
    let err = refused(&mut bare("amazon", "caltech10", &out));
    assert!(err.contains("--lambda is required for amazon -> caltech10"), "{err}");
    assert!(!out.exists());
}
