//! The data stage: from files on disk to the tensors of one iteration. It owns the domains
//! on disk (class folders, the source/target class check), decoding every image once, the
//! per-domain epoch order, crops, mirrors and normalisation, and the `--finetune fc|last`
//! feature cache.
//!
//! It may use `model` (input conventions, the frozen trunk of a backbone) and `config`;
//! nothing of `train` or `experiment`.

/// Shuffled epochs, random crops and mirrors, normalisation into tensors (on the CPU, or on
/// the GPU from a u8 image tensor held there).
pub mod batches;
/// A domain on disk: class folders, sorted classes, the source/target class check.
pub mod domain;
/// The `--finetune fc|last` cache: frozen-trunk features of fixed views, on disk, keyed by
/// backbone, weights and data.
pub mod features;
/// What a run was trained on (per domain: classes, count, names and sizes), for `--resume`.
pub mod fingerprint;
/// Decoding every image once into 256x256 RGB bytes.
pub mod images;
/// What a run trains on: decoded images or cached features, behind one enum.
pub mod inputs;
/// OpenCV's bilinear resize (Caffe's), bit for bit.
pub mod resize;
/// The two domains of one run, loaded.
pub mod transfer;
