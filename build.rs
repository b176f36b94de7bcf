//! Embeds an rpath to libtorch's `lib/` (the virtualenv's torch wheel, see
//! `.cargo/config.toml`), so the binary runs without `LD_LIBRARY_PATH`, and records the
//! libtorch version for `run.json`. On another machine (a GPU box with its own torch),
//! `LD_LIBRARY_PATH` still takes precedence over nothing: the rpath is only a fallback
//! when the folder exists.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(root) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        println!("cargo:warning=LIBTORCH is not set; run `make setup` first");
        println!("cargo:rustc-env=DEEP_CORAL_TORCH_VERSION=unknown");
        return;
    };
    let root = root.canonicalize().unwrap_or(root);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", root.join("lib").display());
    // torch-sys links libtorch_cuda, but the linker's --as-needed drops it because no symbol
    // is referenced directly; without it CUDA is never registered and `--device cuda` fails.
    if root.join("lib/libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    // The wheel's torch/version.py holds `__version__ = '2.11.0+cu130'`.
    let version = std::fs::read_to_string(root.join("version.py"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches(['\'', '"', ' ']).to_string()))
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DEEP_CORAL_TORCH_VERSION={version}");
}
