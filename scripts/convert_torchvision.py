"""Converts a torchvision state dict (.pth) to .safetensors, keeping torchvision's names.

    python scripts/convert_torchvision.py weights/alexnet-owt-7be5be79.pth weights/alexnet-imagenet.safetensors

The .pth is read with `weights_only=True` (no code from the file runs). Both torch
serialisations are accepted (zip, and the legacy one of `_use_new_zipfile_serialization=False`).
The output is written to a temporary file beside it and renamed into place, so an error
never leaves a partial file.
"""
import argparse
import os
import sys
import tempfile

import torch
from safetensors.torch import save_file


def load_state_dict(path):
    obj = torch.load(path, map_location="cpu", weights_only=True)
    # Checkpoints sometimes wrap the weights: {"state_dict": {...}} or {"model": {...}}.
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        sys.exit(f"{path}: not a state dict (got {type(obj).__name__})")
    state = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            sys.exit(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
        state[name.removeprefix("module.")] = value.detach().contiguous()
    return state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="torchvision .pth state dict")
    parser.add_argument("output", help=".safetensors file to write")
    args = parser.parse_args()

    state = load_state_dict(args.input)
    folder = os.path.dirname(os.path.abspath(args.output))
    fd, tmp = tempfile.mkstemp(prefix=".convert-", suffix=".safetensors", dir=folder)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"source": os.path.basename(args.input), "channel_order": "RGB"})
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    params = sum(t.numel() for t in state.values())
    print(f"{args.output}: {len(state)} tensors, {params} parameters")


if __name__ == "__main__":
    main()
