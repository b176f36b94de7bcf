//! Reads Caffe's binary `.caffemodel` (a `NetParameter` protobuf) and converts its learned
//! blobs to `.safetensors`, for `weights import-caffe`.
//!
//! Both layer encodings are read:
//! - the current `layer` field (number 100, `LayerParameter`: name 1, type 2 as a string,
//!   blobs 7), written by Caffe since 2015 (e.g. `../shared/weights/caffe-lenet-mnist`);
//! - the legacy `layers` field (number 2, `V1LayerParameter`: name 4, type 5 as an enum,
//!   blobs 6), in which older models such as `bvlc_reference_caffenet.caffemodel` may be
//!   stored, including a V0 layer nested in it (field 1: name 1, type 2, blobs 50).
//!
//! Field numbers are those of BVLC's `src/caffe/proto/caffe.proto`; only the subset needed
//! is declared in [`proto`] (prost skips the other fields).
//!
//! Tensors are named `<layer>.weight` (blob 0) and `<layer>.bias` (blob 1), as the CaffeNet
//! backbone names its parameters; blobs past the second are `<layer>.blob<i>`. Values and
//! layouts are Caffe's: convolution weights OIHW, inner-product weights `[out, in]`, and the
//! input channels of `conv1` in Caffe's BGR order.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use prost::Message;

use crate::files;
use crate::model::backbone::Backbone;
use crate::model::fit::Fit;

/// The subset of `caffe.proto` that holds learned parameters.
pub mod proto {
    /// `message NetParameter`: the whole net; a `.caffemodel` is one of these.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct NetParameter {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        /// Current layers (`repeated LayerParameter layer = 100`).
        #[prost(message, repeated, tag = "100")]
        pub layer: Vec<LayerParameter>,
        /// Legacy layers (`repeated V1LayerParameter layers = 2`).
        #[prost(message, repeated, tag = "2")]
        pub layers: Vec<V1LayerParameter>,
    }

    /// `message LayerParameter` (current format).
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct LayerParameter {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        /// The layer type as a string, e.g. `"Convolution"`, `"InnerProduct"`.
        #[prost(string, optional, tag = "2")]
        pub r#type: Option<String>,
        #[prost(message, repeated, tag = "7")]
        pub blobs: Vec<BlobProto>,
    }

    /// `message V1LayerParameter` (legacy format, field `layers` = 2 of `NetParameter`).
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct V1LayerParameter {
        #[prost(string, optional, tag = "4")]
        pub name: Option<String>,
        /// `enum LayerType`, see [`v1_layer_type`].
        #[prost(int32, optional, tag = "5")]
        pub r#type: Option<i32>,
        #[prost(message, repeated, tag = "6")]
        pub blobs: Vec<BlobProto>,
        /// The even older V0 layer, nested (`optional V0LayerParameter layer = 1`).
        #[prost(message, optional, tag = "1")]
        pub layer: Option<V0LayerParameter>,
    }

    /// `message V0LayerParameter`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct V0LayerParameter {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        /// The layer type as a lower-case string, e.g. `"conv"`, `"innerproduct"`.
        #[prost(string, optional, tag = "2")]
        pub r#type: Option<String>,
        #[prost(message, repeated, tag = "50")]
        pub blobs: Vec<BlobProto>,
    }

    /// `message BlobShape`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct BlobShape {
        #[prost(int64, repeated, packed = "true", tag = "1")]
        pub dim: Vec<i64>,
    }

    /// `message BlobProto`: a shape and row-major values.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct BlobProto {
        #[prost(message, optional, tag = "7")]
        pub shape: Option<BlobShape>,
        #[prost(float, repeated, packed = "true", tag = "5")]
        pub data: Vec<f32>,
        #[prost(double, repeated, packed = "true", tag = "8")]
        pub double_data: Vec<f64>,
        /// Legacy 4-d shape (num, channels, height, width), used when `shape` is absent.
        #[prost(int32, optional, tag = "1")]
        pub num: Option<i32>,
        #[prost(int32, optional, tag = "2")]
        pub channels: Option<i32>,
        #[prost(int32, optional, tag = "3")]
        pub height: Option<i32>,
        #[prost(int32, optional, tag = "4")]
        pub width: Option<i32>,
    }

    /// Values of `V1LayerParameter.LayerType` that carry learned blobs, and a name for all.
    pub mod v1_layer_type {
        pub const CONVOLUTION: i32 = 4;
        pub const INNER_PRODUCT: i32 = 14;
        pub const DECONVOLUTION: i32 = 39;

        /// The current (string) layer type of a V1 enum value, as Caffe's upgrade maps it.
        pub fn name(t: i32) -> &'static str {
            match t {
                0 => "",
                1 => "Accuracy",
                2 => "BNLL",
                3 => "Concat",
                4 => "Convolution",
                5 => "Data",
                6 => "Dropout",
                7 => "EuclideanLoss",
                8 => "Flatten",
                9 => "HDF5Data",
                10 => "HDF5Output",
                11 => "Im2col",
                12 => "ImageData",
                13 => "InfogainLoss",
                14 => "InnerProduct",
                15 => "LRN",
                16 => "MultinomialLogisticLoss",
                17 => "Pooling",
                18 => "ReLU",
                19 => "Sigmoid",
                20 => "Softmax",
                21 => "SoftmaxWithLoss",
                22 => "Split",
                23 => "TanH",
                24 => "WindowData",
                25 => "Eltwise",
                26 => "Power",
                27 => "SigmoidCrossEntropyLoss",
                28 => "HingeLoss",
                29 => "MemoryData",
                30 => "ArgMax",
                31 => "Threshold",
                32 => "DummyData",
                33 => "Slice",
                34 => "MVN",
                35 => "AbsVal",
                36 => "Silence",
                37 => "ContrastiveLoss",
                38 => "Exp",
                39 => "Deconvolution",
                _ => "unknown",
            }
        }
    }
}

