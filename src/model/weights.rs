//! Pretrained weights into a VarStore, strictly by name: the file must hold every parameter of
//! the backbone except its last layer, with the right shapes, and nothing else but the
//! pretrained 1000-way last layer, which is dropped (the new last layer keeps its
//! N(0, 0.005) initialisation). One error lists every missing, unexpected and mis-shaped tensor.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{nn, Kind, Tensor};

use crate::model::backbone::Backbone;

/// Reads every tensor of a `.safetensors` file; the error names the file.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        bail!("weights file {} does not exist", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading weights file {}", path.display()))?;
    if bytes.starts_with(&[0x0a]) || path.extension().is_some_and(|e| e == "caffemodel") {
        bail!(
            "weights file {} looks like a Caffe .caffemodel; convert it first with \
             `deep-coral weights import-caffe {} -o OUT.safetensors`",
            path.display(),
            path.display()
        );
    }
    safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("weights file {} is not a valid .safetensors file: {e}", path.display()))?;
    Tensor::read_safetensors(path).with_context(|| format!("loading tensors from {}", path.display()))
}

/// Copies the pretrained tensors in `path` into `vs`, which holds `backbone` with its new last
/// layer. Tensors are converted to the variables' dtype and device.
pub fn load_pretrained(vs: &mut nn::VarStore, path: &Path, backbone: Backbone) -> Result<()> {
    load(vs, path, backbone, true)
}

/// Copies every tensor of `path`, the last layer included, into `vs` (same strictness): for
/// checking a backbone against its reference implementation with the reference's own head.
pub fn load_full(vs: &mut nn::VarStore, path: &Path, backbone: Backbone) -> Result<()> {
    load(vs, path, backbone, false)
}

fn load(vs: &mut nn::VarStore, path: &Path, backbone: Backbone, replace_last: bool) -> Result<()> {
    let file: BTreeMap<String, Tensor> = read_safetensors(path)?.into_iter().collect();
    let vars = vs.variables();
    let skip = |name: &str| replace_last && backbone.is_new_layer(name);
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for (name, var) in &vars {
        if skip(name) {
            continue;
        }
        match file.get(name) {
            None => missing.push(format!("{name} {:?}", var.size())),
            Some(t) if t.size() != var.size() => {
                misshaped.push(format!("{name}: file {:?}, {backbone} expects {:?}", t.size(), var.size()))
            }
            Some(_) => {}
        }
    }
    let unexpected: Vec<String> = file
        .iter()
        .filter(|(name, _)| !vars.contains_key(*name) && !skip(name))
        .map(|(name, t)| format!("{name} {:?}", t.size()))
        .collect();
    if !(missing.is_empty() && misshaped.is_empty() && unexpected.is_empty()) {
        let mut msg = format!("weights file {} does not fit backbone {backbone}:", path.display());
        for (what, list) in [("missing", &missing), ("wrong shape", &misshaped), ("unexpected", &unexpected)] {
            if !list.is_empty() {
                msg.push_str(&format!("\n  {what} ({}): {}", list.len(), list.join(", ")));
            }
        }
        bail!(msg);
    }
    // A NaN or an infinity would make the first step's loss NaN ("diverged at 0"): refused here,
    // naming every such tensor. Checked in the variable's dtype, in which a large F64 value may
    // become infinite.
    let mut bad: Vec<String> = vars
        .iter()
        .filter(|(name, _)| !skip(name))
        .filter_map(|(name, var)| {
            let t = file.get(name)?;
            if t.kind() == var.kind() {
                non_finite(name, t)
            } else {
                non_finite(name, &t.to_kind(var.kind()))
            }
        })
        .collect();
    bad.sort();
    if !bad.is_empty() {
        bail!(
            "weights file {} holds values that are not finite (NaN or infinite) in {} tensor{}: {}",
            path.display(),
            bad.len(),
            if bad.len() == 1 { "" } else { "s" },
            bad.join("; ")
        );
    }
    tch::no_grad(|| {
        for (name, var) in &vars {
            if let Some(t) = file.get(name).filter(|_| !skip(name)) {
                let mut var = var.shallow_clone();
                var.copy_(&t.to_kind(var.kind()).to_device(var.device()));
            }
        }
    });
    Ok(())
}

