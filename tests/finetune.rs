//! `--finetune last` through the real binary on real images with the real ImageNet SqueezeNet:
//! the first run builds the feature cache, a second run of another lambda reuses it, and `fc`
//! is refused for SqueezeNet, which has no fully connected layers.

mod common;

use std::path::Path;
use std::process::Command;

use deep_coral::model::backbone::Finetune;
use deep_coral::train::metrics::{self, RunRecord, Status};

/// A short dslr -> webcam run of SqueezeNet with its real ImageNet weights.
fn train(out: &Path, cache: &Path, lambda: &str, finetune: &str) -> Command {
    train_with("squeezenet1_1", &common::squeezenet_weights(), out, cache, lambda, finetune)
}

fn train_with(backbone: &str, weights: &Path, out: &Path, cache: &Path, lambda: &str, finetune: &str) -> Command {
    let mut cmd = common::bin();
    cmd.args(["train", "--source", "dslr", "--target", "webcam", "--backbone", backbone])
        .arg("--data-root")
        .arg(common::shared().join("data/office-caltech10"))
        .arg("--weights")
        .arg(weights)
        .args(["--lambda", lambda, "--finetune", finetune, "--iterations", "6", "--eval-every", "3"])
        .args(["--batch-size", "8", "--seed", "2"])
        .arg("--feature-cache")
        .arg(cache)
        .arg("--out")
        .arg(out);
    cmd
}

fn cache_files(cache: &Path) -> Vec<String> {
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

/// `fc` on AlexNet through the binary: its real ImageNet convolutions (../shared) with a seeded
/// fc6/fc7 (the real ones are not available here) in one weights file the test writes. The
/// cache holds pool5 features, 9216 per view, and only fc6-fc8 train.
#[test]
fn alexnet_fc_trains_on_cached_conv_features() {
    use tch::Tensor;
    let tmp = tempfile::tempdir().unwrap();
    let weights = common::alexnet_weights(tmp.path());

    let out = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    // Random fc6/fc7 on real conv features diverge at the paper's rate within 3 iterations.
    common::run_ok(train_with("alexnet", &weights, &out, &cache, "0.75", "fc").args(["--lr", "1e-5"]));
    let rec = RunRecord::read(&out.join("run.json")).unwrap();
    assert_eq!((rec.status, rec.config.finetune), (Status::Done, Finetune::Fc));
    let features: Vec<String> = cache_files(&cache).into_iter().filter(|f| f.ends_with(".safetensors")).collect();
    assert_eq!(features.len(), 2, "{features:?}");
    for f in &features {
        assert!(f.starts_with("alexnet-fc-"), "{f}");
        let t = Tensor::read_safetensors(cache.join(f)).unwrap();
        let feats = &t.iter().find(|(k, _)| k == "features").unwrap().1;
        assert_eq!(feats.size()[1], 9216, "{f}");
    }
    let rows = metrics::read_rows(&out.join("metrics.csv")).unwrap();
    assert!(rows[1..].iter().all(|r| r.class_loss.is_finite() && r.coral_loss > 0.0), "{rows:?}");
}
