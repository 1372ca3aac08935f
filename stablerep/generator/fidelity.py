"""Does a generated image show what its caption says? Our analogue of FID and CLIP score: a small
classifier trained with supervision on real renders names each attribute of the procedural world
(count, size, colour, texture, shape, position, background); a generated image scores, per
attribute, whether the classifier reads the attribute its caption asked for."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from stablerep import storage
from stablerep.seeding import mix_seed
from stablerep.world import (
    BACKGROUNDS,
    COLOURS,
    COUNTS,
    POSITIONS,
    SHAPES,
    SIZES,
    TEXTURES,
    Scene,
    mentions,
    parse_caption,
    random_scene,
    render,
)

ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "count": tuple(COUNTS), "size": tuple(SIZES), "colour": tuple(COLOURS), "texture": TEXTURES,
    "shape": SHAPES, "position": tuple(POSITIONS), "background": tuple(BACKGROUNDS)}
# a small ResNet: convolutions learn this world's shapes from few images (a tiny ViT did not)
BACKBONE = ("resnet18", {"layers": [1, 1, 1, 1], "channels": [32, 48, 64, 96], "stem_width": 16,
                         "stem_type": "deep"})


def scene_targets(scene: Scene) -> list[int]:
    return [ATTRIBUTE_VALUES[a].index(getattr(scene, a)) for a in ATTRIBUTE_VALUES]


class AttributeClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        arch, kwargs = BACKBONE
        self.backbone = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
        self.heads = nn.Linear(self.backbone.num_features, sum(len(v) for v in ATTRIBUTE_VALUES.values()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x in [-1, 1], (B, 3, S, S) -> attribute -> logits (B, values)."""
        logits = self.heads(self.backbone(x))
        out, start = {}, 0
        for name, values in ATTRIBUTE_VALUES.items():
            out[name] = logits[:, start:start + len(values)]
            start += len(values)
        return out


def to_tensor(images: list[Image.Image], size: int) -> torch.Tensor:
    """PIL images -> (B, 3, size, size) in [-1, 1] (antialiased resize when needed)."""
    arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
                         if im.size != (size, size) else im.convert("RGB")) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1)


def labelled_renders(n: int, size: int, seed: int, render_scale: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random scenes rendered like the training data: (images, targets (n, attributes))."""

    rng = random.Random(mix_seed(seed, 29))
    images, targets = [], []
    for _ in range(n):
        scene = random_scene(rng)
        s = rng.randrange(2**62)
        images.append(render(scene, s, size * render_scale))
        targets.append(scene_targets(scene))
    return to_tensor(images, size), torch.tensor(targets)


@dataclass
class FidelityClassifier:
    model: AttributeClassifier
    size: int
    heldout: dict[str, float]  # accuracy per attribute on held-out real renders

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.model.eval()
        return {k: v.argmax(1) for k, v in self.model(x).items()}

    def save(self, path: str) -> None:
        save_file(self.model.state_dict(), f"{path}.safetensors")
        storage.write_bytes(f"{path}.json", json.dumps({"size": self.size, "heldout": self.heldout,
                                                        "backbone": BACKBONE}, indent=2).encode())

    @classmethod
    def load(cls, path: str) -> FidelityClassifier:
        meta = json.loads(storage.read_bytes(f"{path}.json"))
        model = AttributeClassifier()
        model.load_state_dict(load_file(f"{path}.safetensors"))
        return cls(model.eval(), meta["size"], meta["heldout"])


def train_classifier(size: int, steps: int = 3000, train_images: int = 20_000, batch_size: int = 128,
                     seed: int = 0, progress: bool = True) -> FidelityClassifier:
    """Supervised on fresh real renders (a seed stream of its own); held-out accuracy reported."""
    torch.manual_seed(seed)
    x, y = labelled_renders(train_images, size, seed)
    hx, hy = labelled_renders(2000, size, seed + 1)
    model = AttributeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(steps), desc="fidelity classifier", unit="step", disable=None if progress else True):
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        out = model(x[idx])
        loss = sum(F.cross_entropy(out[a], y[idx, i]) for i, a in enumerate(ATTRIBUTE_VALUES))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    classifier = FidelityClassifier(model.eval(), size, {})
    classifier.heldout = attribute_accuracy(classifier, hx, hy)
    return classifier


def attribute_accuracy(classifier: FidelityClassifier, x: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Per attribute, the share of images whose predicted value is the target; targets of -1 (an
    attribute the caption leaves unsaid) are not scored."""
    preds = {k: [] for k in ATTRIBUTE_VALUES}
    for s in range(0, len(x), 256):
        for k, v in classifier.predict(x[s:s + 256]).items():
            preds[k].append(v)
    out = {}
    for i, a in enumerate(ATTRIBUTE_VALUES):
        named = targets[:, i] >= 0
        out[a] = float((torch.cat(preds[a])[named] == targets[named, i]).float().mean()) if named.any() else float("nan")
    return out


def caption_targets_all(captions: list[str]) -> torch.Tensor:
    """The value of each attribute a caption names, -1 where it names none: the grammar leaves
    plain texture unsaid, and an unsaid attribute is drawn at random by the renderer, so a caption
    without a texture word asks for no texture in particular."""
    rows = []
    for caption in captions:
        scene = parse_caption(caption, random.Random(0))
        rows.append([ATTRIBUTE_VALUES[a].index(getattr(scene, a)) if mentions(caption, getattr(scene, a)) else -1
                     for a in ATTRIBUTE_VALUES])
    return torch.tensor(rows)


def fidelity(classifier: FidelityClassifier, images: list[Image.Image], captions: list[str]) -> dict[str, float]:
    """Per attribute, the share of generated images in which the classifier reads what the caption
    asked (over the captions that name the attribute)."""
    return attribute_accuracy(classifier, to_tensor(images, classifier.size), caption_targets_all(captions))


def chance() -> dict[str, float]:
    return {a: 1 / len(v) for a, v in ATTRIBUTE_VALUES.items()}
