"""Fault tolerance with real processes and the real S3 server: kill -9 during synthesis and
training, an S3 outage in the middle of a run, a store gone for good, then resumption."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stablerep import storage
from stablerep.shards import read_manifest, verify_dataset
from stablerep.synthesis import procedural_captions
from tests.conftest import S3_BUCKET

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
SYNTH = ["--backend", "procedural", "--images-per-caption", "3", "--captions-per-shard", "4",
         "--resolution", "384", "--image-size", "64", "--format", "png", "--batch-size", "3"]


def _cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "stablerep", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    """A caption root (48 captions -> 12 shards) and the uninterrupted reference dataset."""
    tmp = tmp_path_factory.mktemp("reliability")
    source = tmp / "corpus.txt"
    source.write_text("\n".join(procedural_captions(48, seed=5)) + "\n")
    root = str(tmp / "captions")
    assert _cli("captions", "sample", str(source), "--out", root, "--n", "48").returncode == 0
    reference = str(tmp / "reference")
    done = _cli("synthesize", "--captions", root, "--out", reference, *SYNTH)
    assert done.returncode == 0, done.stderr[-2000:]
    return {"root": root, "reference": _fingerprint(reference)}


def _fingerprint(root):
    return [(s["index"], s["sha256"], s["rows"]) for s in read_manifest(root)["shards"]]


def _committed(root):
    fs, path = storage.get_fs(f"{root}/shards")
    return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, refresh=True)) if fs.exists(path) else []


def test_kill_9_during_synthesis_loses_nothing(s3_server, captions):
    out = f"s3://{S3_BUCKET}/killed-synthesis"
    rng = random.Random(7)
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "stablerep", "synthesize", "--captions", captions["root"],
                                 "--out", out, *SYNTH], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        target = len(_committed(out)) // 2 + rng.randint(1, 2)  # kill after 1-2 more shards commit ...
        while proc.poll() is None and len(_committed(out)) // 2 < target:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))  # ... at a random moment of the next one
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        assert not storage.exists(f"{out}/manifest.json") or proc.returncode == 0
    finished = _cli("synthesize", "--captions", captions["root"], "--out", out, *SYNTH)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert kills == 4, "a run finished before it could be killed: make the shards slower"
    summary = json.loads(finished.stdout.splitlines()[-1])
    assert summary["skipped"], "the rerun should have found shards committed before the kills"
    assert _fingerprint(out) == captions["reference"]  # same shards, same bytes: nothing lost or duplicated
    report = verify_dataset(out, deep=True)
    assert report.ok and report.images_checked == 48 * 3, report.problems
    names = _committed(out)  # nothing on the store that the manifest does not account for
    assert names == sorted([f"{i:06d}.parquet" for i, _, _ in captions["reference"]]
                           + [f"{i:06d}.json" for i, _, _ in captions["reference"]])


def test_an_s3_outage_mid_run_costs_retries_not_data(s3_control, captions):
    out = f"s3://{S3_BUCKET}/outage"
    env = {"AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard", "STABLEREP_STORAGE_RETRIES": "6",
           "STABLEREP_STORAGE_BACKOFF_S": "0.5"}  # ride out up to ~30 s of outage
    proc = subprocess.Popen([sys.executable, "-m", "stablerep", "synthesize", "--captions", captions["root"],
                             "--out", out, *SYNTH], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not any(n.endswith(".json") for n in _committed(out)):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:] if proc.stderr else ""
            time.sleep(0.2)
        s3_control.stop()
        time.sleep(4)
    finally:
        s3_control.start()
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert _fingerprint(out) == captions["reference"]
    assert verify_dataset(out, deep=True).ok


def test_a_store_gone_for_good_fails_clearly_and_a_later_run_resumes(s3_control, captions):
    out = f"s3://{S3_BUCKET}/gone"
    partial = _cli("synthesize", "--captions", captions["root"], "--out", out, *SYNTH, "--shards", "0,1,2")
    assert partial.returncode == 0
    env = {"AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard", "STABLEREP_STORAGE_RETRIES": "2",
           "STABLEREP_STORAGE_BACKOFF_S": "0.3"}
    s3_control.stop()
    try:
        failed = _cli("synthesize", "--captions", captions["root"], "--out", out, *SYNTH, env=env, timeout=300)
    finally:
        s3_control.start()
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot ") and "gave up after 3 attempts" in last, failed.stderr[-1000:]
    resumed = _cli("synthesize", "--captions", captions["root"], "--out", out, *SYNTH)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.splitlines()[-1])["skipped"] == [0, 1, 2]
    assert _fingerprint(out) == captions["reference"]


def test_kill_9_during_training_resumes_from_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--config", "tiny_cpu", "--out", str(out), "--set", "train.steps=400",
            "--set", "train.checkpoint_every=20", "--set", "train.log_every=20"]
    proc = subprocess.Popen([sys.executable, "-m", "stablerep", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    pointer = out / "checkpoints" / "latest.json"
    deadline = time.time() + 180
    while not pointer.exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.1)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    step = json.loads(pointer.read_text())["step"]
    assert 20 <= step < 400
    resumed = _cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout.splitlines()[-1])
    assert summary["steps"] == 400 and summary["resumed_from"] >= step
    # a checkpoint cut short is refused with one line, never unpickled
    target = out / "checkpoints" / f"{json.loads(pointer.read_text())['name']}.safetensors"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    bad = _cli("train", "--config", "tiny_cpu", "--out", str(out), "--set", "train.steps=420")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
