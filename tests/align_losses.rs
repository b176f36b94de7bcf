//! DDC's and DAN's losses against independent float64 PyTorch implementations
//! (`tests/data/align_reference.py`, written from the papers' formulas): the value and the
//! gradient with respect to both branches, over several batch sizes and widths, unequal source
//! and target batches included (the MK-MMD estimate pairs the first even count of the smaller
//! batch), to 1e-10 relative. Needs the project's Python with torch (`make setup`).

mod common;

use deep_coral::train::align::{mk_mmd, mmd};
use tch::{Device, Kind, Tensor};

#[test]
fn mmd_and_mk_mmd_equal_an_independent_float64_implementation() {
    let tmp = tempfile::tempdir().unwrap();
    tch::manual_seed(11);
    // (method: 0 linear MMD, 1 MK-MMD; n_S, n_T, d, shift of the target)
    let cases = [
        (0, 2, 2, 1, 0.0),
        (0, 16, 16, 10, 0.5),
        (0, 5, 9, 256, 1.0),
        (0, 128, 64, 31, 0.2),
        (1, 2, 2, 3, 0.0),
        (1, 16, 16, 10, 0.5),
        (1, 7, 12, 31, 1.0),
        (1, 32, 32, 512, 0.3),
    ];
    let mut inputs = Vec::new();
    for (k, &(method, ns, nt, d, shift)) in cases.iter().enumerate() {
        let s = Tensor::randn([ns, d], (Kind::Double, Device::Cpu));
        let t = Tensor::randn([nt, d], (Kind::Double, Device::Cpu)) * 1.5 + shift;
        inputs.push((format!("c{k}.source"), s));
        inputs.push((format!("c{k}.target"), t));
        inputs.push((format!("c{k}.method"), Tensor::from_slice(&[method as i64])));
    }
    let input_path = tmp.path().join("in.safetensors");
    Tensor::write_safetensors(&inputs, &input_path).unwrap();
    let output_path = tmp.path().join("out.safetensors");
    common::run_ok(
        std::process::Command::new(common::python())
            .arg(common::root().join("tests/data/align_reference.py"))
            .arg(&input_path)
            .arg(&output_path),
    );
    let reference: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(&output_path).unwrap().into_iter().collect();
    let inputs: std::collections::HashMap<String, Tensor> = inputs.into_iter().collect();
    let rel = |a: &Tensor, b: &Tensor| {
        let scale = b.abs().max().double_value(&[]).max(1e-300);
        (a - b).abs().max().double_value(&[]) / scale
    };
    for (k, &(method, ns, nt, d, _)) in cases.iter().enumerate() {
        let s = inputs[&format!("c{k}.source")].copy().set_requires_grad(true);
        let t = inputs[&format!("c{k}.target")].copy().set_requires_grad(true);
        let loss = match method {
            0 => mmd::linear_mmd2(&s, &t).unwrap(),
            _ => mk_mmd::mk_mmd2(&s, &t).unwrap(),
        };
        loss.backward();
        let label = format!("case {k} ({}, n_S {ns}, n_T {nt}, d {d})", ["linear MMD", "MK-MMD"][method]);
        let want = reference[&format!("c{k}.loss")].double_value(&[0]);
        let got = loss.double_value(&[]);
        assert!((got - want).abs() <= 1e-10 * want.abs().max(1e-12), "{label}: loss {got} vs {want}");
        for (branch, grad, x) in [("source", "grad_source", &s), ("target", "grad_target", &t)] {
            let d = rel(&x.grad(), &reference[&format!("c{k}.{grad}")]);
            assert!(d <= 1e-10, "{label}: the gradient with respect to the {branch} differs by {d:.2e}");
        }
        println!("{label}: loss {got:.6e}, matches");
    }
}
