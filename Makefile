# FemurSeg: the two set-up commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.femurseg-installed
# torch is pinned for development and CI: a CPU wheel of 2.13.0 lies on this machine, and an
# unpinned torch would pull a multi-GB CUDA build. Users may use any recent torch.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test test-all bench train-default compare-2d-3d clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[train,test,dicom,review,cohort]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) scripts/demo.py --out demo-output

# the fast set (the bulk of the tests, a few minutes); test-all adds the slow ones (bundled-model
# runs, training end to end, DDP, subprocesses, DICOM tools) and is what CI (.ci/run) runs
test: setup
	$(PY) -m pytest -q -m "not slow" Testing

test-all: setup
	$(PY) -m pytest -q Testing

bench: setup
	$(PY) benchmarks/bench_inference.py

# hours on CPU: run in the background, never in CI (resumable: run again to continue);
# DATA=DIR names the dataset (nnU-Net raw layout, see scripts/train_default_model.sh)
train-default: setup
	DATA="$(DATA)" scripts/train_default_model.sh

# the 2D + largest-component row on the same folds, and one Table 2 with both rows
compare-2d-3d: setup
	scripts/compare_2d_3d.sh

clean-venv:
	rm -rf $(VENV)
