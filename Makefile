# The README's two commands: `make demo` (set up + run the pipeline on a synthetic case with the bundled model)
# and `make test` (set up + run the whole test suite). Both create ./.venv on first use.
PYTHON ?= python3
# torch 2.13.0 CPU is the build this project is tested with; on a CUDA machine pass e.g. TORCH_SPEC="torch>=2.1".
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: setup setup-test demo test lint benchmark clean

setup: $(VENV)/.core
setup-test: $(VENV)/.test

$(VENV)/.core: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH_SPEC)"
	$(PIP) -e .
	touch $@

# zennit is a test-only reference; --no-deps keeps it from pulling torchvision (and a CUDA torch). The peer-network
# tests need monai (deps: torch, numpy) and dynamic-network-architectures (--no-deps: its timm pulls torchvision).
$(VENV)/.test: $(VENV)/.core
	$(PIP) -e ".[test,monai,anatomy]"
	$(PIP) --no-deps "zennit>=0.5" "dynamic-network-architectures>=0.4.4"
	$(PIP) "einops>=0.6"
	touch $@

demo: setup
	$(BIN)/lrpseg demo --out demo-out --overwrite

test: setup-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup-test
	$(BIN)/ruff check .

benchmark: setup-test
	$(BIN)/python benchmarks/bench_lrp.py
	$(BIN)/python benchmarks/bench_scores.py
	$(BIN)/python benchmarks/bench_peer.py

clean:
	rm -rf $(VENV) demo-out
