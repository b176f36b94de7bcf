//! Every backbone against its reference implementation: the same weights and input through
//! PyTorch (tests/data/gen_reference.py, torchvision where it has the network) and through our
//! tch code must give the same logits to 1e-4. SqueezeNet and AlexNet's conv layers use the
//! real ImageNet weights in ../shared.

mod common;

use deep_coral::model::backbone::Backbone;
use deep_coral::model::weights;
use tch::{nn, Device, Tensor};

#[test]
fn forward_passes_equal_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    common::run_ok(
        std::process::Command::new(common::python())
            .arg(common::root().join("tests/data/gen_reference.py"))
            .arg(tmp.path())
            .arg(common::shared().join("weights")),
    );
    for b in Backbone::ALL {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = b.build(&vs.root(), 1000);
        weights::load_full(&mut vs, &tmp.path().join(format!("{b}.safetensors")), b).unwrap();
        let io: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(tmp.path().join(format!("{b}-io.safetensors"))).unwrap().into_iter().collect();
        let got = tch::no_grad(|| net.forward_t(&io["input"], false));
        let want = &io["logits"];
        let err = (&got - want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        eprintln!("{b}: max abs difference {err:.2e}, largest logit {scale:.2e}");
        assert!(err <= 1e-4 * scale.max(1.0), "{b}: max abs difference {err} (logit scale {scale})");
        assert!(scale > 1e-3, "{b}: degenerate reference logits");
    }
}
