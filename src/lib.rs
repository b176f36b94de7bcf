//! deep-coral: Deep CORAL (Sun & Saenko, ECCV 2016 workshops) on libtorch.
//!
//! The modules are listed in the order data flows through them:
//! images -> tensors -> backbone -> fc8 -> losses -> optimiser -> CSV rows -> tables and plots.

/// The run's configuration; `Default` is the paper's protocol.
pub mod config;
/// The networks: AlexNet, CaffeNet, SqueezeNet 1.1, behind one registry enum.
pub mod backbone;
/// Tables from the run records: `run.json` + `metrics.csv` -> mean ± sd over seeds ->
/// `summary.csv` and `table.md`, beside the paper's Table 1.
pub mod report;
/// Training curves from the run records, like the paper's Fig. 3: accuracies, losses and the
/// CORAL distance against iteration, as PNG and SVG.
pub mod plot;
