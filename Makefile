# The two commands of the README: `make demo` (the default study on the phantom) and
# `make test` (the test suite). Each sets itself up on a fresh clone.
#
# The virtual environment sees the interpreter's own site-packages, so a torch that is
# already installed there (a CUDA build, an NGC container's) is reused as it is. Only when
# no torch is importable is TORCH installed; override it for your platform, e.g.
#   make demo TORCH="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install demo test test-fast lint format clean

$(VENV)/.base: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e .
	touch $@

# The tests also need the test tools (pytest, hypothesis, ruff) and Ray (the cluster executor is tested on a local Ray).
$(VENV)/.test: $(VENV)/.base
	$(BIN)/python -m pip install -e '.[test,ray]'
	touch $@

install: $(VENV)/.base

demo: install
	$(BIN)/monai-cxr study

# The whole suite, after the linter: what CI runs (.ci/run).
test: lint
	$(BIN)/python -m pytest -q

# Everything but the tests that train networks (marked slow), on every core: under a minute.
test-fast: $(VENV)/.test
	$(BIN)/python -m pytest -q -m "not slow" -n auto

lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
