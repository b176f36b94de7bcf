//! `deep-coral calibrate` through the real binary, on real Office images (2 classes of amazon
//! and webcam from ../shared, linked into a small data root) with the real SqueezeNet weights:
//! pilots are ordinary run folders, the calibrated spec carries lambda = 0 and the chosen
//! lambda per transfer, the evidence lists every pilot, and a second call reruns no pilot.

mod common;

use std::path::Path;

/// `<root>/<domain>/<class>/` with the first `n` real images of each class, as links.
fn real_subset(root: &Path, domain: &str, classes: &[&str], n: usize) {
    let shared = common::shared().join("data/office-caltech10").join(domain);
    for class in classes {
        let dir = root.join(domain).join(class);
        std::fs::create_dir_all(&dir).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(shared.join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.into_iter().take(n) {
            std::os::unix::fs::symlink(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn calibrate_writes_a_spec_with_the_rules_lambda_and_its_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for d in ["amazon", "webcam"] {
        real_subset(&data, d, &["backpack", "mouse"], 4);
    }
    let spec = serde_json::json!({
        "name": "tiny-cal",
        "train": { "backbone": "squeezenet1_1", "data_root": data, "weights": common::squeezenet_weights(),
                   "iterations": 4, "batch_size": 2, "eval_every": 2, "lr_step": 3, "device": "cpu", "threads": 1 },
        "transfers": [ { "source": "amazon", "target": "webcam", "lambdas": [0, 1.0] } ],
        "seeds": [1, 2]
    });
    let spec_path = tmp.path().join("tiny-cal.json");
    std::fs::write(&spec_path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    let out_spec = tmp.path().join("tiny-cal-calibrated.json");
    let results = tmp.path().join("results");
    let calibrate = || {
        let mut cmd = common::bin();
        cmd.arg("calibrate").arg(&spec_path).arg("--out").arg(&results).arg("--write").arg(&out_spec);
        cmd.args(["--max-pilots", "3", "--factor", "1.5"]);
        common::run_ok(&mut cmd)
    };
    let first = calibrate();
    let evidence: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("tiny-cal-calibrate/calibration.json")).unwrap())
            .unwrap();
    let t = &evidence["transfers"][0];
    let pilots = t["pilots"].as_array().unwrap();
    assert!(!pilots.is_empty() && pilots.len() <= 3, "{evidence}");
    assert_eq!(pilots[0]["lambda"], 1.0, "the first pilot runs at the spec's own lambda");
    for p in pilots {
        let dir = Path::new(p["dir"].as_str().unwrap());
        let rec = deep_coral::train::metrics::RunRecord::read(&dir.join("run.json")).unwrap();
        assert_eq!(rec.config.iterations, 4);
        let ratio = p["weighted_coral_loss"].as_f64().unwrap() / p["class_loss"].as_f64().unwrap();
        assert!((ratio - p["ratio"].as_f64().unwrap()).abs() < 1e-9 * ratio.abs().max(1.0));
    }
    // The chosen lambda is the pilot closest to the rule, and it is what the spec now runs.
    let chosen = t["lambda"].as_f64().unwrap();
    let best = pilots
        .iter()
        .min_by(|a, b| a["ratio"].as_f64().unwrap().ln().abs().total_cmp(&b["ratio"].as_f64().unwrap().ln().abs()))
        .unwrap();
    assert_eq!(best["lambda"].as_f64().unwrap(), chosen);
    let written = deep_coral::experiment::spec::load(&out_spec).unwrap();
    assert_eq!(written.name, "tiny-cal-calibrated");
    assert_eq!(written.transfers[0].lambdas, vec![0.0, chosen]);
    assert_eq!(written.seeds, vec![1, 2]);
    assert!(written.description.contains("paper's rule"));
    assert!(String::from_utf8_lossy(&first.stdout).contains("| amazon->webcam |"));

    // Pilots are ordinary finished runs: a second calibration reruns none and agrees.
    let stamps = |p: &serde_json::Value| {
        std::fs::metadata(Path::new(p["dir"].as_str().unwrap()).join("metrics.csv")).unwrap().modified().unwrap()
    };
    let before: Vec<_> = pilots.iter().map(stamps).collect();
    calibrate();
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("tiny-cal-calibrate/calibration.json")).unwrap())
            .unwrap();
    assert_eq!(again, evidence);
    let after: Vec<_> = pilots.iter().map(stamps).collect();
    assert_eq!(before, after, "a finished pilot was run again");
}
