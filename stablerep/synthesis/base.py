"""The interface every text-to-image backend implements (images are encoded for storage by
stablerep.shards.images), and the error the diffusers-based backends raise for a model that
cannot be found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from stablerep.errors import ModelNotFoundError


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


def model_not_found(model: str, allow_download: bool, exc: Exception) -> ModelNotFoundError:
    """The one-line error for a model that diffusers could not find: where it looked, how to fix it."""
    from huggingface_hub import constants

    where = (f"the folder {model}" if Path(model).exists() else
             f"a local folder {model!r} (none exists) and the Hugging Face cache {constants.HF_HUB_CACHE}")
    return ModelNotFoundError(
        f"model {model!r} could not be loaded: looked in {where}"
        + ("" if allow_download else " with downloads off")
        + f". Download it once (`huggingface-cli download {model}`), pass a local path with --model, "
        f"or allow downloads (--set allow_download=true). ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    )