/// `"<name> [shape]: 1 NaN, 2 infinite of 9 values"` when `t` (a floating-point tensor) holds
/// values that are not finite, else `None`.
fn non_finite(name: &str, t: &Tensor) -> Option<String> {
    if !t.is_floating_point() || t.numel() == 0 {
        return None;
    }
    let finite = t.isfinite();
    if finite.all().int64_value(&[]) != 0 {
        return None;
    }
    let nan = t.isnan().sum(Kind::Int64).int64_value(&[]);
    let inf = t.isinf().sum(Kind::Int64).int64_value(&[]);
    let mut what = Vec::new();
    if nan > 0 {
        what.push(format!("{nan} NaN"));
    }
    if inf > 0 {
        what.push(format!("{inf} infinite"));
    }
    Some(format!("{name} {:?}: {} of {} values", t.size(), what.join(", "), t.numel()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn save(path: &Path, tensors: &[(String, Tensor)]) {
        Tensor::write_safetensors(tensors, path).unwrap();
    }

    #[test]
    fn loads_by_name_and_keeps_the_new_last_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let src = nn::VarStore::new(Device::Cpu);
        let _ = Backbone::Squeezenet1_1.build(&src.root(), 1000);
        let tensors: Vec<(String, Tensor)> = src.variables().into_iter().collect();
        let path = tmp.path().join("sq.safetensors");
        save(&path, &tensors);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _ = Backbone::Squeezenet1_1.build(&vs.root(), 10);
        load_pretrained(&mut vs, &path, Backbone::Squeezenet1_1).unwrap();
        let (got, want) = (vs.variables(), src.variables());
        assert!(got["features.3.squeeze.weight"].equal(&want["features.3.squeeze.weight"]));
        assert_eq!(got["classifier.1.weight"].size(), [10, 512, 1, 1]);
        assert_eq!(got["classifier.1.bias"].abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn one_error_lists_every_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let src = nn::VarStore::new(Device::Cpu);
        let _ = Backbone::Caffenet.build(&src.root(), 1000);
        let mut tensors: Vec<(String, Tensor)> =
            src.variables().into_iter().filter(|(k, _)| k != "conv3.bias").collect();
        tensors.push(("extra.weight".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu))));
        for (k, t) in tensors.iter_mut() {
            if k == "fc6.bias" {
                *t = Tensor::zeros([7], (Kind::Float, Device::Cpu));
            }
        }
        let path = tmp.path().join("bad.safetensors");
        save(&path, &tensors);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _ = Backbone::Caffenet.build(&vs.root(), 31);
        let err = load_pretrained(&mut vs, &path, Backbone::Caffenet).unwrap_err().to_string();
        for want in ["bad.safetensors", "missing (1): conv3.bias", "fc6.bias: file [7]", "unexpected (1): extra.weight"]
        {
            assert!(err.contains(want), "{want} not in {err}");
        }
    }

    #[test]
    fn missing_or_foreign_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _ = Backbone::Alexnet.build(&vs.root(), 3);
        let nope = tmp.path().join("nope.safetensors");
        let err = load_pretrained(&mut vs, &nope, Backbone::Alexnet).unwrap_err().to_string();
        assert!(err.contains("nope.safetensors") && err.contains("does not exist"), "{err}");
        let junk = tmp.path().join("junk.safetensors");
        std::fs::write(&junk, b"GIF89a not weights").unwrap();
        let err = load_pretrained(&mut vs, &junk, Backbone::Alexnet).unwrap_err().to_string();
        assert!(err.contains("junk.safetensors") && err.contains("not a valid .safetensors"), "{err}");
    }

    #[test]
    fn non_finite_values_are_refused_naming_the_tensor() {
        let tmp = tempfile::tempdir().unwrap();
        let src = nn::VarStore::new(Device::Cpu);
        let _ = Backbone::Squeezenet1_1.build(&src.root(), 1000);
        // One element of a tensor set to `value`.
        let poison = |t: &Tensor, value: f64| {
            let c = t.detach().copy();
            let _ = c.view(-1).get(0).fill_(value);
            c
        };
        let mut tensors: Vec<(String, Tensor)> = src.variables().into_iter().collect();
        for (k, t) in tensors.iter_mut() {
            match k.as_str() {
                "features.3.squeeze.weight" => *t = poison(t, f64::NAN),
                "features.0.bias" => *t = poison(t, f64::INFINITY),
                // The dropped 1000-way layer is not loaded: a NaN there does not matter.
                "classifier.1.bias" => *t = poison(t, f64::NAN),
                _ => {}
            }
        }
        let path = tmp.path().join("nan.safetensors");
        save(&path, &tensors);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _ = Backbone::Squeezenet1_1.build(&vs.root(), 10);
        let before = vs.variables()["features.0.bias"].copy();
        let err = load_pretrained(&mut vs, &path, Backbone::Squeezenet1_1).unwrap_err().to_string();
        for want in
            ["nan.safetensors", "2 tensors", "features.3.squeeze.weight", "1 NaN", "features.0.bias", "1 infinite"]
        {
            assert!(err.contains(want), "{want} not in {err}");
        }
        assert!(!err.contains("classifier.1.bias"), "{err}");
        // Nothing was copied.
        assert!(vs.variables()["features.0.bias"].equal(&before));
    }
}
