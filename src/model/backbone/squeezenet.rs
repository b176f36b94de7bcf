//! SqueezeNet 1.1 (Iandola et al., 2016, <https://arxiv.org/abs/1602.07360>) as torchvision
//! builds it: ceil-mode max pools, Fire modules at `features.{3,4,6,7,9,10,11,12}`, and a
//! classifier of dropout, a 1x1 conv (`classifier.1`, the stand-in for fc8) and global average
//! pooling, with torchvision's ReLU between the last two only under `Head::Relu` (the paper's
//! fc8 is linear: `Head`).

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::{Finetune, Head, Network, NewLayers, Taps};

#[derive(Debug)]
struct Fire {
    squeeze: nn::Conv2D,
    expand1x1: nn::Conv2D,
    expand3x3: nn::Conv2D,
}

impl Fire {
    fn new(p: nn::Path, inp: i64, squeeze: i64, e1: i64, e3: i64) -> Self {
        let pad1 = nn::ConvConfig { padding: 1, ..Default::default() };
        Self {
            squeeze: nn::conv2d(&p / "squeeze", inp, squeeze, 1, Default::default()),
            expand1x1: nn::conv2d(&p / "expand1x1", squeeze, e1, 1, Default::default()),
            expand3x3: nn::conv2d(&p / "expand3x3", squeeze, e3, 3, pad1),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let s = xs.apply(&self.squeeze).relu();
        Tensor::cat(&[s.apply(&self.expand1x1).relu(), s.apply(&self.expand3x3).relu()], 1)
    }
}

#[derive(Debug)]
pub struct SqueezeNet {
    conv1: nn::Conv2D,
    fires: Vec<(usize, Fire)>,
    /// DDC's adaptation layer between the pooled features and fc8, when
    /// `NewLayers::bottleneck` asks for one.
    adapt: Option<nn::Linear>,
    last: nn::Conv2D,
    head: Head,
}

impl SqueezeNet {
    pub fn new(p: &nn::Path, num_classes: i64, layers: NewLayers) -> Self {
        let f = p / "features";
        let fire = |i: usize, inp, s, e| (i, Fire::new(&f / i.to_string(), inp, s, e, e));
        let (ws_init, bs_init) = super::last_layer_init();
        let last_cfg = nn::ConvConfig { ws_init, bs_init, ..Default::default() };
        Self {
            conv1: nn::conv2d(&f / "0", 3, 64, 3, nn::ConvConfig { stride: 2, ..Default::default() }),
            fires: vec![
                fire(3, 64, 16, 64),
                fire(4, 128, 16, 64),
                fire(6, 128, 32, 128),
                fire(7, 256, 32, 128),
                fire(9, 256, 48, 192),
                fire(10, 384, 48, 192),
                fire(11, 384, 64, 256),
                fire(12, 512, 64, 256),
            ],
            adapt: layers.bottleneck.map(|width| super::adapt_layer(p, 512, width)),
            last: nn::conv2d(p / "classifier" / "1", layers.bottleneck.unwrap_or(512), num_classes, 1, last_cfg),
            head: layers.head,
        }
    }

    /// Everything before the classifier.
    /// # Shapes
    /// `[N, 3, 227, 227]` -> `[N, 512, 14, 14]` (ceil-mode pools: 113, 56, 28, 14)
    pub fn features(&self, xs: &Tensor) -> Tensor {
        self.features_and_fire11(xs).1
    }

    /// `features`, and the output of Fire 11 (`features.11`, `[N, 512, 14, 14]`) on the way.
    fn features_and_fire11(&self, xs: &Tensor) -> (Tensor, Tensor) {
        let pool = |x: Tensor| x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], true);
        let mut x = xs.apply(&self.conv1).relu();
        let mut fire11 = None;
        for (i, fire) in &self.fires {
            // torchvision's max pools sit at features.2, .5 and .8, before fires 3, 6 and 9.
            if matches!(i, 3 | 6 | 9) {
                x = pool(x);
            }
            x = fire.forward(&x);
            if *i == 11 {
                fire11 = Some(x.shallow_clone());
            }
        }
        (fire11.expect("Fire 11 is in the network"), x)
    }

    /// The classifier on the last Fire module's output: dropout, then either the 1x1 conv that
    /// stands in for fc8, (ReLU,) global average pool; or, with DDC's adaptation layer, the
    /// pool first (a linear map commutes with it), fc_adapt, then the 1x1 conv.
    fn classifier(&self, features: &Tensor, train: bool, fire11: Option<Tensor>, fc67: bool) -> Taps {
        let pooled = |x: &Tensor| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1); // [N, C]
        let dropped = features.dropout(0.5, train); // [N, 512, 14, 14]
        let (scores, bottleneck) = match &self.adapt {
            None => (dropped.apply(&self.last), None), // [N, classes, 14, 14]
            Some(adapt) => {
                let b = pooled(&dropped).apply(adapt); // [N, width]
                (b.unsqueeze(-1).unsqueeze(-1).apply(&self.last), Some(b)) // [N, classes, 1, 1]
            }
        };
        let scores = match self.head {
            Head::Linear => scores,
            Head::Relu => scores.relu(),
        };
        Taps {
            fc6: fire11.filter(|_| fc67).map(|f| pooled(&f)),
            fc7: fc67.then(|| pooled(&dropped)),
            bottleneck,
            logits: pooled(&scores),
        }
    }
}

/// SqueezeNet has no fully connected layers, so `fc` is refused before a network is built
/// (`Backbone::supports`); its penultimate features are the last Fire module's output.
impl Network for SqueezeNet {
    fn trunk(&self, xs: &Tensor, cut: Finetune) -> Tensor {
        match cut {
            Finetune::All => xs.shallow_clone(),
            Finetune::Fc => panic!("squeezenet1_1 has no fully connected layers to fine-tune"),
            Finetune::Last => self.features(xs),
        }
    }

    fn head_taps(&self, fs: &Tensor, cut: Finetune, train: bool, fc67: bool) -> Taps {
        match cut {
            Finetune::All if fc67 => {
                let (fire11, features) = self.features_and_fire11(fs);
                self.classifier(&features, train, Some(fire11), true)
            }
            Finetune::All => self.classifier(&self.features(fs), train, None, false),
            Finetune::Fc => panic!("squeezenet1_1 has no fully connected layers to fine-tune"),
            // the Fire modules are frozen here: no taps before the classifier
            Finetune::Last => self.classifier(fs, train, None, false),
        }
    }
}

impl ModuleT for SqueezeNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head(xs, Finetune::All, train)
    }
}
