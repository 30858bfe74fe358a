# The README's two commands: `make demo` (set up + run the pipeline on a synthetic case with the bundled model)
# and `make test` (set up + run the whole test suite). Both create ./.venv on first use.
PYTHON ?= python3
# torch 2.13.0 CPU is the build this project is tested with; on a CUDA machine pass e.g. TORCH_SPEC="torch>=2.1".
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: setup setup-test demo test test-nnunet lint benchmark clean

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
	$(MAKE) test-nnunet

# nnU-Net's own predictor checked live against ours (test_nnunet_fixture.py; `make test` compares with the predictions
# nnU-Net saved beside the fixture). A separate venv: nnunetv2 pulls ~20 packages (pandas, scikit-image, ...) that
# the project does not need. nnunetv2 and dynamic-network-architectures --no-deps (timm -> torchvision, another
# torch); the rest are nnunetv2's declared dependencies, with torch held at TORCH_SPEC (pip then reports timm as
# missing: expected). About 3 minutes from scratch; `make test` runs it last.
NNUNET_VENV := .venv-nnunet
NNUNET_PIP := $(NNUNET_VENV)/bin/python -m pip install --disable-pip-version-check -q
NNUNET_DEPS := "acvl-utils==0.2.6" "batchgenerators==0.25.5" "batchgeneratorsv2==0.3.6" "blosc2>=3.3.2" einops \
	"scikit-image>=0.19.3" scikit-learn pandas graphviz tifffile requests nibabel seaborn imagecodecs yacs

$(NNUNET_VENV)/.nnunet: pyproject.toml
	test -x $(NNUNET_VENV)/bin/python || $(PYTHON) -m venv $(NNUNET_VENV)
	echo "$(TORCH_SPEC)" > $(NNUNET_VENV)/constraints.txt
	$(NNUNET_PIP) "$(TORCH_SPEC)"
	$(NNUNET_PIP) -c $(NNUNET_VENV)/constraints.txt -e . "pytest>=7.4"
	$(NNUNET_PIP) --no-deps "nnunetv2==2.8.1" "dynamic-network-architectures==0.4.4"
	$(NNUNET_PIP) -c $(NNUNET_VENV)/constraints.txt $(NNUNET_DEPS)
	touch $@

test-nnunet: $(NNUNET_VENV)/.nnunet
	$(NNUNET_VENV)/bin/python -m pytest LRPSegmentation/Testing/Python/test_nnunet_fixture.py

lint: setup-test
	$(BIN)/ruff check .

benchmark: setup-test
	$(BIN)/python benchmarks/bench_lrp.py
	$(BIN)/python benchmarks/bench_scores.py
	$(BIN)/python benchmarks/bench_peer.py

clean:
	rm -rf $(VENV) $(NNUNET_VENV) demo-out
