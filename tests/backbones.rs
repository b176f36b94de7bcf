//! Every backbone against its reference implementation: the same weights and input through
//! PyTorch (tests/data/gen_reference.py, torchvision where it has the network) and through our
//! tch code must give the same logits to 1e-4. SqueezeNet and AlexNet's conv layers use the
//! real ImageNet weights in ../shared. SqueezeNet with either head: torchvision's ReLU head
//! against torchvision itself, the default linear head against torchvision with that ReLU
//! replaced by the identity.

mod common;

use deep_coral::model::backbone::{Backbone, Head, NewLayers};
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
    let cases = [
        (Backbone::Alexnet, Head::Linear, "logits"),
        (Backbone::Caffenet, Head::Linear, "logits"),
        (Backbone::Squeezenet1_1, Head::Relu, "logits"),
        (Backbone::Squeezenet1_1, Head::Linear, "logits_linear"),
    ];
    for (b, head, key) in cases {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = b.build_with(&vs.root(), 1000, NewLayers { head, bottleneck: None });
        weights::load_full(&mut vs, &tmp.path().join(format!("{b}.safetensors")), b).unwrap();
        let io: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(tmp.path().join(format!("{b}-io.safetensors"))).unwrap().into_iter().collect();
        let got = tch::no_grad(|| net.forward_t(&io["input"], false));
        let want = &io[key];
        let err = (&got - want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        eprintln!("{b} head {}: max abs difference {err:.2e}, largest logit {scale:.2e}", head.name());
        assert!(
            err <= 1e-4 * scale.max(1.0),
            "{b} head {}: max abs difference {err} (logit scale {scale})",
            head.name()
        );
        assert!(scale > 1e-3, "{b}: degenerate reference logits");
        if head == Head::Linear && b == Backbone::Squeezenet1_1 {
            let negative = want.lt(0.0).sum(tch::Kind::Int64).int64_value(&[]);
            assert!(negative > 0, "the linear head's reference has no negative logit: it is the ReLU head");
        }
    }
}
