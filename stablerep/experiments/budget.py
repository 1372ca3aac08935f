"""A comparison's budget, defined once: what every method of a comparison gets.

By default (``match: images``) every method encodes the same number of images per step, views
included, for the same number of steps, with the same augmentation: the same forward and backward
passes. StableRep with m images per caption at 64 images per step sees 64 / m captions; SimCLR
(2 views of one image) 32 images; CLIP (one image per caption) 64. ``match: captions`` gives every
method the same captions per step instead (StableRep then encodes m times CLIP's images): the
explicitly named alternative, for the paper's "same captions" framing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stablerep.config import AugmentConfig, RunConfig
from stablerep.methods import get_method, views_per_caption


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: Literal["images", "captions"] = "images"
    images_per_step: int | None = Field(None, ge=1, description="match=images: images encoded per step")
    captions_per_step: int | None = Field(None, ge=1, description="match=captions: captions per step")
    steps: int = Field(ge=1)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @model_validator(mode="after")
    def _one_measure(self) -> Budget:
        if self.match == "images" and self.images_per_step is None:
            raise ValueError("budget.match=images needs images_per_step")
        if self.match == "captions" and self.captions_per_step is None:
            raise ValueError("budget.match=captions needs captions_per_step")
        return self


def captions_per_step(budget: Budget, method: str, m: int) -> int:
    """Captions per step for ``method`` under ``budget`` (StableRep's m images per caption)."""
    if budget.match == "captions":
        return budget.captions_per_step
    views = views_per_caption(method, m)
    if budget.images_per_step % views:
        raise ValueError(f"budget: {budget.images_per_step} images per step do not divide into {views} "
                         f"views per caption for {method}")
    return budget.images_per_step // views


def matched_run(base: RunConfig, method: str, budget: Budget, m: int) -> RunConfig:
    """``base`` turned into ``method``'s run under ``budget``: its views per caption, captions per
    step, steps and the budget's augmentation; everything else (model, optimiser, seed) as in base.
    The learning rate follows images per step, so under ``match: images`` it is the same for all."""
    spec = get_method(method)
    if spec.text and base.model.text is None:
        raise ValueError(f"{method} needs a text tower: the base config has none (set model.text)")
    tree = base.model_dump(mode="json")
    tree["loss"]["method"] = method
    tree["data"].update(images_per_caption=views_per_caption(method, m),
                        captions_per_batch=captions_per_step(budget, method, m),
                        augment=budget.augment.model_dump(mode="json"))
    tree["train"]["steps"] = budget.steps
    return RunConfig.model_validate(tree)


def budget_of(run: RunConfig) -> dict[str, Any]:
    """What a run spends: images encoded per step (views included), steps, augmentation."""
    return {"images_per_step": run.data.images_per_batch, "captions_per_step": run.data.captions_per_batch,
            "views_per_caption": run.data.images_per_caption, "steps": run.train.steps,
            "augmentation": run.data.augment.model_dump(mode="json"), "lr": run.lr}
