#!/usr/bin/env bash
# `make data`: puts Office-31 at data/office31/domain_adaptation_images/<domain>/images/<class>/*.jpg
# and checks the per-domain image counts (amazon 2817, dslr 498, webcam 795).
#   bash scripts/fetch_office31.sh            download the archive (needs the internet)
#   bash scripts/fetch_office31.sh DIR        use an existing copy: DIR holds amazon/ dslr/ webcam/
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=data/office31
ROOT=$DEST/domain_adaptation_images
ARCHIVE=$DEST/domain_adaptation_images.tar.gz
# The archive the Office-31 authors distribute (Saenko et al., ECCV 2010), on Google Drive.
URL="https://drive.usercontent.google.com/download?id=0B4IapRTv9pJ1WGZVd1VDMmhwdlE&export=download&confirm=t"
declare -A WANT=([amazon]=2817 [dslr]=498 [webcam]=795)

count() { find "$ROOT/$1" -type f -iname '*.jpg' 2>/dev/null | wc -l; }

check() {
  local bad=0
  for d in amazon dslr webcam; do
    local n; n=$(count "$d")
    if [ "$n" -ne "${WANT[$d]}" ]; then
      echo "error: $ROOT/$d holds $n images, Office-31 has ${WANT[$d]}" >&2; bad=1
    else
      echo "$d: $n images"
    fi
  done
  return $bad
}

mkdir -p "$DEST"
if [ -n "${1:-}" ]; then
  src=$(cd "$1" && pwd) || { echo "error: OFFICE31=$1 is not a folder" >&2; exit 1; }
  for d in amazon dslr webcam; do
    [ -d "$src/$d" ] || { echo "error: OFFICE31=$1 has no $d/ folder (expected amazon/, dslr/, webcam/)" >&2; exit 1; }
  done
  rm -f "$ROOT"; [ -e "$ROOT" ] && { echo "error: $ROOT exists and is not a link; move it away first" >&2; exit 1; }
  ln -s "$src" "$ROOT"
  check; exit
fi
if [ -d "$ROOT" ] && check >/dev/null 2>&1; then check; exit; fi
if [ ! -f "$ARCHIVE" ]; then
  echo "downloading Office-31 from $URL"
  if ! curl -fL --connect-timeout 10 --retry 0 -o "$ARCHIVE.part" "$URL"; then
    rm -f "$ARCHIVE.part"
    cat >&2 <<MSG
error: could not download Office-31 from
  $URL
Put the archive at $ARCHIVE (it unpacks to domain_adaptation_images/<domain>/images/<class>/),
or unpack it anywhere and run: make data OFFICE31=/path/to/domain_adaptation_images
MSG
    exit 1
  fi
  mv "$ARCHIVE.part" "$ARCHIVE"
fi
tar -xzf "$ARCHIVE" -C "$DEST"
check
