# Two commands do all the set-up on a fresh machine:
#   make run    the main job: the benchmark (builds .venv, installs torch, the package, runs it)
#   make test   the test suite
# USE_CURRENT_PYTHON=1 installs into the interpreter on PATH instead of a venv in the checkout.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
# The Triton release built against TORCH_VERSION (torch 2.14.1 pins triton 3.8.x, 2.13.0 3.7.x).
TRITON_VERSION ?= 3.7.1
PYTEST_ARGS ?=
# e.g. --update-reference: write the committed reference results (bench/results/) instead of
# bench/results/local/
REPORT_ARGS ?=

ifeq ($(USE_CURRENT_PYTHON),1)
PY := $(PYTHON)
STAMP := .setup-current-python
else
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
endif

SOURCES := setup.py pyproject.toml requirements-test.txt tmsgd_kernels/_version.py \
	$(wildcard build_backend/*.py) \
	$(wildcard csrc/*.cpp csrc/*.h csrc/*.cu csrc/*/*.cpp)

.PHONY: setup run bench test lint experiments experiments-full auxvar auxvar-full clean gpu-check

setup: $(STAMP)

# Set-up says what it is doing: pip's own progress for the downloads, the compiler's lines for the
# build (pip -v), and a line per stage.
$(STAMP): $(SOURCES)
	@echo "== setup 1/3: the Python environment ($(PY))"
ifneq ($(USE_CURRENT_PYTHON),1)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
endif
	@echo "== setup 2/3: torch $(TORCH_VERSION), triton $(TRITON_VERSION) and the tools of" \
		"requirements-test.txt (on a fresh machine several hundred MB to download)"
	$(PY) -m pip install torch==$(TORCH_VERSION) triton==$(TRITON_VERSION) -r requirements-test.txt
	@echo "== setup 3/3: this package, editable, and its C++ extension (about 2 minutes on 2" \
		"cores; the compiler's progress follows)"
	MAX_JOBS=2 $(PY) -m pip install -v --no-build-isolation -e .
	touch $@
	@echo "== setup done"

# The main job: the benchmark report (bench/report.py): every TM-SGD backend against
# torch.optim.SGD (fused, foreach), a fair torch.compile'd TM-SGD step and the streaming ceiling,
# about a minute here; `make bench` runs every case. `pytest bench/ --benchmark-only` is the same
# cases as a pytest-benchmark suite.
run: setup
	$(PY) bench/report.py $(REPORT_ARGS)

bench: setup
	$(PY) bench/report.py --full $(REPORT_ARGS)

test: setup
	$(PY) -m pytest -q -p no:logging $(PYTEST_ARGS)

# Convergence experiments (docs/EXPERIMENTS.md): a quick version of the whole pipeline (a few
# minutes here) and the full protocol that the report is written from (about an hour here).
experiments: setup
	$(PY) -m experiments.convergence --quick

experiments-full: setup
	$(PY) -m experiments.convergence --full

# Auxiliary-variable study (docs/AUXVAR.md): quick (~2 min here) and full (~45 min here).
auxvar: setup
	$(PY) -m experiments.auxvar --quick

auxvar-full: setup
	$(PY) -m experiments.auxvar --full

lint: setup
	$(PY) -m ruff check .

# Everything that needs a GPU (bench/gpu_check/run.py): build for this GPU, the test suite on it,
# compute-sanitizer over both GPU kernels, the GPU benchmarks; output in $OUT or
# bench/results/gpu_check. Runs on the machine's own Python (no venv; only this package is
# installed, editable, without network); on a fresh machine in three calls:
# GPU_CHECK_ARGS="--stages build,test", then build,sanitize, then build,bench.
# `make gpu-check --dry-run` (or -n) prints the commands and runs their CPU parts.
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	+$(GPU_PYTHON) bench/gpu_check/run.py $(if $(findstring n,$(firstword -$(MAKEFLAGS))),--dry-run) $(GPU_CHECK_ARGS)

clean:
	rm -rf build *.egg-info tmsgd_kernels/*.so .setup-current-python $(VENV)