/// One learned blob of a caffemodel, named and shaped as it is written to `.safetensors`.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedBlob {
    /// `<layer>.weight` (blob 0), `<layer>.bias` (blob 1), `<layer>.blob<i>` after that.
    pub name: String,
    /// Caffe's shape, the legacy 4-d one squeezed as Caffe reads it (see [`legacy_shape`]).
    pub shape: Vec<i64>,
    /// Row-major values (`double_data` is converted to `f32`).
    pub data: Vec<f32>,
}

/// Reads every learned blob of a `.caffemodel`, in the file's layer and blob order; layers
/// without blobs are skipped.
///
/// Errors name the file and, where one is involved, the layer: not a binary caffemodel,
/// a file truncated inside a layer, a blob whose value count disagrees with its shape,
/// duplicate layer names, or no layer with blobs at all.
pub fn read_caffemodel(path: &Path) -> anyhow::Result<Vec<NamedBlob>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // One message holding the file's name and the cause, whichever way it is printed.
    blobs_from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
}

/// Converts `input` (a `.caffemodel`) to `output` (`.safetensors`, F32, plus metadata naming
/// the source and the channel order) and returns the names and shapes written.
///
/// With `arch`, the tensors must be exactly `arch.parameter_shapes(1000)` (the ImageNet
/// network, 1000-way last layer); otherwise one error lists every missing, unexpected and
/// wrongly shaped tensor and nothing is written. The file is written to a temporary file
/// in `output`'s folder and renamed into place ([`files::write_atomic_with`]), so an error
/// never leaves a partial `output` behind; it gets mode 0666 less the umask.
///
/// Refused before anything is read: an `output` that is a symbolic link or exists but is not a
/// regular file (a device such as `/dev/null`, a folder), and an `output` that is `input`
/// itself under any spelling (`./x`, a link, a hard link: the same device and inode).
pub fn import_caffe(input: &Path, output: &Path, arch: Option<Backbone>) -> anyhow::Result<Vec<(String, Vec<i64>)>> {
    files::check_output_not_input(output, &[input], "-o")?;
    let blobs = read_caffemodel(input)?;
    let written: Vec<(String, Vec<i64>)> = blobs.iter().map(|b| (b.name.clone(), b.shape.clone())).collect();
    if let Some(arch) = arch {
        let fit = Fit::check(&written, arch, Some(1000));
        if !fit.fits() {
            bail!("{}: does not hold the ImageNet {arch} parameters: {fit}", input.display());
        }
    }

    let bytes: Vec<Vec<u8>> =
        blobs.iter().map(|b| b.data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).collect();
    let mut views = Vec::with_capacity(blobs.len());
    for (blob, data) in blobs.iter().zip(&bytes) {
        let shape = blob.shape.iter().map(|&d| d as usize).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, data)
            .with_context(|| format!("{}: tensor {}", input.display(), blob.name))?;
        views.push((blob.name.clone(), view));
    }
    let source = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let metadata = HashMap::from([
        ("source".to_string(), source),
        ("converted_by".to_string(), "deep-coral weights import-caffe".to_string()),
        ("channel_order".to_string(), "BGR".to_string()),
    ]);
    let file = safetensors::serialize(views, Some(metadata))
        .map_err(|e| anyhow::anyhow!("{}: serializing the tensors: {e}", input.display()))?;
    drop((bytes, blobs));
    files::write_atomic_with(output, |tmp| {
        let mut f = files::create_nofollow(tmp)?;
        f.write_all(&file).map_err(|e| files::io_context(e, "writing", output))?;
        f.sync_all().map_err(|e| files::io_context(e, "writing", output))
    })?;
    Ok(written)
}

