//! The network a run keeps, used without the run, through the real binary on real Office images
//! (amazon and webcam, linked from ../shared) and real weights (SqueezeNet's ImageNet network;
//! AlexNet's ImageNet convolutions with a seeded fc6/fc7): `evaluate` gives the run's own final
//! target accuracy, `predict` names and skips a bad image, `export` gives scores equal to
//! deep-coral's in PyTorch (TorchScript and torchvision's model class), `embed` repeats for a
//! seed.

mod common;

use std::path::{Path, PathBuf};

use common::{run_fails, run_ok, tiny_train};
use deep_coral::infer::loaded::Loaded;
use deep_coral::train::metrics::RunRecord;
use deep_coral::train::saved_model::SavedModel;
use tch::{Device, Kind, Tensor};

/// Real images: 4 classes, 6 amazon and 5 webcam images each.
fn data(root: &Path) -> PathBuf {
    let data = root.join("data");
    let classes = ["backpack", "bike", "mouse", "mug"];
    common::real_subset(&data, "amazon", "src", &classes, 6);
    common::real_subset(&data, "webcam", "tgt", &classes, 5);
    data
}

#[test]
fn a_run_keeps_its_network_and_evaluate_gives_its_final_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    for mirror in [false, true] {
        let run = tmp.path().join(format!("run-{mirror}"));
        let mut extra = vec!["--iterations", "4", "--batch-size", "4"];
        if mirror {
            extra.push("--eval-mirror");
        }
        run_ok(&mut tiny_train(&data, &run, &extra));
        let record = RunRecord::read(&run.join("run.json")).unwrap();
        let saved = SavedModel::read(&run).unwrap();
        assert_eq!(saved.card.classes, ["backpack", "bike", "mouse", "mug"]);
        assert_eq!((saved.card.iteration, saved.card.config.seed), (4, 1));
        assert!(saved.tensors.contains_key("classifier.1.weight"));
        let mut cmd = common::bin();
        cmd.arg("evaluate").arg(&run).arg("--data-root").arg(&data).args(["--domain", "tgt", "--threads", "1"]);
        if mirror {
            cmd.arg("--mirror");
        }
        let out = run_ok(&mut cmd);
        let csv = std::fs::read_to_string(run.join("evaluate-tgt/accuracy.csv")).unwrap();
        let all: Vec<&str> = csv.lines().last().unwrap().split(',').collect();
        assert_eq!(all[..3], ["all", "20", &format!("{}", (record.final_target_acc.unwrap() * 20.0).round() as i64)]);
        let acc: f64 = all[3].parse().unwrap();
        assert!(
            (acc - record.final_target_acc.unwrap()).abs() < 1e-6,
            "evaluate {acc} vs the run's {:?}",
            record.final_target_acc
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), csv);
        let confusion = std::fs::read_to_string(run.join("evaluate-tgt/confusion.csv")).unwrap();
        assert_eq!(confusion.lines().next().unwrap(), "true\\predicted,backpack,bike,mouse,mug");
        for f in ["confusion.png", "confusion.svg"] {
            assert!(std::fs::metadata(run.join("evaluate-tgt").join(f)).unwrap().len() > 5_000, "{f}");
        }
    }
    // Without a kept network (the old runs, or --save-model false): said so.
    let bare = tmp.path().join("bare");
    run_ok(&mut tiny_train(&data, &bare, &["--iterations", "2", "--save-model", "false"]));
    assert!(!bare.join("model.safetensors").exists());
    let err =
        run_fails(common::bin().arg("evaluate").arg(&bare).arg("--data-root").arg(&data).args(["--domain", "tgt"]), 1);
    assert!(err.contains("did not keep its network"), "{err}");
    // Another class list is refused, naming both.
    let other = tmp.path().join("other");
    common::real_subset(&other, "webcam", "tgt", &["backpack", "bike"], 2);
    let run = tmp.path().join("run-false");
    let err =
        run_fails(common::bin().arg("evaluate").arg(&run).arg("--data-root").arg(&other).args(["--domain", "tgt"]), 1);
    assert!(err.contains("[backpack, bike]") && err.contains("[backpack, bike, mouse, mug]"), "{err}");
}

