"""CUDA paths, run on a GPU host (`pytest -m gpu`); skipped with the reason elsewhere."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stablerep.config import load_config
from stablerep.data import RandomCaptionBatches

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parent.parent


def test_bf16_training_on_cuda_lowers_the_loss_and_checkpoints(tmp_path):
    from stablerep.training import run_training_loop

    run = load_config("tiny_cpu", ["train.steps=60", "train.log_every=1", "optim.lr=2e-3", "train.device=cuda",
                                   "train.precision=bf16"])  # explicit: the test must not rest on "auto"
    source = RandomCaptionBatches(16, 4, 32, num_captions=64)
    result = run_training_loop(run, source, str(tmp_path), progress=False)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.3
    assert (tmp_path / "checkpoints" / "latest.json").is_file()


def test_fp16_synthesis_on_cuda_is_seed_deterministic_and_close_to_fp32(tiny_sd):
    from stablerep.synthesis.base import GenerationRequest
    from stablerep.synthesis.diffusers_backend import DiffusersBackend

    requests = [GenerationRequest(1, "a red star", 0, 7), GenerationRequest(2, "two blue rings", 1, 8)]
    fp16 = DiffusersBackend(str(tiny_sd), device="cuda", dtype="fp16", steps=4, resolution=64)
    a, b = fp16.generate(requests), fp16.generate(list(reversed(requests)))
    assert a[0].tobytes() == b[1].tobytes()  # the same seed gives the same image whatever the batch order
    fp32 = DiffusersBackend(str(tiny_sd), device="cuda", dtype="fp32", steps=4, resolution=64)
    import numpy as np

    diff = np.abs(np.asarray(a[0], dtype=np.int16) - np.asarray(fp32.generate(requests)[0], dtype=np.int16))
    assert diff.mean() < 4 and diff.max() < 64  # fp16 noise, not a different image


def test_training_under_torchrun_on_nccl(tmp_path):
    # one rank per GPU, at most 2: on a one-GPU host this checks the NCCL process group and the
    # training path under torchrun; the loss's cross-rank gather needs a second GPU
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={min(2, torch.cuda.device_count())}", "-m", "stablerep", "train",
                           "--out", str(tmp_path / "run"), "--set", "train.steps=5", "--set", "train.device=cuda"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "latest.json").is_file()
