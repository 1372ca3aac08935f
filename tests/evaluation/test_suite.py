"""The evaluation suite end to end on real images: image folder and Parquet agree, a trained encoder
beats its untrained architecture, features are cached, reference encoders load from local files."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stablerep.config import load_config
from stablerep.data.labelled import DatasetOptions
from stablerep.data.shards import build_shard_batches
from stablerep.evaluation import EvalSuite, encode_split, load_encoder, run_evaluation
from stablerep.evaluation.datasets import load_labelled
from stablerep.training import run_training_loop
from tests.helpers.datasets import write_digits_shards

ROOT = Path(__file__).resolve().parents[2]
FAST = {"linear_probe": {"l2_values": 8}, "few_shot": {"episodes": 100}}


def _suite(encoders, datasets, cache=None, **protocols):
    return EvalSuite.model_validate({"encoders": encoders, "datasets": datasets, "features": {"cache": cache},
                                     "protocols": {**FAST, **protocols}})


@pytest.fixture(scope="module")
def simclr_run(tmp_path_factory):
    """SimCLR trained on the digits' training images (real images; never the test split)."""
    root = tmp_path_factory.mktemp("digit-shards")
    write_digits_shards(str(root))
    out = tmp_path_factory.mktemp("simclr-digits")
    run = load_config("tiny_cpu", ["loss.method=simclr", "data.images_per_caption=2", "data.captions_per_batch=64",
                                   "train.steps=300"])
    run_training_loop(run, build_shard_batches(str(root), run), str(out), progress=False)
    return str(out)


def test_folder_and_parquet_give_identical_features_and_accuracies(digits_folder, digits_parquet, tiny_run):
    summary = run_evaluation(_suite({"floor": f"random:{tiny_run}"},
                                    {"folder": f"imagefolder:{digits_folder}", "parquet": f"parquet:{digits_parquet}"}),
                             progress=False)
    a, b = summary["results"]["folder"]["floor"], summary["results"]["parquet"]["floor"]
    for key in ("linear_probe", "knn", "few_shot_5way_1shot", "few_shot_5way_5shot", "train_images", "test_images"):
        assert a[key] == b[key], key
    enc = load_encoder("floor", f"random:{tiny_run}")
    folder = load_labelled("f", f"imagefolder:{digits_folder}")
    parquet = load_labelled("p", f"parquet:{digits_parquet}")
    fa = encode_split(enc.model, folder.test, enc.transform, workers=0)
    fb = encode_split(enc.model, parquet.test, enc.transform, workers=2)  # loader workers read row groups
    assert torch.equal(fa.features, fb.features) and fa.features.shape == (359, 64)
    assert a["not_applicable"]["zero_shot"] == "the encoder has no text tower"


