"""The first steps of the shipped generator's documented rebuild, logged at every step: the
reference that tests/generator/test_shipped.py's short rebuild check compares against.

    .venv/bin/python -m tests.helpers.generator_first_steps   # rewrites tests/generator/first_steps.json

Rewrite it only after the 50-step check against the shipped log passes on the same code
(`STABLEREP_REBUILD=1 make test PYTEST_ARGS="tests/generator/test_shipped.py -m rebuild"`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from stablerep.generator.config import GeneratorConfig
from stablerep.generator.shipped import shipped_generator
from stablerep.generator.train import make_pool, train_generator

REFERENCE = Path(__file__).resolve().parents[1] / "generator" / "first_steps.json"
STEPS = 5
THREADS = 2  # as tests/conftest.py sets: the sums' order, hence the last bits, depend on it


def first_steps(out: Path, steps: int = STEPS) -> list[dict]:
    """The documented config and seed, logged every step: the autoencoder's first ``steps``, then the
    UNet's first ``steps`` on the shipped autoencoder (as the 50-step check runs them)."""
    torch.set_num_threads(THREADS)
    cfg = GeneratorConfig(log_every=1)
    pool = make_pool(cfg, progress=False)  # the renders depend on the config alone: made once for both
    vae = train_generator(str(out / "vae"), cfg, progress=False, stop_after=steps, vae_only=True, pool=pool)
    unet = train_generator(str(out / "unet"), cfg, progress=False, stop_after=steps, vae_from=str(shipped_generator()),
                           pool=pool)
    return [{k: v for k, v in r.items() if k != "seconds"} for r in vae["log"] + unet["log"]]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        records = first_steps(Path(tmp))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    REFERENCE.write_text(json.dumps({"command": "python -m tests.helpers.generator_first_steps", "steps": STEPS,
                                     "threads": THREADS, "torch": torch.__version__, "commit": commit,
                                     "records": records}, indent=1) + "\n")
    print(f"wrote {len(records)} records to {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
