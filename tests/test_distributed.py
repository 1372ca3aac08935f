"""torchrun with 2 CPU ranks (gloo): the rank losses average to the single-process loss on the
concatenated batch, and the gathered gradients are those of the global loss."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stablerep.losses import ImageTextLoss, MultiPosConLoss, NTXentLoss
from tests.helpers.global_batch import global_batch

ROOT = Path(__file__).resolve().parent.parent
WORLD = 2


def torchrun(port: int, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={WORLD}",
           "--master-addr=127.0.0.1", f"--master-port={port}", *args]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def rank_outputs(tmp_path_factory):
    from tests.conftest import free_port

    out = tmp_path_factory.mktemp("dist")
    proc = torchrun(free_port(), "tests/helpers/dist_loss_worker.py", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [load_file(out / f"rank{r}.safetensors") for r in range(WORLD)]


def _single(name):
    b = global_batch()
    if name == "multipos":
        f = b["feats"].clone().requires_grad_(True)
        loss = MultiPosConLoss(0.1)(f, b["labels"])["loss"]
        loss.backward()
        return loss, {"multipos_grad": f.grad}
    if name == "ntxent":
        z1, z2 = b["z1"].clone().requires_grad_(True), b["z2"].clone().requires_grad_(True)
        loss = NTXentLoss(0.1)(z1, z2)["loss"]
        loss.backward()
        return loss, {"ntxent_grad": z1.grad}
    img, txt = b["img"].clone().requires_grad_(True), b["txt"].clone().requires_grad_(True)
    loss = ImageTextLoss()(img, b["labels"], txt, b["txt_labels"], b["scale"])["loss"]
    loss.backward()
    return loss, {"it_grad_img": img.grad, "it_grad_txt": txt.grad}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["multipos", "ntxent", "it"])
def test_rank_losses_average_to_single_process(rank_outputs, name):
    single_loss, single_grads = _single(name)
    mean_rank_loss = sum(o[f"{name}_loss"] for o in rank_outputs) / WORLD
    assert mean_rank_loss.item() == pytest.approx(single_loss.item(), rel=1e-10)
    for key, grad in single_grads.items():
        # each rank holds d(sum of rank losses)/d(its rows); DDP's 1/world gives the global mean's
        gathered = torch.cat([o[key] for o in rank_outputs]) / WORLD
        assert torch.allclose(gathered, grad, atol=1e-12), key


@pytest.mark.slow
def test_cli_training_under_torchrun(tmp_path, port):
    run_dir = tmp_path / "run"
    proc = torchrun(port, "-m", "stablerep", "train", "--out", str(run_dir),
                    "--set", "train.steps=4", "--set", "train.log_every=2", "--set", "optim.warmup_steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["steps"] == 4
    assert (run_dir / "checkpoints" / "step_00000004.safetensors").is_file()
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics] == [2, 4]
    # the saved config is the global batch (16 captions over both ranks), not one rank's share
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["captions_per_batch"] == 16
