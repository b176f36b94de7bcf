//! Bad input through the real binary: every case exits non-zero with a message that names the
//! path or value and what was expected, and writes nothing (no run folder, no results). Tiny
//! synthetic images (tests/common) and the real SqueezeNet weights in ../shared.

mod common;

use std::path::{Path, PathBuf};

use common::{run_fails, tiny_data, tiny_train, write_domain};
use deep_coral::train::metrics::{RunRecord, Status};
use tch::Tensor;

/// `deep-coral train` that must fail with exit 1 and leave `out` unwritten; returns stderr.
fn train_fails(data: &Path, out: &Path, extra: &[&str]) -> String {
    let err = run_fails(&mut tiny_train(data, out, extra), 1);
    assert!(!out.exists(), "a failed start wrote {}: {:?}", out.display(), common::files_under(out));
    err
}

fn assert_has(err: &str, wants: &[&str]) {
    for want in wants {
        assert!(err.contains(want), "{want:?} not in:\n{err}");
    }
}

#[test]
fn missing_or_empty_data_folders_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let out = tmp.path().join("run");

    let nowhere = tmp.path().join("no-such-root");
    let err = train_fails(&nowhere, &out, &[]);
    assert_has(&err, &["data root", "no-such-root", "does not exist"]);

    let err = train_fails(&data, &out, &["--target", "webcam"]);
    assert_has(&err, &["domain folder", "webcam", "does not exist", "domains under", "src, tgt"]);

    std::fs::create_dir_all(data.join("bare")).unwrap();
    let err = train_fails(&data, &out, &["--target", "bare"]);
    assert_has(&err, &["bare", "holds no class folders", "expected <class>/<image files>"]);

    // A class folder with nothing in it, or only hidden files, has no images.
    write_domain(&data, "hollow", &["a"], 2);
    std::fs::create_dir_all(data.join("hollow/b")).unwrap();
    std::fs::write(data.join("hollow/b/.DS_Store"), b"x").unwrap();
    let err = train_fails(&data, &out, &["--target", "hollow"]);
    assert_has(&err, &["class folder", "hollow/b", "holds no images"]);
}

#[test]
fn different_class_sets_name_the_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    write_domain(&data, "other", &["a", "c", "d"], 1);
    let err = train_fails(&data, &tmp.path().join("run"), &["--target", "other"]);
    assert_has(&err, &["different classes", "only in src: [b]", "only in other: [c, d]"]);
}

/// Three bad files in the target: a JPEG cut short, random bytes named .jpg, and a text file.
fn add_bad_images(data: &Path) -> Vec<PathBuf> {
    let jpeg = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 3, y as u8 * 3, 100]));
    let mut bytes = Vec::new();
    jpeg.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
    let truncated = data.join("tgt/a/truncated.jpg");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let noise = data.join("tgt/b/noise.jpg");
    std::fs::write(&noise, (0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    let text = data.join("tgt/b/readme.txt");
    std::fs::write(&text, "these are not the images you are looking for\n").unwrap();
    vec![truncated, noise, text]
}

#[test]
fn a_bad_image_stops_the_run_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let out = tmp.path().join("run");
    let bad = add_bad_images(&data);
    let err = train_fails(&data, &out, &[]);
    // Decoding runs in parallel, but the first bad file in sorted order is the one reported.
    assert_has(&err, &["truncated.jpg", "truncated file", "--skip-bad-images"]);
    for one in &bad {
        let data2 = tmp.path().join(format!("data-{}", one.file_name().unwrap().to_string_lossy()));
        write_domain(&data2, "src", &["a", "b"], 2);
        write_domain(&data2, "tgt", &["a", "b"], 2);
        let rel = one.strip_prefix(&data).unwrap();
        std::fs::copy(one, data2.join(rel)).unwrap();
        let err = train_fails(&data2, &out, &[]);
        assert_has(&err, &[&data2.join(rel).display().to_string(), "--skip-bad-images"]);
    }
}

