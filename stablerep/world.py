"""The procedural world: a small caption grammar, a PIL renderer for it, and a labelled probe set.

Captions name a count, a size, a colour, a texture, a shape, a position and a background, e.g.
"two large red striped stars at the top left on a grass background". The renderer parses any
caption for those words (missing ones are drawn from the seed), so images of one caption share
what the caption says and differ the way real generations differ: exact layout, scale, shade,
rotation, background gradient and noise. It ships a caption generator and a labelled probe set,
so an offline run has captions to sample and something to evaluate on. The synthesis backend
(`stablerep.synthesis.procedural`) and the evaluation datasets (`procedural:LABEL`) both use it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from stablerep import storage
from stablerep.methods import get_method

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "bar")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
           "purple": (140, 60, 180), "orange": (240, 140, 30), "white": (240, 240, 240), "black": (25, 25, 25)}
SIZES = {"small": 0.21, "large": 0.31}
COUNTS = {"one": 1, "two": 2}
POSITIONS = {"top left": (0.28, 0.28), "top right": (0.72, 0.28), "bottom left": (0.28, 0.72),
             "bottom right": (0.72, 0.72), "centre": (0.5, 0.5)}
TEXTURES = ("plain", "striped", "dotted")
BACKGROUNDS = {"gray": (128, 128, 128), "sand": (214, 190, 140), "sky": (140, 190, 235),
               "grass": (90, 150, 70), "night": (20, 24, 60)}
ATTRIBUTES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": tuple(COLOURS)}  # probe labels
_PLURAL = {s: s + ("es" if s.endswith("s") else "s") for s in SHAPES}


@dataclass(frozen=True)
class Scene:
    count: str
    size: str
    colour: str
    texture: str
    shape: str
    position: str
    background: str

    def caption(self) -> str:
        noun = self.shape if self.count == "one" else _PLURAL[self.shape]
        texture = "" if self.texture == "plain" else f"{self.texture} "
        where = "in the centre" if self.position == "centre" else f"at the {self.position}"
        return f"{self.count} {self.size} {self.colour} {texture}{noun} {where} on a {self.background} background"


def random_scene(rng: random.Random) -> Scene:
    return Scene(rng.choice(list(COUNTS)), rng.choice(list(SIZES)), rng.choice(list(COLOURS)),
                 rng.choice(TEXTURES), rng.choice(SHAPES), rng.choice(list(POSITIONS)),
                 rng.choice(list(BACKGROUNDS)))


def parse_caption(caption: str, rng: random.Random) -> Scene:
    """The scene a caption describes; words it does not mention are drawn from ``rng``."""
    text = " " + caption.lower().replace(",", " ") + " "
    default = random_scene(rng)

    def find(options, fallback):
        for option in options:
            forms = [option] + ([_PLURAL[option]] if option in _PLURAL else [])
            if any(f" {form} " in text for form in forms):
                return option
        return fallback

    return Scene(find(COUNTS, default.count), find(SIZES, default.size), find(COLOURS, default.colour),
                 find(TEXTURES, default.texture), find(SHAPES, default.shape),
                 find(POSITIONS, default.position), find(BACKGROUNDS, default.background))


def mentions(caption: str, value: str) -> bool:
    """Whether ``caption`` names ``value`` (a shape in the singular or plural, any other word as is)."""
    text = " " + caption.lower().replace(",", " ") + " "
    return any(f" {form} " in text for form in [value] + ([_PLURAL[value]] if value in _PLURAL else []))


def caption_targets(caption: str, attributes: tuple[str, ...] | list[str] = ("shape", "colour")) -> list[int]:
    """Class indices of ``attributes`` named by ``caption`` (ValueError if it names none)."""
    scene = parse_caption(caption, random.Random(0))
    out = []
    for attribute in attributes:
        value = getattr(scene, attribute)
        if not mentions(caption, value):
            raise ValueError(f"caption {caption!r} names no {attribute}")
        out.append(ATTRIBUTES[attribute].index(value))
    return out


@dataclass(frozen=True)
class CaptionTargets:
    """The supervised method's labels, read from a caption: ``classes`` gives each attribute's class
    count (the model's head and the loss take it), and calling it gives a caption's class indices
    (the loader takes it). Module-level and frozen, so loader workers can pickle it."""

    attributes: tuple[str, ...]

    @property
    def classes(self) -> dict[str, int]:
        return {attribute: len(ATTRIBUTES[attribute]) for attribute in self.attributes}

    def __call__(self, caption: str) -> list[int]:
        return caption_targets(caption, self.attributes)


def run_targets(run) -> CaptionTargets | None:
    """The caption targets a :class:`stablerep.config.RunConfig` trains on (its ``loss.targets``
    for the supervised method), or None for a method that reads no class targets."""
    return CaptionTargets(tuple(run.loss.targets)) if get_method(run.loss.method).targets else None


def write_procedural_captions(url: str, n: int, seed: int = 0) -> str:
    """Write ``n`` captions of the grammar to ``url`` (a text file, one a line, any fsspec URL):
    the corpus of every offline run (the CLI's `captions procedural`, the demo, the pipeline flow)."""
    storage.write_bytes(url, ("\n".join(procedural_captions(n, seed)) + "\n").encode())
    return url


def _shape_points(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def polygon(n, radii):
        return [(cx + radii[i % len(radii)] * math.cos(angle + 2 * math.pi * i / n),
                 cy + radii[i % len(radii)] * math.sin(angle + 2 * math.pi * i / n)) for i in range(n)]
    if shape == "triangle":
        return polygon(3, [r])
    if shape == "square":
        return polygon(4, [r * 1.2])
    if shape == "diamond":
        return polygon(4, [r * 1.3, r * 0.8])
    if shape == "star":
        return polygon(10, [r * 1.2, r * 0.5])
    if shape == "cross":
        a, b = r, r * 0.35
        base = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
    else:  # bar
        base = [(-r * 1.4, -r * 0.35), (r * 1.4, -r * 0.35), (r * 1.4, r * 0.35), (-r * 1.4, r * 0.35)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]


def _shade(rgb: tuple[int, int, int], rng: random.Random, amount: int = 28) -> tuple[int, ...]:
    return tuple(int(min(255, max(0, v + rng.randint(-amount, amount)))) for v in rgb)


def render(scene: Scene, seed: int, size: int = 256) -> Image.Image:
    """Draw ``scene``; ``seed`` fixes everything the caption leaves open."""
    rng = random.Random(seed)
    bg = np.array(_shade(BACKGROUNDS[scene.background], rng, 20), dtype=np.float32)
    bg2 = np.array(_shade(BACKGROUNDS[scene.background], rng, 45), dtype=np.float32)
    t = np.linspace(0, 1, size, dtype=np.float32)
    grad = t[:, None] if rng.random() < 0.5 else t[None, :]
    canvas = np.broadcast_to(bg * (1 - grad[..., None]) + bg2 * grad[..., None], (size, size, 3))
    canvas = canvas + np.random.default_rng(seed).normal(0, 6, (size, size, 3))
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    px, py = POSITIONS[scene.position]
    colour = _shade(COLOURS[scene.colour], rng)
    r = SIZES[scene.size] * size * rng.uniform(0.85, 1.15) / (1 + 0.15 * (COUNTS[scene.count] - 1))
    for k in range(COUNTS[scene.count]):
        spread = 1.25 * r * (COUNTS[scene.count] > 1)  # objects side by side, not merged
        cx = px * size + rng.uniform(-0.06, 0.06) * size + spread * math.cos(2 * math.pi * k / COUNTS[scene.count])
        cy = py * size + rng.uniform(-0.06, 0.06) * size + spread * math.sin(2 * math.pi * k / COUNTS[scene.count])
        angle = rng.uniform(-0.4, 0.4)  # about upright, as generators draw objects
        box = [cx - 1.5 * r, cy - 1.5 * r, cx + 1.5 * r, cy + 1.5 * r]
        mask = Image.new("L", (size, size))
        pen = ImageDraw.Draw(mask)
        if scene.shape == "circle":
            pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        elif scene.shape == "ring":
            pen.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=max(2, int(r * 0.35)))
        else:
            pen.polygon(_shape_points(scene.shape, cx, cy, r, angle), fill=255)
        img.paste(colour, mask=mask)
        if scene.texture != "plain":
            pattern = Image.new("L", (size, size))
            _texture(ImageDraw.Draw(pattern), scene.texture, box, r)
            ink = (255, 255, 255) if sum(colour) < 400 else (20, 20, 20)
            # half-strength ink: the pattern shows without breaking the silhouette
            img.paste(ink, mask=ImageChops.multiply(mask, pattern.point(lambda v: v // 2)))
    return img


def _texture(draw: ImageDraw.ImageDraw, texture: str, box: list[float], r: float) -> None:
    """Stripes or dots over ``box`` on a mask layer (clipped to the shape by the caller)."""
    x0, y0, x1, y1 = box
    step = max(3.0, r / 2)
    if texture == "striped":
        x = x0
        while x < x1:
            draw.line([(x, y0), (x, y1)], fill=255, width=max(1, int(step / 2.5)))
            x += step
    else:  # dotted
        d = max(1.0, step / 4)
        y = y0
        while y < y1:
            x = x0
            while x < x1:
                draw.ellipse([x - d, y - d, x + d, y + d], fill=255)
                x += step
            y += step


def procedural_captions(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct captions of the grammar, in a deterministic order."""
    total = (len(COUNTS) * len(SIZES) * len(COLOURS) * len(TEXTURES) * len(SHAPES) * len(POSITIONS)
             * len(BACKGROUNDS))
    if n > total:
        raise ValueError(f"the grammar has {total} distinct captions; asked for {n}")
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        caption = random_scene(rng).caption()
        if caption not in seen:
            seen.add(caption)
            out.append(caption)
    return out


def probe_set(per_class: int, seed: int = 1, size: int = 64, label: str = "shape") -> list[dict[str, Any]]:
    """A labelled evaluation set: ``per_class`` images of each value of ``label`` (shape or
    colour), other attributes random, from a seed stream of its own."""
    classes = {"shape": list(SHAPES), "colour": list(COLOURS)}[label]
    rng, out = random.Random(seed), []
    for index, name in enumerate(classes):
        for _ in range(per_class):
            scene = random_scene(rng)
            scene = Scene(**{**scene.__dict__, label: name})
            out.append({"image": render(scene, rng.randrange(2**62), size), "label": index,
                        "label_name": name, "caption": scene.caption()})
    return out
