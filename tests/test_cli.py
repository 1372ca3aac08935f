"""The `stablerep` command as a user runs it: a subprocess, exit codes, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stablerep", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


@pytest.mark.integration  # runs the CLI in a child process
def test_train_then_resume(tmp_path):
    out = tmp_path / "run"
    first = cli("train", "--out", str(out), "--set", "train.steps=3", "--set", "optim.warmup_steps=0")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout.splitlines()[-1])["steps"] == 3
    again = cli("train", "--out", str(out), "--set", "train.steps=5", "--set", "optim.warmup_steps=0")
    assert again.returncode == 0, again.stderr
    assert (out / "checkpoints" / "step_00000005.safetensors").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # steps 3 and 5


@pytest.mark.parametrize("args,message", [
    (["config", "show", "nope"], "no preset 'nope'"),
    (["config", "show", "tiny_cpu", "--set", "train.steps=-1"], "train.steps"),
    (["train", "--out", "X", "--set", "loss.method=bogus"], "loss.method"),
    (["train", "--out", "X", "--data", "no/such/dataset"], "no dataset at no/such/dataset"),
    (["config", "show", "tiny_cpu", "--set", "oops"], "not of the form"),
])
@pytest.mark.integration  # runs the CLI in a child process
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "X").exists()  # nothing written


@pytest.mark.integration  # runs the CLI in a child process
def test_corrupted_checkpoint_via_cli(tmp_path):
    out = tmp_path / "run"
    assert cli("train", "--out", str(out), "--set", "train.steps=1", "--set", "optim.warmup_steps=0").returncode == 0
    (out / "checkpoints" / "step_00000001.safetensors").write_bytes(b"garbage")
    proc = cli("train", "--out", str(out), "--set", "train.steps=2", "--set", "optim.warmup_steps=0")
    assert proc.returncode == 2 and "corrupted checkpoint" in proc.stderr


@pytest.mark.integration  # runs the CLI in a child process
def test_config_show_prints_resolved_json():
    proc = cli("config", "show", "vit_b16_paper")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["optim"]["lr"] == pytest.approx(2e-4 * 8256 / 256)
