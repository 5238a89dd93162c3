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
	$(wildcard csrc/*.cpp csrc/*.h csrc/*.cu csrc/cpu_capability/*.cpp)

.PHONY: setup run bench test lint experiments experiments-full experiments-budget experiments-budget-insteval auxvar auxvar-full auxvar-solvers auxvar-solvers-full auxvar-solvers-pinn auxvar-solvers-long clean gpu-check \
	emulate-sanitize

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

# Issue 25's budget run (design.BUDGET_*): 4x steps, primary and momentum families; the theory
# section does not depend on budgets and is left to the full run
experiments-budget: setup
	$(PY) -m experiments.convergence --budget --no-theory

# The same protocol on the real-data task added after the budget run started (design.py)
experiments-budget-insteval: setup
	$(PY) -m experiments.convergence --budget --no-theory --tasks insteval \
		--out docs/experiments/budget-insteval

# Auxiliary-variable study (docs/AUXVAR.md): quick (~2 min here) and full (~45 min here).
auxvar: setup
	$(PY) -m experiments.auxvar --quick

auxvar-full: setup
	$(PY) -m experiments.auxvar --full

# The block-coordinate solver study (docs/AUXVAR.md section 5b): quick (under a minute), full
# (~36 min here).
auxvar-solvers: setup
	$(PY) -m experiments.auxvar.solver_study --quick

auxvar-solvers-full: setup
	$(PY) -m experiments.auxvar.solver_study --full

# The PINN family of the solver study (pinn4, 10,000 evaluations; ~30-55 min here; the pipeline
# check is `python -m experiments.auxvar.solver_study --pinn-quick`, under a minute)
auxvar-solvers-pinn: setup
	$(PY) -m experiments.auxvar.solver_study --pinn

# The long-budget regression family (10,000 evaluations at the full run's settings; about 1-1.5
# h here on two workers; the check is `... solver_study --long-quick`, seconds)
auxvar-solvers-long: setup
	$(PY) -m experiments.auxvar.solver_study --long --workers 2

lint: setup
	$(PY) -m ruff check .

# Everything that needs a GPU in one call that fits a device lease (bench/gpu_check/run.py):
# build for this GPU, a compute-sanitizer probe, the GPU tests, the benchmark, the sanitizers
# and the rest of the suite, in that order, each stage with its own limit, all within
# GPU_CHECK_BUDGET seconds; four files in $OUT (else bench/results/gpu_check): summary.json,
# bench.json, bench.png, logs.tar.gz. Runs on the machine's own Python (no venv; only this
# package is installed, editable, without network).
# `make gpu-check --dry-run` (or -n) prints the plan and runs its CPU parts.
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_CHECK_BUDGET ?= 540
gpu-check:
	+$(GPU_PYTHON) bench/gpu_check/run.py --budget $(GPU_CHECK_BUDGET) $(if $(findstring n,$(firstword -$(MAKEFLAGS))),--dry-run)

# The CUDA kernel run on the CPU (tests/cuda_emulation.py) built with AddressSanitizer and
# UndefinedBehaviorSanitizer: the emulation's tests with the sanitizer runtimes preloaded into
# Python (CI runs it; `make test` runs the plain build). --capture=sys: a sanitizer's report,
# written to the process's stderr as it ends it, is not swallowed by pytest's capture.
SANITIZER_RUNTIMES = $$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)
emulate-sanitize: setup
	LD_PRELOAD="$(SANITIZER_RUNTIMES)" ASAN_OPTIONS=detect_leaks=0 \
		UBSAN_OPTIONS=print_stacktrace=1 TMSGD_EMULATION_VARIANT=sanitize \
		$(PY) -m pytest -q -p no:logging --capture=sys $(PYTEST_ARGS) \
		tests/test_cuda_emulation.py tests/test_kernel_contract.py -k emulat

clean:
	rm -rf build *.egg-info tmsgd_kernels/*.so .setup-current-python $(VENV)
