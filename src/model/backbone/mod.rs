//! The backbone registry: one enum, one exhaustive `match` per property, so the list of
//! networks and their constructors, input conventions and last layers cannot drift apart.

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

pub mod alexnet;
pub mod caffenet;
pub mod squeezenet;

/// An ImageNet-pretrained network whose last layer is replaced by one output per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum Backbone {
    /// torchvision's AlexNet (`features.N`, `classifier.N`); fc8 is `classifier.6`.
    #[serde(rename = "alexnet")]
    #[value(name = "alexnet")]
    Alexnet,
    /// BVLC Reference CaffeNet, the paper's network (`conv1..conv5`, `fc6..fc8`).
    #[serde(rename = "caffenet")]
    #[value(name = "caffenet")]
    Caffenet,
    /// torchvision's SqueezeNet 1.1; its final 1x1 conv `classifier.1` plays fc8.
    #[serde(rename = "squeezenet1_1")]
    #[value(name = "squeezenet1_1")]
    Squeezenet1_1,
}

/// How much of the pretrained network a run trains (`--finetune`). Under `fc` and `last` the
/// rest is frozen, so its outputs for a fixed set of views can be computed once per image and
/// cached (`features`); the CORAL loss stays on the last layer's outputs in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Finetune {
    /// Every layer, on freshly cropped and mirrored images: the paper's protocol.
    #[default]
    All,
    /// The fully connected layers (fc6, fc7 and the new fc8) on frozen convolutional features;
    /// only for backbones that have them (AlexNet, CaffeNet).
    Fc,
    /// The new last layer only, on frozen penultimate features.
    Last,
}

impl Finetune {
    pub fn name(self) -> &'static str {
        match self {
            Finetune::All => "all",
            Finetune::Fc => "fc",
            Finetune::Last => "last",
        }
    }
}

/// What the new last layer's outputs are: the paper's fc8 is a linear layer, and CORAL (Eq. 1)
/// aligns those outputs. SqueezeNet has no fully connected fc8; torchvision's classifier
/// there is dropout -> 1x1 conv -> ReLU -> global average pool, whose outputs are >= 0 and
/// all-zero wherever the ReLU is closed: a minimum of the CORAL term that passes no gradient
/// back (a run that falls into it stays at constant outputs; docs/results.md measures it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    /// fc8 is linear, as the paper's: for SqueezeNet the 1x1 conv and the global average pool
    /// (both linear, so the pair is one fully connected layer on the pooled features), same
    /// parameters as torchvision's; AlexNet's and CaffeNet's fc8 are linear already.
    #[default]
    Linear,
    /// torchvision's SqueezeNet classifier, with the ReLU between the 1x1 conv and the pool:
    /// what every SqueezeNet run before this option trained (their records say so). SqueezeNet
    /// only.
    Relu,
}

impl Head {
    pub fn name(self) -> &'static str {
        match self {
            Head::Linear => "linear",
            Head::Relu => "relu",
        }
    }
}

/// The layers a run puts on the pretrained network: the new fc8 (`head`) and, for DDC, an
/// adaptation layer `fc_adapt` of `bottleneck` outputs between fc7 (or its analogue) and fc8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NewLayers {
    pub head: Head,
    pub bottleneck: Option<i64>,
}

/// The name prefix of DDC's adaptation layer (`fc_adapt.weight`, `fc_adapt.bias`).
pub const ADAPT_LAYER: &str = "fc_adapt";

/// What one forward pass of the trained part gives the losses: the class scores, and the
/// hidden layers an alignment method may attach to. A tap is the tensor the next layer
/// receives: after the ReLU and, where the network drops out there, after the dropout (as a
/// Caffe loss layer on the blob of an in-place relu/dropout sees it).
pub struct Taps {
    /// fc6 and fc7 (SqueezeNet: the outputs of its last two Fire modules, `features.11` and
    /// `features.12`, globally average-pooled to 512 each, the second after the classifier's
    /// dropout); only when asked for (`fc67`) and only where they are trained (not under
    /// `finetune last`).
    pub fc6: Option<Tensor>,
    pub fc7: Option<Tensor>,
    /// The adaptation layer's output, where the network has one (`NewLayers::bottleneck`).
    pub bottleneck: Option<Tensor>,
    /// fc8: the class scores `[N, classes]`.
    pub logits: Tensor,
}

