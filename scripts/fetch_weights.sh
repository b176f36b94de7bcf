#!/usr/bin/env bash
# Fetches the ImageNet weights of the paper's network (BVLC CaffeNet) and of torchvision's
# AlexNet into weights/, checks their published hashes, and converts them to .safetensors
# (`make weights`):
#
#   weights/alexnet-owt-7be5be79.pth           -> weights/alexnet-imagenet.safetensors
#   weights/bvlc_reference_caffenet.caffemodel -> weights/caffenet-imagenet.safetensors
#
# A file already in weights/ is not downloaded again: on a machine without internet, place
# the two files there by hand and run this again; everything after the download works from
# local files. Sources, licences and checksums: weights/README.md.
#
# Environment: DEEP_CORAL (the deep-coral binary, default target/release/deep-coral),
# PYTHON (default .venv/bin/python), WEIGHTS (the folder, default weights), CAFFENET_URL (where
# to fetch the CaffeNet .caffemodel, default BVLC's own host; any mirror will do, since the
# file's published SHA-1 is checked).
set -euo pipefail

cd "$(dirname "$0")/.."
WEIGHTS=${WEIGHTS:-weights}
DEEP_CORAL=${DEEP_CORAL:-target/release/deep-coral}
PYTHON=${PYTHON:-.venv/bin/python}

ALEXNET_URL=https://download.pytorch.org/models/alexnet-owt-7be5be79.pth
ALEXNET_PTH=$WEIGHTS/alexnet-owt-7be5be79.pth
# torchvision names its files after the first 8 hex digits of their SHA-256.
ALEXNET_SHA256_PREFIX=7be5be79

CAFFENET_BVLC_URL=http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel
CAFFENET_URL=${CAFFENET_URL:-$CAFFENET_BVLC_URL}
CAFFENET_MODEL=$WEIGHTS/bvlc_reference_caffenet.caffemodel
# Published in BVLC's models/bvlc_reference_caffenet/readme.md.
CAFFENET_SHA1=4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46

failed=()

# fetch URL FILE [HINT]: downloads URL to FILE unless FILE exists; a failed download leaves no
# FILE and prints HINT.
fetch() {
    local url=$1 file=$2 hint=${3:-}
    if [[ -s $file ]]; then
        echo "$file: present, not downloading"
        return 0
    fi
    echo "downloading $url -> $file"
    if ! curl --fail --location --connect-timeout 10 --progress-bar --output "$file.part" "$url"; then
        rm -f "$file.part"
        echo "fetch_weights: could not download $url" >&2
        [[ -z $hint ]] || echo "$hint" >&2
        echo "  place that file by hand as $PWD/$file" >&2
        failed+=("$file (from $url)")
        return 1
    fi
    mv "$file.part" "$file"
}

# check TOOL EXPECTED FILE: EXPECTED may be a prefix of the digest (torchvision's).
check() {
    local tool=$1 expected=$2 file=$3 actual
    actual=$("$tool" "$file" | cut -d' ' -f1)
    if [[ $actual != "$expected"* ]]; then
        echo "fetch_weights: $file: $tool is $actual, expected $expected...: a corrupt or different file; delete it and run again" >&2
        failed+=("$file (wrong checksum)")
        return 1
    fi
    echo "$file: $tool $actual ok"
}

mkdir -p "$WEIGHTS"

if fetch "$ALEXNET_URL" "$ALEXNET_PTH" && check sha256sum "$ALEXNET_SHA256_PREFIX" "$ALEXNET_PTH"; then
    [[ -x $PYTHON ]] || { echo "fetch_weights: $PYTHON not found: run \`make setup\` (or set PYTHON)" >&2; exit 1; }
    "$PYTHON" scripts/convert_torchvision.py "$ALEXNET_PTH" "$WEIGHTS/alexnet-imagenet.safetensors"
fi

# BVLC's host has been unreachable for long stretches; the SHA-1 check makes any mirror safe.
CAFFENET_HINT="  BVLC's host dl.caffe.berkeleyvision.org has been unreachable for long stretches; the
  file's SHA-1 ($CAFFENET_SHA1) is checked, so any mirror of
  bvlc_reference_caffenet.caffemodel will do: CAFFENET_URL=<its URL> make weights"
if fetch "$CAFFENET_URL" "$CAFFENET_MODEL" "$CAFFENET_HINT" && check sha1sum "$CAFFENET_SHA1" "$CAFFENET_MODEL"; then
    [[ -x $DEEP_CORAL ]] || { echo "fetch_weights: $DEEP_CORAL not found: run \`cargo build --release\` (or set DEEP_CORAL)" >&2; exit 1; }
    "$DEEP_CORAL" weights import-caffe "$CAFFENET_MODEL" -o "$WEIGHTS/caffenet-imagenet.safetensors" --arch caffenet
fi

if ((${#failed[@]})); then
    echo >&2
    echo "fetch_weights: not done; these files are missing or wrong in $PWD/$WEIGHTS:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    echo "then run \`make weights\` again (see $WEIGHTS/README.md)." >&2
    exit 1
fi
echo "weights ready: $WEIGHTS/alexnet-imagenet.safetensors $WEIGHTS/caffenet-imagenet.safetensors"