#[test]
fn predict_labels_a_folder_and_names_a_bad_image() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let run = tmp.path().join("run");
    run_ok(&mut tiny_train(&data, &run, &["--iterations", "2", "--batch-size", "4"]));
    let images = tmp.path().join("images");
    common::real_subset(&images, "webcam", "inbox", &["mug", "bike"], 3);
    let bad = images.join("inbox/mug/broken.jpg");
    std::fs::write(&bad, b"not a jpeg").unwrap();
    let out = tmp.path().join("predictions.csv");
    let predict = |extra: &[&str]| {
        let mut cmd = common::bin();
        cmd.arg("predict").arg(&run).arg(&images).arg("--out").arg(&out).args(["--threads", "1"]).args(extra);
        cmd
    };
    let err = run_fails(&mut predict(&[]), 1);
    assert!(err.contains("broken.jpg") && err.contains("--skip-bad-images"), "{err}");
    assert!(!out.exists(), "a refused prediction wrote its CSV");
    let res = run_ok(&mut predict(&["--skip-bad-images", "--top-k", "2"]));
    assert!(common::stderr(&res).contains("warning: skipping") && common::stderr(&res).contains("broken.jpg"));
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), "path,predicted,probability,top2,top2_probability");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 6, "{text}");
    for row in &rows {
        let (p1, p2): (f64, f64) = (row[2].parse().unwrap(), row[4].parse().unwrap());
        assert!(p1 >= p2 && p1 + p2 <= 1.0 + 1e-6, "{row:?}");
        assert!(["backpack", "bike", "mouse", "mug"].contains(&row[1]), "{row:?}");
    }
    // The batch size is memory, not results: 2 images a pass give the classes and (to float
    // rounding) the probabilities of 64; bf16 arithmetic gives probabilities near fp32's.
    for (extra, tol) in [(["--batch-size", "2"], 1e-5), (["--precision", "bf16"], 0.05)] {
        let other = tmp.path().join("other.csv");
        let mut cmd = common::bin();
        cmd.arg("predict").arg(&run).arg(&images).arg("--out").arg(&other).args(["--threads", "1"]);
        run_ok(cmd.args(["--skip-bad-images", "--top-k", "2"]).args(extra));
        let other = std::fs::read_to_string(&other).unwrap();
        let other: Vec<Vec<&str>> = other.lines().skip(1).map(|l| l.split(',').collect()).collect();
        assert_eq!(other.len(), rows.len());
        for (a, b) in rows.iter().zip(&other) {
            assert_eq!(a[0], b[0]);
            let (pa, pb): (f64, f64) = (a[2].parse().unwrap(), b[2].parse().unwrap());
            assert!((pa - pb).abs() <= tol, "{extra:?}: {a:?} against {b:?}");
            if extra[0] == "--batch-size" {
                assert_eq!(a[1], b[1], "{extra:?}: {a:?} against {b:?}");
            }
        }
    }
    let err = run_fails(&mut predict(&["--batch-size", "0"]), 2);
    assert!(err.contains("--batch-size") && err.contains('0'), "{err}");
    // The output is not one of the images it reads.
    let first = images.join("inbox/bike").read_dir().unwrap().next().unwrap().unwrap().path();
    let before = std::fs::read(&first).unwrap();
    let err = run_fails(common::bin().arg("predict").arg(&run).arg(&images).arg("--out").arg(&first), 1);
    assert!(err.contains("is the input"), "{err}");
    assert_eq!(std::fs::read(&first).unwrap(), before);
}

/// deep-coral's scores for a batch, written for Python beside the batch.
fn scores(run: &Path, io: &Path) {
    let model = Loaded::open(run, Device::Cpu).unwrap();
    tch::manual_seed(5);
    let x = Tensor::randn([3, 3, 227, 227], (Kind::Float, Device::Cpu)) * 40.0;
    let logits = tch::no_grad(|| model.net.forward_t(&x, false));
    Tensor::write_safetensors(&[("input", x), ("logits", logits)], io).unwrap();
}

#[test]
fn an_exported_network_gives_deep_corals_scores_in_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let alexnet = common::alexnet_weights(tmp.path());
    let cases: [(&str, &[&str]); 3] = [
        ("squeezenet1_1", &["--head", "linear"]),
        ("squeezenet1_1", &["--head", "relu"]),
        ("alexnet", &["--backbone", "alexnet", "--weights", alexnet.to_str().unwrap()]),
    ];
    for (k, (backbone, extra)) in cases.iter().enumerate() {
        let run = tmp.path().join(format!("run{k}"));
        let mut args = vec!["--iterations", "2", "--batch-size", "4"];
        args.extend_from_slice(extra);
        run_ok(&mut tiny_train(&data, &run, &args));
        let pt = tmp.path().join(format!("model{k}.pt"));
        run_ok(common::bin().arg("export").arg(&run).arg("--torchscript").arg(&pt));
        let io = tmp.path().join(format!("io{k}.safetensors"));
        scores(&run, &io);
        let head = SavedModel::read(&run).unwrap().card.head;
        let out = run_ok(
            std::process::Command::new(common::python())
                .arg(common::root().join("tests/data/export_check.py"))
                .arg(run.join("model.safetensors"))
                .arg(&pt)
                .arg(&io)
                .arg(backbone)
                .arg(head.name()),
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        println!("{backbone} head {}: {report}", head.name());
        for key in ["torchscript", "torchvision"] {
            let d = report[key].as_f64().unwrap();
            assert!(d <= 1e-4, "{backbone} head {}: {key} differs from deep-coral by {d}", head.name());
        }
        assert!(report["scale"].as_f64().unwrap() > 1e-3, "degenerate scores");
    }
}

#[test]
fn embed_draws_the_same_picture_for_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let (base, adapted) = (tmp.path().join("base"), tmp.path().join("adapted"));
    run_ok(&mut tiny_train(&data, &base, &["--lambda", "0", "--iterations", "2", "--batch-size", "4"]));
    run_ok(&mut tiny_train(&data, &adapted, &["--iterations", "2", "--batch-size", "4"]));
    let embed = |out: &Path, seed: &str| {
        run_ok(common::bin().arg("embed").arg(&base).arg(&adapted).arg("--out").arg(out).args([
            "--seed",
            seed,
            "--threads",
            "1",
        ]));
        (1..=2).map(|k| std::fs::read_to_string(out.join(format!("embedding-{k}.csv"))).unwrap()).collect::<Vec<_>>()
    };
    let (a, b, c) =
        (embed(&tmp.path().join("a"), "1"), embed(&tmp.path().join("b"), "1"), embed(&tmp.path().join("c"), "2"));
    assert_eq!(a, b, "the same runs and seed gave another layout");
    assert_ne!(a, c, "another seed gave the same layout");
    assert_eq!(a[0].lines().count(), 1 + 24 + 20, "one row per source and target image");
    assert!(a[0].lines().nth(1).unwrap().starts_with("src,backpack,"), "{}", a[0]);
    for f in ["embedding.png", "embedding.svg"] {
        assert!(std::fs::metadata(tmp.path().join("a").join(f)).unwrap().len() > 10_000, "{f}");
    }
}
