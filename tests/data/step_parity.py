"""An independent PyTorch implementation of deep-coral's training step, for tests/step_parity.rs.

Usage: python step_parity.py IN.safetensors CONFIG.json OUT.safetensors

Written from the paper's formulas (../shared/PAPER.md) and Caffe's SGD solver, not from the
Rust code: the networks in torch.nn.functional (torchvision's SqueezeNet 1.1 and AlexNet), the
paper's covariance and CORAL loss written out, cross entropy from log-softmax, autograd for the
gradients, Caffe's SGD update by hand.

IN holds what deep-coral saw, so both sides start from the same numbers:
  init.<param>                the weights before iteration 0
  it<i>.source, it<i>.target  the input batches of iteration i (crops, mirrors, normalisation
                              already applied), [n, 3, 227, 227], NCHW contiguous
  it<i>.labels                the source labels, int64
  it<i>.mask.<branch>.<j>     the j-th dropout mask of the source/target branch (0 or 1/(1-p));
                              dropout is multiplication by it
CONFIG: backbone, head ("linear": the paper's linear fc8, for SqueezeNet the 1x1 conv and the
pool without torchvision's ReLU between them; "relu": torchvision's classifier), iterations, lr,
lr_step, lr_gamma, momentum, weight_decay, lambda, and torch_sgd (whether to train with the
second rule too).

OUT holds, for each of two update rules, the per-iteration losses and the final weights:
  caffe.class_loss, caffe.coral_loss [K] (float64 copies of the float32 values), caffe.<param>
      Caffe's SGDSolver: g = grad + wd * decay_mult * w; v = m * v + lr * lr_mult * g; w -= v
  torch_sgd.class_loss, torch_sgd.coral_loss, torch_sgd.<param>   (when CONFIG's torch_sgd)
      torch.optim.SGD with the same multipliers: v = m * v + g; w -= lr * lr_mult * v,
      which agrees with Caffe's until the learning rate steps; the test checks that it then
      differs, so that a swap of the two rules would be caught.
Everything is float32, as deep-coral trains.
"""
import json
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

inp_path, cfg_path, out_path = sys.argv[1:4]
cfg = json.load(open(cfg_path))
data = load_file(inp_path)
K = cfg["iterations"]
BACKBONE = cfg["backbone"]
# The new last layer (fc8 or its stand-in), whose multipliers are x10 / x20 (paper's solver).
LAST = {"squeezenet1_1": "classifier.1.", "alexnet": "classifier.6."}[BACKBONE]
init = {k[len("init."):]: v for k, v in data.items() if k.startswith("init.")}
assert init and all(v.dtype == torch.float32 for v in init.values())


def multipliers(name):
    """(lr_mult, decay_mult): weights 1/1, biases 2/0; the last layer's lr x10."""
    scale = 10.0 if name.startswith(LAST) else 1.0
    return (2.0 * scale, 0.0) if name.endswith(".bias") else (scale, 1.0)


