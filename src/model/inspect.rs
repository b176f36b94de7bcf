//! `weights inspect`: what a `.safetensors` or `.caffemodel` holds (names, shapes, dtypes,
//! parameter count) and which backbones it fits ([`Fit`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};

use crate::model::backbone::Backbone;
use crate::model::fit::Fit;

/// One tensor as listed: name, shape, dtype (safetensors' names: `F32`, `F16`, ...).
struct Entry {
    name: String,
    shape: Vec<i64>,
    dtype: String,
}

/// A text report on a weights file: format, every tensor with shape and dtype, the total
/// parameter count, and for each backbone of [`Backbone::ALL`] whether the file fits it
/// (every parameter present with the right shape, the last layer with any number of outputs)
/// or what is missing, mis-shaped or unexpected.
///
/// `.safetensors` files are read by their header only (any dtype); `.caffemodel` files
/// through [`crate::model::caffe::read_caffemodel`]. Other extensions are tried as both.
pub fn inspect(path: &Path) -> anyhow::Result<String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    let (format, metadata, entries) = match ext.as_str() {
        "safetensors" => read_safetensors(path).map(|(m, e)| ("safetensors", m, e))?,
        "caffemodel" => ("caffemodel", BTreeMap::new(), read_caffe(path)?),
        _ => match read_safetensors(path) {
            Ok((m, e)) => ("safetensors", m, e),
            Err(st) => match read_caffe(path) {
                Ok(e) => ("caffemodel", BTreeMap::new(), e),
                Err(caffe) => {
                    bail!("{}: neither safetensors ({st:#}) nor caffemodel ({caffe:#})", path.display())
                }
            },
        },
    };

    let params: i64 = entries.iter().map(|e| e.shape.iter().product::<i64>()).sum();
    let mut out = String::new();
    writeln!(out, "{}", path.display())?;
    writeln!(out, "format: {format}")?;
    for (k, v) in &metadata {
        writeln!(out, "metadata: {k} = {v}")?;
    }
    writeln!(out, "tensors: {}, parameters: {} ({params})", entries.len(), thousands(params))?;
    let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
    let shapes: Vec<String> = entries.iter().map(|e| format!("{:?}", e.shape)).collect();
    let shape_width = shapes.iter().map(String::len).max().unwrap_or(0);
    for (e, shape) in entries.iter().zip(&shapes) {
        let count = thousands(e.shape.iter().product());
        writeln!(out, "  {:width$}  {shape:shape_width$}  {:4}  {count:>12}", e.name, e.dtype)?;
    }

    writeln!(out, "backbones:")?;
    let have: Vec<(String, Vec<i64>)> = entries.iter().map(|e| (e.name.clone(), e.shape.clone())).collect();
    let name_width = Backbone::ALL.iter().map(|b| b.name().len()).max().unwrap_or(0);
    for b in Backbone::ALL {
        let fit = Fit::check(&have, b, None);
        let verdict = if fit.fits() {
            let last = format!("{}.weight", b.last_layer());
            let outputs = have.iter().find(|(n, _)| *n == last).and_then(|(_, s)| s.first().copied()).unwrap_or(0);
            format!("fits (last layer {}: {outputs} outputs)", b.last_layer())
        } else {
            format!("does not fit: {}", fit.summary(8))
        };
        writeln!(out, "  {:name_width$}  {verdict}", b.name())?;
    }
    Ok(out)
}

/// 1234567 -> "1,234,567".
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

fn read_caffe(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let blobs = crate::model::caffe::read_caffemodel(path)?;
    Ok(blobs.into_iter().map(|b| Entry { name: b.name, shape: b.shape, dtype: "F32".into() }).collect())
}

