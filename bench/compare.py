"""deep-coral against the standard PyTorch pipeline, per backbone (`make bench`).

    python bench/compare.py target/bench/deep-coral.json target/bench/pytorch.jsonl

Reads `deep-coral bench --json` and the JSON lines of `bench/pytorch_pipeline.py`; prints, per
backbone, precision (fp32; bf16 = PyTorch's torch.autocast against deep-coral's) and memory layout
(each side in the same one: channels-last or contiguous), both full-iteration speeds (img/s, source + target images), their ratio, and both peak
memories (deep-coral: VmHWM of its one process; PyTorch: the process tree's summed RSS and PSS,
DataLoader workers included).
"""

import json
import sys


def mib(b):
    return "-" if b is None else f"{b / 2**20:.0f} MiB"


def main(ours_path, theirs_path):
    with open(ours_path) as f:
        ours = json.load(f)
    with open(theirs_path) as f:
        theirs = {(r["backbone"], r.get("precision", "fp32"), r.get("channels_last", False)): r
                  for r in map(json.loads, filter(str.strip, f))}
    print(f"\ndeep-coral vs PyTorch (torchvision ImageFolder + DataLoader): {ours['device']}, "
          f"{ours['threads']} threads, batch {ours['batch_size']} + {ours['batch_size']}, lambda {ours['lambda']}")
    head = f"{'backbone':<14} {'precision':<9} {'layout':<13} {'ours img/s':>11} {'PyTorch img/s':>14} {'ours/PyTorch':>13} " \
           f"{'ours peak RSS':>14} {'PyTorch RSS (tree)':>19} {'PyTorch PSS (tree)':>19}"
    print(head)
    workers = None
    for b in ours["backbones"]:
        precision = b.get("precision", "fp32")
        channels_last = b.get("channels_last", ours.get("channels_last", True))
        layout = "channels-last" if channels_last else "contiguous"
        name = f"{b['backbone']:<14} {precision:<9} {layout:<13}"
        t = theirs.get((b["backbone"], precision, channels_last))
        if t is None or "skipped" in t:
            why = "not run" if t is None else t["skipped"]
            print(f"{name} {b['train']['img_per_s']:>11.1f} {'-':>14} {'-':>13} {mib(b['peak_rss_bytes']):>14}"
                  f"   PyTorch: {why}")
            continue
        workers = t["num_workers"]
        print(f"{name} {b['train']['img_per_s']:>11.1f} {t['img_per_s']:>14.1f} "
              f"{b['train']['img_per_s'] / t['img_per_s']:>13.2f} {mib(b['peak_rss_bytes']):>14} "
              f"{mib(t['peak_rss_tree_bytes']):>19} {mib(t['peak_pss_tree_bytes']):>19}")
    if workers is not None:
        print(f"PyTorch: {workers} DataLoader workers per domain, random initialisation, JPEGs decoded every "
              f"iteration; ours: images decoded once ({ours['data']['build_s']:.1f} s, not in img/s).")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
