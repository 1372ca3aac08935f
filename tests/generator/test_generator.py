"""The small text-to-image model: trained here from diffusers' components on procedural renders,
saved with save_pretrained, and loaded by the diffusers backend through from_pretrained, which then
generates at the model's own size with its saved steps and guidance (as diffusers does for its
pipelines). A short budget: this checks the path, not the model's quality."""

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from stablerep.captions import sample_captions, write_captions
from stablerep.config import SynthesisConfig
from stablerep.experiments.fidelity import fidelity_study
from stablerep.generator.config import GeneratorConfig
from stablerep.generator.fidelity import FidelityClassifier, chance, fidelity
from stablerep.generator.train import train_generator
from stablerep.shards import read_manifest, verify_dataset
from stablerep.shards.rows import iter_images
from stablerep.stages import SynthesisJob, synthesize
from stablerep.world import parse_caption, procedural_captions, render, write_procedural_captions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    out = tmp_path_factory.mktemp("generator")
    cfg = GeneratorConfig(vae_steps=12, unet_steps=12, pool_images=128, batch_size=16, log_every=4,
                          checkpoint_every=6, recommended_steps=7, recommended_guidance=3.0)
    summary = train_generator(str(out), cfg, progress=False)
    return out, cfg, summary


def test_training_writes_a_diffusers_pipeline_with_its_recommendations_and_provenance(generator):
    out, cfg, summary = generator
    model = out / "model"
    assert summary["model"] == str(model)
    index = json.loads((model / "model_index.json").read_text())
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(index)
    saved = json.loads((model / "stablerep_generation.json").read_text())
    assert (saved["num_inference_steps"], saved["guidance_scale"], saved["resolution"]) == (7, 3.0, 32)
    assert saved["config"] == cfg.model_dump(mode="json")
    assert saved["provenance"]["command"] == "stablerep generator train" and saved["provenance"]["seed"] == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["stage"] == "vae"] == [4, 8, 12]
    assert [r["step"] for r in log if r["stage"] == "unet"] == [4, 8, 12]
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_diffusers_backend_generates_at_the_model_s_own_settings(generator, tmp_path):
    out, _, _ = generator
    corpus, root = str(tmp_path / "corpus.txt"), str(tmp_path / "ds")
    write_procedural_captions(corpus, 6, seed=3)
    write_captions(root, sample_captions(corpus, 6, 0, progress=False))
    cfg = SynthesisConfig(backend="diffusers", model=str(out / "model"), images_per_caption=2, image_size=32,
                          image_format="png")
    assert (cfg.resolution, cfg.steps, cfg.guidance) == (None, None, None)  # nothing asked for
    result = synthesize(SynthesisJob(captions=root, out=root, synthesis=cfg, progress=False))
    assert result["written"] == [0] and result["totals"]["images"] == 12
    recorded = read_manifest(root)["config"]
    assert (recorded["resolution"], recorded["steps"], recorded["guidance"]) == (32, 7, 3.0)
    assert verify_dataset(root, deep=True).ok
    sizes = {Image.open(io.BytesIO(row["image"]["bytes"])).size for row in iter_images(root)}
    assert sizes == {(32, 32)}


def test_fidelity_study_scores_each_guidance_scale_with_a_classifier_trained_on_real_renders(generator, tmp_path):
    out, _, _ = generator
    prefix = str(tmp_path / "classifier")
    cli = subprocess.run([str(Path(sys.executable).parent / "stablerep"), "generator", "classifier", "--out", prefix,
                          "--size", "32", "--steps", "80"], capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-2000:]
    heldout = json.loads(cli.stdout.strip().splitlines()[-1])["heldout_accuracy"]
    floor = chance()
    # supervision on real renders learns the easy attributes within 80 steps (the score's own check)
    assert heldout["background"] > floor["background"] + 0.3 and heldout["position"] > floor["position"] + 0.3, heldout
    # the measure itself: real renders of captions score far above chance where the classifier is good
    classifier = FidelityClassifier.load(prefix)
    captions = procedural_captions(64, seed=5)
    renders = [render(parse_caption(c, random.Random(i)), seed=i, size=64) for i, c in enumerate(captions)]
    on_renders = fidelity(classifier, renders, captions)
    assert on_renders["background"] > floor["background"] + 0.3, on_renders
    study = fidelity_study(str(tmp_path / "study"), str(out / "model"), [1.0, 4.0], n_captions=16, seed=0,
                           classifier_path=prefix)
    assert set(study["fidelity"]) == {"1", "4"} and study["classifier_on_real_renders"] == heldout
    for scores in study["fidelity"].values():
        assert set(scores) == set(floor) and all(0.0 <= v <= 1.0 for v in scores.values())
    saved = json.loads((tmp_path / "study" / "fidelity.json").read_text())
    assert saved["fidelity"] == study["fidelity"] and saved["chance"] == floor
    for name in ("fidelity.png", "samples-w1.png", "samples-w4.png"):
        assert (tmp_path / "study" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
