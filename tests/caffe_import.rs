//! The Caffe importer on a real `.caffemodel` (Caffe's own LeNet, trained on MNIST, in
//! `../shared/weights/caffe-lenet-mnist`): names and shapes, MNIST accuracy of the imported
//! weights (Caffe's example reaches about 99%), the legacy `layers` encoding, refused files,
//! and `inspect`.

use std::io::Read;
use std::path::{Path, PathBuf};

use deep_coral::model::backbone::Backbone;
use deep_coral::model::caffe::proto::{
    v1_layer_type, BlobProto, BlobShape, LayerParameter, NetParameter, V1LayerParameter,
};
use deep_coral::model::caffe::{import_caffe, read_caffemodel, NamedBlob};
use deep_coral::model::inspect::inspect;
use prost::Message;
use tch::{Kind, Tensor};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared");

fn lenet() -> PathBuf {
    Path::new(SHARED).join("weights/caffe-lenet-mnist/lenet_iter_10000.caffemodel")
}

/// LeNet's parameters as `lenet.prototxt` declares them.
fn lenet_shapes() -> Vec<(String, Vec<i64>)> {
    [
        ("conv1.weight", vec![20, 1, 5, 5]),
        ("conv1.bias", vec![20]),
        ("conv2.weight", vec![50, 20, 5, 5]),
        ("conv2.bias", vec![50]),
        ("ip1.weight", vec![500, 800]),
        ("ip1.bias", vec![500]),
        ("ip2.weight", vec![10, 500]),
        ("ip2.bias", vec![10]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect()
}

fn names_and_shapes(blobs: &[NamedBlob]) -> Vec<(String, Vec<i64>)> {
    blobs.iter().map(|b| (b.name.clone(), b.shape.clone())).collect()
}

/// Files in `dir`, sorted: what an import left behind.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Reads a gzip'd idx file (big-endian header: magic, dims; then u8 values).
fn read_idx(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut bytes).unwrap();
    let be = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap()) as usize;
    let ndim = bytes[3] as usize;
    assert_eq!(bytes[2], 0x08, "{}: not unsigned-byte idx", path.display());
    let dims: Vec<usize> = (1..=ndim).map(be).collect();
    let data = bytes[4 + 4 * ndim..].to_vec();
    assert_eq!(data.len(), dims.iter().product::<usize>());
    (dims, data)
}

#[test]
fn lenet_blobs_have_caffe_names_and_shapes() {
    let blobs = read_caffemodel(&lenet()).unwrap();
    assert_eq!(names_and_shapes(&blobs), lenet_shapes());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lenet.safetensors");
    assert_eq!(import_caffe(&lenet(), &out, None).unwrap(), lenet_shapes());
    assert_eq!(files_in(dir.path()), ["lenet.safetensors"]);
}

/// LeNet as `lenet.prototxt`: x/256, conv1, max-pool 2/2, conv2, max-pool 2/2, ip1, ReLU, ip2.
fn lenet_forward(p: &std::collections::HashMap<String, Tensor>, images: &Tensor) -> Tensor {
    let conv = |x: &Tensor, l: &str| {
        x.conv2d(&p[&format!("{l}.weight")], Some(&p[&format!("{l}.bias")]), [1, 1], [0, 0], [1, 1], 1)
    };
    let pool = |x: Tensor| x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], true);
    let x = images * 0.00390625; // [N, 1, 28, 28]
    let x = pool(conv(&x, "conv1")); // [N, 20, 12, 12]
    let x = pool(conv(&x, "conv2")).flatten(1, -1); // [N, 800]
    x.linear(&p["ip1.weight"], Some(&p["ip1.bias"])).relu().linear(&p["ip2.weight"], Some(&p["ip2.bias"]))
}

