//! Helpers shared by the integration tests: where things are, how to run the binary.
#![allow(dead_code)]

use std::path::PathBuf;
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
