//! The training stage: one source->target run, from tensors to CSV rows. It owns the CORAL
//! loss, Caffe's SGD with the paper's multipliers, the training loop and its checkpoints,
//! whole-domain evaluation, the metrics log and run record, and the runtime settings
//! (device, threads, random streams, stop flag).
//!
//! It may use `data`, `model` and `config`; nothing of `experiment`.

/// Resumable checkpoints: weights, momentum buffers, loop state.
pub mod checkpoint;
/// The CORAL loss (Eq. 1-2) and its closed-form gradient (Eq. 4).
pub mod coral;
/// Whole-domain evaluation (centre crop, eval mode).
pub mod eval;
/// metrics.csv rows and run.json.
pub mod metrics;
/// The network of a run with its optimiser.
pub mod model;
/// Caffe's SGD with the paper's learning-rate and decay multipliers.
pub mod optim;
/// The one training loop.
pub mod run;
/// Device, threads, random streams, allocator setting, stop flag.
pub mod runtime;
/// One SGD iteration: `next_batch` then `update`.
pub mod step;

pub use run::{run, Start};
