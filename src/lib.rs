//! deep-coral: Deep CORAL (Sun & Saenko, ECCV 2016 workshops) on libtorch.
//!
//! images -> tensors (`data`) -> backbone -> fc8 (`model`) -> losses -> optimiser -> CSV rows
//! and the kept network (`train`) -> the network used on new images (`infer`) -> sweeps, tables
//! and plots (`experiment`).
//!
//! The stages are listed below in the one way their imports run, each using only those after
//! it: `experiment` -> `infer` -> `train` -> `data` -> `model`. Beside them, also in import
//! order: `bench` and `flags` (which use the stages: `train`, `data`, `model`), `config` (the one
//! `TrainConfig`, which uses `model` only) and `files` (which uses nothing of the crate).

/// `deep-coral bench`: speed of the training step against its compute limit, decoding, memory.
pub mod bench;
/// The run's configuration; `Default` is the paper's protocol.
pub mod config;
/// Domains on disk, decoding, batches and crops, the feature cache.
pub mod data;
/// Specs, sweeps, launchers, reports and plots.
pub mod experiment;
/// Writing files so that no reader or crash ever sees half of one.
pub mod files;
/// `train`'s config flags: a partial `TrainConfig` from the command line, and the one place a
/// `train` command's config is decided (the paper's lambda included).
pub mod flags;
/// A kept network used without its run: features, shallow CORAL.
pub mod infer;
/// The networks, their pretrained weights, Caffe import and `weights inspect`.
pub mod model;
/// CORAL, Caffe's SGD, the training loop, evaluation, the metrics log, runtime settings.
pub mod train;
