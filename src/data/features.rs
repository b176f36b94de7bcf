//! The feature cache of `--finetune fc|last`: the frozen trunk's outputs for every image of a
//! domain under a fixed set of views, computed once and kept on disk, so training runs only
//! the head. View 0 is the centre crop (what evaluation sees), view 1 its mirror image.
//!
//! A cache file is named by a SHA-256 over everything its numbers depend on: backbone, cut,
//! input convention, memory layout, device kind, libtorch version, the bytes of the weights
//! file and the bytes, names and labels of every image of the domain. A sweep's runs (every
//! lambda and seed of a transfer, and every transfer sharing the domain) reuse one file; a
//! changed image or weights file makes a new one. The file is bound to that key, not to its
//! name: the key is stored inside it (a `key` tensor of its 32 bytes) and in its sidecar, and a
//! file whose key is not the one its inputs give now (another domain's file copied over this
//! name, say) is rebuilt, never read. Files are written under a temporary name of
//! their process and renamed (`files::write_atomic_with`), so a run killed mid-write, or two
//! runs building the same file at once, never leave a partial file behind; delete the folder to
//! reclaim the space.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::config::TrainConfig;
use crate::data::batches::{self, View};
use crate::data::domain::Domain;
use crate::data::images::{self, SkippedImage};
use crate::model::backbone::{Finetune, InputConvention, Network};

/// Changes whenever the meaning of a cache file changes (v2: the key inside the file).
const FORMAT: &str = "deep-coral features v2";
/// Images per trunk forward pass while building.
const CHUNK: usize = 64;

/// The fixed views whose features are cached: the centre crop and its mirror image.
pub fn views(crop: usize) -> [View; 2] {
    let centre = View::centre(crop);
    [centre, View { mirror: true, ..centre }]
}

/// A domain's trunk features for the fixed views.
pub struct FeatureSet {
    /// `[views * n, ...]`: row `v * n + i` is view `v` of image `i`.
    pub features: Tensor,
    pub labels: Vec<i64>,
    /// Files that failed to decode when the cache was built (only with `skip_bad_images`).
    pub skipped: Vec<SkippedImage>,
}

impl FeatureSet {
    /// Number of cached views per image.
    pub fn views(&self) -> usize {
        self.features.size()[0] as usize / self.labels.len()
    }

    /// The features of view `views[k]` of image `indices[k]`, on `device`.
    pub fn select(&self, indices: &[usize], views: &[usize], device: Device) -> Tensor {
        let n = self.labels.len();
        let rows: Vec<i64> = indices.iter().zip(views).map(|(&i, &v)| (v * n + i) as i64).collect();
        let rows = Tensor::from_slice(&rows).to_device(self.features.device());
        self.features.index_select(0, &rows).to_device(device)
    }
}

/// What a cache file holds besides the tensors (a JSON file beside it).
#[derive(Serialize, Deserialize)]
struct Sidecar {
    format: String,
    /// The hex `cache_key` of the inputs the features were computed from.
    key: String,
    backbone: String,
    finetune: Finetune,
    domain: String,
    weights: PathBuf,
    images: usize,
    skipped: Vec<SkippedImage>,
}

/// The cached features of `domain` at `cfg.finetune`'s cut, built with `net`'s trunk (on
/// `device`) if no valid cache file exists, and returned on `device`.
pub fn load_or_build(cfg: &TrainConfig, domain: &Domain, net: &dyn Network, device: Device) -> Result<FeatureSet> {
    let cut = cfg.finetune;
    assert_ne!(cut, Finetune::All, "the whole network trains on images, not cached features");
    let key = cache_key(cfg, domain, device)?;
    let stem = format!("{}-{}-{}-{}", cfg.backbone, cut.name(), domain.name, &key[..16]);
    let file = cfg.feature_cache.join(format!("{stem}.safetensors"));
    let sidecar = cfg.feature_cache.join(format!("{stem}.json"));
    if file.is_file() {
        match read(&file, &sidecar, &key) {
            Ok(set) => {
                eprintln!("{:>10} features: cached in {}", domain.name, file.display());
                return Ok(FeatureSet { features: set.features.to_device(device), ..set });
            }
            Err(e) => eprintln!("warning: rebuilding {} ({e:#})", file.display()),
        }
    }
    let set = build(cfg, domain, net, device)?;
    std::fs::create_dir_all(&cfg.feature_cache)
        .with_context(|| format!("creating feature cache folder {}", cfg.feature_cache.display()))?;
    let meta = Sidecar {
        format: FORMAT.into(),
        key: key.clone(),
        backbone: cfg.backbone.name().into(),
        finetune: cut,
        domain: domain.name.clone(),
        weights: cfg.weights.clone(),
        images: set.labels.len(),
        skipped: set.skipped.clone(),
    };
    // The sidecar first: a tensor file is only ever found with its sidecar beside it.
    crate::files::write_atomic(&sidecar, serde_json::to_string_pretty(&meta)?.as_bytes())?;
    let tensors = [
        ("features", set.features.to_device(Device::Cpu).contiguous()),
        ("labels", Tensor::from_slice(&set.labels)),
        ("key", Tensor::from_slice(&key_bytes(&key))),
    ];
    crate::files::write_atomic_with(&file, |tmp| {
        Tensor::write_safetensors(&tensors, tmp).with_context(|| format!("writing feature cache {}", tmp.display()))
    })?;
    Ok(set)
}

