"""The backend's speed settings against the plain diffusers call, on the tiny SD architecture (CPU fp32).

Reference: ``pipe(prompt=[...], generator=[one per image])`` with the same scheduler, steps,
guidance and size, as a careful diffusers user writes it.

Tolerance, per setting:
- text embeddings once per caption, the unconditional one once, uint8 conversion on the device:
  the same operations on the same values, so the images must be identical (max difference 0).
- channels_last, fused QKV, torch.compile: the same sums in another order. In fp32 that moves a
  latent by about 1e-6 relative; after the VAE a pixel changes only if its value sat within about
  that distance of a rounding boundary of the 8-bit output, i.e. by one level on a tiny fraction
  of pixels. So: max 1 level, mean at most 0.01 level. A different seed (a different image) moves
  the mean by tens of levels, which the negative control below checks.
"""

import numpy as np
import pytest
import torch

from stablerep.synthesis import GenerationRequest
from stablerep.synthesis.diffusers_backend import DiffusersBackend

STEPS, SIZE = 4, 32
CAPTIONS = ["a red cube on a table", "two dogs in the snow", "a blue sphere on grass"]
REQUESTS = [GenerationRequest(i, c, k, 7919 * i + k) for i, c in enumerate(CAPTIONS) for k in range(2)]


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(i, dtype=np.int16) for i in images])  # (N, H, W, 3)


@pytest.fixture(scope="module")
def plain(tiny_sd):
    """The plain pipeline call's images for REQUESTS (same seeds, one generator per image)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd), safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def call(requests):
        return _pixels(pipe(prompt=[r.caption for r in requests],
                            generator=[torch.Generator().manual_seed(r.seed) for r in requests],
                            num_inference_steps=STEPS, guidance_scale=2.0, height=SIZE, width=SIZE).images)

    return call


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    d = np.abs(a - b)
    return int(d.max()), float(d.mean())


def test_embeddings_once_give_the_plain_calls_images(tiny_sd, plain):
    backend = DiffusersBackend(str(tiny_sd), device="cpu", steps=STEPS, resolution=SIZE, channels_last=False,
                               fuse_qkv=False, compile=False)
    assert backend.speed.compile is False and backend.speed.fuse_qkv is False  # auto: off on CPU
    assert _diff(_pixels(backend.generate(REQUESTS)), plain(REQUESTS)) == (0, 0.0)


@pytest.mark.parametrize("setting", ["channels_last", "fuse_qkv"])
def test_each_layout_setting_stays_within_rounding(tiny_sd, plain, setting):
    backend = DiffusersBackend(str(tiny_sd), device="cpu", steps=STEPS, resolution=SIZE, **{setting: True})
    assert getattr(backend.speed, setting) is True
    if setting == "fuse_qkv":  # diffusers really swapped in the fused projections
        assert any(type(p).__name__ == "FusedAttnProcessor2_0" for p in backend.pipe.unet.attn_processors.values())
    max_diff, mean_diff = _diff(_pixels(backend.generate(REQUESTS)), plain(REQUESTS))
    assert max_diff <= 1 and mean_diff <= 0.01


def test_tolerance_separates_different_images(tiny_sd, plain):
    """Negative control: the same captions from other seeds are far outside the tolerance."""
    other = [GenerationRequest(r.caption_id, r.caption, r.image_index, r.seed + 1) for r in REQUESTS]
    max_diff, mean_diff = _diff(plain(other), plain(REQUESTS))
    assert max_diff > 1 and mean_diff > 1


@pytest.mark.slow
def test_compiled_static_batch_stays_within_rounding(tiny_sd, plain):
    """Every setting on, torch.compile (inductor) included, with a static batch of 4: the 6 requests
    run as 4 + (2 padded to 4); the padding's images are dropped."""
    backend = DiffusersBackend(str(tiny_sd), device="cpu", steps=STEPS, resolution=SIZE, channels_last=True,
                               fuse_qkv=True, compile=True, batch_size=4)
    images = backend.generate(REQUESTS)
    assert len(images) == len(REQUESTS)
    max_diff, mean_diff = _diff(_pixels(images), plain(REQUESTS))
    assert max_diff <= 1 and mean_diff <= 0.01
    assert backend.lineage()["speed"]["compile"] is True
    single = backend.generate(REQUESTS[3:4])  # one request: padded to the same compiled shape
    assert np.array_equal(_pixels(single)[0], _pixels(images)[3])
