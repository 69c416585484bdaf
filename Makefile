# Every target creates .venv first, from the tested pins in constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv train test test-fast lint format clean-logs

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "ganforge needs Python >= 3.10; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $@

## Train the default experiment (DCGAN on scikit-learn's digits, CPU, offline).
train: venv
	$(PY) train.py $(ARGS)

## Run the whole test suite (slow tests included; CI runs this), and print the 15 slowest tests.
test: venv
	$(PY) -m pytest --durations=15 $(ARGS)

## The edit loop: every test not marked slow.
test-fast: venv
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-logs:
	rm -rf logs/train logs/debug