/// Decodes the domain and runs the trunk over every image under every fixed view, in eval
/// mode without autograd, with a progress bar.
fn build(cfg: &TrainConfig, domain: &Domain, net: &dyn Network, device: Device) -> Result<FeatureSet> {
    let set = images::decode_all(&domain.files, &domain.name, cfg.skip_bad_images, cfg.resize)?;
    let input = cfg.backbone.input();
    let views = views(input.crop);
    let all: Vec<usize> = (0..set.len()).collect();
    let bar = ProgressBar::new((views.len() * set.len()) as u64).with_style(
        ProgressStyle::with_template("{prefix:>10} features [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(domain.name.clone());
    let mut parts = Vec::new();
    tch::no_grad(|| {
        for view in views {
            for idx in all.chunks(CHUNK) {
                let xs = batches::to_tensor(&set, idx, &vec![view; idx.len()], &input, cfg.channels_last, device);
                parts.push(net.trunk(&xs, cfg.finetune).contiguous());
                bar.inc(idx.len() as u64);
            }
        }
    });
    bar.finish_and_clear();
    Ok(FeatureSet { features: Tensor::cat(&parts, 0), labels: set.labels, skipped: set.skipped })
}

/// Reads a cache file and its sidecar, checking that both hold `key` (the key of the inputs
/// now) and agree with each other.
fn read(file: &Path, sidecar: &Path, key: &str) -> Result<FeatureSet> {
    let text = std::fs::read_to_string(sidecar).with_context(|| format!("reading {}", sidecar.display()))?;
    let meta: Sidecar = serde_json::from_str(&text).with_context(|| format!("parsing {}", sidecar.display()))?;
    if meta.key != key {
        bail!("{} was made from other inputs (its key is not theirs: a file copied or renamed?)", sidecar.display());
    }
    let mut tensors: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(file).with_context(|| format!("reading {}", file.display()))?.into_iter().collect();
    let (Some(features), Some(labels), Some(inside)) =
        (tensors.remove("features"), tensors.remove("labels"), tensors.remove("key"))
    else {
        bail!("{} lacks the features, labels or key tensor", file.display());
    };
    if Vec::<u8>::try_from(inside.to_kind(Kind::Uint8)).ok() != Some(key_bytes(key)) {
        bail!(
            "{} was made from other inputs (the key inside it is not theirs: a file copied or renamed?)",
            file.display()
        );
    }
    let labels: Vec<i64> = Vec::try_from(labels.to_kind(Kind::Int64))?;
    let rows = features.size().first().copied().unwrap_or(0) as usize;
    if meta.format != FORMAT || labels.len() != meta.images || labels.is_empty() || !rows.is_multiple_of(labels.len()) {
        bail!("{} does not match its sidecar {}", file.display(), sidecar.display());
    }
    Ok(FeatureSet { features, labels, skipped: meta.skipped })
}

/// Hex SHA-256 of everything the cached numbers depend on (see the module doc).
fn cache_key(cfg: &TrainConfig, domain: &Domain, device: Device) -> Result<String> {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    let input: &InputConvention = &cfg.backbone.input();
    let settings = format!(
        "{FORMAT}|{}|{}|{input:?}|channels_last {}|skip_bad {}|{}|libtorch {}|resize {:?}",
        cfg.backbone,
        cfg.finetune.name(),
        cfg.channels_last,
        cfg.skip_bad_images,
        if device.is_cuda() { "cuda" } else { "cpu" },
        env!("DEEP_CORAL_TORCH_VERSION").to_string(),
        cfg.resize,
    );
    field(settings.as_bytes());
    field(&file_digest(&cfg.weights).with_context(|| format!("hashing weights file {}", cfg.weights.display()))?);
    for (path, label) in &domain.files {
        let name = path.strip_prefix(&domain.dir).unwrap_or(path);
        field(name.to_string_lossy().as_bytes());
        field(&label.to_le_bytes());
        field(&file_digest(path).with_context(|| format!("hashing image {}", path.display()))?);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The 32 bytes of a hex key.
fn key_bytes(key: &str) -> Vec<u8> {
    (0..key.len() / 2).map(|i| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).unwrap_or(0)).collect()
}

/// SHA-256 of a file's bytes, read in 1 MiB pieces.
fn file_digest(path: &Path) -> Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::backbone::Backbone;
    use tch::nn;

    /// A two-class domain of six small PNGs under `root/<name>`.
    fn domain(root: &Path, name: &str) -> Domain {
        for (k, class) in ["cat", "dog"].iter().enumerate() {
            let dir = root.join(name).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..3u8 {
                let img =
                    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 5 + i, y as u8 * 7, 60 * k as u8]));
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
        Domain::scan(root, name).unwrap()
    }

    fn net(seed: i64) -> (nn::VarStore, Box<dyn Network>) {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Backbone::Squeezenet1_1.build(&vs.root(), 2);
        (vs, net)
    }

    #[test]
    fn cached_features_are_the_trunk_outputs_and_are_reused_until_the_data_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let dom = domain(tmp.path(), "webcam");
        let weights = tmp.path().join("w.safetensors");
        std::fs::write(&weights, b"stands in for a weights file: only its bytes are hashed").unwrap();
        let cfg = TrainConfig {
            backbone: Backbone::Squeezenet1_1,
            finetune: Finetune::Last,
            weights,
            feature_cache: tmp.path().join("cache"),
            ..TrainConfig::default()
        };
        let (_vs, first) = net(1);
        let built = load_or_build(&cfg, &dom, first.as_ref(), Device::Cpu).unwrap();
        assert_eq!(built.features.size(), [2 * 6, 512, 14, 14]);
        assert_eq!((built.views(), built.labels.clone()), (2, vec![0, 0, 0, 1, 1, 1]));

        // Row v * n + i is the trunk's output for view v of image i.
        let set = images::decode_all(&dom.files, "webcam", false, cfg.resize).unwrap();
        let input = cfg.backbone.input();
        for (v, view) in views(input.crop).into_iter().enumerate() {
            let xs = batches::to_tensor(&set, &[4], &[view], &input, cfg.channels_last, Device::Cpu);
            let want = tch::no_grad(|| first.trunk(&xs, Finetune::Last));
            let got = built.select(&[4], &[v], Device::Cpu);
            // Equal up to float32 rounding (oneDNN picks its algorithm by batch size).
            let (err, scale) = ((&got - &want).abs().max().double_value(&[]), want.abs().max().double_value(&[]));
            assert!(err <= 1e-5 * scale, "view {v}: max difference {err} at scale {scale}");
        }

        // Another network under the same weights file gets the cached numbers: nothing rebuilt.
        let (_vs2, second) = net(2);
        let loaded = load_or_build(&cfg, &dom, second.as_ref(), Device::Cpu).unwrap();
        assert!(loaded.features.equal(&built.features));
        let files = || std::fs::read_dir(&cfg.feature_cache).unwrap().count();
        assert_eq!(files(), 2, "one tensor file and its sidecar");

        // A changed image is a new key: built anew, with the new network.
        image::RgbImage::from_pixel(40, 30, image::Rgb([9, 9, 9])).save(&dom.files[0].0).unwrap();
        let rebuilt = load_or_build(&cfg, &dom, second.as_ref(), Device::Cpu).unwrap();
        assert!(!rebuilt.features.equal(&built.features));
        assert_eq!(files(), 4);

        // A damaged cache file is rebuilt, not trusted.
        let damaged = std::fs::read_dir(&cfg.feature_cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .find(|p| Tensor::read_safetensors(p).is_ok_and(|t| t.iter().any(|(_, t)| t.equal(&rebuilt.features))))
            .unwrap();
        std::fs::write(&damaged, b"not safetensors").unwrap();
        let again = load_or_build(&cfg, &dom, second.as_ref(), Device::Cpu).unwrap();
        assert!(again.features.equal(&rebuilt.features));
        assert!(Tensor::read_safetensors(&damaged).is_ok(), "rewritten whole");
    }
}
