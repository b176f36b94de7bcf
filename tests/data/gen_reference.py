"""Reference forward passes for tests/backbones.rs, written by the venv's PyTorch.

Usage: python gen_reference.py OUT_DIR SHARED_WEIGHTS_DIR

For each backbone writes OUT_DIR/<name>.safetensors (the full state dict the Rust side loads)
and OUT_DIR/<name>-io.safetensors (a fixed input and the reference logits):
- squeezenet1_1: torchvision.models.squeezenet1_1 with the real ImageNet weights of ../shared;
  "logits" are torchvision's (its ReLU head, deep-coral's `head relu`), "logits_linear" the
  same model with `classifier[2]` (the ReLU) replaced by `nn.Identity()` (deep-coral's default
  linear head).
- alexnet: torchvision.models.alexnet with the real conv weights of ../shared and a seeded
  random classifier (fc6-fc8 are not available here).
- caffenet: BVLC CaffeNet written with torch.nn.functional (grouped convs,
  F.local_response_norm, ceil-mode pooling), seeded random weights.
Equivalent Rust: `Backbone::build` + `weights::load_full` + `forward_t(x, false)`.
"""
import sys

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file, save_file

out, shared = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
x = torch.randn(2, 3, 227, 227) * 50.0


def write(name, state, logits, inp, **more):
    save_file({k: v.contiguous() for k, v in state.items()}, f"{out}/{name}.safetensors")
    io = {"input": inp, "logits": logits, **more}
    save_file({k: v.contiguous() for k, v in io.items()}, f"{out}/{name}-io.safetensors")


with torch.no_grad():
    sq = torchvision.models.squeezenet1_1()
    sq.load_state_dict(load_file(f"{shared}/squeezenet1_1-caffe-imagenet.safetensors"), strict=True)
    sq.eval()
    relu_logits = sq(x)
    sq.classifier[2] = torch.nn.Identity()
    write("squeezenet1_1", sq.state_dict(), relu_logits, x, logits_linear=sq(x))

    ax = torchvision.models.alexnet()
    features = load_file(f"{shared}/alexnet-torchvision-features-imagenet.safetensors")
    missing, unexpected = ax.load_state_dict(features, strict=False)
    assert not unexpected and all(k.startswith("classifier.") for k in missing), (missing, unexpected)
    ax.eval()
    xa = x / 255.0
    write("alexnet", ax.state_dict(), ax(xa), xa)

    shapes = {
        "conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
        "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3),
        "fc6": (4096, 9216), "fc7": (4096, 4096), "fc8": (1000, 4096),
    }
    cn = {}
    for name, shape in shapes.items():
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        cn[f"{name}.weight"] = torch.randn(shape) * (2.0 / fan_in) ** 0.5
        cn[f"{name}.bias"] = torch.randn(shape[0]) * 0.1

    def caffenet(h):
        pool = lambda t: F.max_pool2d(t, 3, 2, ceil_mode=True)
        lrn = lambda t: F.local_response_norm(t, 5, alpha=1e-4, beta=0.75, k=1.0)
        h = lrn(pool(F.relu(F.conv2d(h, cn["conv1.weight"], cn["conv1.bias"], stride=4))))
        h = lrn(pool(F.relu(F.conv2d(h, cn["conv2.weight"], cn["conv2.bias"], padding=2, groups=2))))
        h = F.relu(F.conv2d(h, cn["conv3.weight"], cn["conv3.bias"], padding=1))
        h = F.relu(F.conv2d(h, cn["conv4.weight"], cn["conv4.bias"], padding=1, groups=2))
        h = pool(F.relu(F.conv2d(h, cn["conv5.weight"], cn["conv5.bias"], padding=1, groups=2)))
        h = h.flatten(1)
        h = F.relu(F.linear(h, cn["fc6.weight"], cn["fc6.bias"]))
        h = F.relu(F.linear(h, cn["fc7.weight"], cn["fc7.bias"]))
        return F.linear(h, cn["fc8.weight"], cn["fc8.bias"])

    write("caffenet", cn, caffenet(x), x)
print("ok")
