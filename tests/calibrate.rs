//! `deep-coral calibrate` through the real binary, on real Office images (2 classes of amazon
//! and webcam from ../shared, linked into a small data root) with the real SqueezeNet weights:
//! pilots are ordinary run folders (one per seed, every step logged), the rule's ratio is the
//! window mean over the pilots' steps.csv pooled over the seeds (recomputed here from the files),
//! the calibrated spec carries lambda = 0 and the chosen lambda per transfer, the evidence lists
//! every pilot, a second call reruns no pilot, and outputs that cannot be written are refused
//! before any pilot runs.

mod common;

use std::path::Path;

#[test]
fn calibrate_writes_a_spec_with_the_rules_lambda_and_its_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for d in ["amazon", "webcam"] {
        common::real_subset(&data, d, d, &["backpack", "mouse"], 4);
    }
    let spec = serde_json::json!({
        "name": "tiny-cal",
        "train": { "backbone": "squeezenet1_1", "data_root": data, "weights": common::squeezenet_weights(),
                   "iterations": 4, "batch_size": 2, "eval_every": 2, "lr_step": 3, "lr": 1e-4, "device": "cpu",
                   "threads": 1 },
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
        let dirs: Vec<&Path> = p["dirs"].as_array().unwrap().iter().map(|d| Path::new(d.as_str().unwrap())).collect();
        assert_eq!(dirs.len(), 2, "one pilot run per seed (1, 2 by default): {p}");
        let lambda = p["lambda"].as_f64().unwrap();
        // The window of 4 iterations is its last ceil(0.2 * 4) = 1 step: iteration 3 of each seed.
        let (mut class, mut coral) = (0.0, 0.0);
        let records: Vec<_> =
            dirs.iter().map(|d| deep_coral::train::metrics::RunRecord::read(&d.join("run.json")).unwrap()).collect();
        if records.iter().any(|r| r.status == deep_coral::train::metrics::Status::Diverged) {
            // "lambda too large": an infinite ratio (null in JSON), and the search goes lower.
            assert!(p["ratio"].is_null(), "{p}");
            continue;
        }
        for dir in &dirs {
            let rec = deep_coral::train::metrics::RunRecord::read(&dir.join("run.json")).unwrap();
            assert_eq!(rec.status, deep_coral::train::metrics::Status::Done, "{}", dir.display());
            assert_eq!((rec.config.iterations, rec.config.eval_every, rec.config.log_steps), (4, 4, true));
            let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
            assert_eq!(metrics.lines().count(), 3, "evaluated at the start and the end only:\n{metrics}");
            let steps = std::fs::read_to_string(dir.join("steps.csv")).unwrap();
            let last: Vec<f64> = steps.lines().last().unwrap().split(',').map(|x| x.parse().unwrap()).collect();
            assert_eq!(last[0], 3.0, "{steps}");
            class += last[2];
            coral += last[3];
        }
        let ratio = lambda * coral / class;
        let got = p["ratio"].as_f64().unwrap();
        assert!((ratio - got).abs() < 1e-9 * ratio.abs().max(1.0), "ratio {got}, from the files {ratio}");
        assert_eq!(p["seed_ratios"].as_array().unwrap().len(), 2);
    }
    // The chosen lambda is the pilot closest to the rule, and it is what the spec now runs.
    let chosen = t["lambda"].as_f64().unwrap();
    let log_r = |p: &serde_json::Value| p["ratio"].as_f64().map_or(f64::INFINITY, |r| r.ln().abs());
    let best = pilots.iter().min_by(|a, b| log_r(a).total_cmp(&log_r(b))).unwrap();
    assert_eq!(best["lambda"].as_f64().unwrap(), chosen);
    let written = deep_coral::experiment::spec::load(&out_spec).unwrap();
    assert_eq!(written.name, "tiny-cal-calibrated");
    assert_eq!(written.transfers[0].lambdas, vec![0.0, chosen]);
    assert_eq!(written.seeds, vec![1, 2]);
    assert!(written.description.contains("paper's rule"));
    assert!(String::from_utf8_lossy(&first.stdout).contains("| amazon->webcam |"));

    // Pilots are ordinary finished runs: a second calibration reruns none and agrees.
    let stamps = |p: &serde_json::Value| -> Vec<_> {
        let dirs = p["dirs"].as_array().unwrap().iter();
        dirs.map(|d| std::fs::metadata(Path::new(d.as_str().unwrap()).join("metrics.csv")).unwrap().modified().unwrap())
            .collect()
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

/// Outputs `calibrate` could not write are refused before the first pilot: the input spec as
/// `--write`, a `--name` that is no folder name, and the default `experiments/` folder where
/// there is none. Nothing is written anywhere.
#[test]
fn calibrate_checks_its_outputs_before_any_pilot() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({
        "name": "early",
        "train": { "backbone": "squeezenet1_1", "data_root": common::shared().join("data/office-caltech10"),
                   "weights": common::squeezenet_weights(), "iterations": 4, "batch_size": 2, "device": "cpu" },
        "transfers": [ { "source": "amazon", "target": "webcam", "lambdas": [0, 1.0] } ],
        "seeds": [1]
    });
    let spec_path = tmp.path().join("early.json");
    let text = serde_json::to_string_pretty(&spec).unwrap();
    std::fs::write(&spec_path, &text).unwrap();
    let results = tmp.path().join("results");
    let fails = |extra: &[&str], expect: &[&str]| {
        let mut cmd = common::bin();
        cmd.current_dir(tmp.path()).arg("calibrate").arg(&spec_path).arg("--out").arg(&results).args(extra);
        let out = cmd.output().unwrap();
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        for e in expect {
            assert!(err.contains(e), "{extra:?}: expected {e:?} in: {err}");
        }
        assert!(!results.exists(), "{extra:?}: a pilot ran before the refusal");
        assert_eq!(std::fs::read_to_string(&spec_path).unwrap(), text, "the input spec changed");
    };
    fails(&["--write", spec_path.to_str().unwrap()], &["--write", "is the input"]);
    fails(&["--write", "./early.json"], &["is the input"]);
    fails(&["--name", "a/b"], &["--name", "plain folder name"]);
    fails(&["--name", ""], &["--name"]);
    fails(&["--name", "../x"], &["--name"]);
    fails(&[], &["experiments", "does not exist", "--write"]);
    fails(&["--window", "0"], &["--window"]);
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["early.json"]);
}
