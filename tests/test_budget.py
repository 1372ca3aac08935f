"""A comparison's budget is equal for every method: images encoded per step (views included),
steps and augmentation, in the demo and in the paper's presets."""

import pytest

from stablerep.config import AugmentConfig, load_config
from stablerep.experiments.budget import Budget, budget_of, matched_run
from stablerep.experiments.demo import DemoConfig
from stablerep.experiments.runs import comparison_run
from stablerep.methods import METHODS


def _same(budgets):
    first = next(iter(budgets.values()))
    for name, b in budgets.items():
        for key in ("images_per_step", "steps", "augmentation", "lr"):
            assert b[key] == first[key], (name, key, b[key], first[key])


def test_the_demo_gives_every_method_the_same_budget():
    cfg = DemoConfig()
    budgets = {m: budget_of(comparison_run(cfg, m, seed)) for m in cfg.training_methods() for seed in cfg.seeds}
    _same(budgets)
    assert budgets["stablerep"]["images_per_step"] == cfg.images_per_step == 64
    # the methods differ in how they spend it: StableRep 16 captions x 4, SimCLR 32 x 2, CLIP 64 x 1
    assert {m: budgets[m]["captions_per_step"] for m in ("stablerep", "simclr", "clip", "supervised")} == {
        "stablerep": 16, "simclr": 32, "clip": 64, "supervised": 64}
    assert budgets["clip"]["augmentation"] == cfg.augment.model_dump(mode="json")
    runs = [comparison_run(cfg, m, s) for m in cfg.training_methods() for s in cfg.seeds]
    assert {r.model.backbone for r in runs} == {"resnet_tiny_cpu"} and {r.model.img_size for r in runs} == {32}
    assert sorted({r.train.seed for r in runs}) == cfg.seeds


def test_matching_captions_is_the_named_alternative():
    cfg = DemoConfig(budget="captions")
    budgets = {m: budget_of(comparison_run(cfg, m, 0)) for m in cfg.training_methods()}
    assert {b["captions_per_step"] for b in budgets.values()} == {16}
    assert budgets["stablerep"]["images_per_step"] == 64 and budgets["clip"]["images_per_step"] == 16


def test_the_paper_presets_match_and_matched_run_rebuilds_them():
    names = {"stablerep": "vit_b16_paper", "stablerep_plus": "vit_b16_paper_plus",
             "simclr": "vit_b16_paper_simclr", "clip": "vit_b16_paper_clip"}
    presets = {m: load_config(p) for m, p in names.items()}
    budgets = {m: budget_of(r) for m, r in presets.items()}
    _same(budgets)
    assert budgets["stablerep"]["images_per_step"] == 8256 and budgets["simclr"]["captions_per_step"] == 4128
    assert {m: r.loss.method for m, r in presets.items()} == {m: m for m in names}
    base = presets["stablerep"]
    budget = Budget(images_per_step=8256, steps=base.train.steps, augment=base.data.augment)
    assert matched_run(base, "simclr", budget, 6) == presets["simclr"]
    assert matched_run(presets["stablerep_plus"], "clip", budget, 6) == presets["clip"]


def test_a_budget_that_does_not_divide_is_refused():
    budget = Budget(images_per_step=66, steps=10, augment=AugmentConfig())
    base = load_config("tiny_cpu")
    with pytest.raises(ValueError, match="66 images per step do not divide into 4 views"):
        matched_run(base, "stablerep", budget, 4)
    with pytest.raises(ValueError, match="needs a text tower"):
        matched_run(base, "clip", Budget(images_per_step=64, steps=10), 4)
    with pytest.raises(ValueError, match="images_per_step"):
        DemoConfig(images_per_step=66)


def test_every_method_has_a_spec_the_config_enforces():
    assert set(METHODS) == {"stablerep", "stablerep_plus", "simclr", "clip", "supervised"}
    with pytest.raises(ValueError, match="takes two views per image"):
        load_config("tiny_cpu", ["loss.method=simclr"])
    with pytest.raises(ValueError, match="takes one image per caption"):
        load_config("tiny_cpu", ["loss.method=supervised"])
    run = load_config("tiny_cpu", ["loss.method=supervised", "data.images_per_caption=1"])
    assert run.loss.targets == ["shape", "colour"]
