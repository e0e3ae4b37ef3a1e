# Two commands for a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_ROOT ?= data
DEMO_DIR ?= checkpoints/demo
DEMO_MINUTES ?= 10
PYTEST_ARGS ?= -n 2

.PHONY: venv demo test lint bench clean-venv

venv: $(STAMP)

# torch is pinned in the same pip command: a bare `torch` would pull a multi-GB CUDA build.
# The ONNX extra (onnx, onnxruntime: about 110 MB installed, torch is 10x that) comes along
# so that `make test` exercises the ONNX export and backend.
$(STAMP): requirements.txt requirements-onnx.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0 -r requirements.txt -r requirements-onnx.txt
	touch $(STAMP)

SYNTH_DONE := $(DATA_ROOT)/SYNTH/RHD/RHD_published_v2/evaluation/anno_evaluation.pickle

# The label files are written last, so their presence means a complete set.
$(SYNTH_DONE): | $(STAMP)
	$(PY) -m datasets.synthetic --out $(DATA_ROOT)/SYNTH --num_train 2000 --num_test 300 \
		--difficulty easy --seed 0

# The MANO head uses the project's synthetic stand-in (not MANO): a few per cent of a
# small-preset training step (bench/bench_mano_head.py), inside the same time budget; the
# evaluation's --vis grids then show the mesh.
demo: $(STAMP) $(SYNTH_DONE)
	$(PY) training/train_seednet_fastflow.py --datasets synth --data_root $(DATA_ROOT) \
		--preset small --time_budget_min $(DEMO_MINUTES) -ckp $(DEMO_DIR) --mano_model synthetic
	$(PY) run.py --fine_tune synth --data_root $(DATA_ROOT) --checkpoint $(DEMO_DIR) \
		--out $(DEMO_DIR)/eval --vis --max_vis 16
	# The shipped real-photo model on the example photos (hand box about the centre 128 px).
	$(PY) run.py --image assets/examples/open_palm.jpg assets/examples/sign_five.jpg \
		--side right --bbox 64 64 128 128 --out $(DEMO_DIR)/photos
	$(PY) run.py --image assets/examples/fist_left.jpg assets/examples/thumb_outdoor.jpg \
		--side left --bbox 64 64 128 128 --out $(DEMO_DIR)/photos

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
