#!/usr/bin/env bash
# `make data`: puts Office-31 at data/office31/domain_adaptation_images/<domain>/ (each domain
# as images/<class>/*.jpg, as the archive unpacks, or <class>/*.jpg) and checks the per-domain
# image counts (amazon 2817, dslr 498, webcam 795). Data already there with those counts: the
# counts are printed and nothing is downloaded or extracted. The work is done by
# scripts/fetch_office31.py (standard library + gdown, both in the project's .venv).
#
#   bash scripts/fetch_office31.sh        download domain_adaptation_images.tar.gz (needs the
#                                         internet): by gdown, which answers Google Drive's
#                                         confirmation step; the download is kept only when it
#                                         is a whole gzip'd tar holding amazon/ dslr/ webcam/
#                                         (Drive's quota, sign-in or confirmation pages and cut-
#                                         off files are named and deleted), then extracted in a
#                                         temporary folder and renamed into place
#   bash scripts/fetch_office31.sh DIR    link an existing copy: DIR holds amazon/ dslr/ webcam/
#                                         (or domain_adaptation_images/ with them inside)
#
# Environment: OFFICE31_URL (the archive's URL, e.g. a mirror; default the Google Drive file
# 0B4IapRTv9pJ1WGZVd1VDMmhwdlE), OFFICE31_DEST (default data/office31), PYTHON (default
# .venv/bin/python; needs gdown only to download).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
if ! [[ -x $PYTHON ]] && ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found: run \`make setup\` (or set PYTHON)" >&2
  exit 1
fi
exec "$PYTHON" scripts/fetch_office31.py "$@"
