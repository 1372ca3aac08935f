# The README's commands. `make setup` is idempotent: it reinstalls only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup test lint demo bench clean up down

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

# The offline end-to-end run on the embedded defaults: procedural captions -> deterministic
# sample -> procedural synthesis into Parquet shards -> verify -> train the tiny ViT with
# StableRep's loss on the shards -> linear probe, kNN and few-shot on the procedural probe set
# against the untrained architecture. Idempotent: a rerun skips committed shards and checkpoints.
DEMO ?= runs/demo
demo: setup
	$(BIN)/stablerep captions procedural --out $(DEMO)/procedural.txt --n 600
	$(BIN)/stablerep captions sample $(DEMO)/procedural.txt --out $(DEMO)/data --n 384 --seed 0
	$(BIN)/stablerep synthesize --captions $(DEMO)/data --out $(DEMO)/data --backend procedural \
		--images-per-caption 6 --captions-per-shard 64 --resolution 128 --image-size 64
	$(BIN)/stablerep dataset verify $(DEMO)/data
	$(BIN)/stablerep train --config tiny_cpu --data $(DEMO)/data --out $(DEMO)/train \
		--set train.steps=200 --set train.log_every=25 --set data.images_per_caption=4
	$(BIN)/stablerep evaluate --run $(DEMO)/train --per-class 40 --out $(DEMO)/eval.json > /dev/null
	@echo "dataset: $(DEMO)/data   run: $(DEMO)/train   evaluation: $(DEMO)/eval.json"

# A local Prefect server, a process worker for each pool (cpu, gpu) and the deployments.
up: setup
	deployments/stack.sh up

down:
	deployments/stack.sh down

bench: setup
	$(BIN)/python benchmarks/train_step.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
