# The few commands a newcomer needs. Everything installs into .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch, installed before the extras so nothing pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint typecheck docs docs-serve bench bench-serve clean
comma := ,

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

# The documentation site into site/ (warnings are errors); docs-serve rebuilds it as you edit.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

# bf16 only where the CPU computes it (AVX-512 BF16 or AMX); elsewhere --bf16 is refused.
BF16 := $(shell grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && echo --bf16)

# Speed, memory and accuracy side by side (about an hour on 2 cores); rewrites bench/results and
# the README's performance table. Random-weight bert-base gets one fixed INT8 recipe: the full search
# would take most of an hour there, and its accuracy means little on random weights.
bench: install
	$(VENV)/bin/bertx export sentence-transformers/all-MiniLM-L6-v2 --int8 --fp16 $(BF16) --force
	$(VENV)/bin/bertx bench models/all-MiniLM-L6-v2 --out bench/results --name all-MiniLM-L6-v2
	$(VENV)/bin/bertx bench --preset bert-base-uncased --preset-int8 split-dynamic \
		--out bench/results --name bert-base-uncased-random-weights \
		--texts 128 --fixed-count 8 --lengths 128,512 --batch-sizes 1,32 --repeats 2 \
		--engines pytorch-fp32,sentence-transformers,st-openvino,openvino-int8-nncf,bertx-fp32,bertx-int8$(if $(BF16),$(comma)bertx-bf16)
	$(PY) -m bertx.bench.summary README.md bench/results/all-MiniLM-L6-v2.json \
		bench/results/bert-base-uncased-random-weights.json

# `bertx serve` under load (1, 8, 32, 64 clients, then a 5-minute soak at 32) next to bertx in-process
# and infinity-emb, which pins numpy < 2 and so gets a virtual environment of its own; where it does not
# install, the bench reports it as skipped. Rewrites bench/results/serve-*.
INFINITY_VENV := models/.bench-peers/infinity-venv
INFINITY := infinity-emb[server,optimum]==0.0.78

$(INFINITY_VENV)/bin/infinity_emb:
	-$(PYTHON) -m venv $(INFINITY_VENV) && $(INFINITY_VENV)/bin/pip install -q "$(TORCH)" "$(INFINITY)"

bench-serve: install $(INFINITY_VENV)/bin/infinity_emb
	$(VENV)/bin/bertx bench-serve models/all-MiniLM-L6-v2 --variant int8 --soak 300

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