def lr_at(i):
    """Caffe's "step" policy: base_lr * gamma ^ floor(iter / stepsize)."""
    return cfg["lr"] * cfg["lr_gamma"] ** (i // cfg["lr_step"])


def squeezenet1_1(P, x, masks):
    """torchvision's squeezenet1_1: conv 3x3/2, ceil-mode max pools before fires 3, 6 and 9,
    Fire = squeeze 1x1 -> [expand 1x1, expand 3x3] concatenated; classifier = dropout, 1x1
    conv, ReLU (head "relu" only), global average pool."""
    conv = lambda h, n, **kw: F.conv2d(h, P[f"{n}.weight"], P[f"{n}.bias"], **kw)
    h = F.relu(conv(x, "features.0", stride=2))
    for i in (3, 4, 6, 7, 9, 10, 11, 12):
        if i in (3, 6, 9):
            h = F.max_pool2d(h, kernel_size=3, stride=2, ceil_mode=True)
        s = F.relu(conv(h, f"features.{i}.squeeze"))
        h = torch.cat([F.relu(conv(s, f"features.{i}.expand1x1")),
                       F.relu(conv(s, f"features.{i}.expand3x3", padding=1))], 1)
    h = h * masks[0]
    h = conv(h, "classifier.1")
    if cfg["head"] == "relu":
        h = F.relu(h)
    return h.mean(dim=(2, 3))


def alexnet(P, x, masks):
    """torchvision's alexnet: 5 convs with ReLUs and 3x3/2 max pools, adaptive 6x6 average
    pool, then dropout, fc6, ReLU, dropout, fc7, ReLU, fc8."""
    conv = lambda h, n, **kw: F.relu(F.conv2d(h, P[f"features.{n}.weight"], P[f"features.{n}.bias"], **kw))
    fc = lambda h, n: F.linear(h, P[f"classifier.{n}.weight"], P[f"classifier.{n}.bias"])
    pool = lambda h: F.max_pool2d(h, kernel_size=3, stride=2)
    h = pool(conv(x, 0, stride=4, padding=2))
    h = pool(conv(h, 3, padding=2))
    h = conv(h, 6, padding=1)
    h = conv(h, 8, padding=1)
    h = pool(conv(h, 10, padding=1))
    h = F.adaptive_avg_pool2d(h, (6, 6)).flatten(1)
    h = F.relu(fc(h * masks[0], 1))
    h = F.relu(fc(h * masks[1], 4))
    return fc(h, 6)


NET = {"squeezenet1_1": squeezenet1_1, "alexnet": alexnet}[BACKBONE]


def covariance(D):
    """PAPER.md: C = 1/(n-1) * (D^T D - (1/n) (1^T D)^T (1^T D)), rows = samples."""
    n = D.shape[0]
    s = torch.ones(1, n, dtype=D.dtype) @ D  # 1^T D, [1, d]
    return (D.T @ D - (s.T @ s) / n) / (n - 1)


def coral_loss(Ds, Dt):
    """PAPER.md: l_CORAL = ||C_S - C_T||_F^2 / (4 d^2)."""
    d = Ds.shape[1]
    return ((covariance(Ds) - covariance(Dt)) ** 2).sum() / (4 * d * d)


def cross_entropy(logits, labels):
    """Caffe's SoftmaxWithLoss: mean over the batch of -log softmax(logits)[label]."""
    return -F.log_softmax(logits, dim=1).gather(1, labels[:, None]).mean()


def masks(i, branch):
    found = sorted((k for k in data if k.startswith(f"it{i}.mask.{branch}.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    return [data[k] for k in found]


def train(rule):
    P = {k: v.clone().requires_grad_(True) for k, v in init.items()}
    names = sorted(P)
    class_losses, coral_losses = [], []
    if rule == "caffe":
        velocity = {k: torch.zeros_like(v) for k, v in P.items()}
    else:
        groups = []
        for k in names:
            lr_mult, decay_mult = multipliers(k)
            groups.append({"params": [P[k]], "lr": cfg["lr"] * lr_mult,
                           "weight_decay": cfg["weight_decay"] * decay_mult, "name": k})
        opt = torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"], dampening=0.0,
                              nesterov=False, foreach=False)
    for i in range(K):
        xs, ys, xt = data[f"it{i}.source"], data[f"it{i}.labels"], data[f"it{i}.target"]
        fs = NET(P, xs, masks(i, "source"))
        with torch.set_grad_enabled(cfg["lambda"] > 0):  # lambda = 0: no gradient from the target
            ft = NET(P, xt, masks(i, "target"))
        cls = cross_entropy(fs, ys)
        coral = coral_loss(fs, ft)
        loss = cls + cfg["lambda"] * coral if cfg["lambda"] > 0 else cls
        for v in P.values():
            v.grad = None
        loss.backward()
        class_losses.append(cls.item())
        coral_losses.append(coral.item())
        lr = lr_at(i)
        with torch.no_grad():
            if rule == "caffe":
                for k in names:
                    lr_mult, decay_mult = multipliers(k)
                    w = P[k]
                    g = w.grad + w * (cfg["weight_decay"] * decay_mult) if decay_mult > 0 else w.grad
                    velocity[k].mul_(cfg["momentum"]).add_(g * (lr * lr_mult))
                    w.sub_(velocity[k])
            else:
                for group in opt.param_groups:
                    group["lr"] = lr * multipliers(group["name"])[0]
                opt.step()
    out = {f"{rule}.{k}": P[k].detach().contiguous() for k in names}
    out[f"{rule}.class_loss"] = torch.tensor(class_losses, dtype=torch.float64)
    out[f"{rule}.coral_loss"] = torch.tensor(coral_losses, dtype=torch.float64)
    return out


result = {}
for rule in ("caffe", "torch_sgd") if cfg["torch_sgd"] else ("caffe",):
    result.update(train(rule))
save_file(result, out_path)
print("ok", json.dumps({"class_loss": result["caffe.class_loss"].tolist(),
                        "coral_loss": result["caffe.coral_loss"].tolist()}))
