#!/usr/bin/env bash
# `make readme`: copies an experiment's headline.md (written by `deep-coral report`) verbatim
# into README.md, between the lines `<!-- headline: <file> -->` and `<!-- /headline -->`.
# tests/readme.rs checks that the copy is what `report` computes from the committed runs.
#   bash scripts/readme_headline.sh [results/table1-proxy]
set -euo pipefail
cd "$(dirname "$0")/.."
HEADLINE="${1:-results/table1-proxy}/headline.md"
[ -f "$HEADLINE" ] || { echo "error: $HEADLINE does not exist: run deep-coral report on the experiment first" >&2; exit 1; }
python3 - "$HEADLINE" README.md <<'PY'
import sys
headline, readme = sys.argv[1], sys.argv[2]
text = open(readme).read()
begin = f"<!-- headline: {headline} -->\n"
end = "<!-- /headline -->"
if begin not in text or end not in text:
    sys.exit(f"error: {readme} has no '{begin.strip()}' ... '{end}' block to fill")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(readme + ".tmp", "w").write(head + begin + open(headline).read() + end + tail)
import os
os.replace(readme + ".tmp", readme)
print(f"README.md: headline from {headline}")
PY