#[test]
fn imported_lenet_classifies_mnist() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lenet.safetensors");
    import_caffe(&lenet(), &out, None).unwrap();
    // Read back through libtorch's own safetensors reader, not ours.
    let params: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(&out).unwrap().into_iter().collect();
    let mut shapes: Vec<_> = params.iter().map(|(n, t)| (n.clone(), t.size())).collect();
    shapes.sort();
    let mut want = lenet_shapes();
    want.sort();
    assert_eq!(shapes, want);
    assert!(params.values().all(|t| t.kind() == Kind::Float));

    let mnist = Path::new(SHARED).join("data/mnist-t10k");
    let (dims, pixels) = read_idx(&mnist.join("t10k-images-idx3-ubyte.gz"));
    let (_, labels) = read_idx(&mnist.join("t10k-labels-idx1-ubyte.gz"));
    assert_eq!(dims, [10_000, 28, 28]);
    let images = Tensor::from_slice(&pixels).view([10_000, 1, 28, 28]).to_kind(Kind::Float);
    let labels = Tensor::from_slice(&labels).to_kind(Kind::Int64);

    let mut correct = 0i64;
    tch::no_grad(|| {
        for start in (0..10_000).step_by(1000) {
            let logits = lenet_forward(&params, &images.narrow(0, start, 1000));
            let hits = logits.argmax(1, false).eq_tensor(&labels.narrow(0, start, 1000));
            correct += hits.sum(Kind::Int64).int64_value(&[]);
        }
    });
    let accuracy = correct as f64 / 10_000.0;
    println!("imported Caffe LeNet on MNIST t10k: {correct}/10000 = {:.2}%", 100.0 * accuracy);
    assert!(accuracy >= 0.98, "accuracy {accuracy}");
}

/// The caffe.proto `V1LayerParameter.LayerType` of a current type name (LeNet's types).
fn v1_type(kind: &str) -> i32 {
    match kind {
        "Data" => 5,
        "Convolution" => v1_layer_type::CONVOLUTION,
        "Pooling" => 17,
        "InnerProduct" => v1_layer_type::INNER_PRODUCT,
        "ReLU" => 18,
        "SoftmaxWithLoss" => 21,
        other => panic!("{other}"),
    }
}

/// LeNet's layers, with the blobs of `blobs` where the layer has some.
fn lenet_layers(blobs: &[NamedBlob]) -> Vec<(&'static str, &'static str, Vec<&NamedBlob>)> {
    let of = |layer: &str| blobs.iter().filter(|b| b.name.starts_with(&format!("{layer}."))).collect::<Vec<_>>();
    vec![
        ("mnist", "Data", vec![]),
        ("conv1", "Convolution", of("conv1")),
        ("pool1", "Pooling", vec![]),
        ("conv2", "Convolution", of("conv2")),
        ("pool2", "Pooling", vec![]),
        ("ip1", "InnerProduct", of("ip1")),
        ("relu1", "ReLU", vec![]),
        ("ip2", "InnerProduct", of("ip2")),
        ("loss", "SoftmaxWithLoss", vec![]),
    ]
}

/// The net in the current `layer` format (field 100), blobs with `shape`.
fn encode_current(blobs: &[NamedBlob]) -> Vec<u8> {
    let layer = lenet_layers(blobs)
        .into_iter()
        .map(|(name, kind, blobs)| LayerParameter {
            name: Some(name.into()),
            r#type: Some(kind.into()),
            blobs: blobs
                .into_iter()
                .map(|b| BlobProto {
                    shape: Some(BlobShape { dim: b.shape.clone() }),
                    data: b.data.clone(),
                    ..Default::default()
                })
                .collect(),
        })
        .collect();
    NetParameter { name: Some("LeNet".into()), layer, layers: vec![] }.encode_to_vec()
}

