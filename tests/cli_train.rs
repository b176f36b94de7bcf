//! The real binary on real images: a short SqueezeNet run amazon -> webcam on
//! ../shared/data/office-caltech10 with the real ImageNet weights.

mod common;

use deep_coral::train::metrics::{self, RunRecord, Status, COLUMNS};

#[test]
fn short_real_run_writes_curves_and_record() {
    let shared = common::shared();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let res = common::run_ok(
        common::bin()
            .args(["train", "--source", "amazon", "--target", "webcam", "--backbone", "squeezenet1_1"])
            .arg("--data-root")
            .arg(shared.join("data/office-caltech10"))
            .arg("--weights")
            .arg(shared.join("weights/squeezenet1_1-caffe-imagenet.safetensors"))
            .args(["--lambda", "0.5", "--iterations", "4", "--eval-every", "2", "--batch-size", "4", "--seed", "3"])
            .arg("--out")
            .arg(&out),
    );
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(text.lines().next().unwrap(), COLUMNS.join(","));
    let rows = metrics::read_rows(&out.join("metrics.csv")).unwrap();
    let its: Vec<_> = rows.iter().map(|r| r.iteration).collect();
    assert_eq!(its, [0, 2, 4], "rows at iteration 0, every 2, and the end");
    assert!(rows[0].class_loss.is_nan(), "no training before the first row");
    for r in &rows[1..] {
        assert!(r.class_loss > 0.0 && r.coral_loss >= 0.0 && r.coral_distance > 0.0, "{r:?}");
        assert!((r.weighted_coral_loss - 0.5 * r.coral_loss).abs() < 1e-12);
        assert!((0.0..=1.0).contains(&r.source_acc));
    }
    // The real ImageNet features, untouched at iteration 0, already sort webcam a little
    // better than chance would (10 classes); the new head starts near-constant, so only the
    // shape of the numbers is checked here. The README's long runs check accuracy.
    assert!(rows.iter().all(|r| (0.0..=1.0).contains(&r.target_acc) && r.target_loss.is_finite()));
    let rec = RunRecord::read(&out.join("run.json")).unwrap();
    assert_eq!(rec.status, Status::Done);
    assert_eq!(rec.iterations_done, 4);
    assert_eq!((rec.images.source, rec.images.target), (958, 295));
    assert_eq!(rec.classes.len(), 10);
    assert_eq!(rec.config.lambda, 0.5);
    assert_eq!(rec.device, "cpu");
    assert_eq!(rec.final_target_acc, Some(rows[2].target_acc));
    assert!(rec.versions.libtorch.starts_with("2.11"), "{:?}", rec.versions);
    assert!(!out.join("checkpoint").exists());
    assert!(common::stderr(&res).contains("Done"));
}
