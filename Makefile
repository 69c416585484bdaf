# Every target that runs Python creates .venv first, from the tested pins in constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help venv train test test-fast lint format clean-logs
.DEFAULT_GOAL := help

## List the targets and what each does (this list).
help:
	@awk '/^## / { doc = substr($$0, 4); next } /^[a-z-]+:/ && doc { sub(/:.*/, ""); printf "  make %-11s%s\n", $$0, doc } { doc = "" }' $(MAKEFILE_LIST)

## Create .venv with the tested versions pinned in constraints.txt (train, test, lint, format do it first).
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

## Check the code with ruff (lint and format), as CI does.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Fix what ruff can fix and format the code.
format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## Delete every task's logs (logs/train, eval, augment, ...) but Optuna studies (logs/*.db); keeps cache/.
clean-logs:
	@if [ -d logs ]; then find logs -mindepth 1 -maxdepth 1 ! -name .gitkeep ! -name '*.db*' -print -exec rm -rf {} +; fi
	@echo "kept cache/ (metric classifiers, reference statistics, packed data: minutes to rebuild); clear it with: rm -rf cache"
