# deep-coral: `make reproduce` runs the main job, `make test` the tests; each sets itself up.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.11.0 torchvision==0.26.0
BIN := target/release/deep-coral
EXPERIMENT ?= table1-methods
RESULTS ?= results
JOBS ?= 1
# local: $(JOBS) runs at a time here; slurm: one Slurm job array, waited for (docs/slurm.md;
# resources in the spec's `slurm` block or SWEEP_FLAGS="--partition gpu --gpus-per-run 1 ...").
LAUNCHER ?= local
OFFICE31 ?=
SWEEP_FLAGS ?=
BENCH_FLAGS ?=
PYTORCH_BENCH_FLAGS ?=
BENCH_OUT ?= target/bench

.PHONY: setup build test reproduce data weights sweep report plot bench clean-venv slurm-deps readme shallow

# libtorch comes from the PyPI torch wheel (PyTorch 2.11, the build the GPU machines carry);
# .venv/libtorch points at it for torch-sys (see .cargo/config.toml).
setup: $(VENV)/.ready $(VENV)/.opencv $(VENV)/.gdown $(VENV)/.sklearn
$(VENV)/.ready:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) safetensors numpy
	ln -sfn "$$($(PY) -c 'import os, torch; print(os.path.dirname(torch.__file__))')" $(VENV)/libtorch
	touch $@

# OpenCV (the headless wheel): the tests check the default resize against cv2.resize itself.
$(VENV)/.opencv: $(VENV)/.ready
	$(PY) -m pip install -q opencv-python-headless==5.1.0.95
	touch $@

# gdown: `make data` downloads Office-31 from Google Drive with it (its confirmation step for
# large files); a stamp of its own, so that a virtualenv made before gets it too.
$(VENV)/.gdown: $(VENV)/.ready
	$(PY) -m pip install -q gdown==6.5.1
	touch $@

# scikit-learn: the tests check the shallow-CORAL SVM against its LinearSVC (and SciPy's
# matrix square root) on the same features.
$(VENV)/.sklearn: $(VENV)/.ready
	$(PY) -m pip install -q scikit-learn==1.9.1 scipy==1.17.1
	touch $@

build: setup
	cargo build --release

test: setup
	cargo test --no-fail-fast

# The main job: set-up, data, weights, sweep, shallow CORAL, report and plots for $(EXPERIMENT).
reproduce: build
	@if [ "$(EXPERIMENT)" = office31 ] || [ "$(EXPERIMENT)" = table1-methods ]; then $(MAKE) --no-print-directory data weights; fi
	$(MAKE) --no-print-directory sweep shallow report plot

# Office-31 into data/office31 (scripts/fetch_office31.sh; OFFICE31=DIR links an existing
# copy, OFFICE31_URL=... downloads from a mirror instead of Google Drive).
data: setup
	PYTHON=$(PY) bash scripts/fetch_office31.sh "$(OFFICE31)"

# CAFFENET_URL=... fetches the CaffeNet .caffemodel from a mirror (weights/README.md).
weights: build
	DEEP_CORAL=$(BIN) bash scripts/fetch_weights.sh

sweep: build
	$(BIN) sweep experiments/$(EXPERIMENT).json --out $(RESULTS) \
	  $(if $(filter slurm,$(LAUNCHER)),--launcher slurm --wait,--jobs $(JOBS)) $(SWEEP_FLAGS)

# Shallow CORAL on the source-only networks, for specs that ask for it ("shallow_coral": true).
shallow: build
	@if grep -q '"shallow_coral": true' experiments/$(EXPERIMENT).json; then $(BIN) shallow-coral $(RESULTS)/$(EXPERIMENT); fi

report: build
	$(BIN) report $(RESULTS)/$(EXPERIMENT)

# The README's headline: the report of the committed evidence, copied verbatim.
readme: build
	$(BIN) report results/table1-proxy > /dev/null
	bash scripts/readme_headline.sh results/table1-proxy

plot: build
	$(BIN) plot $(RESULTS)/$(EXPERIMENT)

# Speed of the training step per backbone, precision and memory layout (deep-coral bench: its
# compute limit, the full iteration at lambda and 0 with batches made ahead, the same made inline,
# decoding, peak memory), then the standard PyTorch pipeline (bench/pytorch_pipeline.py:
# ImageFolder + DataLoader) with the same backbones, precisions, layouts, batch, threads,
# iterations and data, then both side by side, then each train/limit with an interval of its
# median over the rounds (bench/rounds.py; 6 rounds or more). Quick smoke run:
#   make bench BENCH_FLAGS="--batch-size 8 --iterations 2"
bench: build
	@mkdir -p $(BENCH_OUT)
	$(BIN) bench $(BENCH_FLAGS) --json $(BENCH_OUT)/deep-coral.json
	$(PY) bench/pytorch_pipeline.py --like $(BENCH_OUT)/deep-coral.json $(PYTORCH_BENCH_FLAGS) > $(BENCH_OUT)/pytorch.jsonl
	$(PY) bench/compare.py $(BENCH_OUT)/deep-coral.json $(BENCH_OUT)/pytorch.jsonl
	$(PY) bench/rounds.py $(BENCH_OUT)/deep-coral.json

# The Slurm daemons and clients the Slurm tests start a private cluster with (Debian 12's
# slurmctld slurmd slurm-client munge; root or sudo; nothing when they are there already).
slurm-deps:
	bash scripts/slurm/install.sh

clean-venv:
	rm -rf $(VENV)