/// What a byte slice turned out not to be, and where.
#[derive(Debug)]
enum WireError {
    /// The data ends inside a value that starts at `at`.
    Truncated { at: usize },
    /// Bytes at `at` are no valid protobuf field.
    Invalid { at: usize, what: String },
}

/// A cursor over protobuf wire data.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Result<u64, WireError> {
        let start = self.pos;
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let Some(&byte) = self.buf.get(self.pos) else { return Err(WireError::Truncated { at: start }) };
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(WireError::Invalid { at: start, what: "varint longer than 64 bits".into() });
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Invalid { at: start, what: "varint longer than 10 bytes".into() })
    }

    fn take(&mut self, n: u64, start: usize) -> Result<&'a [u8], WireError> {
        let rest = (self.buf.len() - self.pos) as u64;
        if n > rest {
            return Err(WireError::Truncated { at: start });
        }
        let out = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(out)
    }

    /// The next field: its number, and its bytes when length-delimited. `start` is where the
    /// field (its key) begins.
    fn field(&mut self) -> Result<(u32, Option<&'a [u8]>), WireError> {
        let start = self.pos;
        let key = self.varint()?;
        let (number, wire_type) = (key >> 3, key & 7);
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(WireError::Invalid { at: start, what: format!("field number {number}") });
        }
        let payload = match wire_type {
            0 => self.varint().map(|_| None)?,
            1 => self.take(8, start).map(|_| None)?,
            2 => {
                let len = self.varint()?;
                Some(self.take(len, start)?)
            }
            5 => self.take(4, start).map(|_| None)?,
            other => return Err(WireError::Invalid { at: start, what: format!("wire type {other}") }),
        };
        Ok((number as u32, payload))
    }
}

