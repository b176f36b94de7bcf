//! The model stage: the networks and what they are loaded from. It owns the backbone
//! registry (AlexNet, CaffeNet, SqueezeNet 1.1), strict loading of pretrained weights by name
//! and the new last layer, Caffe's `.caffemodel` import and `weights inspect`.
//!
//! It uses nothing of the other stages (only `files` for writing).

/// The networks: AlexNet, CaffeNet, SqueezeNet 1.1, behind one registry enum.
pub mod backbone;
/// Caffe's binary `.caffemodel` -> `.safetensors` (current and legacy V1 layer formats).
pub mod caffe;
/// Which backbone a list of named tensor shapes fits: shared by the Caffe importer and
/// `weights inspect`.
pub mod fit;
/// What a weights file holds and which backbones it fits (`weights inspect`).
pub mod inspect;
/// Strict loading of pretrained weights by name; the new last layer.
pub mod weights;