/// The net in the legacy `layers` format (field 2), blobs with Caffe's legacy 4-d shapes:
/// conv weights OIHW, inner-product weights 1x1xOxI, biases 1x1x1xO.
fn encode_legacy(blobs: &[NamedBlob]) -> Vec<u8> {
    let layers = lenet_layers(blobs)
        .into_iter()
        .map(|(name, kind, blobs)| V1LayerParameter {
            name: Some(name.into()),
            r#type: Some(v1_type(kind)),
            blobs: blobs
                .into_iter()
                .map(|b| {
                    let mut nchw = [1i32; 4];
                    for (slot, &d) in nchw.iter_mut().rev().zip(b.shape.iter().rev()) {
                        *slot = d as i32;
                    }
                    let [n, c, h, w] = nchw;
                    BlobProto {
                        num: Some(n),
                        channels: Some(c),
                        height: Some(h),
                        width: Some(w),
                        data: b.data.clone(),
                        ..Default::default()
                    }
                })
                .collect(),
            layer: None,
        })
        .collect();
    NetParameter { name: Some("LeNet".into()), layer: vec![], layers }.encode_to_vec()
}

#[test]
fn legacy_layers_format_imports_to_the_same_tensors() {
    let blobs = read_caffemodel(&lenet()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let current = dir.path().join("current.caffemodel");
    let legacy = dir.path().join("legacy.caffemodel");
    std::fs::write(&current, encode_current(&blobs)).unwrap();
    let legacy_bytes = encode_legacy(&blobs);
    std::fs::write(&legacy, &legacy_bytes).unwrap();

    // The legacy file really is in the V1 encoding, with 4-d blob shapes.
    let decoded = NetParameter::decode(legacy_bytes.as_slice()).unwrap();
    assert!(decoded.layer.is_empty());
    assert_eq!(decoded.layers.len(), 9);
    let ip1 = &decoded.layers[5].blobs[0];
    assert!(ip1.shape.is_none());
    assert_eq!((ip1.num, ip1.channels, ip1.height, ip1.width), (Some(1), Some(1), Some(500), Some(800)));

    assert_eq!(read_caffemodel(&current).unwrap(), blobs);
    assert_eq!(read_caffemodel(&legacy).unwrap(), blobs);

    let from_current = import_caffe(&current, &dir.path().join("current.safetensors"), None).unwrap();
    let from_legacy = import_caffe(&legacy, &dir.path().join("legacy.safetensors"), None).unwrap();
    assert_eq!(from_current, lenet_shapes());
    assert_eq!(from_legacy, lenet_shapes());
    let read = |name: &str| {
        let mut t = Tensor::read_safetensors(dir.path().join(name)).unwrap();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    let (a, b) = (read("current.safetensors"), read("legacy.safetensors"));
    assert_eq!(a.len(), 8);
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na}");
    }
}

/// The error of a refused import, and that it left nothing beside the inputs.
fn refused(input: &Path, arch: Option<Backbone>) -> String {
    let dir = input.parent().unwrap();
    let before = files_in(dir);
    let out = dir.join("out.safetensors");
    let e = format!("{:#}", import_caffe(input, &out, arch).unwrap_err());
    assert!(!out.exists(), "{e}");
    assert_eq!(files_in(dir), before, "{e}");
    println!("refused: {e}");
    e
}

