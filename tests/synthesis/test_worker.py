import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stablerep import storage
from stablerep.captions import sample_captions, write_captions
from stablerep.config import SynthesisConfig
from stablerep.shards import read_manifest, shard_url, verify_dataset
from stablerep.shards.layout import read_parquet_bytes
from stablerep.synthesis import (
    ProceduralBackend,
    procedural_captions,
    resolve_native_defaults,
    synthesize_dataset,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def captions_root(tmp_path):
    src = tmp_path / "captions.txt"
    src.write_text("\n".join(procedural_captions(14, seed=2)))
    root = str(tmp_path / "captions")
    write_captions(root, sample_captions(str(src), 14, progress=False))
    return root


def _images(root):
    out = {}
    for entry in read_manifest(root)["shards"]:
        table = read_parquet_bytes(storage.read_bytes(shard_url(root, entry["index"])))
        for row in table.to_pylist():
            out[(row["caption_id"], row["image_index"])] = (row["seed"], row["image"]["bytes"])
    return out


def _cfg(**kw):
    return SynthesisConfig(**{"images_per_caption": 3, "captions_per_shard": 4, "resolution": 64,
                              "image_size": 48, "batch_size": 5, **kw})


def test_same_images_whatever_the_shard_and_batch_sizes(tmp_path, captions_root):
    a = synthesize_dataset(captions_root, str(tmp_path / "a"), _cfg(), ProceduralBackend(64), progress=False)
    b = synthesize_dataset(captions_root, str(tmp_path / "b"), _cfg(captions_per_shard=6, batch_size=2),
                      ProceduralBackend(64), progress=False)
    assert a.manifest["totals"]["images"] == b.manifest["totals"]["images"] == 42
    assert (a.manifest["totals"]["shards"], b.manifest["totals"]["shards"]) == (4, 3)
    assert _images(str(tmp_path / "a")) == _images(str(tmp_path / "b"))
    assert verify_dataset(str(tmp_path / "a"), deep=True).ok


def test_second_build_commits_nothing(tmp_path, captions_root):
    out = str(tmp_path / "ds")
    first = synthesize_dataset(captions_root, out, _cfg(), ProceduralBackend(64), progress=False)
    second = synthesize_dataset(captions_root, out, _cfg(), ProceduralBackend(64), progress=False)
    assert first.written == [0, 1, 2, 3] and second.written == [] and second.skipped == [0, 1, 2, 3]
    assert first.manifest["shards"] == second.manifest["shards"]


class _Crash(RuntimeError):
    pass


class _CrashingBackend(ProceduralBackend):
    """Dies in its n-th call, as a preempted worker would."""

    def __init__(self, calls_before_crash):
        super().__init__(64)
        self.left = calls_before_crash

    def generate(self, requests):
        if self.left == 0:
            raise _Crash("preempted")
        self.left -= 1
        return super().generate(requests)


def test_interrupted_build_resumes_to_the_same_dataset(tmp_path, captions_root):
    clean = synthesize_dataset(captions_root, str(tmp_path / "clean"), _cfg(), ProceduralBackend(64), progress=False)
    out = str(tmp_path / "crashy")
    with pytest.raises(_Crash):
        synthesize_dataset(captions_root, out, _cfg(), _CrashingBackend(6), progress=False)
    assert not storage.exists(f"{out}/manifest.json")  # nothing that looks finished
    resumed = synthesize_dataset(captions_root, out, _cfg(), ProceduralBackend(64), progress=False)
    assert resumed.skipped == [0, 1] and resumed.written == [2, 3]
    assert resumed.manifest["shards"] == clean.manifest["shards"]  # same files: rows, bytes and sha256s


def test_config_hash_ignores_batch_size_and_device():
    assert _cfg().hashed() == _cfg(batch_size=1, device="cpu").hashed()
    assert _cfg().hashed() != _cfg(seed=1).hashed()
    assert "guidance" not in _cfg().hashed()  # procedural: no sampler settings
    assert resolve_native_defaults(_cfg(backend="tiny")).hashed()["guidance"] == 2.0


@pytest.mark.integration  # runs the CLI in a child process
def test_cli_synthesize_with_the_tiny_backend(tmp_path, captions_root, tiny_sd):
    env = {**os.environ, "STABLEREP_CACHE": str(tiny_sd.parent)}
    proc = subprocess.run([sys.executable, "-m", "stablerep", "synthesize", "--captions", captions_root,
                           "--out", str(tmp_path / "ds"), "--backend", "tiny", "--images-per-caption", "2",
                           "--steps", "2", "--resolution", "32", "--image-size", "32",
                           "--captions-per-shard", "7"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["written"] == [0, 1] and summary["totals"]["images"] == 28
    lineage = read_manifest(str(tmp_path / "ds"))["lineage"]
    assert lineage["scheduler"] == "DDIMScheduler" and lineage["guidance"] == 2.0
    bad = subprocess.run([sys.executable, "-m", "stablerep", "synthesize", "--captions", captions_root,
                          "--out", str(tmp_path / "x"), "--backend", "diffusers", "--model", "nobody/missing-model"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: model 'nobody/missing-model'")
    assert not (tmp_path / "x" / "manifest.json").exists()


class _SignallingBackend(ProceduralBackend):
    """Records which images it was asked for, so a test can see what ran while it was called."""

    def __init__(self, shard1_ids):
        super().__init__(64)
        self.shard1_ids, self.calls = shard1_ids, 0
        self.second_call = threading.Event()
        self.shard1_started = threading.Event()

    def generate(self, requests):
        self.calls += 1
        if self.calls == 2:
            self.second_call.set()
        if any(r.caption_id in self.shard1_ids for r in requests):
            self.shard1_started.set()
        return super().generate(requests)


def test_encoding_and_shard_writes_overlap_generation(tmp_path, captions_root, monkeypatch):
    """The first batch's encoding and shard 0's write each wait until the backend is already making
    the next batch / shard; without overlap they would wait in vain (and the flags stay False)."""
    from stablerep.captions.sample import load_captions
    from stablerep.synthesis import worker

    backend = _SignallingBackend(set(load_captions(captions_root).column("caption_id").to_pylist()[4:8]))
    seen = {"encode_overlapped": False, "write_overlapped": False}
    real_encode, real_write = worker.encode_image, worker.write_shard

    def slow_encode(img, *args, **kwargs):
        if backend.calls == 1:  # an image of the first batch
            seen["encode_overlapped"] |= backend.second_call.wait(timeout=20)
        return real_encode(img, *args, **kwargs)

    def slow_write(root, index, *args, **kwargs):
        if index == 0:
            seen["write_overlapped"] = backend.shard1_started.wait(timeout=20)
        return real_write(root, index, *args, **kwargs)

    monkeypatch.setattr(worker, "encode_image", slow_encode)
    monkeypatch.setattr(worker, "write_shard", slow_write)
    out = str(tmp_path / "overlapped")
    result = synthesize_dataset(captions_root, out, _cfg(), backend, progress=False)
    assert seen == {"encode_overlapped": True, "write_overlapped": True}
    assert result.written == [0, 1, 2, 3]
    monkeypatch.undo()
    plain = synthesize_dataset(captions_root, str(tmp_path / "plain"), _cfg(), ProceduralBackend(64), progress=False)
    assert _images(out) == _images(str(tmp_path / "plain"))
    assert [s["sha256"] for s in result.manifest["shards"]] == [s["sha256"] for s in plain.manifest["shards"]]


def test_a_failed_shard_write_stops_the_build_without_a_manifest(tmp_path, captions_root, monkeypatch):
    from stablerep.synthesis import worker

    real_write = worker.write_shard

    def failing_write(root, index, *args, **kwargs):
        if index == 1:
            raise OSError("store refused the write")
        return real_write(root, index, *args, **kwargs)

    monkeypatch.setattr(worker, "write_shard", failing_write)
    out = str(tmp_path / "ds")
    with pytest.raises(OSError, match="store refused"):
        synthesize_dataset(captions_root, out, _cfg(), ProceduralBackend(64), progress=False)
    assert not storage.exists(f"{out}/manifest.json")
    assert storage.exists(f"{out}/shards/000000.json") and not storage.exists(f"{out}/shards/000001.json")
