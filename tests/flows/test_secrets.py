"""Planted S3 credentials never reach logs, errors, Prefect parameters, artifacts, manifests or
run files: every output of a run on the real S3 server is searched for them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stablerep import storage
from stablerep.synthesis import procedural_captions
from tests.conftest import S3_BUCKET, S3_KEY, S3_SECRET

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _cli(*args, env=None) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "stablerep", *args], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})}, timeout=600)
    return result.returncode, result.stdout + result.stderr


def _everything_under(url):
    fs, path = storage.get_fs(url)
    return {p: fs.cat_file(p) for p in fs.find(path)}


def test_planted_credentials_appear_in_no_output(s3_server, tmp_path, caplog):
    from prefect.client.orchestration import get_client

    from flows.dataset import DatasetRequest, build_dataset

    prefix = f"s3://{S3_BUCKET}/secrets"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(procedural_captions(24, seed=9)) + "\n")
    runs = [_cli("captions", "sample", str(corpus), "--out", f"{prefix}/cli", "--n", "24"),
            _cli("synthesize", "--captions", f"{prefix}/cli", "--out", f"{prefix}/cli", "--images-per-caption", "3",
                 "--resolution", "64", "--image-size", "32", "--captions-per-shard", "8"),
            _cli("train", "--data", f"{prefix}/cli", "--out", f"{prefix}/run", "--set", "train.steps=6",
                 "--set", "data.captions_per_batch=8", "--set", "data.images_per_caption=2"),
            _cli("dataset", "stats", f"{prefix}/cli"),
            # failures: a wrong secret, a missing object, an unreachable endpoint
            _cli("dataset", "verify", f"{prefix}/cli", env={"AWS_SECRET_ACCESS_KEY": S3_SECRET[::-1]}),
            _cli("dataset", "verify", f"{prefix}/missing"),
            _cli("dataset", "verify", f"{prefix}/cli", env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                                                            "AWS_MAX_ATTEMPTS": "1", "STABLEREP_STORAGE_RETRIES": "1",
                                                            "STABLEREP_STORAGE_BACKOFF_S": "0.1"})]
    # the four commands that use the credentials succeed (so their outputs and objects exist to be
    # searched); the three failures fail with one-line errors (so their messages are searched)
    assert [code for code, _ in runs] == [0, 0, 0, 0, 2, 2, 2], [text[-500:] for _, text in runs]
    outputs = [text for _, text in runs]
    assert all("error: " in text for text in outputs[4:])
    result = build_dataset(DatasetRequest.model_validate({
        "root": f"{prefix}/flow", "captions": {"source": str(corpus), "n": 24},
        "synthesis": {"images_per_caption": 2, "resolution": 64, "image_size": 32, "captions_per_shard": 8},
        "executor": "subprocess"}))
    assert result["totals"]["images"] == 48
    texts = outputs + [caplog.text, json.dumps(result)]
    texts += [blob.decode("utf-8", "replace") for blob in _everything_under(prefix).values()]
    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs()
        texts += [json.dumps(r.parameters, default=str) for r in flow_runs]
        texts += [json.dumps(a.data, default=str) for a in client.read_artifacts()]
        texts += [log.message for log in client.read_logs()]
    assert len(texts) > 20
    for secret in (S3_SECRET, S3_KEY):
        leaks = [t[max(0, t.find(secret) - 80):t.find(secret) + 80] for t in texts if secret in t]
        assert not leaks, f"{secret!r} leaked: {leaks[:3]}"
