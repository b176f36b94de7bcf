//! BVLC Reference CaffeNet, the network of the paper (PAPER.md): AlexNet as trained in
//! Caffe, with grouped conv2/4/5 (group 2), local response normalisation after pool1 and
//! pool2 (pool before norm, unlike the original AlexNet), ceil-mode max pooling, and
//! dropout 0.5 after fc6 and fc7. Parameters are named as the caffemodel's layers
//! (`conv1.weight`, ..., `fc8.bias`), so `weights import-caffe` output loads by name.

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::{Finetune, Network, NewLayers, Taps};

#[derive(Debug)]
pub struct CaffeNet {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    conv3: nn::Conv2D,
    conv4: nn::Conv2D,
    conv5: nn::Conv2D,
    fc6: nn::Linear,
    fc7: nn::Linear,
    /// DDC's adaptation layer between fc7 and fc8, when `NewLayers::bottleneck` asks for one.
    adapt: Option<nn::Linear>,
    fc8: nn::Linear,
}

impl CaffeNet {
    pub fn new(p: &nn::Path, num_classes: i64, layers: NewLayers) -> Self {
        let conv = |name: &str, i, o, k, stride, padding, groups| {
            nn::conv2d(p / name, i, o, k, nn::ConvConfig { stride, padding, groups, ..Default::default() })
        };
        let (ws_init, bs_init) = super::last_layer_init();
        Self {
            conv1: conv("conv1", 3, 96, 11, 4, 0, 1),
            conv2: conv("conv2", 96, 256, 5, 1, 2, 2),
            conv3: conv("conv3", 256, 384, 3, 1, 1, 1),
            conv4: conv("conv4", 384, 384, 3, 1, 1, 2),
            conv5: conv("conv5", 384, 256, 3, 1, 1, 2),
            fc6: nn::linear(p / "fc6", 256 * 6 * 6, 4096, Default::default()),
            fc7: nn::linear(p / "fc7", 4096, 4096, Default::default()),
            adapt: layers.bottleneck.map(|width| super::adapt_layer(p, 4096, width)),
            fc8: nn::linear(
                p / "fc8",
                layers.bottleneck.unwrap_or(4096),
                num_classes,
                nn::LinearConfig { ws_init, bs_init: Some(bs_init), bias: true },
            ),
        }
    }

    /// conv1..pool5.
    /// # Shapes
    /// `[N, 3, 227, 227]` -> `[N, 9216]`
    pub fn features(&self, xs: &Tensor) -> Tensor {
        let pool = |x: Tensor| x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], true);
        let x = lrn(&pool(xs.apply(&self.conv1).relu())); // [N, 96, 27, 27]
        let x = lrn(&pool(x.apply(&self.conv2).relu())); // [N, 256, 13, 13]
        let x = x.apply(&self.conv3).relu();
        let x = x.apply(&self.conv4).relu();
        pool(x.apply(&self.conv5).relu()).flatten(1, -1) // [N, 256 * 6 * 6]
    }

    /// fc6, relu6, drop6, fc7, relu7: everything between pool5 and drop7.
    /// # Shapes
    /// `[N, 9216]` -> `[N, 4096]`
    fn fc6_fc7(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.fc6).relu().dropout(0.5, train).apply(&self.fc7).relu()
    }
}

impl Network for CaffeNet {
    fn trunk(&self, xs: &Tensor, cut: Finetune) -> Tensor {
        super::fc_trunk(xs, cut, |x| self.features(x), |x| self.fc6_fc7(x, false))
    }

    fn head_taps(&self, fs: &Tensor, cut: Finetune, train: bool, fc67: bool) -> Taps {
        match cut {
            Finetune::All => self.head_taps(&self.features(fs), Finetune::Fc, train, fc67),
            // `fc6_fc7` step by step, then drop7: fc6 as fc7 receives it (drop6's output), fc7
            // as fc8 does (drop7's output)
            Finetune::Fc => {
                let fc6 = fs.apply(&self.fc6).relu().dropout(0.5, train);
                let fc7 = fc6.apply(&self.fc7).relu().dropout(0.5, train);
                super::fc_top(fc7, Some(fc6), self.adapt.as_ref(), &self.fc8, fc67)
            }
            // drop7, fc8; fc6 and fc7 are frozen here
            Finetune::Last => super::fc_top(fs.dropout(0.5, train), None, self.adapt.as_ref(), &self.fc8, false),
        }
    }
}

impl ModuleT for CaffeNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head(xs, Finetune::All, train)
    }
}

/// Caffe's across-channel LRN with local_size 5, alpha 1e-4, beta 0.75, k 1:
/// `b_c = a_c / (k + alpha/n * sum_{c' in window(c)} a_c'^2)^beta`, the window centred on
/// `c` and clipped at the edges (zero padding), as `torch.nn.LocalResponseNorm` computes it.
pub fn lrn(xs: &Tensor) -> Tensor {
    local_response_norm(xs, 5, 1e-4, 0.75, 1.0)
}

/// See [`lrn`]; the mean over the window is an average pool over a zero-padded channel axis.
pub fn local_response_norm(xs: &Tensor, size: i64, alpha: f64, beta: f64, k: f64) -> Tensor {
    let sq = xs.square().unsqueeze(1); // [N, 1, C, H, W]
    let padded = sq.constant_pad_nd([0, 0, 0, 0, size / 2, (size - 1) / 2]);
    let mean = padded.avg_pool3d([size, 1, 1], [1, 1, 1], [0, 0, 0], false, true, None).squeeze_dim(1);
    xs / (mean * alpha + k).pow_tensor_scalar(beta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// A hand-worked LRN: one pixel, 3 channels, window 3 (size/2 = 1 each side).
    #[test]
    fn lrn_matches_the_formula() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 3, 1, 1]);
        let y = local_response_norm(&x, 3, 3.0, 1.0, 1.0);
        // channel 0: window {0, 1}: mean = (1 + 4) / 3; b = 1 / (1 + 3 * 5/3) = 1/6
        // channel 1: window {0, 1, 2}: mean = 14/3; b = 2 / (1 + 14) = 2/15
        // channel 2: window {1, 2}: mean = 13/3; b = 3 / 14
        let want = Tensor::from_slice(&[1.0f32 / 6.0, 2.0 / 15.0, 3.0 / 14.0]).view([1, 3, 1, 1]);
        assert!(y.allclose(&want, 1e-6, 1e-7, false), "{y}");
    }

    #[test]
    fn shapes_follow_caffenet() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = CaffeNet::new(&vs.root(), 31, NewLayers::default());
        let vars = vs.variables();
        assert_eq!(vars["conv2.weight"].size(), [256, 48, 5, 5]);
        assert_eq!(vars["conv4.weight"].size(), [384, 192, 3, 3]);
        assert_eq!(vars["conv5.weight"].size(), [256, 192, 3, 3]);
        let f = tch::no_grad(|| net.features(&Tensor::zeros([1, 3, 227, 227], (Kind::Float, Device::Cpu))));
        assert_eq!(f.size(), [1, 9216]);
    }
}
