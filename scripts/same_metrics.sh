#!/usr/bin/env bash
# Usage: scripts/same_metrics.sh A/metrics.csv B/metrics.csv — equal in every column but elapsed_s?
set -euo pipefail
cut_el() { python3 -c "import csv,sys; r=list(csv.reader(open(sys.argv[1]))); i=r[0].index('elapsed_s'); [print(','.join(x[:i]+x[i+1:])) for x in r]" "$1"; }
diff <(cut_el "$1") <(cut_el "$2") && echo "IDENTICAL (all columns but elapsed_s): $1 $2"
