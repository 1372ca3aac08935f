"""The paper's augmentations, split where they are cheapest to run.

- Geometric (``build_geometric``): RandomResizedCrop and horizontal flip, per image, on uint8, in
  the loader workers. They shrink the image first, so the workers ship small uint8 crops.
- Photometric (``BatchPhotometric``): colour jitter (p 0.8), grayscale (p 0.2), Gaussian blur
  (p 0.5) and the optional downsample, batched on the training device with per-sample random
  parameters from a seeded generator. At StableRep's m = 6 a GPU eats thousands of images per
  second; per-image CPU augmentation would need a dozen cores per GPU to keep up.

Differences from torchvision's per-image ColorJitter, on purpose: the four jitter operations run
in a fixed order (brightness, contrast, saturation, hue), and hue is a rotation of the chroma
plane in YIQ space (as NVIDIA DALI's Hue does), not an HSV round trip; the blur kernel spans
+-3 sigma of the largest sigma rather than 10% of the image.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2 as T

from stablerep.config import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY = (0.299, 0.587, 0.114)
# RGB -> YIQ and back
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = torch.linalg.inv(_YIQ)


def build_geometric(cfg: AugmentConfig, size: int) -> nn.Module:
    """uint8 (C, H, W) -> uint8 (C, size, size): RandomResizedCrop (+ horizontal flip)."""
    ops: list[nn.Module] = [T.RandomResizedCrop(size, scale=cfg.crop_scale, antialias=True)]
    if cfg.hflip:
        ops.append(T.RandomHorizontalFlip())
    return T.Compose(ops)


def build_eval_transform(size: int) -> nn.Module:
    """Resize the short side then centre-crop (evaluation), uint8 in and out."""
    return T.Compose([T.Resize(size, antialias=True), T.CenterCrop(size)])


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample: x (N, C, H, W) float, sigma (N,)."""
    n, c, h, w = x.shape
    radius = min(max(1, math.ceil(3 * float(sigma.max()))), max(1, min(h, w) - 1))  # reflect pad < size
    r = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))  # (N, k)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, k)
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=n * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


