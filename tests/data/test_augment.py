"""The batched photometric augmentation against torchvision's per-image operations."""

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from stablerep.config import AugmentConfig
from stablerep.data.augment import BatchPhotometric, gaussian_blur, prepare_images


def _factors(seed, n, spans):
    """Replay the generator draws of colour_transform: jitter mask, then one factor per span."""
    g = torch.Generator().manual_seed(seed)
    torch.rand(n, generator=g)
    return [torch.rand(n, generator=g) * (hi - lo) + lo for lo, hi in spans]


def test_jitter_equals_torchvision_step_by_step_in_range():
    x = torch.rand(6, 3, 12, 12) * 0.5 + 0.25  # mid-range: no clamping on the way
    cfg = AugmentConfig(color_jitter=(0.2, 0.2, 0.2, 0.0), color_jitter_p=1.0, grayscale_p=0.0)
    m, t = BatchPhotometric(cfg).colour_transform(x, torch.Generator().manual_seed(3))
    fb, fc, fs = _factors(3, 6, [(0.8, 1.2)] * 3)
    ref = torch.stack([TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(
        x[i], fb[i].item()), fc[i].item()), fs[i].item()) for i in range(6)])
    ours = torch.einsum("nij,njhw->nihw", m, x) + t[:, :, None, None]
    assert torch.allclose(ours, ref, atol=1e-4)


def test_grayscale_is_luma_on_every_channel_and_nothing_on_is_identity():
    cfg = AugmentConfig(color_jitter_p=0.0, grayscale_p=1.0, blur_p=0.0)
    x = torch.rand(4, 3, 8, 8)
    y = BatchPhotometric(cfg)(x.clone(), torch.Generator().manual_seed(0))
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # ITU-R 601, as torchvision (0.2989) to 1e-4
    assert torch.allclose(y, luma[:, None].expand(-1, 3, -1, -1), atol=1e-5)
    assert torch.allclose(y, TF.rgb_to_grayscale(x, num_output_channels=3), atol=2e-4)
    none = AugmentConfig(color_jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    assert torch.allclose(BatchPhotometric(none)(x, torch.Generator().manual_seed(0)), x, atol=1e-6)


def test_hue_rotation_keeps_luma_and_grays():
    cfg = AugmentConfig(color_jitter=(0.0, 0.0, 0.0, 0.5), color_jitter_p=1.0, grayscale_p=0.0, blur_p=0.0)
    gray = torch.full((3, 3, 4, 4), 0.4)
    assert torch.allclose(BatchPhotometric(cfg)(gray, torch.Generator().manual_seed(1)), gray, atol=1e-5)
    x = torch.rand(3, 3, 4, 4) * 0.3 + 0.35
    y = BatchPhotometric(cfg)(x, torch.Generator().manual_seed(1))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.allclose((y * luma).sum(1), (x * luma).sum(1), atol=1e-4)
    assert not torch.allclose(y, x)


@pytest.mark.parametrize("sigma", [0.5, 1.5])
def test_blur_matches_torchvision(sigma):
    x = torch.rand(2, 3, 32, 32)
    ours = gaussian_blur(x, torch.full((2,), sigma))
    k = 2 * max(1, int(torch.ceil(torch.tensor(3 * sigma)))) + 1
    ref = TF.gaussian_blur(x, [k, k], [sigma, sigma])
    assert torch.allclose(ours, ref, atol=1e-5)


def test_prepare_images_is_seeded_and_shapes_survive():
    imgs = torch.randint(0, 256, (2, 3, 3, 16, 16), dtype=torch.uint8)
    p = BatchPhotometric(AugmentConfig(downsample_p=0.5, downsample_sizes=(4, 8)))
    a = prepare_images(imgs, p, torch.Generator().manual_seed(9))
    b = prepare_images(imgs, p, torch.Generator().manual_seed(9))
    assert a.shape == imgs.shape and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, prepare_images(imgs, p, torch.Generator().manual_seed(10)))  # the seed is used
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        prepare_images(imgs, p)


def _applied_fraction(cfg, changed) -> float:
    """Share of 4,000 images that ``changed(x, y)`` says the augmentation touched."""
    x = torch.rand(4000, 3, 8, 8) * 0.5 + 0.25
    y = BatchPhotometric(cfg)(x.clone(), torch.Generator().manual_seed(11))
    return float(changed(x, y).float().mean())


@pytest.mark.parametrize("which,p", [("grayscale", 0.2), ("jitter", 0.8), ("blur", 0.5), ("downsample", 0.05)])
def test_each_augmentation_fires_with_its_probability(which, p):
    # 4,000 independent draws: the share is within 4.5 binomial standard deviations of p (a false
    # alarm about once in 150,000 runs), and a probability off by 0.05 or more fails.
    off = dict(color_jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, downsample_p=0.0)
    cfg = AugmentConfig(**{**off, {"grayscale": "grayscale_p", "jitter": "color_jitter_p", "blur": "blur_p",
                                   "downsample": "downsample_p"}[which]: p},
                        blur_sigma=(1.0, 2.0), downsample_sizes=(2,))
    if which == "grayscale":
        def changed(x, y):
            return (y[:, 0] - y[:, 1]).abs().amax(dim=(1, 2)) < 1e-6
    else:
        def changed(x, y):
            return (y - x).abs().amax(dim=(1, 2, 3)) > 1e-3
    share = _applied_fraction(cfg, changed)
    sd = (p * (1 - p) / 4000) ** 0.5
    assert abs(share - p) < max(4.5 * sd, 0.004), (which, share, p)
    assert abs(share - p) < 0.05