/// A backbone cut in two at the layer where `--finetune` starts training:
/// `forward_t(x) = head(trunk(x, cut), cut)` for every cut the backbone supports, and
/// `trunk(x, All)` is `x` itself.
pub trait Network: nn::ModuleT {
    /// The frozen part, in eval mode (it holds no dropout under any cut).
    /// # Shapes
    /// `[N, 3, crop, crop]` -> the features at the cut, e.g. `[N, 4096]` for AlexNet's `last`
    fn trunk(&self, xs: &Tensor, cut: Finetune) -> Tensor;
    /// The trained part, from the features at the cut to the class scores and the taps
    /// (`fc67`: also fc6 and fc7); dropout is on when `train`. Asking for taps computes the same
    /// class scores, with the same random draws.
    fn head_taps(&self, fs: &Tensor, cut: Finetune, train: bool, fc67: bool) -> Taps;
    /// The class scores `[N, classes]` alone.
    fn head(&self, fs: &Tensor, cut: Finetune, train: bool) -> Tensor {
        self.head_taps(fs, cut, train, false).logits
    }
}

/// fc7 (the tensor fc8 receives) -> [fc_adapt ->] fc8, as taps: shared by the networks with
/// fully connected layers.
pub(crate) fn fc_top(
    fc7: Tensor,
    fc6: Option<Tensor>,
    adapt: Option<&nn::Linear>,
    fc8: &nn::Linear,
    fc67: bool,
) -> Taps {
    let bottleneck = adapt.map(|a| fc7.apply(a));
    let logits = bottleneck.as_ref().unwrap_or(&fc7).apply(fc8);
    Taps { fc6: fc6.filter(|_| fc67), fc7: fc67.then_some(fc7), bottleneck, logits }
}

/// DDC's adaptation layer, `inputs` -> `outputs`, initialised like the new fc8.
pub(crate) fn adapt_layer(p: &nn::Path, inputs: i64, outputs: i64) -> nn::Linear {
    let (ws_init, bs_init) = last_layer_init();
    nn::linear(p / ADAPT_LAYER, inputs, outputs, nn::LinearConfig { ws_init, bs_init: Some(bs_init), bias: true })
}

/// `Network::trunk` of a network with fully connected layers (AlexNet, CaffeNet): the image
/// itself under `all`, the flattened pool5 `features` under `fc`, and fc7's output after its
/// ReLU (`fc6_fc7` in eval mode) under `last`.
pub(crate) fn fc_trunk(
    xs: &Tensor,
    cut: Finetune,
    features: impl Fn(&Tensor) -> Tensor,
    fc6_fc7: impl Fn(&Tensor) -> Tensor,
) -> Tensor {
    match cut {
        Finetune::All => xs.shallow_clone(),
        Finetune::Fc => features(xs),
        Finetune::Last => fc6_fc7(&features(xs)),
    }
}

/// How a network expects its input: `x_c = (pixel_c * scale - mean_c) / std_c`, channels in
/// `bgr` order or RGB, at `crop` x `crop` pixels (from images resized to 256x256).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputConvention {
    /// Channel order the network was trained with: Caffe models use BGR.
    pub bgr: bool,
    /// Multiplies the 0-255 pixel first: 1/255 for torchvision, 1 for Caffe.
    pub scale: f32,
    /// Per-channel mean, in the network's channel order, after scaling.
    pub mean: [f32; 3],
    /// Per-channel standard deviation, in the network's channel order, after scaling.
    pub std: [f32; 3],
    /// Side of the square crop fed to the network.
    pub crop: usize,
}

