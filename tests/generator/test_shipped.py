"""The generator shipped in stablerep/assets/procedural-ldm: it loads offline through the diffusers
backend at its own settings, its images follow their captions far above chance by the fidelity
measure, its weights reach the losses its log ends with, and a rebuild from its documented command
repeats the committed first steps (with STABLEREP_REBUILD=1 also: the first 50 steps against the
shipped log, and the whole rebuild and its fidelity)."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from stablerep.config import SynthesisConfig
from stablerep.experiments.fidelity import generate
from stablerep.generator.config import GeneratorConfig
from stablerep.generator.fidelity import FidelityClassifier, chance, fidelity
from stablerep.generator.model import training_scheduler
from stablerep.generator.shipped import shipped_classifier, shipped_dir, shipped_generator
from stablerep.generator.train import make_pool, tokenize, train_generator, unet_step, vae_step
from stablerep.synthesis.native import native_settings
from stablerep.world import procedural_captions
from tests.helpers.generator_first_steps import first_steps

SHIPPED = shipped_dir()
# what the shipped model reaches at its default guidance on FIDELITY_CAPTIONS fresh captions (RECIPE.md);
# the floors below are far above chance and leave room for the rounding of other CPUs
FIDELITY_CAPTIONS = 256


def shipped_log() -> list[dict]:
    return [json.loads(line) for line in (SHIPPED / "train_log.jsonl").read_text().splitlines()]


def shipped_settings() -> dict:
    return json.loads((shipped_generator() / "stablerep_generation.json").read_text())


def fresh_captions(n: int) -> list[str]:
    return random.Random(99).sample(procedural_captions(4 * n, seed=99), n)


def test_shipped_files_are_small_and_say_how_they_were_made():
    sizes = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert sizes < 16 * 2**20, f"shipped generator assets: {sizes / 2**20:.1f} MiB"
    settings = shipped_settings()
    assert settings["provenance"]["command"].startswith("stablerep generator train")
    assert GeneratorConfig.model_validate(settings["config"]) == GeneratorConfig(), \
        "the shipped model was made with the default config, so `stablerep generator train` remakes it"
    recipe = (SHIPPED / "RECIPE.md").read_text()
    assert "stablerep generator train" in recipe and "stablerep generator classifier" in recipe
    assert {r["stage"] for r in shipped_log()} == {"vae", "unet"}


def test_the_diffusers_backend_uses_the_shipped_model_s_own_settings():
    native = native_settings(SynthesisConfig(backend="diffusers", model=str(shipped_generator())))
    settings = shipped_settings()
    assert native == {"resolution": settings["resolution"], "steps": settings["num_inference_steps"],
                      "guidance": settings["guidance_scale"]}


def test_shipped_generator_follows_colour_and_shape_far_above_chance(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    captions = fresh_captions(FIDELITY_CAPTIONS)
    images = generate(str(shipped_generator()), captions, guidance=shipped_settings()["guidance_scale"], seed=0)
    assert {im.size for im in images} == {(32, 32)}
    scores = fidelity(FidelityClassifier.load(shipped_classifier()), images, captions)
    floor = chance()
    assert scores["colour"] > floor["colour"] + 0.4, scores
    assert scores["shape"] > floor["shape"] + 0.2, scores


def _logged(stage: str, key: str, last: int) -> float:
    """The mean of ``key`` over the last ``last`` logged records of ``stage``."""
    records = [r[key] for r in shipped_log() if r["stage"] == stage][-last:]
    return sum(records) / len(records)


def test_the_shipped_weights_reach_the_losses_their_log_ends_with():
    """The shipped files are the weights the log trained: on the first 256 renders of the training
    pool, the autoencoder's reconstruction loss and the UNet's noise loss (the training step's own
    loss functions, fixed noise) are those the log ends with (measured here: 0.104 against the log's
    0.102, 0.055 against 0.057), where untrained weights give 0.87 and 1.08."""
    import torch
    from diffusers import DiffusionPipeline

    cfg = GeneratorConfig(pool_images=256)
    pool = make_pool(cfg, progress=False)
    pipe = DiffusionPipeline.from_pretrained(str(shipped_generator()), dtype=torch.float32)
    torch.manual_seed(0)  # the posterior's sample in vae_step
    with torch.no_grad():
        vae = vae_step(pipe, pool.images, cfg.vae_kl_weight)
        latents = pipe.vae.encode(pool.images).latent_dist.mean * pipe.vae.config.scaling_factor
        noise = torch.cat([unet_step(pipe, latents, tokenize(pipe.tokenizer, pool.captions), training_scheduler(),
                                     torch.Generator().manual_seed(k))["loss"][None] for k in range(4)]).mean()
    assert float(vae["reconstruction"]) == pytest.approx(_logged("vae", "reconstruction", 5), rel=0.1), vae
    assert float(noise) == pytest.approx(_logged("unet", "loss", 10), rel=0.15), float(noise)


@pytest.mark.slow
def test_a_rebuild_repeats_the_committed_first_steps(tmp_path):
    """The documented config and seed, every figure logged at each of the first steps of both stages
    (tests/generator/first_steps.json, made by tests/helpers/generator_first_steps.py after the
    50-step check below passed on the same code): the same to 1e-5 relative. It fails on any change
    to the renders, the batches, the initialisation, the losses or the optimiser's first updates."""
    reference = json.loads((Path(__file__).parent / "first_steps.json").read_text())
    records = first_steps(tmp_path, reference["steps"])
    assert [(r["stage"], r["step"]) for r in records] == [(r["stage"], r["step"]) for r in reference["records"]]
    assert len(records) == 2 * reference["steps"]
    for record, expected in zip(records, reference["records"], strict=True):
        assert set(record) == set(expected), (record, expected)
        for key in set(expected) - {"stage", "step"}:
            assert record[key] == pytest.approx(expected[key], rel=1e-5), (key, record, expected)


