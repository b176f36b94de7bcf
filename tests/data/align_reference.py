"""Independent float64 PyTorch implementations of DDC's and DAN's losses, for
tests/align_losses.rs. Written from the papers' formulas (and DAN's released mmd_layer for its
kernels), not from the Rust code.

Usage: python align_reference.py IN.safetensors OUT.safetensors

IN holds cases `<k>.source` [n_S, d] and `<k>.target` [n_T, d] (float64) and, per case,
`<k>.method` (a 1-element int64 tensor: 0 linear MMD, 1 MK-MMD). OUT holds per case the loss
`<k>.loss` and its gradients `<k>.grad_source`, `<k>.grad_target` (autograd, float64).

- DDC (Tzeng et al. 2014), MMD with a linear kernel: the squared distance between the mean
  source row and the mean target row.
- DAN (Long et al. 2015, section 3.2), the unbiased linear-time MK-MMD estimate
  2/n sum_{i=1}^{n/2} g(z_i) over quadruples (s_{2i-1}, s_{2i}, t_{2i-1}, t_{2i}),
  g = k(s1, s2) + k(t1, t2) - k(s1, t2) - k(s2, t1); n = the smaller batch, rounded down to
  even; k = mean of 5 Gaussians exp(-|x - y|^2 / (gamma * f)), f in {1/4, 1/2, 1, 2, 4}, gamma
  = the mean squared distance over distinct rows of both batches stacked, held constant.
"""
import sys

import torch
from safetensors.torch import load_file, save_file

torch.set_default_dtype(torch.float64)
data = load_file(sys.argv[1])
out = {}


def linear_mmd2(s, t):
    return ((s.mean(0) - t.mean(0)) ** 2).sum()


def mk_mmd2(s, t):
    n = min(s.shape[0], t.shape[0]) // 2 * 2
    both = torch.cat([s, t]).detach()
    m = both.shape[0]
    total = 0.0
    for i in range(m):
        for j in range(m):
            if i != j:
                total = total + ((both[i] - both[j]) ** 2).sum()
    gamma = total / (m * (m - 1))

    def k(x, y):
        d2 = ((x - y) ** 2).sum()
        return sum(torch.exp(-d2 / (gamma * f)) for f in (0.25, 0.5, 1.0, 2.0, 4.0)) / 5.0

    g = 0.0
    for i in range(n // 2):
        s1, s2, t1, t2 = s[2 * i], s[2 * i + 1], t[2 * i], t[2 * i + 1]
        g = g + k(s1, s2) + k(t1, t2) - k(s1, t2) - k(s2, t1)
    return g * 2.0 / n


cases = sorted({k.split(".")[0] for k in data})
for c in cases:
    s = data[f"{c}.source"].clone().requires_grad_(True)
    t = data[f"{c}.target"].clone().requires_grad_(True)
    loss = [linear_mmd2, mk_mmd2][int(data[f"{c}.method"][0])](s, t)
    loss.backward()
    out[f"{c}.loss"] = loss.detach().reshape(1)
    out[f"{c}.grad_source"] = s.grad
    out[f"{c}.grad_target"] = t.grad
save_file(out, sys.argv[2])
print("ok")
