"""Checks a network deep-coral exported against deep-coral's own scores, for
tests/adapted_model.rs.

Usage: python export_check.py MODEL.safetensors MODEL.pt IO.safetensors BACKBONE HEAD

IO holds `input` (a batch in the model's input convention) and `logits` (deep-coral's scores
for it). Prints, as JSON, the largest |difference| of the scores of
- `torchscript`: `torch.jit.load(MODEL.pt)` on the batch;
- `torchvision`: torchvision's model class of the backbone with the classes of the file (for
  SqueezeNet with HEAD linear, its classifier's ReLU replaced by the identity), the file loaded
  by `load_state_dict(strict=True)`.
"""
import json
import sys

import torch
import torchvision
from safetensors.torch import load_file

model_path, ts_path, io_path, backbone, head = sys.argv[1:6]
state = load_file(model_path)
io = load_file(io_path)
x, want = io["input"], io["logits"]
with torch.no_grad():
    scripted = torch.jit.load(ts_path).eval()
    d_ts = (scripted(x) - want).abs().max().item()
    if backbone == "squeezenet1_1":
        net = torchvision.models.squeezenet1_1(num_classes=state["classifier.1.weight"].shape[0])
        if head == "linear":
            net.classifier[2] = torch.nn.Identity()
    else:
        net = torchvision.models.alexnet(num_classes=state["classifier.6.weight"].shape[0])
    net.load_state_dict(state, strict=True)
    d_tv = (net.eval()(x) - want).abs().max().item()
print(json.dumps({"torchscript": d_ts, "torchvision": d_tv, "scale": want.abs().max().item()}))
