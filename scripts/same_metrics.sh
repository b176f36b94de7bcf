#!/usr/bin/env bash
# Usage: scripts/same_metrics.sh A/metrics.csv B/metrics.csv — equal in every column both files
# have, but elapsed_s? (Columns one file has alone, such as align_loss in runs made after the
# methods registry, are named and left out.)
set -euo pipefail
python3 - "$1" "$2" <<'PY'
import csv, sys
a, b = (list(csv.reader(open(p))) for p in sys.argv[1:3])
common = [c for c in a[0] if c in b[0] and c != "elapsed_s"]
only = sorted((set(a[0]) ^ set(b[0])) - {"elapsed_s"})
if only:
    print(f"compared without {', '.join(only)} (in one file only)")
pick = lambda rows: [[r[rows[0].index(c)] for c in common] for r in rows[1:]]
pa, pb = pick(a), pick(b)
if pa != pb:
    diff = next(i for i, (x, y) in enumerate(zip(pa + [None], pb + [None])) if x != y)
    sys.exit(f"DIFFERENT from row {diff + 1}: {sys.argv[1]} {sys.argv[2]}")
print(f"IDENTICAL (every common column but elapsed_s, {len(pa)} rows): {sys.argv[1]} {sys.argv[2]}")
PY
