# The README's commands. `make setup` is idempotent: it reinstalls only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup test check lint demo demo-generator guidance-study generator bench clean up down

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch and torchvision first, as the pair that imports together
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test,docker,orchestration]'
	# img2dataset (a test dependency) pulls in the PyPI `dataclasses` backport, which shadows the
	# standard library's module in Prefect's test server (uvicorn --app-dir site-packages): remove it
	$(BIN)/python -m pip uninstall -y -q dataclasses 2>/dev/null || true
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast loop: lint + the tests that start no server and no child process (those are marked
# integration, or slow; a test of the fast set that starts a subprocess fails, naming the marker).
check: setup lint
	STABLEREP_FAST_CHECK=1 $(BIN)/python -m pytest -m "not slow and not integration and not gpu" $(PYTEST_ARGS)

# The offline end-to-end run on the embedded defaults: procedural captions -> procedural synthesis
# (K images per caption, and one "real" render per caption from a separate seed stream) -> Parquet
# shards -> StableRep, SimCLR, CLIP and the supervised ceiling, one small ResNet each, under one
# budget (images per step, steps, augmentation), 3 seeds -> linear probe, kNN and few-shot against
# random init, with 95% intervals -> $(DEMO)/summary.json, results.md, results.png.
# A rerun skips committed shards and finished runs.
DEMO ?= runs/demo
demo: setup
	$(BIN)/stablerep demo --out $(DEMO)

# The same demo with its synthetic images from the shipped text-to-image model
# (stablerep/assets/procedural-ldm, through the diffusers backend at its recommended guidance).
demo-generator: setup
	$(BIN)/stablerep demo --out runs/demo-generator --set source=generator

# Remake the shipped generator and its fidelity classifier from their documented commands (the
# defaults, seed 0 and 1000) into runs/generator; `cp` them over stablerep/assets/procedural-ldm to ship.
generator: setup
	$(BIN)/stablerep generator train --out runs/generator
	$(BIN)/stablerep generator classifier --out runs/generator/fidelity_classifier --size 32 --steps 3000 --seed 1000

# StableRep and SimCLR on the shipped model's images at guidance 1, 2, 4, 8 beside CLIP and SimCLR
# on the real renders, one budget, 3 seeds -> runs/guidance-study/results.md, results.png.
guidance-study: setup
	$(BIN)/stablerep generator study --out runs/guidance-study

# A local Prefect server, a process worker for each pool (cpu, gpu) and the deployments.
up: setup
	deployments/stack.sh up

down:
	deployments/stack.sh down

bench: setup
	$(BIN)/python benchmarks/train_step.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