impl InputConvention {
    /// The normalisation as one multiply-add per network channel `c`:
    /// `x = (p * scale - mean_c) / std_c = p * a_c + b_c`, with `a_c = scale / std_c` and
    /// `b_c = -mean_c / std_c`, for a 0-255 pixel `p`. Every path that turns pixels into
    /// inputs (host crops, device crops, the feature cache) uses these numbers, so they
    /// agree to the bit.
    pub fn affine(&self) -> ([f32; 3], [f32; 3]) {
        (std::array::from_fn(|c| self.scale / self.std[c]), std::array::from_fn(|c| -self.mean[c] / self.std[c]))
    }
}

/// torchvision's ImageNet normalisation, RGB, 0-1.
pub const TORCHVISION_INPUT: InputConvention = InputConvention {
    bgr: false,
    scale: 1.0 / 255.0,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
    crop: 227,
};

/// Caffe's convention (PAPER.md): BGR, 0-255, minus the per-channel mean B 104.0, G 116.7, R 122.7.
pub const CAFFE_INPUT: InputConvention =
    InputConvention { bgr: true, scale: 1.0, mean: [104.0, 116.7, 122.7], std: [1.0, 1.0, 1.0], crop: 227 };

/// DeepScale's Caffe SqueezeNet 1.1 (../shared/README.md): BGR, 0-255, minus (104, 117, 123).
pub const CAFFE_SQUEEZENET_INPUT: InputConvention =
    InputConvention { bgr: true, scale: 1.0, mean: [104.0, 117.0, 123.0], std: [1.0, 1.0, 1.0], crop: 227 };

/// Standard deviation of the new last layer's weights (paper: fc8 ~ N(0, 0.005), bias 0).
pub const LAST_LAYER_STD: f64 = 0.005;

impl Backbone {
    pub const ALL: [Backbone; 3] = [Backbone::Alexnet, Backbone::Caffenet, Backbone::Squeezenet1_1];