#[test]
fn bad_files_are_refused_naming_the_file_and_the_layer() {
    let dir = tempfile::tempdir().unwrap();

    // Not a caffemodel: a JPEG, and LeNet's text prototxt.
    let jpeg = dir.path().join("photo.jpg");
    std::fs::write(&jpeg, [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01]).unwrap();
    let e = refused(&jpeg, None);
    assert!(e.contains("photo.jpg") && e.contains("not a Caffe .caffemodel"), "{e}");
    let text = dir.path().join("lenet.prototxt");
    std::fs::copy(Path::new(SHARED).join("weights/caffe-lenet-mnist/lenet.prototxt"), &text).unwrap();
    let e = refused(&text, None);
    assert!(e.contains("lenet.prototxt") && e.contains("not a Caffe .caffemodel"), "{e}");

    // Truncated: the real file cut in half ends inside ip1's 1.6 MB of weights.
    let bytes = std::fs::read(lenet()).unwrap();
    let half = dir.path().join("half.caffemodel");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let e = refused(&half, None);
    assert!(e.contains("half.caffemodel") && e.contains("truncated") && e.contains("'ip1'"), "{e}");

    // A blob whose values disagree with its shape.
    let mut blobs = read_caffemodel(&lenet()).unwrap();
    blobs.iter_mut().find(|b| b.name == "ip2.weight").unwrap().data.pop();
    let short = dir.path().join("short.caffemodel");
    std::fs::write(&short, encode_current(&blobs)).unwrap();
    let e = refused(&short, None);
    assert!(e.contains("short.caffemodel") && e.contains("'ip2'") && e.contains("ip2.weight"), "{e}");
    assert!(e.contains("[10, 500] holds 5000 values but the blob has 4999"), "{e}");
    let e = format!("{:#}", inspect(&short).unwrap_err());
    assert!(e.contains("short.caffemodel") && e.contains("ip2.weight"), "{e}");

    // LeNet is no CaffeNet: every difference is listed at once.
    let lenet_copy = dir.path().join("lenet_iter_10000.caffemodel");
    std::fs::copy(lenet(), &lenet_copy).unwrap();
    let e = refused(&lenet_copy, Some(Backbone::Caffenet));
    for part in [
        "lenet_iter_10000.caffemodel",
        "caffenet",
        "conv1.weight is [20, 1, 5, 5], expected [96, 3, 11, 11]",
        "conv2.bias is [50], expected [256]",
        "missing 12: conv3.bias [384]",
        "fc8.weight [1000, 4096]",
        "unexpected 4: ip1.weight [500, 800], ip1.bias [500], ip2.weight [10, 500], ip2.bias [10]",
    ] {
        assert!(e.contains(part), "{part:?} not in {e}");
    }
}

#[test]
fn inspect_lists_tensors_and_the_backbone_a_file_fits() {
    let dir = tempfile::tempdir().unwrap();

    // A SqueezeNet 1.1 with a 10-way last layer, written by the test.
    let shapes = Backbone::Squeezenet1_1.parameter_shapes(10);
    let bytes: Vec<Vec<u8>> = shapes.iter().map(|(_, s)| vec![0u8; 4 * s.iter().product::<i64>() as usize]).collect();
    let views = shapes.iter().zip(&bytes).map(|((n, s), b)| {
        let shape = s.iter().map(|&d| d as usize).collect();
        (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, b).unwrap())
    });
    let squeeze = dir.path().join("squeeze.safetensors");
    safetensors::serialize_to_file(views, None, &squeeze).unwrap();
    let params: i64 = shapes.iter().map(|(_, s)| s.iter().product::<i64>()).sum();
    let text = inspect(&squeeze).unwrap();
    println!("{text}");
    assert!(text.contains("tensors: 52, parameters: ") && text.contains(&format!("({params})")), "{text}");
    assert!(text.contains("features.0.weight") && text.contains("[64, 3, 3, 3]") && text.contains("F32"), "{text}");
    assert!(text.contains("squeezenet1_1  fits (last layer classifier.1: 10 outputs)"), "{text}");
    assert!(text.contains("alexnet        does not fit: missing 12"), "{text}");
    assert!(text.contains("caffenet       does not fit: missing 16"), "{text}");

    // The imported LeNet fits none, and the caffemodel itself reads the same.
    let out = dir.path().join("lenet.safetensors");
    import_caffe(&lenet(), &out, None).unwrap();
    let text = inspect(&out).unwrap();
    println!("{text}");
    assert!(text.contains("metadata: channel_order = BGR"), "{text}");
    assert!(text.contains("metadata: source = lenet_iter_10000.caffemodel"), "{text}");
    assert!(text.contains("tensors: 8, parameters: 431,080 (431080)"), "{text}");
    assert!(text.contains("ip1.weight    [500, 800]"), "{text}");
    assert_eq!(text.matches("does not fit").count(), 3, "{text}");
    let text = inspect(&lenet()).unwrap();
    assert!(text.contains("format: caffemodel") && text.contains("parameters: 431,080"), "{text}");
}
