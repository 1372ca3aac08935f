"""build-dataset holds the dataset root's writer lease: under a real (temporary) Prefect server, a
build of a root that another process is writing fails naming it, or waits for it."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stablerep.shards import read_lease, verify_dataset
from stablerep.synthesis import procedural_captions

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("prefect_harness")


def _request(tmp_path, root, **kw):
    from flows.dataset import DatasetRequest

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(procedural_captions(8, seed=9)) + "\n")
    return DatasetRequest.model_validate({
        "root": root, "captions": {"source": str(corpus), "n": 8},
        "synthesis": {"backend": "procedural", "images_per_caption": 2, "captions_per_shard": 4,
                      "resolution": 48, "image_size": 32}, "executor": "inline", **kw})


def _holder(root):
    """Another writer of the root: a process that takes the lease and keeps it."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.lease_writer", "hold", root, "nightly regeneration",
                             "--ttl", "600"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert json.loads(proc.stdout.readline())["held"]
    return proc


def test_a_build_of_a_root_being_written_fails_naming_the_writer(tmp_path):
    from flows.dataset import build_dataset

    root = str(tmp_path / "ds")
    holder = _holder(root)
    try:
        with pytest.raises(Exception, match=rf"being written by nightly regeneration \(host [^,]+, pid {holder.pid}\)"):
            build_dataset(_request(tmp_path, root))
        assert not (tmp_path / "ds" / "captions.parquet").exists()  # it wrote nothing
    finally:
        holder.kill()
        holder.wait()


def test_a_build_that_may_wait_runs_once_the_writer_is_gone(tmp_path):
    from flows.dataset import build_dataset

    root = str(tmp_path / "ds")
    holder = _holder(root)
    killer = subprocess.Popen(["sh", "-c", f"sleep 3; kill -9 {holder.pid}"])  # the writer crashes meanwhile
    started = time.monotonic()
    result = build_dataset(_request(tmp_path, root, lease_wait_s=120))
    killer.wait()
    holder.wait()
    assert time.monotonic() - started > 3  # it waited for the writer, then took the lease over
    assert result["totals"]["images"] == 16 and verify_dataset(root, deep=True).ok
    lease = read_lease(root)
    assert lease["released"] and lease["purpose"].startswith("build-dataset flow run ")
    assert lease["holder"]["run"]  # the flow run's id names the holder
