//! The training stage: one source->target run, from tensors to CSV rows. It owns the
//! alignment losses (CORAL, DDC, DAN), Caffe's SGD with the paper's multipliers, the training loop and its checkpoints,
//! whole-domain evaluation, the metrics log and run record, and the runtime settings
//! (device, threads, random streams, stop flag).
//!
//! It may use `data`, `model` and `config`; nothing of `experiment`.

/// The alignment losses, one file per method: CORAL, DDC's MMD, DAN's MK-MMD.
pub mod align;
/// Resumable checkpoints: weights, momentum buffers, loop state.
pub mod checkpoint;
/// metrics.csv and steps.csv: whole rows, cut back to the checkpoint on resume.
pub mod csv_log;
/// Whole-domain evaluation (centre crop, optionally mirrored by a seeded coin; eval mode).
pub mod eval;
/// The rows of metrics.csv and steps.csv, and run.json.
pub mod metrics;
/// The network of a run with its optimiser.
pub mod model;
/// Caffe's SGD with the paper's learning-rate and decay multipliers.
pub mod optim;
/// `--precision bf16`: libtorch's autocast on CPU and CUDA.
pub mod precision;
/// The loop's batches made one iteration ahead on a second thread.
pub mod prefetch;
/// The one training loop.
pub mod run;
/// Device, threads, random streams, allocator setting, stop flag.
pub mod runtime;
/// The network a run keeps: `model.safetensors` with its model card.
pub mod saved_model;
/// One SGD iteration: `next_batch` then `update`.
pub mod step;

pub use run::{run, Start};
