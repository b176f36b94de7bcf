"""Writes a random-weight torchvision AlexNet and its outputs on a fixed input, for
tests/torchvision_alexnet.rs (the reference a loaded AlexNet must reproduce).

    python tests/data/gen_alexnet_pth.py OUT_DIR

OUT_DIR/alexnet-zip.pth      state dict, torch's zip serialisation (the current default)
OUT_DIR/alexnet-legacy.pth   the same, `_use_new_zipfile_serialization=False` (if this torch
                             still writes it; absent otherwise)
OUT_DIR/reference.safetensors  `input` [2, 3, 227, 227] (seeded uniform 0-1, normalised as
                             torchvision expects), `pooled` [2, 9216] (conv1-conv5 and the
                             adaptive average pool, flattened) and `logits` [2, 1000], eval mode
"""
import os
import sys

import torch
import torchvision
from safetensors.torch import save_file


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    model = torchvision.models.alexnet(num_classes=1000).eval()
    state = model.state_dict()
    torch.save(state, os.path.join(out, "alexnet-zip.pth"))
    try:
        torch.save(state, os.path.join(out, "alexnet-legacy.pth"), _use_new_zipfile_serialization=False)
    except Exception as e:  # a future torch may drop the legacy writer
        print(f"legacy serialisation not written: {e}", file=sys.stderr)

    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(2, 3, 227, 227, generator=g)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (pixels - mean) / std
    with torch.no_grad():
        pooled = torch.flatten(model.avgpool(model.features(x)), 1)
        logits = model(x)
    save_file(
        {"input": x.contiguous(), "pooled": pooled.contiguous(), "logits": logits.contiguous()},
        os.path.join(out, "reference.safetensors"),
    )


if __name__ == "__main__":
    main()
