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
pool without torchvision's ReLU between them; "relu": torchvision's classifier), method
("coral", "ddc", "dan"), iterations, lr, lr_step, lr_gamma, momentum, weight_decay, lambda, and
torch_sgd (whether to train with the second rule too).

The methods (their papers; the loss is lambda times the method's loss, added to the class loss):
- coral: the CORAL loss on fc8 (PAPER.md).
- ddc (Tzeng et al. 2014): an adaptation layer fc_adapt (256, linear) between fc7 and fc8
  (SqueezeNet: between its pooled features and its 1x1 fc8), trained like fc8 (lr x10, x20),
  and the squared distance between the mean source and mean target fc_adapt outputs.
- dan (Long et al. 2015): conv1-conv3 frozen (SqueezeNet: conv1 and Fire 3-7), and the
  linear-time MK-MMD (5 Gaussians around the mean squared distance, the released mmd_layer's)
  on fc6, fc7 and fc8, each as the next layer receives it (after ReLU and dropout), summed.
  SqueezeNet's fc6 and fc7: the pooled outputs of Fire 11 and of the dropped-out Fire 12.

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
METHOD = cfg["method"]
# The new layers (fc8 or its stand-in, and DDC's fc_adapt), whose multipliers are x10 / x20.
LAST = ({"squeezenet1_1": "classifier.1.", "alexnet": "classifier.6."}[BACKBONE], "fc_adapt.")
# DAN's frozen lower convolutions: AlexNet's conv1-conv3; SqueezeNet's conv1 and Fire 3-7.
FROZEN = {"squeezenet1_1": ("features.0.", "features.3.", "features.4.", "features.6.", "features.7."),
          "alexnet": ("features.0.", "features.3.", "features.6.")}[BACKBONE] if METHOD == "dan" else ()
init = {k[len("init."):]: v for k, v in data.items() if k.startswith("init.")}
assert init and all(v.dtype == torch.float32 for v in init.values())


def multipliers(name):
    """(lr_mult, decay_mult): weights 1/1, biases 2/0; the new layers' lr x10."""
    scale = 10.0 if name.startswith(LAST) else 1.0
    return (2.0 * scale, 0.0) if name.endswith(".bias") else (scale, 1.0)


def lr_at(i):
    """Caffe's "step" policy: base_lr * gamma ^ floor(iter / stepsize)."""
    return cfg["lr"] * cfg["lr_gamma"] ** (i // cfg["lr_step"])


def squeezenet1_1(P, x, masks):
    """torchvision's squeezenet1_1: conv 3x3/2, ceil-mode max pools before fires 3, 6 and 9,
    Fire = squeeze 1x1 -> [expand 1x1, expand 3x3] concatenated; classifier = dropout, 1x1
    conv, ReLU (head "relu" only), global average pool; with fc_adapt: dropout, pool, fc_adapt,
    the 1x1 conv. Returns the taps: fc6, fc7 (pooled Fire 11, pooled dropped Fire 12),
    fc_adapt, logits."""
    conv = lambda h, n, **kw: F.conv2d(h, P[f"{n}.weight"], P[f"{n}.bias"], **kw)
    h = F.relu(conv(x, "features.0", stride=2))
    for i in (3, 4, 6, 7, 9, 10, 11, 12):
        if i in (3, 6, 9):
            h = F.max_pool2d(h, kernel_size=3, stride=2, ceil_mode=True)
        s = F.relu(conv(h, f"features.{i}.squeeze"))
        h = torch.cat([F.relu(conv(s, f"features.{i}.expand1x1")),
                       F.relu(conv(s, f"features.{i}.expand3x3", padding=1))], 1)
        if i == 11:
            fire11 = h.mean(dim=(2, 3))
    h = h * masks[0]
    taps = {"fc6": fire11, "fc7": h.mean(dim=(2, 3))}
    if "fc_adapt.weight" in P:
        taps["fc_adapt"] = F.linear(taps["fc7"], P["fc_adapt.weight"], P["fc_adapt.bias"])
        h = conv(taps["fc_adapt"][:, :, None, None], "classifier.1")
    else:
        h = conv(h, "classifier.1")
    if cfg["head"] == "relu":
        h = F.relu(h)
    taps["logits"] = h.mean(dim=(2, 3))
    return taps


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
    fc6 = F.relu(fc(h * masks[0], 1)) * masks[1]  # as fc7 receives it
    fc7 = F.relu(fc(fc6, 4))
    taps = {"fc6": fc6, "fc7": fc7}
    if "fc_adapt.weight" in P:
        taps["fc_adapt"] = F.linear(fc7, P["fc_adapt.weight"], P["fc_adapt.bias"])
        taps["logits"] = fc(taps["fc_adapt"], 6)
    else:
        taps["logits"] = fc(fc7, 6)
    return taps


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


def linear_mmd2(s, t):
    """DDC: MMD with a linear kernel, squared: |mean(s) - mean(t)|^2."""
    return ((s.mean(0) - t.mean(0)) ** 2).sum()


def mk_mmd2(s, t):
    """DAN's linear-time MK-MMD: quadruples of consecutive rows, 5 Gaussians around the mean
    squared distance between distinct rows of both batches (held constant), equal weights."""
    n = min(s.shape[0], t.shape[0]) // 2 * 2
    both = torch.cat([s, t]).detach()
    m = both.shape[0]
    gamma = torch.cdist(both, both).pow(2).sum() / (m * (m - 1))
    k = lambda a, b: sum(torch.exp(-((a - b) ** 2).sum(1) / (gamma * f)) for f in (0.25, 0.5, 1.0, 2.0, 4.0)) / 5
    s1, s2, t1, t2 = s[0:n:2], s[1:n:2], t[0:n:2], t[1:n:2]
    return (k(s1, s2) + k(t1, t2) - k(s1, t2) - k(s2, t1)).mean()


def align_loss(ts, tt, coral):
    if METHOD == "coral":
        return coral
    if METHOD == "ddc":
        return linear_mmd2(ts["fc_adapt"], tt["fc_adapt"])
    return sum(mk_mmd2(ts[layer], tt[layer]) for layer in ("fc6", "fc7", "logits"))


def cross_entropy(logits, labels):
    """Caffe's SoftmaxWithLoss: mean over the batch of -log softmax(logits)[label]."""
    return -F.log_softmax(logits, dim=1).gather(1, labels[:, None]).mean()


def masks(i, branch):
    found = sorted((k for k in data if k.startswith(f"it{i}.mask.{branch}.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    return [data[k] for k in found]


def train(rule):
    P = {k: v.clone().requires_grad_(not k.startswith(FROZEN)) for k, v in init.items()}
    names = sorted(k for k in P if not k.startswith(FROZEN))  # the trained parameters
    class_losses, coral_losses, align_losses = [], [], []
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
        ts = NET(P, xs, masks(i, "source"))
        with torch.set_grad_enabled(cfg["lambda"] > 0):  # lambda = 0: no gradient from the target
            tt = NET(P, xt, masks(i, "target"))
        cls = cross_entropy(ts["logits"], ys)
        coral = coral_loss(ts["logits"], tt["logits"])
        align = align_loss(ts, tt, coral)
        loss = cls + cfg["lambda"] * align if cfg["lambda"] > 0 else cls
        for v in P.values():
            v.grad = None
        loss.backward()
        class_losses.append(cls.item())
        coral_losses.append(coral.item())
        align_losses.append(align.item())
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
    out = {f"{rule}.{k}": P[k].detach().contiguous() for k in sorted(P)}  # frozen ones too
    out[f"{rule}.class_loss"] = torch.tensor(class_losses, dtype=torch.float64)
    out[f"{rule}.coral_loss"] = torch.tensor(coral_losses, dtype=torch.float64)
    out[f"{rule}.align_loss"] = torch.tensor(align_losses, dtype=torch.float64)
    return out


result = {}
for rule in ("caffe", "torch_sgd") if cfg["torch_sgd"] else ("caffe",):
    result.update(train(rule))
save_file(result, out_path)
print("ok", json.dumps({"class_loss": result["caffe.class_loss"].tolist(),
                        "coral_loss": result["caffe.coral_loss"].tolist()}))