#[test]
fn skip_bad_images_warns_records_them_and_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let out = tmp.path().join("run");
    let bad = add_bad_images(&data);
    let res = common::run_ok(&mut tiny_train(&data, &out, &["--skip-bad-images", "--iterations", "2"]));
    let err = common::stderr(&res);
    for p in &bad {
        assert!(err.contains(&format!("warning: skipping {}", p.display())), "no warning for {}:\n{err}", p.display());
    }
    let rec = RunRecord::read(&out.join("run.json")).unwrap();
    assert_eq!(rec.status, Status::Done);
    assert!(rec.config.skip_bad_images);
    let mut skipped: Vec<PathBuf> = rec.skipped_images.iter().map(|s| s.path.clone()).collect();
    skipped.sort();
    let mut want = bad.clone();
    want.sort();
    assert_eq!(skipped, want);
    assert!(rec.skipped_images.iter().all(|s| !s.error.is_empty()));
    assert_eq!((rec.images.source, rec.images.target), (6, 6));

    // A domain whose every file is bad cannot train, skipping or not.
    let data2 = tmp.path().join("data2");
    write_domain(&data2, "src", &["a", "b"], 2);
    for class in ["a", "b"] {
        std::fs::create_dir_all(data2.join("tgt").join(class)).unwrap();
        std::fs::write(data2.join("tgt").join(class).join("x.jpg"), b"nope").unwrap();
    }
    let err = train_fails(&data2, &tmp.path().join("run2"), &["--skip-bad-images"]);
    assert_has(&err, &["no image of tgt could be decoded"]);
}