/// The first length-delimited field `number` of a (possibly truncated) message, as text:
/// recovers a layer's name from a layer cut short by the end of the file.
fn peek_string(buf: &[u8], number: u32) -> Option<String> {
    let mut wire = Wire { buf, pos: 0 };
    while wire.pos < buf.len() {
        match wire.field() {
            Ok((n, Some(bytes))) if n == number => return String::from_utf8(bytes.to_vec()).ok(),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// One layer, whichever encoding it came in.
struct Layer {
    name: String,
    kind: String,
    blobs: Vec<proto::BlobProto>,
}

/// `NetParameter` field numbers of the current and the legacy layer lists.
const FIELD_LAYER: u32 = 100;
const FIELD_LAYERS_V1: u32 = 2;

/// Walks the top level of a `NetParameter` by hand (rather than one `decode`), so that an
/// error can say which layer is cut short or corrupt.
fn layers_from_bytes(bytes: &[u8]) -> anyhow::Result<Vec<Layer>> {
    let mut wire = Wire { buf: bytes, pos: 0 };
    let mut layers: Vec<Layer> = Vec::new();
    let describe_last = |layers: &[Layer]| match layers.last() {
        Some(l) => format!("after layer {} '{}'", layers.len(), l.name),
        None => "before the first layer".to_string(),
    };
    while wire.pos < bytes.len() {
        let start = wire.pos;
        let (number, payload) = match wire.field() {
            Ok(field) => field,
            Err(WireError::Truncated { at }) if !layers.is_empty() => {
                // Name the layer the file ends in, when that is where it ends.
                let mut peek = Wire { buf: bytes, pos: at };
                let cut = match peek.varint() {
                    Ok(key) if matches!((key >> 3) as u32, FIELD_LAYER | FIELD_LAYERS_V1) && key & 7 == 2 => {
                        let declared = peek.varint().ok();
                        let name_field = if key >> 3 == u64::from(FIELD_LAYER) { 1 } else { 4 };
                        let name = peek_string(&bytes[peek.pos.min(bytes.len())..], name_field);
                        Some((declared, name))
                    }
                    _ => None,
                };
                let size = bytes.len();
                match cut {
                    Some((declared, name)) => bail!(
                        "truncated: the file ({size} bytes) ends inside layer {} '{}', whose {} bytes start at byte {}",
                        layers.len() + 1,
                        name.as_deref().unwrap_or("?"),
                        declared.map_or("?".to_string(), |d| d.to_string()),
                        peek.pos,
                    ),
                    None => bail!("truncated: the file ({size} bytes) ends at a field {}", describe_last(&layers)),
                }
            }
            Err(WireError::Truncated { at }) => bail!(
                "not a Caffe .caffemodel (binary NetParameter protobuf), or truncated before its first layer: \
                 a field at byte {at} runs past the end of the file ({} bytes)",
                bytes.len()
            ),
            Err(WireError::Invalid { at, what }) => bail!(
                "not a Caffe .caffemodel (binary NetParameter protobuf): invalid {what} at byte {at}, {}",
                describe_last(&layers)
            ),
        };
        let Some(payload) = payload else { continue };
        let index = layers.len() + 1;
        let layer = match number {
            FIELD_LAYER => {
                let l = proto::LayerParameter::decode(payload).map_err(|e| {
                    let name = peek_string(payload, 1).unwrap_or_else(|| "?".into());
                    anyhow::anyhow!("layer {index} '{name}' (at byte {start}) is corrupt: {e}")
                })?;
                Layer { name: l.name.unwrap_or_default(), kind: l.r#type.unwrap_or_default(), blobs: l.blobs }
            }
            FIELD_LAYERS_V1 => {
                let l = proto::V1LayerParameter::decode(payload).map_err(|e| {
                    let name = peek_string(payload, 4).unwrap_or_else(|| "?".into());
                    anyhow::anyhow!("layer {index} '{name}' (V1, at byte {start}) is corrupt: {e}")
                })?;
                match (l.name, l.layer) {
                    (None, Some(v0)) if l.blobs.is_empty() => Layer {
                        name: v0.name.unwrap_or_default(),
                        kind: v0_layer_type(v0.r#type.as_deref().unwrap_or_default()).to_string(),
                        blobs: v0.blobs,
                    },
                    (name, _) => Layer {
                        name: name.unwrap_or_default(),
                        kind: proto::v1_layer_type::name(l.r#type.unwrap_or(0)).to_string(),
                        blobs: l.blobs,
                    },
                }
            }
            _ => continue,
        };
        layers.push(layer);
    }
    Ok(layers)
}

/// The current type name of a V0 layer type string (only those with blobs matter here).
fn v0_layer_type(t: &str) -> &str {
    match t {
        "conv" => "Convolution",
        "innerproduct" => "InnerProduct",
        other => other,
    }
}

fn blobs_from_bytes(bytes: &[u8]) -> anyhow::Result<Vec<NamedBlob>> {
    let layers = layers_from_bytes(bytes)?;
    let n_layers = layers.len();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (index, layer) in layers.into_iter().enumerate() {
        if layer.blobs.is_empty() {
            continue;
        }
        let name = if layer.name.is_empty() { format!("layer{}", index + 1) } else { layer.name };
        if !seen.insert(name.clone()) {
            bail!("layer {} '{name}': a layer of that name with blobs was already read", index + 1);
        }
        for (i, blob) in layer.blobs.into_iter().enumerate() {
            let tensor = match i {
                0 => format!("{name}.weight"),
                1 => format!("{name}.bias"),
                i => format!("{name}.blob{i}"),
            };
            let context = || format!("layer {} '{name}' ({}), blob {i} ({tensor})", index + 1, layer.kind);
            let shape = blob_shape(&blob, &layer.kind, i).with_context(context)?;
            let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
            let data = if blob.data.is_empty() && !blob.double_data.is_empty() {
                blob.double_data.iter().map(|&v| v as f32).collect()
            } else {
                blob.data
            };
            if count != Some(data.len()) {
                bail!(
                    "{}: shape {shape:?} holds {} values but the blob has {}",
                    context(),
                    count.map_or("too many".to_string(), |c| c.to_string()),
                    data.len()
                );
            }
            out.push(NamedBlob { name: tensor, shape, data });
        }
    }
    if out.is_empty() {
        bail!("no layer with blobs (read {n_layers} layers): not a trained Caffe model");
    }
    Ok(out)
}

/// A blob's shape: `shape.dim` when present, else the legacy (num, channels, height, width)
/// squeezed by [`legacy_shape`]. Negative dimensions are an error.
fn blob_shape(blob: &proto::BlobProto, layer_type: &str, index: usize) -> anyhow::Result<Vec<i64>> {
    let legacy = [blob.num, blob.channels, blob.height, blob.width];
    let shape = if legacy.iter().any(Option::is_some) {
        let [n, c, h, w] = legacy.map(|d| i64::from(d.unwrap_or(0)));
        legacy_shape([n, c, h, w], layer_type, index)?
    } else {
        blob.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default()
    };
    if shape.iter().any(|&d| d < 0) {
        bail!("negative dimension in shape {shape:?}");
    }
    Ok(shape)
}

/// The shape Caffe gives a legacy 4-d blob (`Blob::LegacyShape`, leading axes of size 1):
/// an inner-product weight stored as `1 x 1 x O x I` is `[O, I]`, and a convolution or
/// inner-product bias stored as `1 x 1 x 1 x O` is `[O]`; a convolution weight keeps its
/// four axes, as do blobs of other layer types. Anything else a legacy inner-product or
/// convolution layer holds would fail Caffe's own shape check, and is an error here.
pub fn legacy_shape(nchw: [i64; 4], layer_type: &str, index: usize) -> anyhow::Result<Vec<i64>> {
    let [n, c, h, w] = nchw;
    let fc = layer_type == "InnerProduct";
    let conv = matches!(layer_type, "Convolution" | "Deconvolution");
    match index {
        0 if fc && n == 1 && c == 1 => Ok(vec![h, w]),
        0 if fc => bail!("legacy inner-product weight of shape {n}x{c}x{h}x{w} is not 1x1xOxI"),
        1 if (fc || conv) && n == 1 && c == 1 && h == 1 => Ok(vec![w]),
        1 if fc || conv => bail!("legacy bias of shape {n}x{c}x{h}x{w} is not 1x1x1xO"),
        _ => Ok(vec![n, c, h, w]),
    }
}

#[cfg(test)]
mod tests {
    use super::proto::*;
    use super::*;

    fn blob(shape: &[i64], data: Vec<f32>) -> BlobProto {
        BlobProto { shape: Some(BlobShape { dim: shape.to_vec() }), data, ..Default::default() }
    }

    fn legacy_blob(nchw: [i32; 4], data: Vec<f32>) -> BlobProto {
        let [n, c, h, w] = nchw;
        BlobProto { num: Some(n), channels: Some(c), height: Some(h), width: Some(w), data, ..Default::default() }
    }

    fn layer(name: &str, kind: &str, blobs: Vec<BlobProto>) -> LayerParameter {
        LayerParameter { name: Some(name.into()), r#type: Some(kind.into()), blobs }
    }

    fn range(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32).collect()
    }

    /// A small net in the current format: a data layer without blobs, a conv, a relu, an fc.
    fn small_net() -> NetParameter {
        NetParameter {
            name: Some("small".into()),
            layer: vec![
                layer("data", "Input", vec![]),
                layer("conv1", "Convolution", vec![blob(&[4, 3, 2, 2], range(48)), blob(&[4], range(4))]),
                layer("relu1", "ReLU", vec![]),
                layer("fc", "InnerProduct", vec![blob(&[5, 16], range(80)), blob(&[5], range(5))]),
            ],
            layers: vec![],
        }
    }

    #[test]
    fn reads_current_format_names_shapes_and_values() {
        let blobs = blobs_from_bytes(&small_net().encode_to_vec()).unwrap();
        let got: Vec<_> = blobs.iter().map(|b| (b.name.as_str(), b.shape.clone())).collect();
        assert_eq!(
            got,
            [
                ("conv1.weight", vec![4, 3, 2, 2]),
                ("conv1.bias", vec![4]),
                ("fc.weight", vec![5, 16]),
                ("fc.bias", vec![5])
            ]
        );
        assert_eq!(blobs[2].data, range(80));
    }

    #[test]
    fn legacy_v1_layers_are_squeezed_as_caffe_does() {
        let net = NetParameter {
            layers: vec![
                V1LayerParameter { name: Some("data".into()), r#type: Some(5), ..Default::default() },
                V1LayerParameter {
                    name: Some("conv1".into()),
                    r#type: Some(v1_layer_type::CONVOLUTION),
                    blobs: vec![legacy_blob([4, 3, 2, 2], range(48)), legacy_blob([1, 1, 1, 4], range(4))],
                    ..Default::default()
                },
                V1LayerParameter {
                    name: Some("fc".into()),
                    r#type: Some(v1_layer_type::INNER_PRODUCT),
                    blobs: vec![legacy_blob([1, 1, 5, 16], range(80)), legacy_blob([1, 1, 1, 5], range(5))],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let legacy = blobs_from_bytes(&net.encode_to_vec()).unwrap();
        let current = blobs_from_bytes(&small_net().encode_to_vec()).unwrap();
        assert_eq!(legacy, current);
    }

    #[test]
    fn v0_layer_nested_in_v1_is_read() {
        let v0 = V0LayerParameter {
            name: Some("fc".into()),
            r#type: Some("innerproduct".into()),
            blobs: vec![legacy_blob([1, 1, 2, 3], range(6)), legacy_blob([1, 1, 1, 2], range(2))],
        };
        let net = NetParameter {
            layers: vec![V1LayerParameter { layer: Some(v0), ..Default::default() }],
            ..Default::default()
        };
        let blobs = blobs_from_bytes(&net.encode_to_vec()).unwrap();
        assert_eq!(blobs[0].name, "fc.weight");
        assert_eq!(blobs[0].shape, [2, 3]);
        assert_eq!(blobs[1].shape, [2]);
    }

    #[test]
    fn legacy_shapes() {
        assert_eq!(legacy_shape([1, 1, 500, 800], "InnerProduct", 0).unwrap(), [500, 800]);
        assert_eq!(legacy_shape([1, 1, 1, 500], "InnerProduct", 1).unwrap(), [500]);
        assert_eq!(legacy_shape([96, 3, 11, 11], "Convolution", 0).unwrap(), [96, 3, 11, 11]);
        assert_eq!(legacy_shape([1, 1, 1, 96], "Convolution", 1).unwrap(), [96]);
        assert_eq!(legacy_shape([1, 2, 3, 4], "Scale", 1).unwrap(), [1, 2, 3, 4]);
        assert!(legacy_shape([2, 1, 500, 800], "InnerProduct", 0).is_err());
        assert!(legacy_shape([1, 1, 2, 500], "Convolution", 1).is_err());
    }

    #[test]
    fn double_data_is_read_as_f32() {
        let mut b = blob(&[2], vec![]);
        b.double_data = vec![0.5, -2.0];
        let net = NetParameter { layer: vec![layer("s", "Scale", vec![b])], ..Default::default() };
        assert_eq!(blobs_from_bytes(&net.encode_to_vec()).unwrap()[0].data, [0.5, -2.0]);
    }

    fn err(bytes: &[u8]) -> String {
        format!("{:#}", blobs_from_bytes(bytes).unwrap_err())
    }

    #[test]
    fn a_blob_of_the_wrong_length_names_its_layer() {
        let mut net = small_net();
        net.layer[3].blobs[0].data.pop();
        let e = err(&net.encode_to_vec());
        assert!(e.contains("layer 4 'fc'") && e.contains("fc.weight") && e.contains("80 values"), "{e}");
        assert!(e.contains("79"), "{e}");
    }

    #[test]
    fn a_truncated_file_names_the_layer_it_ends_in() {
        let bytes = small_net().encode_to_vec();
        let e = err(&bytes[..bytes.len() - 30]);
        assert!(e.contains("truncated") && e.contains("layer 4 'fc'"), "{e}");
    }

    #[test]
    fn jpeg_text_and_empty_files_are_refused() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00];
        assert!(err(&jpeg).contains("not a Caffe .caffemodel"), "{}", err(&jpeg));
        let text = b"name: \"LeNet\"\nlayer {\n  name: \"conv1\"\n}\n";
        assert!(err(text).contains("not a Caffe .caffemodel"), "{}", err(text));
        assert!(err(b"").contains("no layer with blobs"));
        let blobless = NetParameter { layer: vec![layer("data", "Input", vec![])], ..Default::default() };
        assert!(err(&blobless.encode_to_vec()).contains("no layer with blobs (read 1 layers)"));
    }

    #[test]
    fn duplicate_layer_names_are_refused() {
        let mut net = small_net();
        net.layer[3].name = Some("conv1".into());
        assert!(err(&net.encode_to_vec()).contains("layer 4 'conv1'"));
    }
}
