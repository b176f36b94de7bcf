//! One process per measured cell (backbone, precision, layout): `bench` with several cells
//! runs itself once per cell and gathers the reports.
//!
//! Why: in one process, a cell's figures depend on the cells measured before it. AlexNet bf16
//! channels-last measured its limit at 221 img/s in a process of its own, 192 after one fp32
//! cell and 103 after four (`results/bench/2026-12-05b`, docs/speed.md), far more than the
//! few percent the bench compares. A fresh process per cell measures each from the same
//! start, as the PyTorch side (`bench/pytorch_pipeline.py`) already does per backbone, and
//! makes each peak of resident memory the cell's own.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

use super::{layout_name, BenchOptions, BenchReport};

/// Every cell of `opts`, each by `exe bench` with that cell alone; the report holds them in
/// the order of `opts` (backbones, then precisions, then layouts).
pub fn measure_each_in_own_process(opts: &BenchOptions, exe: &Path) -> Result<BenchReport> {
    let scratch =
        tempfile::Builder::new().prefix("deep-coral-bench-").tempdir().context("creating a scratch folder")?;
    let mut merged: Option<BenchReport> = None;
    for &backbone in &opts.backbones {
        for &precision in &opts.precisions {
            for &channels_last in &opts.layouts {
                let json =
                    scratch.path().join(format!("{}-{}-{channels_last}.json", backbone.name(), precision.name()));
                let mut cmd = Command::new(exe);
                cmd.arg("bench")
                    .args(["--backbone", backbone.name(), "--precision", precision.name()])
                    .args(["--channels-last", if channels_last { "true" } else { "false" }]);
                cmd.args(shared_flags(opts)).arg("--json").arg(&json);
                // The child's progress goes to our stderr; its table is ours to print, merged.
                let status =
                    cmd.stdout(Stdio::null()).status().with_context(|| format!("running {}", exe.display()))?;
                if !status.success() {
                    bail!(
                        "bench of {backbone} in {} ({}) failed ({status}); its messages are above",
                        precision.name(),
                        layout_name(channels_last)
                    );
                }
                let one = BenchReport::read_json(&json)?;
                match &mut merged {
                    None => merged = Some(one),
                    Some(all) => all.backbones.extend(one.backbones),
                }
            }
        }
    }
    let mut report = merged.context("no cell to measure")?;
    report.process_per_cell = true;
    report.peak_rss_per_backbone = true; // each peak is its own process's
    Ok(report)
}

/// The flags every cell shares, as `bench` parses them.
fn shared_flags(opts: &BenchOptions) -> Vec<String> {
    let device = opts.device.to_possible_value().expect("every DeviceChoice has a name");
    let mut args: Vec<String> = vec![
        "--batch-size".into(),
        opts.batch_size.to_string(),
        "--iterations".into(),
        opts.iterations.to_string(),
        "--warmup".into(),
        opts.warmup.to_string(),
        "--threads".into(),
        opts.threads.to_string(),
        "--lambda".into(),
        opts.lambda.to_string(),
        "--data-root".into(),
        opts.data_root.display().to_string(),
        "--source".into(),
        opts.source.clone(),
        "--target".into(),
        opts.target.clone(),
        "--device".into(),
        device.get_name().to_string(),
    ];
    for (backbone, file) in &opts.weights {
        args.push("--weights".into());
        args.push(format!("{}={}", backbone.name(), file.display()));
    }
    args
}
