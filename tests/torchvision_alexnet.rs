//! torchvision's AlexNet, end to end: a random-weight torchvision model saved as `.pth`
//! (zip and legacy serialisations) by `tests/data/gen_alexnet_pth.py`, converted by
//! `scripts/convert_torchvision.py` (as `make weights` converts the ImageNet file), loaded
//! into `Backbone::Alexnet` by `weights::load_pretrained`, must give torchvision's outputs.
//!
//! Needs the project's Python with torch and torchvision: `$DEEP_CORAL_PYTHON`, else
//! `.venv/bin/python` (`make setup`). Without it the test fails and says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use deep_coral::model::backbone::alexnet::AlexNet;
use deep_coral::model::backbone::{Backbone, NewLayers};
use deep_coral::model::weights::load_pretrained;
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn python() -> PathBuf {
    let python = std::env::var_os("DEEP_CORAL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} not found: this test needs Python with torch and torchvision (`make setup`, or set DEEP_CORAL_PYTHON)",
        python.display()
    );
    python
}

fn run(python: &Path, args: &[&Path]) {
    let out = Command::new(python).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}{}",
        python.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn converted_torchvision_alexnet_gives_torchvision_outputs() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    run(&python, &[&Path::new(ROOT).join("tests/data/gen_alexnet_pth.py"), dir.path()]);
    let reference = read(&dir.path().join("reference.safetensors"));

    let mut formats = vec!["zip"];
    if dir.path().join("alexnet-legacy.pth").exists() {
        formats.push("legacy");
    } else {
        eprintln!("this torch no longer writes the legacy .pth serialisation: checked zip only");
    }
    for format in formats {
        let pth = dir.path().join(format!("alexnet-{format}.pth"));
        let converted = dir.path().join(format!("alexnet-{format}.safetensors"));
        run(&python, &[&Path::new(ROOT).join("scripts/convert_torchvision.py"), &pth, &converted]);

        let mut vs = nn::VarStore::new(Device::Cpu);
        // What Backbone::Alexnet.build makes, kept concrete to reach its conv features.
        let net = AlexNet::new(&vs.root(), 1000, NewLayers::default());
        load_pretrained(&mut vs, &converted, Backbone::Alexnet).unwrap();

        // Every parameter but the last layer's is torchvision's; the last layer is new.
        let file = read(&converted);
        let vars = vs.variables();
        assert_eq!(vars.len(), file.len());
        for (name, var) in &vars {
            let same = var.equal(&file[name]);
            assert_eq!(same, !Backbone::Alexnet.is_last_layer(name), "{format}: {name}");
        }

        let x = &reference["input"];
        let pooled = tch::no_grad(|| net.features(x));
        let d = max_abs_diff(&pooled, &reference["pooled"]);
        assert!(d < 1e-4, "{format}: conv features differ by {d}");

        // With torchvision's classifier.6 copied in, the logits match too.
        tch::no_grad(|| {
            for p in ["weight", "bias"] {
                let name = format!("classifier.6.{p}");
                vars[&name].shallow_clone().copy_(&file[&name]);
            }
        });
        let logits = tch::no_grad(|| net.forward_t(x, false));
        let d = max_abs_diff(&logits, &reference["logits"]);
        println!("{format}: conv features and logits match torchvision (max |diff| {d:.2e})");
        assert!(d < 1e-4, "{format}: logits differ by {d}");
    }
}