@pytest.mark.rebuild
@pytest.mark.timeout(1200)
def test_a_rebuild_follows_the_shipped_log_over_its_first_steps(tmp_path):
    """The documented config and seed, first 50 steps of each stage (the UNet's on the shipped
    autoencoder): every logged figure within 2% of the shipped log's at the same step. About 7 min
    on 2 cores, so opt-in (STABLEREP_REBUILD=1); the suite runs the committed first steps above."""
    steps = 50
    shipped = {(r["stage"], r["step"]): r for r in shipped_log()}
    cfg = GeneratorConfig()
    pool = make_pool(cfg, progress=False)
    vae = train_generator(str(tmp_path / "vae"), cfg, progress=False, stop_after=steps, vae_only=True, pool=pool)
    unet = train_generator(str(tmp_path / "unet"), cfg, progress=False, stop_after=steps,
                           vae_from=str(shipped_generator()), pool=pool)
    checked = vae["log"] + unet["log"]
    assert {(r["stage"], r["step"]) for r in checked} == {(s, k) for s in ("vae", "unet")
                                                            for k in range(50, steps + 1, 50)}
    for record in checked:  # every figure the log holds for the step (loss, and the VAE's terms)
        reference = shipped[(record["stage"], record["step"])]
        assert set(record) == set(reference), (record, reference)
        for key in set(reference) - {"stage", "step", "seconds"}:
            assert record[key] == pytest.approx(reference[key], rel=0.02), (key, record, reference)
    assert vae["model"] is None and not (tmp_path / "vae" / "model").exists()


@pytest.mark.rebuild
@pytest.mark.timeout(4 * 3600)
def test_a_full_rebuild_matches_the_shipped_fidelity(tmp_path):
    """`stablerep generator train` with the documented defaults, then fidelity on the same captions:
    within 0.08 of the shipped model's on colour and shape, and the final losses within 5%."""
    cli = subprocess.run([str(Path(sys.executable).parent / "stablerep"), "generator", "train", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=3 * 3600)
    assert cli.returncode == 0, cli.stderr[-2000:]
    captions = fresh_captions(FIDELITY_CAPTIONS)
    classifier = FidelityClassifier.load(shipped_classifier())
    guidance = shipped_settings()["guidance_scale"]
    rebuilt = fidelity(classifier, generate(str(tmp_path / "model"), captions, guidance, seed=0), captions)
    shipped = fidelity(classifier, generate(str(shipped_generator()), captions, guidance, seed=0), captions)
    for attribute in ("colour", "shape"):
        assert abs(rebuilt[attribute] - shipped[attribute]) <= 0.08, (attribute, rebuilt, shipped)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    last = {r["stage"]: r["loss"] for r in log}
    reference = {r["stage"]: r["loss"] for r in shipped_log()}
    assert last == pytest.approx(reference, rel=0.05)
