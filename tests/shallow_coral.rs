//! Shallow CORAL (`deep-coral shallow-coral`) through the real binary on a real source-only
//! network (SqueezeNet with its ImageNet weights, fine-tuned briefly on real amazon images),
//! and its parts against independent implementations on the very features it uses
//! (`tests/data/shallow_coral_reference.py`): the CORAL transform against SciPy's `sqrtm` (to
//! 1e-8), the linear SVM against scikit-learn's `LinearSVC` with the same loss and C (target
//! accuracy within a point), raw and transformed.

mod common;

use deep_coral::infer::features;
use deep_coral::infer::loaded::Loaded;
use deep_coral::infer::shallow_coral::{self, ShallowCoral};
use deep_coral::infer::svm::LinearSvm;
use tch::{Device, Kind, Tensor};

#[test]
fn shallow_coral_matches_scipy_and_scikit_learn_on_real_features() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let classes = ["backpack", "bike", "calculator", "headphones", "keyboard"];
    common::real_subset(&data, "amazon", "src", &classes, 16);
    common::real_subset(&data, "webcam", "tgt", &classes, 8);
    let run = tmp.path().join("run");
    common::run_ok(&mut common::tiny_train(&data, &run, &["--lambda", "0", "--iterations", "4", "--batch-size", "4"]));

    // The command: shallow_coral.json beside the run's record.
    let out = common::run_ok(common::bin().arg("shallow-coral").arg(&run).args(["--threads", "1"]));
    assert!(common::stderr(&out).contains("shallow CORAL"), "{}", common::stderr(&out));
    let result = ShallowCoral::read(&run).unwrap();
    assert_eq!((result.source_images, result.target_images, result.dim), (80, 40, 512));
    for acc in [result.svm_target_acc, result.coral_target_acc, result.network_target_acc] {
        assert!((0.0..=1.0).contains(&acc), "{result:?}");
    }
    // The network's own accuracy on the same centre crops is the run's final evaluation.
    let record = deep_coral::train::metrics::RunRecord::read(&run.join("run.json")).unwrap();
    assert_eq!(Some(result.network_target_acc), record.final_target_acc);
    // A network trained with CORAL is refused: shallow CORAL takes a source-only one.
    let adapted = tmp.path().join("adapted");
    common::run_ok(&mut common::tiny_train(&data, &adapted, &["--iterations", "2", "--batch-size", "4"]));
    let err = common::run_fails(common::bin().arg("shallow-coral").arg(&adapted), 1);
    assert!(err.contains("source-only network"), "{err}");

    // Its parts, on the features it used.
    let model = Loaded::open(&run, Device::Cpu).unwrap();
    let cfg = &model.card.config;
    let (s, t) = deep_coral::data::transfer::scan(cfg).unwrap();
    let decode = |d: &deep_coral::data::domain::Domain| {
        deep_coral::data::inputs::Inputs::Host(
            deep_coral::data::images::decode_all(&d.files, &d.name, false, cfg.resize).unwrap(),
        )
    };
    let (s_set, t_set) = (decode(&s), decode(&t));
    let feats = |set: &deep_coral::data::inputs::Inputs| {
        let f = features::outputs(&model, set, &vec![false; set.len()], Device::Cpu).unwrap().features;
        shallow_coral::preprocess(&f.to_kind(Kind::Double))
    };
    let (ds, dt) = (feats(&s_set), feats(&t_set));
    let transformed = shallow_coral::transform(&ds, &dt);
    let labels = |set: &deep_coral::data::inputs::Inputs| Tensor::from_slice(set.all_labels());
    let c = 1.0;
    let path = tmp.path().join("features.safetensors");
    Tensor::write_safetensors(
        &[
            ("source", ds.shallow_clone()),
            ("target", dt.shallow_clone()),
            ("source_labels", labels(&s_set)),
            ("target_labels", labels(&t_set)),
            ("transformed", transformed.shallow_clone()),
            ("c", Tensor::from_slice(&[c])),
        ],
        &path,
    )
    .unwrap();
    let json = tmp.path().join("reference.json");
    common::run_ok(
        std::process::Command::new(common::python())
            .arg(common::root().join("tests/data/shallow_coral_reference.py"))
            .arg(&path)
            .arg(&json),
    );
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rel = reference["transform_rel_diff"].as_f64().unwrap();
    assert!(rel < 1e-8, "the CORAL transform differs from SciPy's by {rel:.2e}");

    let rows = |t: &Tensor| Vec::<Vec<f64>>::try_from(t.contiguous()).unwrap();
    let ys: Vec<usize> = s_set.all_labels().iter().map(|&l| l as usize).collect();
    let yt: Vec<usize> = t_set.all_labels().iter().map(|&l| l as usize).collect();
    let (xs, xt, xc) = (rows(&ds), rows(&dt), rows(&transformed));
    for (name, train, key) in [("raw", &xs, "svm_acc"), ("transformed", &xc, "coral_acc")] {
        let ours = LinearSvm::fit(train, &ys, classes.len(), c, 1).accuracy(&xt, &yt);
        let sklearn = reference[key].as_f64().unwrap();
        println!("{name}: deep-coral's SVM {ours:.4}, scikit-learn's LinearSVC {sklearn:.4}");
        assert!((ours - sklearn).abs() <= 0.01 + 1e-12, "{name}: {ours} against LinearSVC's {sklearn}");
    }
}