class BatchPhotometric:
    """Photometric half of the paper's augmentation on a float batch in [0, 1] (N, 3, H, W).

    Brightness, contrast, saturation, hue and grayscale are affine maps of the colour vector, so
    they are composed into one 3x3 matrix and offset per sample and applied in a single pass
    (clamped once at the end rather than after each step).
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def colour_transform(self, x: torch.Tensor, g: torch.Generator,
                         scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (N, 3, 3) matrices and (N, 3) offsets for jitter then grayscale, acting on
        colours in [0, 1] (``scale`` maps ``x`` there, for the image means)."""
        cfg, n, dev, dt = self.cfg, x.shape[0], x.device, x.dtype
        b, c, s, h = cfg.color_jitter
        jitter = torch.rand(n, generator=g, device=dev) < cfg.color_jitter_p
        one = torch.ones(n, device=dev)
        fb = torch.where(jitter, _uniform(n, max(0, 1 - b), 1 + b, g, dev), one).to(dt)
        fc = torch.where(jitter, _uniform(n, max(0, 1 - c), 1 + c, g, dev), one).to(dt)
        fs = torch.where(jitter, _uniform(n, max(0, 1 - s), 1 + s, g, dev), one).to(dt)
        fh = torch.where(jitter, _uniform(n, -h, h, g, dev), 0 * one).to(dt)
        to_gray = torch.rand(n, generator=g, device=dev) < cfg.grayscale_p

        eye = torch.eye(3, device=dev, dtype=dt).expand(n, 3, 3)
        w = torch.tensor(_GRAY, device=dev, dtype=dt)
        gray_map = torch.ones(3, 1, device=dev, dtype=dt) * w  # (3, 3): every channel <- gray
        mean_gray = (x.mean(dim=(2, 3)) * scale) @ w  # (N,) of the input; brightness scales it
        # brightness: x * fb; contrast: fc * x + (1 - fc) * mean(gray(x * fb)); saturation:
        # fs * x + (1 - fs) * gray(x); hue: rotation in YIQ; grayscale: gray(x) on all channels.
        m = eye * (fb * fc)[:, None, None]
        t = ((1 - fc) * fb * mean_gray)[:, None].expand(n, 3)
        sat = eye * fs[:, None, None] + (1 - fs)[:, None, None] * gray_map
        m, t = sat @ m, (sat @ t[..., None])[..., 0]
        if h > 0:
            theta = fh * 2 * math.pi
            rot = torch.zeros(n, 3, 3, device=dev, dtype=dt)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2] = torch.cos(theta), -torch.sin(theta)
            rot[:, 2, 1], rot[:, 2, 2] = torch.sin(theta), torch.cos(theta)
            hue = _YIQ_INV.to(dev, dt) @ rot @ _YIQ.to(dev, dt)
            m, t = hue @ m, (hue @ t[..., None])[..., 0]
        gray = torch.where(to_gray[:, None, None], gray_map.expand(n, 3, 3), eye)
        return gray @ m, (gray @ t[..., None])[..., 0]

    def __call__(self, x: torch.Tensor, g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
        """Augment ``x`` (N, 3, H, W). ``scale`` multiplies the input first (1/255 for raw uint8
        values converted to float), folded into the colour matrix to save a pass."""
        cfg, n, dev = self.cfg, x.shape[0], x.device
        m, t = self.colour_transform(x, g, scale)
        m = m * scale  # the input's scaling, folded into the colour matrix
        c, hgt, wid = x.shape[1:]
        x = torch.baddbmm(t[..., None], m, x.reshape(n, c, hgt * wid)).view(n, c, hgt, wid).clamp_(0, 1)
        blur = torch.rand(n, generator=g, device=dev) < cfg.blur_p
        sigma = _uniform(n, cfg.blur_sigma[0], cfg.blur_sigma[1], g, dev)
        idx = blur.nonzero().flatten()
        if idx.numel():
            x.index_copy_(0, idx, gaussian_blur(x[idx], sigma[idx]))
        if cfg.downsample_p > 0:
            x = self._downsample(x, g)
        return x

    def _downsample(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        pick = torch.rand(n, generator=g, device=x.device) < self.cfg.downsample_p
        which = torch.randint(len(self.cfg.downsample_sizes), (n,), generator=g, device=x.device)
        for k, size in enumerate(self.cfg.downsample_sizes):
            idx = (pick & (which == k)).nonzero().flatten()
            if idx.numel():
                small = F.interpolate(x[idx], size=(size, size), mode="bilinear", antialias=True)
                x.index_copy_(0, idx, F.interpolate(small, size=(h, w), mode="bilinear").clamp_(0, 1))
        return x


def normalize_(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """float (..., 3, H, W) in [0, 1] -> normalised, in place."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(3, 1, 1)
    inv = 1 / torch.tensor(std, device=x.device, dtype=x.dtype).view(3, 1, 1)
    return x.sub_(m).mul_(inv)


def prepare_images(images: torch.Tensor, photometric: BatchPhotometric | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Finish a loader batch on its device: uint8 (n, m, C, H, W) -> float, photometric
    augmentation (when given), normalisation. Float input (already prepared) is returned as is."""
    if images.dtype != torch.uint8:
        return images
    x = images.flatten(0, -4).float()  # (N, C, H, W) in [0, 255]
    if photometric is not None:
        if generator is None:
            raise ValueError("photometric augmentation needs a torch.Generator on the images' device")
        x = photometric(x, generator, scale=1 / 255)
    else:
        x.mul_(1 / 255)
    return normalize_(x).view(images.shape)


def seeded_choice(seed: int, population: int, k: int) -> list[int]:
    """k distinct indices of range(population), a pure function of the seed."""
    return random.Random(seed).sample(range(population), k)
