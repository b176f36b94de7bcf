//! `deep-coral bench` end to end on the shared data: one tiny SqueezeNet measurement in both
//! precisions and both layouts, checked for the shape of its JSON only (no speed is asserted: the numbers are
//! read by people).

mod common;

use serde_json::Value;

#[test]
fn bench_writes_every_number() {
    let shared = common::shared();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let out = common::run_ok(
        common::bin()
            .args(["bench", "--backbone", "squeezenet1_1", "--batch-size", "2", "--iterations", "1", "--warmup", "0"])
            .arg("--data-root")
            .arg(shared.join("data/office-caltech10"))
            .arg("--weights")
            .arg(format!("squeezenet1_1={}", shared.join("weights/squeezenet1_1-caffe-imagenet.safetensors").display()))
            .arg("--json")
            .arg(&json),
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let positive = |v: &Value, path: &str| {
        let x = v.pointer(path).and_then(Value::as_f64).unwrap_or_else(|| panic!("{path} missing in {v}"));
        assert!(x > 0.0 && x.is_finite(), "{path} = {x}");
    };
    for p in ["/threads", "/lambda", "/iterations"] {
        positive(&r, p);
    }
    assert_eq!((r["batch_size"].as_u64(), r["warmup"].as_u64()), (Some(2), Some(0)));
    assert!(r["keep_freed_memory"].is_boolean(), "{r}");
    assert_eq!(r["median"], true, "figures are medians");
    assert_eq!(r["process_per_cell"], true, "four cells, each in a process of its own");
    for p in ["/images", "/bytes", "/build_s", "/decode_img_per_s", "/peak_rss_bytes"] {
        positive(&r["data"], p);
    }
    assert_eq!(r["data"]["images"], 958 + 295, "amazon + webcam");
    let backbones = r["backbones"].as_array().unwrap();
    assert_eq!(backbones.len(), 4, "fp32 and bf16, channels-last and contiguous by default");
    let cells: Vec<_> =
        backbones.iter().map(|b| (b["precision"].as_str().unwrap(), b["channels_last"].as_bool().unwrap())).collect();
    assert_eq!(cells, [("fp32", true), ("fp32", false), ("bf16", true), ("bf16", false)]);
    for b in backbones {
        check_backbone(b, positive);
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("squeezenet1_1")
            && table.contains("pretrained")
            && table.contains("limit img/s")
            && table.contains("ahead/inline")
            && table.contains("batch ms")
            && table.contains("(median per figure), each cell in a process of its own")
            && table.contains("rounds: limit, train, train at λ = 0 and inline"),
        "{table}"
    );
    assert!(table.contains("bf16 / fp32") && table.contains("train bf16/fp32"), "no precision ratios: {table}");
    assert!(
        table.contains("channels-last / contiguous") && table.contains("train last/contiguous"),
        "no layout ratios: {table}"
    );
}

fn check_backbone(b: &Value, positive: impl Fn(&Value, &str)) {
    assert_eq!(b["backbone"], "squeezenet1_1");
    assert!(b["weights"].as_str().unwrap().ends_with("squeezenet1_1-caffe-imagenet.safetensors"));
    assert_eq!(b["lr"], 0.0, "updates at rate 0: the weights stay as loaded");
    for p in [
        "/limit/s_per_iter",
        "/limit/img_per_s",
        "/batch/s_per_iter",
        "/batch/img_per_s",
        "/train/s_per_iter",
        "/train/img_per_s",
        "/train_lambda0/s_per_iter",
        "/train_lambda0/img_per_s",
        "/train_inline/s_per_iter",
        "/train_inline/img_per_s",
        "/train_over_limit",
        "/lambda0_over_lambda_time",
        "/peak_rss_bytes",
    ] {
        positive(b, p);
    }
    // One value per timed round (--iterations 1), for every ratio of the round.
    for ratio in ["train_over_limit", "inline_over_limit", "ahead_over_inline", "lambda0_over_lambda_time"] {
        let per_round = b["rounds"][ratio].as_array().unwrap_or_else(|| panic!("rounds.{ratio} missing in {b}"));
        assert_eq!(per_round.len(), 1, "rounds.{ratio}: {b}");
        positive(b, &format!("/rounds/{ratio}/0"));
    }
    assert_eq!(b["train_over_limit"], b["rounds"]["train_over_limit"][0], "the median of one round is that round");
}
