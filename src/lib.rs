//! deep-coral: Deep CORAL (Sun & Saenko, ECCV 2016 workshops) on libtorch.
//!
//! The modules are listed in the order data flows through them:
//! images -> tensors -> backbone -> fc8 -> losses -> optimiser -> CSV rows -> tables and plots.

/// The run's configuration; `Default` is the paper's protocol.
pub mod config;
/// The networks: AlexNet, CaffeNet, SqueezeNet 1.1, behind one registry enum.
pub mod backbone;
/// Caffe's binary `.caffemodel` -> `.safetensors` (current and legacy V1 layer formats).
pub mod caffe;
/// What a weights file holds and which backbones it fits (`weights inspect`).
pub mod inspect;
