"""The training runs of a comparison, written once: every method and seed under one budget.

:class:`ComparisonSettings` holds what every method of a comparison shares (backbone, image size,
steps, images per step, budget match, seeds, augmentation, StableRep's K); the demo's and the
corpus experiment's configs extend it, so ``--set steps=300`` means the same in both.
:func:`comparison_run` turns them into one method's :class:`RunConfig` at one seed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from stablerep import storage
from stablerep.config import AugmentConfig, RunConfig, load_config
from stablerep.experiments.budget import Budget, captions_per_step, matched_run
from stablerep.experiments.plan import TrainingStep
from stablerep.methods import get_method
from stablerep.stages import TrainingJob


def small_image_augment() -> AugmentConfig:
    """The paper's augmentations with a gentler crop and blur for 32 px images (tiny_cpu's)."""
    return AugmentConfig(crop_scale=(0.35, 1.0), blur_sigma=(0.1, 1.0))


class ComparisonSettings(BaseModel):
    """What every method of a comparison gets: the defaults are the embedded offline run's."""

    model_config = ConfigDict(extra="forbid")

    images_per_caption: int = Field(4, ge=2, le=32, description="synthetic images per caption (K = StableRep's m)")
    image_size: int = Field(32, ge=16, le=256, description="stored and trained image size (px)")
    backbone: str = Field("resnet_tiny_cpu", description="every method's backbone (a timm name or alias)")
    steps: int = Field(400, ge=1, description="training steps of every method")
    images_per_step: int = Field(64, ge=2, description="images encoded per step by every method (views included)")
    budget: Literal["images", "captions"] = Field(
        "images", description="images: equal images per step (fair compute); captions: equal captions per "
                              "step (images_per_step / K each), as the paper frames it")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="training seeds of every method")
    augment: AugmentConfig = Field(default_factory=small_image_augment, description="every method's augmentation")
    device: str = Field("cpu", description="where every run trains and the encoders are scored (cpu, cuda, auto)")

    def check_comparison(self, methods: list[str], captions: int | None) -> None:
        """Distinct seeds, an image size the models take, and a budget every method can spend on
        ``captions`` captions (None: not known before the data is built)."""
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: give distinct training seeds, got {self.seeds}")
        if self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {self.image_size}")
        budget = comparison_budget(self)
        for method in methods:
            needed = captions_per_step(budget, method, self.images_per_caption)  # checks divisibility
            if captions is not None and needed > captions:
                raise ValueError(f"{method} needs {needed} captions per step; the experiment has {captions}")


def comparison_budget(cfg: ComparisonSettings) -> Budget:
    """The one budget every method of the comparison gets."""
    if cfg.budget == "captions":
        return Budget(match="captions", captions_per_step=max(1, cfg.images_per_step // cfg.images_per_caption),
                      steps=cfg.steps, augment=cfg.augment)
    return Budget(match="images", images_per_step=cfg.images_per_step, steps=cfg.steps, augment=cfg.augment)


def comparison_run(cfg: ComparisonSettings, method: str, seed: int) -> RunConfig:
    """The run of ``method`` at the comparison's backbone and size, under its budget, from ``seed``."""
    preset = "tiny_cpu_plus" if get_method(method).text else "tiny_cpu"
    base = load_config(preset, [f"model.img_size={cfg.image_size}", f"data.image_size={cfg.image_size}",
                                f"model.backbone={cfg.backbone}",
                                f"train.log_every={max(1, cfg.steps // 20)}", f"train.seed={seed}",
                                f"train.device={cfg.device}", f"train.steps={cfg.steps}"])
    return matched_run(base, method, comparison_budget(cfg), cfg.images_per_caption)


def run_dir(out: str, method: str, seed: int) -> str:
    """Where the run of ``method`` from ``seed`` lives under ``out``."""
    return storage.join(out, "runs", method, f"seed-{seed}")


# The paper's comparison: StableRep (and the supervised ceiling) learn from the K synthetic images
# of each caption, the SimCLR and CLIP baselines from the real image of each caption.
TRAINS_ON: dict[str, Literal["synthetic", "real"]] = {
    "stablerep": "synthetic", "stablerep_plus": "synthetic", "supervised": "synthetic",
    "simclr": "real", "clip": "real"}


def trains_on(method: str) -> Literal["synthetic", "real"]:
    """``synthetic`` (K images per caption) or ``real`` (the real image(s) of each caption)."""
    get_method(method)  # an unknown method is named as such
    return TRAINS_ON[method]


def training_step(out: str, cfg: ComparisonSettings, method: str, seed: int, data: str, name: str | None = None
                  ) -> TrainingStep:
    """``method`` from ``seed`` on ``data`` under the comparison's budget, into
    OUT/runs/METHOD/seed-SEED; ``name``: the run's name in the report (default: the method)."""
    return TrainingStep(name=name or method, seed=seed, job=TrainingJob(
        run=comparison_run(cfg, method, seed), data=data, run_dir=run_dir(out, method, seed), progress=False))
