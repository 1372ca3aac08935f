"""The interface every text-to-image backend implements (images are encoded for storage by
stablerep.shards.images)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image


@dataclass(frozen=True)
class GenerationRequest:
    """One image to make: image ``image_index`` of caption ``caption_id``, from ``seed``."""

    caption_id: int
    caption: str
    image_index: int
    seed: int


class Backend(Protocol):
    """Turns requests into images. The same request must give the same image, whatever else is
    in the call (batch composition, order) and however often it is retried."""

    name: str

    def generate(self, requests: list[GenerationRequest]) -> list[Image.Image]: ...

    def lineage(self) -> dict[str, Any]:
        """What a dataset card needs to regenerate the images (model, revision, sampler...)."""
        ...
