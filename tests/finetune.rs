//! `--finetune last` through the real binary on real images with the real ImageNet SqueezeNet:
//! the first run builds the feature cache, a second run of another lambda reuses it, and `fc`
//! is refused for SqueezeNet, which has no fully connected layers.

mod common;

use deep_coral::backbone::Finetune;
use deep_coral::metrics::{self, RunRecord, Status};

fn train(out: &std::path::Path, cache: &std::path::Path, lambda: &str, finetune: &str) -> std::process::Command {
    let mut cmd = common::bin();
    cmd.args(["train", "--source", "dslr", "--target", "webcam", "--backbone", "squeezenet1_1"])
        .arg("--data-root")
        .arg(common::shared().join("data/office-caltech10"))
        .arg("--weights")
        .arg(common::squeezenet_weights())
        .args(["--lambda", lambda, "--finetune", finetune, "--iterations", "6", "--eval-every", "3"])
        .args(["--batch-size", "8", "--seed", "2"])
        .arg("--feature-cache")
        .arg(cache)
        .arg("--out")
        .arg(out);
    cmd
}

fn cache_files(cache: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn last_layer_runs_build_the_feature_cache_once_and_reuse_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let first = common::run_ok(&mut train(&tmp.path().join("a"), &cache, "0.75", "last"));
    assert!(!common::stderr(&first).contains("cached in"), "{}", common::stderr(&first));
    let files = cache_files(&cache);
    assert_eq!(files.len(), 4, "features + sidecar for dslr and webcam: {files:?}");
    assert!(files.iter().all(|f| f.starts_with("squeezenet1_1-last-")), "{files:?}");

    let second = common::run_ok(&mut train(&tmp.path().join("b"), &cache, "0", "last"));
    assert_eq!(common::stderr(&second).matches("cached in").count(), 2, "{}", common::stderr(&second));
    assert_eq!(cache_files(&cache), files, "nothing new written");

    for run in ["a", "b"] {
        let dir = tmp.path().join(run);
        let rec = RunRecord::read(&dir.join("run.json")).unwrap();
        assert_eq!((rec.status, rec.config.finetune), (Status::Done, Finetune::Last));
        assert_eq!((rec.images.source, rec.images.target), (157, 295));
        let rows = metrics::read_rows(&dir.join("metrics.csv")).unwrap();
        assert_eq!(rows.iter().map(|r| r.iteration).collect::<Vec<_>>(), [0, 3, 6]);
        for r in &rows[1..] {
            assert!(r.class_loss > 0.0 && r.coral_distance > 0.0 && (0.0..=1.0).contains(&r.target_acc), "{r:?}");
        }
        // Iteration 0 is the untrained network on the centre crops in both runs.
        assert_eq!(rows[0].target_acc, metrics::read_rows(&tmp.path().join("a/metrics.csv")).unwrap()[0].target_acc);
    }
    let setup = |run: &str| RunRecord::read(&tmp.path().join(run).join("run.json")).unwrap().setup_time_s;
    assert!(setup("b") < setup("a"), "reading the cache ({}s) beats building it ({}s)", setup("b"), setup("a"));
}

#[test]
fn fc_is_refused_for_squeezenet_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let res = train(&out, &tmp.path().join("cache"), "0", "fc").output().unwrap();
    assert_eq!(res.status.code(), Some(1));
    let err = common::stderr(&res);
    assert!(err.contains("squeezenet1_1") && err.contains("fully connected"), "{err}");
    assert!(!out.exists() && !tmp.path().join("cache").exists());
}