#[test]
fn bad_weights_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let out = tmp.path().join("run");
    let weights = |p: &Path| -> Vec<String> { vec!["--weights".into(), p.display().to_string()] };
    let fails = |w: &Path, more: &[&str]| {
        let mut extra = weights(w);
        extra.extend(more.iter().map(|s| s.to_string()));
        train_fails(&data, &out, &extra.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let missing = tmp.path().join("gone.safetensors");
    assert_has(&fails(&missing, &[]), &["weights file", "gone.safetensors", "does not exist"]);

    let text = tmp.path().join("notes.safetensors");
    std::fs::write(&text, "these are notes, not tensors\n").unwrap();
    assert_has(&fails(&text, &[]), &["notes.safetensors", "not a valid .safetensors"]);

    let caffe = common::shared().join("weights/caffe-lenet-mnist/lenet_iter_10000.caffemodel");
    assert_has(&fails(&caffe, &[]), &["lenet_iter_10000.caffemodel", "Caffe", "weights import-caffe"]);

    // The real SqueezeNet file with one tensor left out and one of the wrong shape.
    let mut tensors = Tensor::read_safetensors(common::squeezenet_weights()).unwrap();
    tensors.retain(|(name, _)| name != "features.3.expand3x3.bias");
    for (name, t) in tensors.iter_mut() {
        if name == "features.0.weight" {
            *t = t.narrow(0, 0, 32).copy();
        }
    }
    let broken = tmp.path().join("broken.safetensors");
    Tensor::write_safetensors(&tensors, &broken).unwrap();
    assert_has(
        &fails(&broken, &[]),
        &[
            "broken.safetensors",
            "does not fit backbone squeezenet1_1",
            "missing (1): features.3.expand3x3.bias [64]",
            "features.0.weight: file [32, 3, 3, 3], squeezenet1_1 expects [64, 3, 3, 3]",
        ],
    );

    // Real weights of another backbone.
    let alexnet = common::shared().join("weights/alexnet-torchvision-features-imagenet.safetensors");
    assert_has(
        &fails(&alexnet, &[]),
        &["alexnet-torchvision-features", "does not fit backbone squeezenet1_1", "missing"],
    );

    let err = run_fails(&mut tiny_train(&data, &out, &["--backbone", "vgg"]), 2);
    assert_has(&err, &["'vgg'", "--backbone", "alexnet", "caffenet", "squeezenet1_1"]);
    assert!(!out.exists());
}

#[test]
fn bad_values_are_named_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let out = tmp.path().join("run");
    let cases: [(&[&str], &[&str]); 11] = [
        (&["--lambda", "-1"], &["lambda must be a finite number >= 0, got -1"]),
        (&["--lambda", "nan"], &["lambda must be a finite number >= 0, got NaN"]),
        (&["--lambda", "inf"], &["lambda must be a finite number >= 0, got inf"]),
        (&["--batch-size", "1"], &["--batch-size must be at least 2", "got 1"]),
        (&["--batch-size", "0"], &["--batch-size must be at least 2", "got 0"]),
        (&["--batch-size", "-4"], &["--batch-size must be at least 2", "got -4"]),
        (&["--iterations", "0"], &["--iterations must be positive, got 0"]),
        (&["--iterations", "-5"], &["--iterations must be positive, got -5"]),
        (&["--eval-every", "0"], &["--eval-every must be positive, got 0"]),
        (&["--eval-every", "-1"], &["--eval-every must be positive, got -1"]),
        (&["--device", "cuda"], &["--device cuda", "no CUDA GPU"]),
    ];
    for (extra, wants) in cases {
        if extra[1] == "cuda" && tch::Cuda::is_available() {
            continue;
        }
        let err = train_fails(&data, &out, extra);
        assert_has(&err, wants);
    }
    // The same checks hold for values from a config file.
    let cfg = tmp.path().join("cfg.json");
    let config_fails = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        let mut cmd = common::bin();
        cmd.arg("train").arg("--config").arg(&cfg).arg("--out").arg(&out);
        let err = run_fails(&mut cmd, 1);
        assert!(!out.exists());
        err
    };
    assert_has(&config_fails(r#"{"lambda": -0.5}"#), &["lambda must be a finite number >= 0, got -0.5"]);
    assert_has(&config_fails(r#"{"batch_size": 1}"#), &["batch size must be at least 2", "got 1"]);
    assert_has(&config_fails(r#"{"eval_every": 0}"#), &["eval interval (--eval-every) must be positive, got 0"]);
    assert_has(&config_fails(r#"{"lamda": 2}"#), &["cfg.json", "unknown field `lamda`"]);
}

/// `deep-coral sweep SPEC` that must fail before any run starts: exit 1, nothing written.
fn sweep_fails(tmp: &Path, spec: &serde_json::Value) -> String {
    let path = tmp.join("spec.json");
    std::fs::write(&path, serde_json::to_string_pretty(spec).unwrap()).unwrap();
    sweep_text_fails(tmp, &path)
}

fn sweep_text_fails(tmp: &Path, path: &Path) -> String {
    let results = tmp.join("results");
    let mut cmd = common::bin();
    cmd.arg("sweep").arg(path).arg("--out").arg(&results);
    let err = run_fails(&mut cmd, 1);
    assert!(!results.exists(), "a rejected spec wrote {:?}", common::files_under(&results));
    err
}

#[test]
fn bad_specs_fail_before_any_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_data(tmp.path());
    let good = serde_json::json!({
        "name": "tiny",
        "train": { "backbone": "squeezenet1_1", "data_root": data, "weights": common::squeezenet_weights(),
                   "iterations": 2, "batch_size": 2, "eval_every": 2, "device": "cpu", "threads": 1 },
        "transfers": [ { "source": "src", "target": "tgt", "lambdas": [0, 1] } ],
        "seeds": [1]
    });
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };

    let path = tmp.path().join("broken.json");
    std::fs::write(&path, "{\"name\": \"tiny\", \"seeds\": [1,]").unwrap();
    assert_has(&sweep_text_fails(tmp.path(), &path), &["broken.json", "not valid JSON"]);

    let err = sweep_fails(tmp.path(), &with(&|v| v["train"]["lamda"] = 0.5.into()));
    assert_has(&err, &["spec.json", "key `train.lamda`", "unknown field `lamda`"]);
    let err = sweep_fails(tmp.path(), &with(&|v| v["transfers"][0]["lambda"] = 1.into()));
    assert_has(&err, &["key `transfers[0].lambda`", "unknown field `lambda`"]);

    let err = sweep_fails(tmp.path(), &with(&|v| v["train"]["iterations"] = "many".into()));
    assert_has(&err, &["key `train.iterations`", "invalid type: string \"many\""]);
    let err = sweep_fails(tmp.path(), &with(&|v| v["seeds"] = serde_json::json!([1, "two"])));
    assert_has(&err, &["key `seeds[1]`", "invalid type"]);

    let err = sweep_fails(tmp.path(), &with(&|v| v["transfers"][0]["lambdas"] = serde_json::json!([0, -1])));
    assert_has(&err, &["transfer src->tgt coral (transfers[0]), lambda -1", "lambda must be a finite number >= 0"]);

    let err = sweep_fails(
        tmp.path(),
        &with(&|v| v["transfers"] = serde_json::json!([{ "source": "src", "target": "dslr", "lambdas": [0] }])),
    );
    assert_has(&err, &["1 of 2 domain folders missing", &data.join("dslr").display().to_string(), "--data-root"]);

    let err = sweep_fails(tmp.path(), &with(&|v| v["train"]["weights"] = "nope.safetensors".into()));
    assert_has(&err, &["weights file nope.safetensors not found"]);
}
