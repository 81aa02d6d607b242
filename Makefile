# Shopcast — every target creates/refreshes .venv and installs what it needs.
# PyTorch goes in first and pinned (a bare `torch` would pull a multi-GB CUDA build).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TORCH  := torch==2.13.0
export OPENBLAS_NUM_THREADS ?= 1
SHOPCAST_DATA ?= $(abspath ../shared/datasets)
export SHOPCAST_DATA

.PHONY: install demo test test-all lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## demo: import a shop (real Online Retail when SHOPCAST_DATA has it), train, serve on :8000
demo: install
	$(VENV)/bin/shopcast demo

## test: the suite (slow full-dataset tests excluded; `make test-all` runs them)
test: install
	$(PY) -m pytest -m "not slow" -q

test-all: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

## bench: figures printed and written to bench/results/*.json (never asserted)
bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) shopcast-data .pytest_cache .mypy_cache .ruff_cache
