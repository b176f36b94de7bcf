//! AlexNet as torchvision builds it (Krizhevsky et al., 2012, "one weird trick" variant):
//! <https://arxiv.org/abs/1404.5997>. Parameter names follow torchvision's state dict
//! (`features.{0,3,6,8,10}`, `classifier.{1,4,6}`), so its weights load by name.

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::{Finetune, Network, NewLayers, Taps};

#[derive(Debug)]
pub struct AlexNet {
    convs: Vec<nn::Conv2D>,
    fc6: nn::Linear,
    fc7: nn::Linear,
    /// DDC's adaptation layer between fc7 and fc8, when `NewLayers::bottleneck` asks for one.
    adapt: Option<nn::Linear>,
    fc8: nn::Linear,
}

impl AlexNet {
    pub fn new(p: &nn::Path, num_classes: i64, layers: NewLayers) -> Self {
        let f = p / "features";
        let conv = |name: &str, i, o, k, stride, padding| {
            nn::conv2d(&f / name, i, o, k, nn::ConvConfig { stride, padding, ..Default::default() })
        };
        let convs = vec![
            conv("0", 3, 64, 11, 4, 2),
            conv("3", 64, 192, 5, 1, 2),
            conv("6", 192, 384, 3, 1, 1),
            conv("8", 384, 256, 3, 1, 1),
            conv("10", 256, 256, 3, 1, 1),
        ];
        let c = p / "classifier";
        let (ws_init, bs_init) = super::last_layer_init();
        Self {
            convs,
            fc6: nn::linear(&c / "1", 256 * 6 * 6, 4096, Default::default()),
            fc7: nn::linear(&c / "4", 4096, 4096, Default::default()),
            adapt: layers.bottleneck.map(|width| super::adapt_layer(p, 4096, width)),
            fc8: nn::linear(
                &c / "6",
                layers.bottleneck.unwrap_or(4096),
                num_classes,
                nn::LinearConfig { ws_init, bs_init: Some(bs_init), bias: true },
            ),
        }
    }

    /// conv1..conv5 with their ReLUs and pools, then torchvision's adaptive 6x6 average pool.
    /// # Shapes
    /// `[N, 3, 227, 227]` -> `[N, 9216]`
    pub fn features(&self, xs: &Tensor) -> Tensor {
        let pool = |x: Tensor| x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false);
        let x = pool(xs.apply(&self.convs[0]).relu()); // [N, 64, 27, 27]
        let x = pool(x.apply(&self.convs[1]).relu()); // [N, 192, 13, 13]
        let x = x.apply(&self.convs[2]).relu();
        let x = x.apply(&self.convs[3]).relu();
        let x = pool(x.apply(&self.convs[4]).relu()); // [N, 256, 6, 6]
        x.adaptive_avg_pool2d([6, 6]).flatten(1, -1)
    }

    /// torchvision's classifier up to fc8: dropout, fc6, ReLU, dropout, fc7, ReLU.
    /// # Shapes
    /// `[N, 9216]` -> `[N, 4096]`
    fn fc6_fc7(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.dropout(0.5, train).apply(&self.fc6).relu().dropout(0.5, train).apply(&self.fc7).relu()
    }
}

impl Network for AlexNet {
    fn trunk(&self, xs: &Tensor, cut: Finetune) -> Tensor {
        super::fc_trunk(xs, cut, |x| self.features(x), |x| self.fc6_fc7(x, false))
    }

    fn head_taps(&self, fs: &Tensor, cut: Finetune, train: bool, fc67: bool) -> Taps {
        match cut {
            Finetune::All => self.head_taps(&self.features(fs), Finetune::Fc, train, fc67),
            // `fc6_fc7`, step by step: fc6 as fc7 receives it (after its dropout), fc7 as fc8 does
            Finetune::Fc => {
                let fc6 = fs.dropout(0.5, train).apply(&self.fc6).relu().dropout(0.5, train);
                let fc7 = fc6.apply(&self.fc7).relu();
                super::fc_top(fc7, Some(fc6), self.adapt.as_ref(), &self.fc8, fc67)
            }
            // no dropout before torchvision's fc8; fc6 and fc7 are frozen here
            Finetune::Last => super::fc_top(fs.shallow_clone(), None, self.adapt.as_ref(), &self.fc8, false),
        }
    }
}

impl ModuleT for AlexNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head(xs, Finetune::All, train)
    }
}
