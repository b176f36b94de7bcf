//! SGD exactly as Caffe's solver runs it for the paper (authors' solver.prototxt): momentum
//! 0.9, weight decay 5e-4 on weights only, per-parameter learning-rate multipliers
//! (weights x1, biases x2, the new last layer's weights x10 and bias x20).
//!
//! Caffe's update for a parameter `w` with gradient `g` (SGDSolver::ComputeUpdateValue):
//!
//! ```text
//! g ← g + weight_decay · decay_mult · w
//! v ← momentum · v + lr · lr_mult · g
//! w ← w − v
//! ```
//!
//! The learning rate sits inside the momentum buffer; libtorch's SGD applies it after
//! (`v ← m·v + g; w ← w − lr·v`). The two agree except right after a learning-rate step,
//! where Caffe's buffer still carries the old rate; this module follows Caffe.

use serde::Serialize;
use tch::{nn, Tensor};

use crate::model::backbone::Backbone;

/// Learning-rate and weight-decay multipliers of one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Multipliers {
    pub lr: f64,
    pub decay: f64,
}

/// The paper's multipliers: `param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }`
/// on every layer, and 10 / 20 on the new fc8 (and on DDC's adaptation layer, new as well).
pub fn multipliers(backbone: Backbone, name: &str) -> Multipliers {
    let bias = name.ends_with(".bias");
    let scale = if backbone.is_new_layer(name) { 10.0 } else { 1.0 };
    if bias {
        Multipliers { lr: 2.0 * scale, decay: 0.0 }
    } else {
        Multipliers { lr: scale, decay: 1.0 }
    }
}

struct Param {
    name: String,
    var: Tensor,
    mult: Multipliers,
    velocity: Tensor,
}

/// Caffe's SGD over the trainable variables of a VarStore.
pub struct CaffeSgd {
    params: Vec<Param>,
    momentum: f64,
    weight_decay: f64,
}

impl CaffeSgd {
    pub fn new(vs: &nn::VarStore, backbone: Backbone, momentum: f64, weight_decay: f64) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, v)| v.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, var)| Param { mult: multipliers(backbone, &name), velocity: var.zeros_like(), name, var })
            .collect();
        Self { params, momentum, weight_decay }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.var.zero_grad();
        }
    }

    /// One update with base learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.var.grad();
                if !grad.defined() {
                    continue;
                }
                let decay = self.weight_decay * p.mult.decay;
                let g = if decay > 0.0 { grad + &p.var * decay } else { grad };
                let _ = p.velocity.g_mul_scalar_(self.momentum);
                let _ = p.velocity.g_add_(&(g * (lr * p.mult.lr)));
                let _ = p.var.g_sub_(&p.velocity);
            }
        });
    }

    /// Momentum buffers by parameter name, for checkpoints.
    pub fn velocities(&self) -> Vec<(String, Tensor)> {
        self.params.iter().map(|p| (format!("velocity.{}", p.name), p.velocity.shallow_clone())).collect()
    }

    /// Restores momentum buffers saved by [`CaffeSgd::velocities`].
    pub fn set_velocities(&mut self, saved: &std::collections::HashMap<String, Tensor>) -> anyhow::Result<()> {
        tch::no_grad(|| {
            for p in &mut self.params {
                let key = format!("velocity.{}", p.name);
                let t = saved.get(&key).ok_or_else(|| anyhow::anyhow!("checkpoint lacks {key}"))?;
                p.velocity.copy_(t);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn the_papers_multipliers() {
        let b = Backbone::Caffenet;
        assert_eq!(multipliers(b, "conv1.weight"), Multipliers { lr: 1.0, decay: 1.0 });
        assert_eq!(multipliers(b, "fc7.bias"), Multipliers { lr: 2.0, decay: 0.0 });
        assert_eq!(multipliers(b, "fc8.weight"), Multipliers { lr: 10.0, decay: 1.0 });
        assert_eq!(multipliers(b, "fc8.bias"), Multipliers { lr: 20.0, decay: 0.0 });
        assert_eq!(multipliers(Backbone::Squeezenet1_1, "classifier.1.bias").lr, 20.0);
    }

    /// Two steps by hand on fc8 of a tiny store: w=1, g=0.5, lr=0.1, m=0.9, decay 5e-4 x1, lr x10.
    #[test]
    fn follows_caffes_update_rule() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().sub("fc8").var("weight", &[1], nn::Init::Const(1.0));
        let b = vs.root().sub("conv1").var("bias", &[1], nn::Init::Const(1.0));
        let mut opt = CaffeSgd::new(&vs, Backbone::Caffenet, 0.9, 5e-4);
        let loss = (&w * 0.5 + &b * 0.5).sum(Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step(0.1);
        // v1 = 0.1*10*(0.5 + 5e-4*1) = 0.5005; w = 0.4995
        assert!((w.double_value(&[0]) - 0.4995).abs() < 1e-6);
        // bias: no decay, lr x2: v1 = 0.1*2*0.5 = 0.1
        assert!((b.double_value(&[0]) - 0.9).abs() < 1e-6);
        opt.zero_grad();
        (&w * 0.5).sum(Kind::Float).backward();
        opt.step(0.01);
        // v2 = 0.9*0.5005 + 0.01*10*(0.5 + 5e-4*0.4995) = 0.45045 + 0.050024975
        let want = 0.4995 - (0.45045 + 0.050_024_975);
        assert!((w.double_value(&[0]) - want).abs() < 1e-6, "{}", w.double_value(&[0]));
    }
}
