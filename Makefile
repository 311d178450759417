# The few commands a newcomer needs. Everything installs into .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch, installed before the extras so nothing pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint typecheck clean

$(VENV)/.bertx-deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[export,test]" --config-settings editable_mode=strict
	touch $@

# Re-linking the editable install is cheap and picks up modules added since the last run.
install: $(VENV)/.bertx-deps
	$(PY) -m pip install -q --no-deps -e . --config-settings editable_mode=strict

demo: install
	$(VENV)/bin/bertx export sentence-transformers/all-MiniLM-L6-v2 --int8 --force
	$(VENV)/bin/bertx info models/all-MiniLM-L6-v2
	$(PY) scripts/demo.py models/all-MiniLM-L6-v2

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
