# Two entry points do everything on a fresh machine:
#   make demo   set up, train on the embedded synthetic data, evaluate
#   make test   set up, run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_CONFIG ?= configs/ESTS/Synthetic-Tiny.yaml
DEMO_OUTPUT ?= output/demo
# Extra KEY VALUE config overrides for the demo's training, e.g. DEMO_OPTS="SOLVER.MAX_ITER 4000 SOLVER.STEPS '(3400,)'"
DEMO_OPTS ?=
# The GPU when there is one (evaluated after setup, when torch exists).
DEMO_DEVICE ?= $(shell $(PY) -c "from ests_d2.engine.launch import available_device; print(available_device('cuda'))" 2>/dev/null)

.PHONY: setup demo test bench
setup:
	VENV=$(VENV) bash scripts/install.sh

# A fresh run each time: detectron2 appends to metrics.json, which would mix two runs in the plots.
demo: setup
	rm -f $(DEMO_OUTPUT)/metrics.json
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) MODEL.DEVICE $(DEMO_DEVICE) OUTPUT_DIR $(DEMO_OUTPUT) $(DEMO_OPTS)
	$(PY) tools/demo_report.py $(DEMO_OUTPUT)

test: setup
	$(PY) -m pytest -q

# One inference and one training step of the full model at 640x640, each in a fresh process (minutes on a CPU).
bench: setup
	$(PY) bench/run_benchmarks.py --out output/bench/results.jsonl --case "eval 640 fp32" --case "train 640 fp32 2"
