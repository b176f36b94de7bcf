#!/usr/bin/env bash
# Issue #6's GPU checks, prepared to run in one call of the device tool (a lent GPU machine has
# PyTorch 2.11 with CUDA 13 in its image, whose torch/lib our binary runs against).
#
#   bash scripts/gpu_check.sh prepare   # here: binary + amazon/webcam/dslr + SqueezeNet -> gpu-check/ (~45 MB, ignored)
#   device run: command "bash scripts/gpu_check.sh run", carry ["gpu-check"], timeout_s 540
#
# `run` writes to $OUT (the device tool returns it): bench.txt/.json (ours, --device cuda: limit,
# full iteration, lambda = 0, per backbone), pytorch.jsonl and compare.txt (the torchvision
# ImageFolder + DataLoader pipeline on the same GPU, if the image has torchvision), and one
# paper-protocol run (SqueezeNet, amazon -> webcam, lambda 0.75, 2000 iterations of 128 + 128):
# its run.json (wall time), metrics.csv and train.log.
#
# DEVICE=cpu ITERATIONS=4 BATCH=8 BENCH_ITERATIONS=1 runs the same steps on the CPU: how the
# script itself is tested here.
set -euo pipefail
cd "$(dirname "$0")/.."
G=gpu-check
case "${1:-}" in
prepare)
  rm -rf "$G"
  mkdir -p "$G/data" "$G/weights"
  cp target/release/deep-coral "$G/"
  cp -r ../shared/data/office-caltech10/{amazon,webcam,dslr} "$G/data/"
  cp ../shared/weights/squeezenet1_1-caffe-imagenet.safetensors "$G/weights/"
  du -sh "$G"
  ;;
run)
  DEVICE=${DEVICE:-cuda}
  OUT=${OUT:-/tmp/gpu-check-out}
  ITERATIONS=${ITERATIONS:-2000}
  BATCH=${BATCH:-128}
  BENCH_ITERATIONS=${BENCH_ITERATIONS:-10}
  PY=${PY:-python3}
  mkdir -p "$OUT"
  if [ "$DEVICE" = cuda ]; then
    # The binary's rpath points at this checkout's .venv, absent there: use the image's libtorch.
    LD_LIBRARY_PATH="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
    export LD_LIBRARY_PATH
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
  fi
  W="$G/weights/squeezenet1_1-caffe-imagenet.safetensors"
  "$G/deep-coral" bench --device "$DEVICE" --data-root "$G/data" --source amazon --target webcam \
    --weights "squeezenet1_1=$W" --batch-size "$BATCH" --iterations "$BENCH_ITERATIONS" \
    --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"
  "$PY" bench/rounds.py "$OUT/bench.json" | tee "$OUT/rounds.txt"
  if "$PY" -c 'import torchvision' 2>/dev/null; then
    "$PY" bench/pytorch_pipeline.py --like "$OUT/bench.json" --num-workers "${WORKERS:-4}" > "$OUT/pytorch.jsonl"
    "$PY" bench/compare.py "$OUT/bench.json" "$OUT/pytorch.jsonl" | tee "$OUT/compare.txt"
  else
    echo "no torchvision in this image: PyTorch pipeline not measured" | tee "$OUT/compare.txt"
  fi
  "$G/deep-coral" train --device "$DEVICE" --data-root "$G/data" --source amazon --target webcam \
    --backbone squeezenet1_1 --weights "$W" --lambda 0.75 --iterations "$ITERATIONS" \
    --batch-size "$BATCH" --seed 1 --out "$OUT/paper-run" 2> "$OUT/train.log"
  cp "$OUT/paper-run/run.json" "$OUT/paper-run/metrics.csv" "$OUT/"
  rm -rf "$OUT/paper-run"
  grep -E '"(device|wall_time_s|setup_time_s|final_target_acc)"' "$OUT/run.json"
  ;;
*)
  echo "usage: $0 prepare|run" >&2
  exit 2
  ;;
esac
