//! Embeds an rpath to the virtualenv's `torch/lib`, so the binary runs without the user
//! setting `LD_LIBRARY_PATH`, and records the libtorch version for `run.json`.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([
            "-c",
            "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib')); print(torch.__version__)",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let lib = lines.next().unwrap_or_default().trim().to_string();
            let version = lines.next().unwrap_or("unknown").trim().to_string();
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
            println!("cargo:rustc-env=DEEP_CORAL_TORCH_VERSION={version}");
        }
        _ => {
            println!("cargo:warning=could not ask {python} for torch; run `make setup` first");
            println!("cargo:rustc-env=DEEP_CORAL_TORCH_VERSION=unknown");
        }
    }
}