def test_trained_encoder_beats_random_init_and_features_are_cached(digits_folder, simclr_run, tmp_path):
    cache = str(tmp_path / "cache")
    suite = _suite({"simclr": simclr_run, "random_init": f"random:{simclr_run}"},
                   {"digits": f"imagefolder:{digits_folder}"}, cache=cache)
    first = run_evaluation(suite, out=str(tmp_path / "eval"), progress=False)
    r = first["results"]["digits"]
    assert r["simclr"]["linear_probe"] > r["random_init"]["linear_probe"] + 0.02, r
    assert r["simclr"]["knn"] > r["random_init"]["knn"] + 0.1, r
    assert r["simclr"]["few_shot_5way_5shot"] > r["random_init"]["few_shot_5way_5shot"] + 0.1, r
    assert first["cache"] == {"cached_splits": 0, "encoded_images": 2 * 1797}
    second = run_evaluation(suite, out=str(tmp_path / "eval2"), progress=False)
    assert second["cache"] == {"cached_splits": 4, "encoded_images": 0}
    for enc in ("simclr", "random_init"):
        for key in ("linear_probe", "knn", "few_shot_5way_5shot"):
            assert second["results"]["digits"][enc][key] == r[enc][key]
    saved = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert saved["results"]["digits"]["simclr"]["linear_probe"] == r["simclr"]["linear_probe"]
    table = (tmp_path / "eval" / "results.md").read_text()
    assert "| dataset | simclr | random_init |" in table and "| digits |" in table
    assert (tmp_path / "eval" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corrupt_image_is_named_or_skipped(digits_folder, tiny_run, tmp_path):
    folder = tmp_path / "digits"
    shutil.copytree(digits_folder, folder)
    victim = next((folder / "test" / "7").iterdir())
    victim.write_bytes(victim.read_bytes()[:20])  # a truncated PNG
    suite = _suite({"floor": f"random:{tiny_run}"}, {"digits": f"imagefolder:{folder}"},
                   few_shot={"enabled": False}, linear_probe={"enabled": False})
    with pytest.raises(Exception) as info:
        run_evaluation(suite, out=str(tmp_path / "out"), progress=False)
    assert str(victim) in str(info.value) and "not a readable image" in str(info.value)
    assert not (tmp_path / "out").exists()
    suite.datasets["digits"].skip_bad_images = True
    summary = run_evaluation(suite, progress=False)
    assert summary["results"]["digits"]["floor"]["skipped_images"] == 1
    assert summary["results"]["digits"]["floor"]["test_images"] == 358


def test_timm_encoder_from_a_local_weights_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(5)
    reference = timm.create_model("test_vit", pretrained=False, num_classes=0).eval()
    save_file(reference.state_dict(), tmp_path / "w.safetensors")
    enc = load_encoder("t", f"timm:test_vit:{tmp_path / 'w.safetensors'}")
    assert enc.transform.size == 160 and enc.identity.startswith("timm:test_vit:")
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        assert torch.allclose(enc.model(x)["features"], reference(x), atol=1e-5)


def test_open_clip_encoder_with_zero_shot(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    config = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                                              "head_width": 32},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    (tmp_path / "tiny-clip-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "tiny-clip-test.json")
    torch.manual_seed(3)
    reference = open_clip.create_model("tiny-clip-test").eval()
    save_file(reference.state_dict(), tmp_path / "clip.safetensors")
    enc = load_encoder("c", f"open_clip:{tmp_path / 'tiny-clip-test.json'}:{tmp_path / 'clip.safetensors'}")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(enc.model(x)["embed"], reference.encode_image(x), atol=1e-5)
        tokens = enc.text.tokenize(["a photo of a star."])
        assert torch.allclose(enc.text.encode(tokens), reference.encode_text(tokens), atol=1e-5)
    summary = run_evaluation(_suite({"clip": enc.spec}, {"shape": {"spec": "procedural:shape", "per_class": 6,
                                                                    "size": 32}}, few_shot={"enabled": False}),
                             progress=False)
    # the same zero-shot prediction, written out with open_clip's own calls on the reference model
    from stablerep.evaluation.zero_shot import TEMPLATES

    data = load_labelled("shape", "procedural:shape", DatasetOptions(per_class=6, size=32))
    with torch.no_grad():
        text = torch.stack([torch.nn.functional.normalize(torch.nn.functional.normalize(
            reference.encode_text(open_clip.get_tokenizer("tiny-clip-test")([t.format(c) for t in TEMPLATES])),
            dim=-1).mean(0), dim=-1) for c in data.classes])
        x = torch.stack([enc.transform.normalise(enc.transform.geometric()(
            torch.as_tensor(np.array(data.test.images[i])).permute(2, 0, 1))[None])[0] for i in range(len(data.test))])
        pred = (torch.nn.functional.normalize(reference.encode_image(x), dim=-1) @ text.T).argmax(1)
    expected = float((pred == torch.as_tensor(data.test.labels)).float().mean())
    assert summary["results"]["shape"]["clip"]["zero_shot"] == pytest.approx(expected)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "stablerep", "evaluate", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


@pytest.mark.integration  # runs the CLI in a child process
def test_evaluate_cli_with_a_suite_file(digits_folder, tiny_run, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"datasets:\n  digits: imagefolder:{digits_folder}\n"
                     f"  shape: {{spec: 'procedural:shape', per_class: 6, size: 32}}\n"
                     f"encoders:\n  floor: random:{tiny_run}\n"
                     "protocols:\n  linear_probe: {l2_values: 4}\n  few_shot: {episodes: 20, shots: [5]}\n")
    out = tmp_path / "eval"
    result = _cli("--suite", str(suite), "--encoder", f"run={tiny_run}", "--out", str(out), "--no-cache",
                  "--protocol", "linear_probe", "--protocol", "few_shot")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["results"]) == {"digits", "shape"} and set(summary["results"]["digits"]) == {"floor", "run"}
    assert "knn" not in summary["results"]["digits"]["run"]
    assert summary["results"]["shape"]["run"]["few_shot_5way_5shot"] is None  # 3 test images a class
    assert "needs 5 classes" in summary["results"]["shape"]["run"]["not_applicable"]["few_shot_5way_5shot"]
    assert "## Linear probe" in result.stderr and "| digits |" in result.stderr


def _bad_inputs(digits_folder, tiny_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = tmp_path / "no-images"
    shutil.copytree(digits_folder, no_images)
    for f in (no_images / "train" / "5").iterdir():
        f.unlink()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(digits_folder, corrupt)
    victim = next((corrupt / "train" / "2").iterdir())
    victim.write_bytes(b"not a png at all")
    misfit = tmp_path / "misfit"
    shutil.copytree(tiny_run, misfit)
    config = json.loads((misfit / "config.json").read_text())
    config["model"]["head_hidden_dim"] = 96
    (misfit / "config.json").write_text(json.dumps(config))
    good_enc, good_ds = f"e=random:{tiny_run}", f"d=imagefolder:{digits_folder}"
    return {
        "missing dataset": ([good_enc], [f"d=imagefolder:{tmp_path / 'nowhere'}"], "no such directory"),
        "empty dataset": ([good_enc], [f"d=imagefolder:{empty}"], "no images under"),
        "class with no images": ([good_enc], [f"d=imagefolder:{no_images}"], "class '5'"),
        "corrupt image": ([good_enc], [f"d=imagefolder:{corrupt}"], str(victim)),
        "unknown encoder kind": (["e=jax:model"], [good_ds], "unknown kind 'jax'"),
        "unknown dataset kind": ([good_enc], ["d=tfds:mnist"], "unknown kind 'tfds'"),
        "missing run": ([f"e={tmp_path / 'no-run'}"], [good_ds], "no training run at"),
        "checkpoint that does not fit its config": ([f"e={misfit}"], [good_ds], "do not fit the model"),
        "missing timm weights": (["e=timm:test_vit:/nowhere/w.safetensors"], [good_ds], "does not exist"),
    }


@pytest.mark.integration  # runs the CLI in a child process
def test_bad_evaluation_input_is_one_line_exit_2_and_no_summary(digits_folder, tiny_run, tmp_path):
    for name, (encoders, datasets, expected) in _bad_inputs(digits_folder, tiny_run, tmp_path).items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        args = [a for e in encoders for a in ("--encoder", e)] + [a for d in datasets for a in ("--dataset", d)]
        result = _cli(*args, "--out", str(out), "--no-cache", "--protocol", "knn")
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        assert result.returncode == 2, (name, result.stderr[-1500:])
        assert "Traceback" not in result.stderr and lines[-1].startswith("error: "), (name, lines[-3:])
        assert expected in lines[-1], (name, lines[-1])
        assert not (out / "summary.json").exists(), name
