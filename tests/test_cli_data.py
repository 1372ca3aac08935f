"""`stablerep captions` / `dataset` / `train --data` as a user runs them, local and on S3."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.datasets import write_example_dataset

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "stablerep", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env or os.environ.copy(), timeout=300)


def _one_line_error(proc, message):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


def test_captions_sample_to_s3_and_wrong_key(s3_server, tmp_path):
    import uuid

    from tests.conftest import S3_BUCKET

    src = tmp_path / "c.txt"
    src.write_text("a red cube\ntwo dogs\na bowl of soup\n")
    root = f"s3://{S3_BUCKET}/{uuid.uuid4().hex}"
    ok = cli("captions", "sample", str(src), "--out", root, "--n", "2")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["sampled"] == 2
    bad_env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    bad = cli("captions", "sample", str(src), "--out", f"s3://{S3_BUCKET}/other", "--n", "2", env=bad_env)
    # the first request is the writer lease's read of the root
    _one_line_error(bad, f"cannot read s3://{S3_BUCKET}/other/_writer_lease.json: access denied")
    assert "AWS_SECRET_ACCESS_KEY" in bad.stderr  # says where credentials come from
    assert "wrong-secret" not in bad.stderr + bad.stdout


@pytest.mark.parametrize("content,message", [
    (None, "caption file not found"),
    (b"", "empty file"),
    (b"ok\n\xff bad\n", "line 2: not valid UTF-8"),
    (b"ok\nnul\x00\n", "line 2: contains NUL bytes"),
])
@pytest.mark.integration  # runs the CLI in a child process
def test_captions_sample_bad_input_writes_nothing(tmp_path, content, message):
    src = tmp_path / "c.txt"
    if content is not None:
        src.write_bytes(content)
    proc = cli("captions", "sample", str(src), "--out", str(tmp_path / "out"), "--n", "1")
    _one_line_error(proc, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.integration  # runs the CLI in a child process
def test_dataset_verify_and_stats(tmp_path):
    root = tmp_path / "ds"
    write_example_dataset(str(root), n_captions=6, images_per_caption=2, captions_per_shard=3)
    ok = cli("dataset", "verify", str(root), "--deep")
    assert ok.returncode == 0 and "ok: 2 shards, 12 images" in ok.stdout
    stats = json.loads(cli("dataset", "stats", str(root)).stdout)
    assert stats["totals"]["images"] == 12
    shard = root / "shards" / "000001.parquet"
    shard.write_bytes(shard.read_bytes()[:-10])
    _one_line_error(cli("dataset", "verify", str(root)), "000001.parquet")


@pytest.mark.slow
def test_train_from_shards_on_s3(s3_server, tmp_path):
    import uuid

    from tests.conftest import S3_BUCKET

    root = f"s3://{S3_BUCKET}/{uuid.uuid4().hex}"
    write_example_dataset(root, n_captions=16, images_per_caption=3, captions_per_shard=8, size=40)
    out = f"{root}/run"
    proc = cli("train", "--out", out, "--data", root, "--set", "train.steps=3", "--set", "optim.warmup_steps=0",
               "--set", "data.captions_per_batch=4", "--set", "data.images_per_caption=3",
               "--set", "data.num_workers=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["checkpoint"] == f"{out}/checkpoints/step_00000003"
