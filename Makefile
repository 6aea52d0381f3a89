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

.PHONY: install run test bench lint format accel clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS); fi
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python run.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m pytest tests/benchmarks -q --benchmark-columns=min,median,mean,stddev,rounds

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# torch-scatter builds from source (about 5 minutes); pip's cache keeps the wheel afterwards.
accel: $(STAMP)
	$(BIN)/pip install --no-build-isolation -e '.[accel]'

clean:
	rm -rf $(VENV) outputs/*/ multirun .pytest_cache
