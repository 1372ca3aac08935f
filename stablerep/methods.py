"""The training methods, one spec each: what a batch holds for the method and what the model needs.

Config validation, the model factory, the shard loader, the training step and the demo all read
these facts from here, so a method is described once. The losses themselves live in
:mod:`stablerep.losses` (one file each) and are called the same way through
:func:`stablerep.losses.create_loss`: ``objective(model_output, batch) -> {"loss": ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    name: str
    views: int | None  # images of a caption in a batch: None = the config's m (data.images_per_caption)
    text: bool  # a text tower, and caption tokens in every batch
    targets: bool  # class targets in every batch (supervised)
    head: bool  # the MLP projection head (CLIP has none)
    views_of_one_image: bool  # the views are augmentations of one image (SimCLR), not m images
    summary: str


METHODS: dict[str, MethodSpec] = {
    "stablerep": MethodSpec("stablerep", None, False, False, True, False,
                            "multi-positive contrastive loss: the m images of a caption are positives"),
    "stablerep_plus": MethodSpec("stablerep_plus", None, True, False, True, False,
                                 "multi-positive loss + 0.5 x image-text loss (m images per text)"),
    "simclr": MethodSpec("simclr", 2, False, False, True, True,
                         "NT-Xent between two augmentations of one image"),
    "clip": MethodSpec("clip", 1, True, False, False, False,
                       "image-text contrastive loss, one image per caption"),
    "supervised": MethodSpec("supervised", 1, False, True, True, False,
                             "cross-entropy on class targets read from each caption (the caller gives the label space)"),
}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")
    return METHODS[name]


def views_per_caption(method: str, m: int) -> int:
    """Images of one caption a batch holds for ``method`` when the comparison gives StableRep m."""
    spec = get_method(method)
    return m if spec.views is None else spec.views
