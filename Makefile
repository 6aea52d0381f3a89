# Two commands matter: `make run` (the default experiment) and `make test` (the test suite).
# Both create .venv and install the project into it first, once.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Without a GPU we install the CPU build of torch first so that pip does not pull a CUDA build.
# Elsewhere point pip at a CPU wheel index with TORCH_PIP_ARGS="--index-url <cpu index>".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
ARGS ?=

.PHONY: install run test test-full test-slow bench lint typecheck format accel gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS); fi
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python run.py $(ARGS)

# The tests' runs use one torch thread a process (the runs they start inherit it): their models
# are small, so a second thread only spun, and two test workers of two threads each, or a run
# beside its sweep's other job, fought for the two cores. Measured on this machine (2 cores):
# the slow tier on two workers took 624 s with torch's default threads, 400 s with one.
TEST_ENV := OMP_NUM_THREADS=1

# The fast tier: every behaviour test, short runs (the README's test command; .ci/run adds test-slow).
# On two workers (pytest-xdist): most of its tests wait on a subprocess's imports or a file.
# A module's tests share a worker (`loadscope`): a module-scoped fixture (a trained policy, an
# uninterrupted run to resume against) is built once, not once a worker.
test: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadscope

# Everything, including full-length runs, the research claim and subprocess runs (`slow`).
test-full: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -n 2 --dist loadscope

# Only the slow tier (CI runs it after `make test`), on two workers as the fast tier.
test-slow: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -m slow -n 2 --dist loadscope

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pytest tests/benchmarks -q --benchmark-columns=min,median,mean,stddev,rounds

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# torch-scatter builds from source (5 minutes on 2 cores); pip's cache keeps the wheel afterwards,
# and reinstalling from it takes seconds (a wheel built for another torch fails at import: rebuild
# with `pip install --no-cache-dir ...`). CI runs it before the tests.
# The CUDA paths (tests/gpu, marker `gpu`) in one short script: a cuda run, CUDA-event kernel
# latency, compiles on CUDA, the GNN decision at 1,000 nodes, a 1-GPU NCCL DDP run, the
# dormant/active overheads; figures to $(GPU_FIGURES). Needs a CUDA build of torch in $(VENV).
# ESPER_GPU_CHECK_DEVICE=cpu runs it on the CPU as a dry run of its plumbing.
GPU_FIGURES ?= gpu_check.json
gpu-check: $(STAMP)
	ESPER_GPU_FIGURES=$(GPU_FIGURES) $(BIN)/python -m pytest tests/gpu -m gpu -q -rs -p no:cacheprovider

accel: $(STAMP)
	$(BIN)/pip install --no-build-isolation -e '.[accel]'

clean:
	rm -rf $(VENV) outputs/*/ multirun .pytest_cache
