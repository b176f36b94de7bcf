//! The inference stage: a network a run kept (`train::saved_model`) used on images without the
//! run. It owns rebuilding that network from its file, its outputs and features over a whole
//! domain, and what is made of them: predictions for image files, an evaluation with its
//! confusion matrix, a TorchScript export, the t-SNE layout of the features, and shallow CORAL
//! (a linear SVM on the features, with and without the CORAL transform).
//!
//! It may use `train` (the saved-model format), `data`, `model` and `config`; `experiment` may
//! use it (imports still run one way: experiment -> infer -> train -> data -> model).

/// The t-SNE picture of a run's features (source and target).
pub mod embed;
/// Accuracy, per class and as a confusion matrix, on a whole domain.
pub mod evaluate;
/// A kept network as TorchScript.
pub mod export;
/// Penultimate features and class scores of a loaded network over a decoded domain.
pub mod features;
/// A saved network rebuilt on a device.
pub mod loaded;
/// Class probabilities and the top classes of image files.
pub mod predict;
/// Shallow CORAL (Sun, Feng & Saenko, AAAI 2016) on a source-only run's features.
pub mod shallow_coral;
/// A multi-class linear SVM (one-vs-rest, squared hinge, dual coordinate descent).
pub mod svm;
