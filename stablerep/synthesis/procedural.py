"""The offline text-to-image backend: renders the procedural world's captions with PIL."""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from stablerep.synthesis.base import GenerationRequest
from stablerep.world import parse_caption, render


class ProceduralBackend:
    """The offline backend: deterministic per (caption, seed), no model, no download."""

    name = "procedural"

    def __init__(self, size: int = 256) -> None:
        self.size = size

    def generate(self, requests: list[GenerationRequest]) -> list[Image.Image]:
        return [render(parse_caption(r.caption, random.Random(r.seed ^ 0x5EED)), r.seed, self.size)
                for r in requests]

    def lineage(self) -> dict[str, Any]:
        return {"backend": self.name, "render_size": self.size, "grammar": "stablerep.world"}
