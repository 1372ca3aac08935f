"""Bad input at every entry point: one line `error: ...` on stderr, exit code 2, no traceback, and
nothing written that looks finished (no manifest, checkpoint or summary)."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration  # every test runs the CLI in a child process
ROOT = Path(__file__).resolve().parents[1]
FINISHED = ("manifest.json", "summary.json", "checkpoints/latest.json", "captions.parquet")


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "stablerep", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_bytes(b"")
    (d / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (d / "latin1.txt").write_bytes("café au lait on a table\ncrème brûlée\n".encode("latin-1"))
    pq.write_table(pa.table({"caption": ["a red ball on the grass"] * 50}), d / "full.parquet")
    (d / "truncated.parquet").write_bytes((d / "full.parquet").read_bytes()[:300])
    (d / "bad.yaml").write_text("model: {backbone: vit_tiny_cpu\n")  # unterminated
    (d / "good.txt").write_text("\n".join(f"a red ball number {i} on the grass" for i in range(12)))
    assert _cli("captions", "sample", "good.txt", "--out", "caps", "--n", "12", cwd=d).returncode == 0
    made = _cli("synthesize", "--captions", "caps", "--out", "ds", "--images-per-caption", "3", "--resolution", "64",
                "--image-size", "32", "--captions-per-shard", "4", cwd=d)
    assert made.returncode == 0, made.stderr
    return d


CASES = {
    "missing caption file": ["captions", "sample", "missing.txt", "--out", "out", "--n", "2"],
    "empty caption file": ["captions", "sample", "empty.txt", "--out", "out", "--n", "2"],
    "binary caption file": ["captions", "sample", "binary.txt", "--out", "out", "--n", "2"],
    "wrongly encoded caption file": ["captions", "sample", "latin1.txt", "--out", "out", "--n", "2"],
    "truncated parquet captions": ["captions", "sample", "truncated.parquet", "--out", "out", "--n", "2"],
    "more captions than the corpus has": ["captions", "sample", "good.txt", "--out", "out", "--n", "50"],
    "negative images per caption": ["synthesize", "--captions", "caps", "--out", "out", "--images-per-caption", "-1"],
    "unknown backend": ["synthesize", "--captions", "caps", "--out", "out", "--backend", "nonsense"],
    "unknown model": ["synthesize", "--captions", "caps", "--out", "out", "--backend", "diffusers",
                      "--model", "nobody/no-such-model"],
    "no captions at the root": ["synthesize", "--captions", "nowhere", "--out", "out"],
    "bad shard list": ["synthesize", "--captions", "caps", "--out", "out", "--shards", "0,x"],
    "m larger than images per caption": ["train", "--data", "ds", "--out", "out", "--set", "data.images_per_caption=6",
                                         "--set", "data.captions_per_batch=4", "--set", "train.steps=4"],
    "contradictory method and views": ["train", "--out", "out", "--set", "loss.method=simclr"],
    "text method without a text tower": ["train", "--out", "out", "--set", "loss.method=clip"],
    "unknown config key": ["train", "--out", "out", "--set", "model.nonsense=1"],
    "unknown preset": ["train", "--config", "nope", "--out", "out"],
    "malformed config file": ["train", "--config", "bad.yaml", "--out", "out"],
    "unknown backbone": ["train", "--out", "out", "--set", "model.backbone=resnet_nonsense"],
    "negative demo steps": ["demo", "--out", "out", "--set", "steps=-3"],
    "demo with no methods": ["demo", "--out", "out", "--set", "methods=[]"],
    "evaluate a missing run": ["evaluate", "--out", "out", "--encoder", "no-such-run", "--dataset",
                               "d=procedural:shape"],
    "compare with an unknown probe label": ["compare", "--run", "no-such-run", "--out", "out", "--label", "texture"],
    "verify a missing dataset": ["dataset", "verify", "nowhere"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing_finished(files, name, tmp_path):
    result = _cli(*CASES[name], cwd=files)
    assert result.returncode == 2, (name, result.stdout[-500:], result.stderr[-1500:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and len(lines[-1]) < 800, lines[-3:]
    assert not any((files / "out" / f).exists() for f in FINISHED)


def _copy_dataset(files, tmp_path):
    import shutil

    target = tmp_path / "ds"
    shutil.copytree(files / "ds", target)
    return target


def test_tampered_shard_is_refused_by_verify_and_training(files, tmp_path):
    ds = _copy_dataset(files, tmp_path)
    shard = ds / "shards" / "000001.parquet"
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    shard.write_bytes(bytes(blob))
    verify = _cli("dataset", "verify", str(ds), cwd=files)
    assert verify.returncode == 2 and "sha256 differs" in verify.stderr.strip().splitlines()[-1]
    train = _cli("train", "--data", str(ds), "--out", str(tmp_path / "run"), "--set", "data.captions_per_batch=4",
                 "--set", "data.images_per_caption=2", "--set", "train.steps=4", cwd=files)
    assert train.returncode == 2 and "Traceback" not in train.stderr, train.stderr[-1500:]
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("tamper", ["escape", "index", "garbage"])
def test_tampered_manifest_is_refused(files, tmp_path, tamper):
    ds = _copy_dataset(files, tmp_path)
    manifest = json.loads((ds / "manifest.json").read_text())
    if tamper == "escape":
        manifest["shards"][0]["file"] = "../../outside.parquet"
        (ds / "manifest.json").write_text(json.dumps(manifest))
    elif tamper == "index":
        manifest["shards"][0]["index"] = -1
        (ds / "manifest.json").write_text(json.dumps(manifest))
    else:
        (ds / "manifest.json").write_text(json.dumps(manifest)[:100])
    for args in (["dataset", "verify", str(ds)], ["dataset", "stats", str(ds)]):
        result = _cli(*args, cwd=files)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")


REFUSED = {
    "backend": (["synthesize", "--captions", "caps", "--out", "out", "--backend", "nope"],
                "error: invalid config: backend: 'nope' is not one of diffusers, tiny, procedural"),
    "method": (["train", "--out", "out", "--set", "loss.method=byol"],
               "error: invalid config: loss.method: 'byol' is not one of stablerep, stablerep_plus, simclr, clip, supervised"),
    "bound": (["synthesize", "--captions", "caps", "--out", "out", "--images-per-caption", "0"],
              "error: invalid config: images_per_caption: 0 refused: Input should be greater than or equal to 1"),
    "unknown key": (["train", "--out", "out", "--set", "model.nonsense=7"],
                    "error: invalid config: model.nonsense: unknown field (given 7)"),
    "union": (["synthesize", "--captions", "caps", "--out", "out", "--set", "compile=maybe"],
              "error: invalid config: compile: 'maybe' refused: Input should be a valid boolean"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_refused_value_is_named_in_the_error(name, tmp_path):
    args, expected = REFUSED[name]
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(expected), result.stderr[-500:]
    assert not (tmp_path / "out").exists()
