"""The per-round ratios of a `deep-coral bench --json` report, with an interval for each median.

    python bench/rounds.py results/bench/2026-12-05e/deep-coral.json

Per cell: the median of the rounds' train/limit (as `bench` prints it), a distribution-free
interval for that median (order statistics k and n + 1 - k of the n rounds, with the largest k
whose binomial coverage is at least 95%; none below 6 rounds), the coverage itself, and how many
rounds came out below 1. The interval assumes only that the rounds are independent draws of one
ratio: written here because the bench's table prints medians, and a median of a few rounds on a
noisy machine needs its spread beside it to be read against a target.
"""

import json
import sys
from math import comb


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def interval(xs):
    """(low, high, coverage) for the median, or None where no pair of order statistics reaches 95%."""
    xs, n = sorted(xs), len(xs)
    best = None
    for k in range(1, n // 2 + 1):
        coverage = 1 - 2 * sum(comb(n, i) for i in range(k)) / 2**n
        if coverage >= 0.95:
            best = (xs[k - 1], xs[n - k], coverage)
    return best


def main(path):
    with open(path) as f:
        report = json.load(f)
    print(f"{'backbone':<14} {'precision':<9} {'layout':<13} {'rounds':>6} {'train/limit':>11} "
          f"{'interval of the median':>23} {'coverage':>8} {'rounds < 1':>10}")
    for b in report["backbones"]:
        rounds = b.get("rounds")
        if rounds is None:
            continue
        xs = rounds["train_over_limit"]
        ci = interval(xs)
        shown = "-" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"
        coverage = "-" if ci is None else f"{100 * ci[2]:.1f}%"
        layout = "channels-last" if b.get("channels_last", True) else "contiguous"
        print(f"{b['backbone']:<14} {b['precision']:<9} {layout:<13} {len(xs):>6} {median(xs):>11.3f} "
              f"{shown:>23} {coverage:>8} {sum(x < 1 for x in xs):>10}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
