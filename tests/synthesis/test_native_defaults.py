"""Unset generation settings are the backend's own, and the dataset's hash records them."""

import json
import shutil

import pytest

from stablerep.captions import sample_captions, write_captions
from stablerep.config import SynthesisConfig
from stablerep.errors import ModelNotFoundError
from stablerep.shards import config_hash, read_manifest
from stablerep.synthesis import (
    ProceduralBackend,
    procedural_captions,
    resolve_native_defaults,
    synthesize_dataset,
)
from stablerep.synthesis.native import model_native_size


def test_procedural_defaults_keep_the_hash_datasets_were_built_with():
    cfg = resolve_native_defaults(SynthesisConfig())
    assert (cfg.backend, cfg.resolution, cfg.steps, cfg.guidance) == ("procedural", 512, None, None)
    # The hash of a default procedural request before unset meant "the backend's own" (512 px):
    # existing datasets (the nightly regeneration) keep matching their committed shards.
    assert config_hash(cfg.hashed()) == "7826b6a053878f64"
    assert cfg.hashed() == resolve_native_defaults(SynthesisConfig(resolution=512)).hashed()


def test_an_unresolved_request_cannot_be_hashed():
    with pytest.raises(ValueError, match="resolution, steps, guidance not resolved"):
        SynthesisConfig(backend="diffusers").hashed()


def test_a_diffusers_model_generates_at_its_own_size(tiny_sd):
    # diffusers' pipelines: unet.sample_size x 2 ** (len(vae.block_out_channels) - 1)
    unet = json.loads((tiny_sd / "unet" / "config.json").read_text())
    vae = json.loads((tiny_sd / "vae" / "config.json").read_text())
    expected = unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)
    assert model_native_size(str(tiny_sd)) == expected == 16
    cfg = resolve_native_defaults(SynthesisConfig(backend="diffusers", model=str(tiny_sd)))
    assert (cfg.resolution, cfg.steps, cfg.guidance) == (16, 50, 2.0)
    explicit = SynthesisConfig(backend="diffusers", model=str(tiny_sd), resolution=16, steps=50, guidance=2.0)
    assert config_hash(cfg.hashed()) == config_hash(resolve_native_defaults(explicit).hashed())
    assert resolve_native_defaults(explicit) is explicit  # nothing unset: no model is read


def test_tiny_takes_few_steps_at_its_models_size(tiny_sd):
    cfg = resolve_native_defaults(SynthesisConfig(backend="tiny"))
    assert (cfg.resolution, cfg.steps, cfg.guidance) == (16, 4, 2.0)
    user = resolve_native_defaults(SynthesisConfig(backend="tiny", steps=10, guidance=3.0))
    assert (user.resolution, user.steps, user.guidance) == (16, 10, 3.0)  # what the user sets wins


def test_a_generator_folder_brings_its_recommended_settings(tmp_path, tiny_sd):
    model = tmp_path / "generator"
    shutil.copytree(tiny_sd, model)
    (model / "stablerep_generation.json").write_text(json.dumps(
        {"num_inference_steps": 12, "guidance_scale": 3.5, "resolution": 32}))
    cfg = resolve_native_defaults(SynthesisConfig(backend="diffusers", model=str(model), guidance=1.0))
    assert (cfg.resolution, cfg.steps, cfg.guidance) == (32, 12, 1.0)


def test_a_missing_model_is_named_before_anything_loads(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"model 'nobody/missing-model' could not be loaded"):
        resolve_native_defaults(SynthesisConfig(backend="diffusers", model="nobody/missing-model"))


def test_an_explicit_default_skips_the_shards_a_default_request_committed(tmp_path):
    src = tmp_path / "captions.txt"
    src.write_text("\n".join(procedural_captions(4, seed=1)))
    root = str(tmp_path / "ds")
    write_captions(root, sample_captions(str(src), 4, progress=False))
    unset = SynthesisConfig(images_per_caption=1, captions_per_shard=2, image_size=32)
    first = synthesize_dataset(root, root, unset, ProceduralBackend(512), progress=False)
    assert first.written == [0, 1] and read_manifest(root)["config"]["resolution"] == 512
    again = synthesize_dataset(root, root, unset.model_copy(update={"resolution": 512}), ProceduralBackend(512),
                          progress=False)
    assert again.written == [] and again.skipped == [0, 1]