    /// The name used on the command line, in specs and in `run.json`.
    pub fn name(self) -> &'static str {
        match self {
            Backbone::Alexnet => "alexnet",
            Backbone::Caffenet => "caffenet",
            Backbone::Squeezenet1_1 => "squeezenet1_1",
        }
    }

    /// Builds the network under `p` with a fresh `num_classes`-way last layer (the paper's
    /// linear fc8).
    pub fn build(self, p: &nn::Path, num_classes: i64) -> Box<dyn Network> {
        self.build_with(p, num_classes, NewLayers::default())
    }

    /// `build` with the given new layers; `Head::Relu` exists for SqueezeNet only
    /// (`supports_head`, checked by `TrainConfig::validate`).
    pub fn build_with(self, p: &nn::Path, num_classes: i64, layers: NewLayers) -> Box<dyn Network> {
        match self {
            Backbone::Alexnet => Box::new(alexnet::AlexNet::new(p, num_classes, layers)),
            Backbone::Caffenet => Box::new(caffenet::CaffeNet::new(p, num_classes, layers)),
            Backbone::Squeezenet1_1 => Box::new(squeezenet::SqueezeNet::new(p, num_classes, layers)),
        }
    }

    /// Whether the backbone has `head`: every backbone has a linear fc8; the ReLU head is
    /// torchvision's SqueezeNet classifier.
    pub fn supports_head(self, head: Head) -> bool {
        head == Head::Linear || self == Backbone::Squeezenet1_1
    }

    /// The input convention of the ImageNet weights this backbone is used with.
    pub fn input(self) -> InputConvention {
        match self {
            Backbone::Alexnet => TORCHVISION_INPUT,
            Backbone::Caffenet => CAFFE_INPUT,
            Backbone::Squeezenet1_1 => CAFFE_SQUEEZENET_INPUT,
        }
    }

    /// Variable-name prefix of the layer that is replaced (fc8 or its stand-in).
    pub fn last_layer(self) -> &'static str {
        match self {
            Backbone::Alexnet => "classifier.6",
            Backbone::Caffenet => "fc8",
            Backbone::Squeezenet1_1 => "classifier.1",
        }
    }

    /// Whether the backbone can be cut at `finetune`: `fc` needs fully connected layers, which
    /// SqueezeNet does not have (its classifier is one 1x1 convolution).
    pub fn supports(self, finetune: Finetune) -> bool {
        !(self == Backbone::Squeezenet1_1 && finetune == Finetune::Fc)
    }

    /// Whether parameter `name` is trained under `finetune` (the others are frozen). New
    /// layers (fc8, DDC's adaptation layer) train under every cut.
    pub fn trains(self, finetune: Finetune, name: &str) -> bool {
        let cut_trains = match finetune {
            Finetune::All => true,
            Finetune::Fc => match self {
                Backbone::Alexnet => name.starts_with("classifier."),
                Backbone::Caffenet => ["fc6.", "fc7.", "fc8."].iter().any(|l| name.starts_with(l)),
                Backbone::Squeezenet1_1 => false,
            },
            Finetune::Last => false,
        };
        cut_trains || self.is_new_layer(name)
    }

    /// True for the parameters of the new last layer (`<last_layer>.weight`/`.bias`).
    pub fn is_last_layer(self, name: &str) -> bool {
        name.strip_prefix(self.last_layer()).is_some_and(|rest| rest.starts_with('.'))
    }

    /// True for the parameters a run adds to the pretrained network and trains from scratch:
    /// the new fc8 and DDC's adaptation layer. They take fc8's learning-rate multipliers and
    /// are not read from the pretrained file.
    pub fn is_new_layer(self, name: &str) -> bool {
        self.is_last_layer(name) || name.strip_prefix(ADAPT_LAYER).is_some_and(|rest| rest.starts_with('.'))
    }

    /// DAN's frozen lower convolutions (Long et al. 2015, section 4.1: conv1-conv3 of AlexNet's
    /// five). SqueezeNet's analogue: its first conv and Fire modules 3-7, everything before its
    /// third pool, the same three fifths of the convolutional stack.
    pub fn is_lower_conv(self, name: &str) -> bool {
        let layers: &[&str] = match self {
            Backbone::Alexnet => &["features.0.", "features.3.", "features.6."],
            Backbone::Caffenet => &["conv1.", "conv2.", "conv3."],
            Backbone::Squeezenet1_1 => &["features.0.", "features.3.", "features.4.", "features.6.", "features.7."],
        };
        layers.iter().any(|l| name.starts_with(l))
    }

    /// Width of the features fc8 (or the adaptation layer) receives: fc7's 4096, SqueezeNet's
    /// pooled 512.
    pub fn fc7_width(self) -> i64 {
        match self {
            Backbone::Alexnet | Backbone::Caffenet => 4096,
            Backbone::Squeezenet1_1 => 512,
        }
    }

    /// Names and shapes of every parameter, as a weights file must hold them (the last
    /// layer with `num_classes` outputs).
    pub fn parameter_shapes(self, num_classes: i64) -> Vec<(String, Vec<i64>)> {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _net = self.build(&vs.root(), num_classes);
        let mut out: Vec<_> = vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect();
        out.sort();
        out
    }
}

impl std::fmt::Display for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backbone {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Backbone::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<_> = Backbone::ALL.iter().map(|b| b.name()).collect();
            anyhow::anyhow!("unknown backbone {s:?}; expected one of {}", names.join(", "))
        })
    }
}

