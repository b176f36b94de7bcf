//! deep-coral: Deep CORAL (Sun & Saenko, ECCV 2016 workshops) on libtorch.
//!
//! The modules are listed in the order data flows through them:
//! images -> tensors -> backbone -> fc8 -> losses -> optimiser -> CSV rows -> tables and plots.

/// The networks: AlexNet, CaffeNet, SqueezeNet 1.1, behind one registry enum.
pub mod backbone;
/// Shuffled epochs, random crops and mirrors, normalisation into tensors (on the CPU, or on
/// the GPU from a u8 image tensor held there).
pub mod batches;
/// `deep-coral bench`: speed of the training step against its compute limit, decoding, memory.
pub mod bench;
/// Caffe's binary `.caffemodel` -> `.safetensors` (current and legacy V1 layer formats).
pub mod caffe;
/// The run's configuration; `Default` is the paper's protocol.
pub mod config;
/// The CORAL loss (Eq. 1-2) and its closed-form gradient (Eq. 4).
pub mod coral;
/// A domain on disk: class folders, sorted classes, the source/target class check.
pub mod domain;
/// Whole-domain evaluation (centre crop, eval mode).
pub mod eval;
/// The `--finetune fc|last` cache: frozen-trunk features of fixed views, on disk, keyed by
/// backbone, weights and data.
pub mod features;
/// Decoding every image once into 256x256 RGB bytes.
pub mod images;
/// What a weights file holds and which backbones it fits (`weights inspect`).
pub mod inspect;
/// Launchers that execute a sweep's runs: `Local { jobs }` subprocesses, `DryRun` listing.
pub mod launcher;
/// metrics.csv rows and run.json.
pub mod metrics;
/// Caffe's SGD with the paper's learning-rate and decay multipliers.
pub mod optim;
/// Training curves from the run records, like the paper's Fig. 3: accuracies, losses and the
/// CORAL distance against iteration, as PNG and SVG.
pub mod plot;
/// Tables from the run records: `run.json` + `metrics.csv` -> mean ± sd over seeds ->
/// `summary.csv` and `table.md`, beside the paper's Table 1.
pub mod report;
/// Device, threads, random streams, allocator setting, stop flag.
pub mod runtime;
/// Experiment specs (JSON): a grid of transfers x lambdas x seeds, and each run's directory.
pub mod spec;
/// Sweeps: run state from disk (done / incomplete / new), skip finished runs, launch the rest.
pub mod sweep;
/// The one training loop.
pub mod train;
/// Strict loading of pretrained weights by name; the new last layer.
pub mod weights;
