# The README's commands. `make setup` is idempotent: it reinstalls only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch and torchvision first, as the pair that imports together
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The closest real end-to-end run until the offline synthesis demo lands: train the tiny ViT with
# StableRep's loss on the random-tensor caption source, checkpoint, and resume.
demo: setup
	$(BIN)/stablerep train --config tiny_cpu --out runs/demo --set train.steps=120 --set train.log_every=20
	@echo "run written to runs/demo (config.json, metrics.jsonl, checkpoints/)"

bench: setup
	$(BIN)/python benchmarks/train_step.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