/// Initialisation of the new last layer: weights N(0, 0.005), bias 0.
pub(crate) fn last_layer_init() -> (nn::Init, nn::Init) {
    (nn::Init::Randn { mean: 0.0, stdev: LAST_LAYER_STD }, nn::Init::Const(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn every_backbone_maps_a_batch_to_class_scores() {
        for b in Backbone::ALL {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = b.build(&vs.root(), 7);
            let c = b.input().crop as i64;
            let out = tch::no_grad(|| net.forward_t(&Tensor::randn([2, 3, c, c], (Kind::Float, Device::Cpu)), false));
            assert_eq!(out.size(), [2, 7], "{b}");
            let last: Vec<_> = vs.variables().into_keys().filter(|k| b.is_last_layer(k)).collect();
            assert_eq!(last.len(), 2, "{b}: {last:?}");
            // DDC's adaptation layer: fc7 -> 256 -> fc8, the same scores with taps.
            let vs = nn::VarStore::new(Device::Cpu);
            let net = b.build_with(&vs.root(), 7, NewLayers { bottleneck: Some(256), ..Default::default() });
            let x = Tensor::randn([2, 3, c, c], (Kind::Float, Device::Cpu));
            let taps = tch::no_grad(|| net.head_taps(&x, Finetune::All, false, true));
            assert_eq!(taps.logits.size(), [2, 7], "{b}");
            assert_eq!(taps.bottleneck.as_ref().map(|t| t.size()), Some(vec![2, 256]), "{b}");
            assert_eq!(taps.fc7.as_ref().map(|t| t.size()), Some(vec![2, b.fc7_width()]), "{b}");
            assert!(taps.fc6.is_some(), "{b}");
            assert!(taps.logits.equal(&tch::no_grad(|| net.forward_t(&x, false))), "{b}: taps change the scores");
            let new: Vec<_> = vs.variables().into_keys().filter(|k| b.is_new_layer(k)).collect();
            assert_eq!(new.len(), 4, "{b}: {new:?}");
            assert_eq!(b.name().parse::<Backbone>().unwrap(), b);
        }
        assert!("vgg".parse::<Backbone>().unwrap_err().to_string().contains("squeezenet1_1"));
    }

    /// `head(trunk(x))` is the whole network at every cut, in eval mode, and each cut trains
    /// exactly the layers after it.
    #[test]
    fn every_cut_composes_to_the_whole_network() {
        for b in Backbone::ALL {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = b.build(&vs.root(), 5);
            let c = b.input().crop as i64;
            let x = Tensor::randn([3, 3, c, c], (Kind::Float, Device::Cpu));
            let whole = tch::no_grad(|| net.forward_t(&x, false));
            let names: Vec<String> = vs.variables().into_keys().collect();
            assert!(net.trunk(&x, Finetune::All).equal(&x), "{b}: the whole network trains from the image");
            for cut in [Finetune::All, Finetune::Fc, Finetune::Last] {
                if !b.supports(cut) {
                    continue;
                }
                let split = tch::no_grad(|| net.head(&net.trunk(&x, cut), cut, false));
                assert!(split.allclose(&whole, 1e-5, 1e-6, false), "{b} {cut:?}");
                let trained = names.iter().filter(|n| b.trains(cut, n)).count();
                let want = match cut {
                    Finetune::All => names.len(),
                    Finetune::Fc => 6,
                    Finetune::Last => 2,
                };
                assert_eq!(trained, want, "{b} {cut:?}");
            }
        }
        assert!(!Backbone::Squeezenet1_1.supports(Finetune::Fc));
        assert!(Backbone::Caffenet.trains(Finetune::Fc, "fc6.weight"));
        assert!(!Backbone::Caffenet.trains(Finetune::Fc, "conv5.bias"));
    }

    #[test]
    fn last_layer_starts_at_n_0_0005() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = Backbone::Caffenet.build(&vs.root(), 31);
        let vars = vs.variables();
        let w = &vars["fc8.weight"];
        assert_eq!(w.size(), [31, 4096]);
        let std = w.std(true).double_value(&[]);
        assert!((std - 0.005).abs() < 2e-4, "{std}");
        assert_eq!(vars["fc8.bias"].abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert!(!Backbone::Caffenet.is_last_layer("fc80.weight"));
    }
}
