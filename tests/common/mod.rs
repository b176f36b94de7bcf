//! Helpers shared by the integration tests: where things are, how to run the binary.
#![allow(dead_code)]

pub mod slurm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// ../shared beside the repository (read-only real data and weights).
pub fn shared() -> PathBuf {
    let p = root().join("../shared");
    assert!(p.is_dir(), "{} is missing: the tests need the shared data beside the project", p.display());
    p
}

/// The project's virtualenv Python (`make setup`), or `DEEP_CORAL_PYTHON`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("DEEP_CORAL_PYTHON") {
        return p.into();
    }
    let p = root().join(".venv/bin/python");
    assert!(p.exists(), "{} is missing: run `make setup` first", p.display());
    p
}

/// The `deep-coral` binary that cargo built for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deep-coral"))
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The real ImageNet SqueezeNet 1.1 weights in ../shared (4.9 MB).
pub fn squeezenet_weights() -> PathBuf {
    shared().join("weights/squeezenet1_1-caffe-imagenet.safetensors")
}

/// Writes a tiny synthetic domain `<root>/<domain>/<class>/<i>.png`: `per_class` 24x24 images
/// per class, a colour per class plus a deterministic texture, the target domain a little
/// darker than the source (a domain shift). Decoding resizes them to 256x256 like any image.
pub fn write_domain(root: &Path, domain: &str, classes: &[&str], per_class: usize) {
    let shift = domain.bytes().map(u32::from).sum::<u32>() % 40;
    for (c, class) in classes.iter().enumerate() {
        let dir = root.join(domain).join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(24, 24, |x, y| {
                let t = (x * 7 + y * 13 + i as u32 * 31) % 64;
                let base = [(c as u32 * 97) % 256, (c as u32 * 53 + 80) % 256, (255 - c as u32 * 71) % 256];
                image::Rgb(base.map(|b| ((b + t) % 256).saturating_sub(shift) as u8))
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

/// `<root>/<name>/<class>/`: links to the first `n` real images of each class of domain
/// `domain` of ../shared/data/office-caltech10.
pub fn real_subset(root: &Path, domain: &str, name: &str, classes: &[&str], n: usize) {
    let shared = shared().join("data/office-caltech10").join(domain);
    for class in classes {
        let dir = root.join(name).join(class);
        std::fs::create_dir_all(&dir).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(shared.join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.into_iter().take(n) {
            std::os::unix::fs::symlink(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
}

/// Real Office images as the tiny run's domains: `src` (amazon) and `tgt` (webcam), classes
/// `backpack` and `mouse`, 3 images each.
pub fn tiny_real_data(root: &Path) -> PathBuf {
    let data = root.join("data");
    real_subset(&data, "amazon", "src", &["backpack", "mouse"], 3);
    real_subset(&data, "webcam", "tgt", &["backpack", "mouse"], 3);
    data
}

/// SHA-256 of every file under `dir` (by path relative to it, links read as the link's
/// target path): two calls are equal when nothing there was written, deleted or replaced.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    use sha2::Digest;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if t.is_symlink() {
                out.insert(rel, format!("-> {}", std::fs::read_link(&p).unwrap().display()));
            } else if t.is_dir() {
                out.insert(rel, "dir".into());
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(rel, format!("{:x}", sha2::Sha256::digest(&bytes)));
            }
        }
    }
    out
}

/// AlexNet's real ImageNet convolutions (../shared) with a seeded fc6/fc7/fc8 (tch's
/// initialisation, seed 0; the real fully connected layers are not available here), as one
/// full weights file `<dir>/alexnet.safetensors`.
pub fn alexnet_weights(dir: &Path) -> PathBuf {
    use tch::{nn, Device, Tensor};
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = deep_coral::model::backbone::Backbone::Alexnet.build(&vs.root(), 1000);
    let convs =
        Tensor::read_safetensors(shared().join("weights/alexnet-torchvision-features-imagenet.safetensors")).unwrap();
    let mut vars = vs.variables();
    for (name, t) in &convs {
        tch::no_grad(|| vars.get_mut(name).unwrap().copy_(t));
    }
    let path = dir.join("alexnet.safetensors");
    Tensor::write_safetensors(&vars.into_iter().collect::<Vec<_>>(), &path).unwrap();
    path
}

/// Domains `src` and `tgt` with classes `a` and `b`, 3 images each: 6 images per domain.
pub fn tiny_data(root: &Path) -> PathBuf {
    let data = root.join("data");
    for d in ["src", "tgt"] {
        write_domain(&data, d, &["a", "b"], 3);
    }
    data
}

/// Defaults of a tiny CPU run (SqueezeNet, batch 2, 6 iterations, a row every 2, lr 1e-5); a
/// flag in `extra` replaces its default. The learning rate is a hundredth of the paper's: at
/// batch 2 the CORAL term at lambda 1 (a rank-one covariance, quartic in the outputs) throws
/// SqueezeNet's linear fc8 off within a few steps at 1e-3 and 1e-4.
const TINY_DEFAULTS: [(&str, &str); 11] = [
    ("--source", "src"),
    ("--target", "tgt"),
    ("--backbone", "squeezenet1_1"),
    ("--lambda", "1"),
    ("--iterations", "6"),
    ("--eval-every", "2"),
    ("--batch-size", "2"),
    ("--seed", "1"),
    ("--threads", "1"),
    ("--device", "cpu"),
    ("--lr", "0.00001"),
];

/// `deep-coral train` on `data` into `out` with the tiny defaults, the real SqueezeNet weights
/// unless `extra` names `--weights`, and `extra` on top.
pub fn tiny_train(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = bin();
    cmd.arg("train").arg("--data-root").arg(data).arg("--out").arg(out);
    if !extra.contains(&"--weights") {
        cmd.arg("--weights").arg(squeezenet_weights());
    }
    for (flag, value) in TINY_DEFAULTS {
        if !extra.contains(&flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(extra);
    cmd
}

/// Runs `cmd`, expects it to fail with exit code `code`, and returns its stderr.
pub fn run_fails(cmd: &mut Command, code: i32) -> String {
    let out = cmd.output().expect("spawn");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{cmd:?}: expected exit {code}, stderr:\n{err}");
    // No user input may end in a panic (exit 101): every refusal is an error message.
    assert!(!err.contains("panicked"), "{cmd:?} panicked:\n{err}");
    err
}

/// metrics.csv without its `elapsed_s` column: what must be identical between equal runs.
pub fn metrics_sans_elapsed(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let elapsed = deep_coral::train::metrics::COLUMNS.iter().position(|c| *c == "elapsed_s").unwrap();
    text.lines()
        .map(|l| {
            let fields: Vec<&str> = l.split(',').enumerate().filter(|(i, _)| *i != elapsed).map(|(_, f)| f).collect();
            fields.join(",") + "\n"
        })
        .collect()
}

/// Every line of `dir/metrics.csv` is a whole row: one field per column, newline-terminated.
/// Returns the number of data rows.
pub fn assert_whole_rows(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert!(text.ends_with('\n'), "metrics.csv ends mid-line: {text:?}");
    let columns = deep_coral::train::metrics::COLUMNS.len();
    for line in text.lines() {
        assert_eq!(line.split(',').count(), columns, "not a whole row: {line:?}");
    }
    text.lines().count() - 1
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Asserts that no temporary file (`*.tmp`) is left under `dir`.
pub fn assert_no_tmp(dir: &Path) {
    let tmp: Vec<_> = files_under(dir).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
}

/// Polls `cond` every 10 ms for up to `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < end, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Data rows in `dir/metrics.csv` so far (0 while it does not exist).
pub fn rows_so_far(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.csv")).map_or(0, |t| t.lines().count().saturating_sub(1))
}

/// A tmpfs of `kib` KiB at a new folder under `root`; None (with the reason printed) where the
/// test cannot mount one. CI runs as root, so there it must mount.
pub fn tmpfs(root: &Path, kib: u64) -> Option<Mount> {
    let dir = root.join("small-disk");
    std::fs::create_dir(&dir).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var_os("CI").is_none(), "CI must run the full-disk test as root");
        eprintln!("skipping the full-disk test: it mounts a tmpfs, which needs root");
        return None;
    }
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
        .arg(&dir)
        .status();
    assert!(st.is_ok_and(|s| s.success()), "mount -t tmpfs failed as root");
    Some(Mount(dir))
}

pub struct Mount(pub PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        std::process::Command::new("umount").arg(&self.0).status().ok();
    }
}

/// Bytes free on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs fills the struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail * st.f_frsize
}
