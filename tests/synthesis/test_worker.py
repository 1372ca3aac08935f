import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stablerep import storage
from stablerep.captions import sample_captions, write_captions
from stablerep.config import SynthesisConfig
from stablerep.shards import read_manifest, shard_url, verify_dataset
from stablerep.shards.layout import read_parquet_bytes
from stablerep.synthesis import ProceduralBackend, build_dataset, procedural_captions

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
    a = build_dataset(captions_root, str(tmp_path / "a"), _cfg(), ProceduralBackend(64), progress=False)
    b = build_dataset(captions_root, str(tmp_path / "b"), _cfg(captions_per_shard=6, batch_size=2),
                      ProceduralBackend(64), progress=False)
    assert a.manifest["totals"]["images"] == b.manifest["totals"]["images"] == 42
    assert (a.manifest["totals"]["shards"], b.manifest["totals"]["shards"]) == (4, 3)
    assert _images(str(tmp_path / "a")) == _images(str(tmp_path / "b"))
    assert verify_dataset(str(tmp_path / "a"), deep=True).ok


def test_second_build_commits_nothing(tmp_path, captions_root):
    out = str(tmp_path / "ds")
    first = build_dataset(captions_root, out, _cfg(), ProceduralBackend(64), progress=False)
    second = build_dataset(captions_root, out, _cfg(), ProceduralBackend(64), progress=False)
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
    clean = build_dataset(captions_root, str(tmp_path / "clean"), _cfg(), ProceduralBackend(64), progress=False)
    out = str(tmp_path / "crashy")
    with pytest.raises(_Crash):
        build_dataset(captions_root, out, _cfg(), _CrashingBackend(6), progress=False)
    assert not storage.exists(f"{out}/manifest.json")  # nothing that looks finished
    resumed = build_dataset(captions_root, out, _cfg(), ProceduralBackend(64), progress=False)
    assert resumed.skipped == [0, 1] and resumed.written == [2, 3]
    assert resumed.manifest["shards"] == clean.manifest["shards"]  # same files: rows, bytes and sha256s


def test_config_hash_ignores_batch_size_and_device():
    assert _cfg().hashed() == _cfg(batch_size=1, device="cpu").hashed()
    assert _cfg().hashed() != _cfg(seed=1).hashed()
    assert "guidance" not in _cfg().hashed()  # procedural: no sampler settings
    assert _cfg(backend="tiny").hashed()["guidance"] == 2.0


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