/// The header of a `.safetensors` file, without reading its data: metadata and tensors in
/// file order. The file's length must match the header's offsets.
fn read_safetensors(path: &Path) -> anyhow::Result<(BTreeMap<String, String>, Vec<Entry>)> {
    let fail = |what: String| anyhow::anyhow!("{}: not a valid safetensors file: {what}", path.display());
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(|_| fail(format!("{size} bytes, shorter than the 8-byte header length")))?;
    let n = u64::from_le_bytes(n);
    if n > size - 8 || n > 100_000_000 {
        return Err(fail(format!("header length {n} does not fit in the file's {size} bytes")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(|e| fail(format!("reading the header: {e}")))?;
    let meta: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| fail(format!("header is not safetensors JSON: {e}")))?;
    let expected = 8 + n + meta.data_len() as u64;
    if expected != size {
        return Err(fail(format!("the header describes {expected} bytes but the file has {size} (truncated?)")));
    }
    let infos = meta.tensors();
    let entries = meta
        .offset_keys()
        .into_iter()
        .map(|name| {
            let info = infos[&name];
            Entry { shape: info.shape.iter().map(|&d| d as i64).collect(), dtype: format!("{:?}", info.dtype), name }
        })
        .collect();
    let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    Ok((metadata, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_235_496), "1,235,496");
        assert_eq!(thousands(-12345), "-12,345");
    }

    #[test]
    fn fit_reports_missing_wrong_and_unexpected() {
        let mut have = Backbone::Squeezenet1_1.parameter_shapes(10);
        assert!(Fit::check(&have, Backbone::Squeezenet1_1, None).fits());
        let strict = Fit::check(&have, Backbone::Squeezenet1_1, Some(1000));
        assert_eq!(
            strict.wrong_shape,
            [
                ("classifier.1.bias".to_string(), vec![10], vec![1000]),
                ("classifier.1.weight".to_string(), vec![10, 512, 1, 1], vec![1000, 512, 1, 1])
            ]
        );
        assert!(strict.missing.is_empty() && strict.unexpected.is_empty(), "{strict}");

        have.retain(|(n, _)| n != "features.0.bias");
        have.push(("extra.weight".into(), vec![3]));
        have.iter_mut().find(|(n, _)| n == "features.3.squeeze.weight").unwrap().1 = vec![1, 2];
        let fit = Fit::check(&have, Backbone::Squeezenet1_1, None);
        assert_eq!(fit.missing, [("features.0.bias".to_string(), vec![64])]);
        assert_eq!(fit.unexpected, [("extra.weight".to_string(), vec![3])]);
        assert_eq!(fit.wrong_shape.len(), 1);
        let text = fit.to_string();
        assert!(text.contains("missing 1: features.0.bias [64]"), "{text}");
        assert!(text.contains("features.3.squeeze.weight is [1, 2], expected [16, 64, 1, 1]"), "{text}");
        assert!(text.contains("unexpected 1: extra.weight [3]"), "{text}");
        let fit = Fit::check(&[], Backbone::Squeezenet1_1, None);
        assert!(fit.summary(2).contains(", ... and 50 more"), "{}", fit.summary(2));
    }

    #[test]
    fn inspect_reads_a_safetensors_header_of_any_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let a = [0u8; 2 * 3 * 2];
        let b = [0u8; 4 * 8];
        let views = [
            ("a.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2, 3], &a).unwrap()),
            ("b", safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![4], &b).unwrap()),
        ];
        let meta = std::collections::HashMap::from([("source".to_string(), "test".to_string())]);
        safetensors::serialize_to_file(views, Some(meta), &path).unwrap();
        let text = inspect(&path).unwrap();
        assert!(text.contains("format: safetensors") && text.contains("metadata: source = test"), "{text}");
        assert!(text.contains("tensors: 2, parameters: 10 (10)"), "{text}");
        assert!(text.contains("a.weight  [2, 3]  F16"), "{text}");
        assert!(text.contains("b         [4]     F64"), "{text}");
        assert!(text.contains("squeezenet1_1  does not fit: missing 52"), "{text}");

        // Cut the data short: the header no longer matches the file.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let e = format!("{:#}", inspect(&path).unwrap_err());
        assert!(e.contains("t.safetensors") && e.contains("truncated"), "{e}");
        std::fs::write(&path, b"hello").unwrap();
        let e = format!("{:#}", inspect(&path).unwrap_err());
        assert!(e.contains("t.safetensors") && e.contains("not a valid safetensors"), "{e}");
    }
}
