//! The inference stage: a network a run kept (`train::saved_model`) used on images without the
//! run. It owns rebuilding that network from its file, its outputs and features over a whole
//! domain, and what is made of them: shallow CORAL (a linear SVM on the features, with and
//! without the CORAL transform).
//!
//! It may use `train` (the saved-model format), `data`, `model` and `config`; `experiment` may
//! use it (imports still run one way: experiment -> infer -> train -> data -> model).

/// Penultimate features and class scores of a loaded network over a decoded domain.
pub mod features;
/// A saved network rebuilt on a device.
pub mod loaded;
/// Shallow CORAL (Sun, Feng & Saenko, AAAI 2016) on a source-only run's features.
pub mod shallow_coral;
/// A multi-class linear SVM (one-vs-rest, squared hinge, dual coordinate descent).
pub mod svm;
