import pytest
from pydantic import ValidationError

from stablerep.config import RunConfig, load_config, parse_overrides


def test_paper_preset_matches_the_recipe():
    run = load_config("vit_b16_paper")
    assert run.model.backbone == "vit_base_patch16_224"
    assert (run.model.head_hidden_dim, run.model.head_out_dim, run.model.head_layers) == (4096, 256, 3)
    assert run.data.images_per_caption == 6 and run.data.captions_per_batch == 1376
    assert run.data.images_per_batch == 8256
    assert run.optim.betas == (0.9, 0.98) and run.optim.weight_decay == 0.1
    assert run.lr == pytest.approx(2e-4 * 8256 / 256)
    assert run.loss.temperature == 0.1
    aug = run.data.augment
    assert aug.crop_scale == (0.08, 1.0) and aug.color_jitter == (0.4, 0.4, 0.4, 0.1)
    assert (aug.color_jitter_p, aug.grayscale_p, aug.blur_p) == (0.8, 0.2, 0.5)
    assert aug.blur_sigma == (0.1, 2.0) and aug.hflip


def test_plus_preset_has_the_papers_text_tower():
    run = load_config("vit_b16_paper_plus")
    t = run.model.text
    assert (t.layers, t.width, t.heads, t.context_length) == (12, 512, 8, 77)
    assert run.loss.method == "stablerep_plus" and run.loss.text_weight == 0.5


def test_overrides_are_parsed_as_yaml():
    assert parse_overrides(["train.steps=10", "optim.betas=[0.9, 0.95]", "model.text=null"]) == {
        "train": {"steps": 10}, "optim": {"betas": [0.9, 0.95]}, "model": {"text": None}}
    with pytest.raises(ValueError, match="not of the form"):
        parse_overrides(["train.steps"])


@pytest.mark.parametrize("override,message", [
    ("train.steps=0", "train.steps"),
    ("loss.temperature=-1", "loss.temperature"),
    ("loss.method=clip", "needs a text tower"),
    ("loss.method=simclr", "two views per image"),
    ("data.image_size=64", "differs from model.img_size"),
    ("model.unknown=1", "model.unknown"),
    ("data.augment.crop_scale=[0.9, 0.1]", "crop_scale"),
])
def test_invalid_settings_fail_before_any_work(override, message):
    with pytest.raises(ValidationError, match=message):
        load_config("tiny_cpu", [override])


def test_missing_preset_and_file():
    with pytest.raises(FileNotFoundError, match="known presets"):
        load_config("no_such_preset")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config("/nonexistent/x.yaml")


def test_resolved_config_round_trips():
    run = load_config("tiny_cpu_plus")
    resolved = run.resolved()
    assert resolved["optim"]["lr"] == run.lr
    assert RunConfig.model_validate(resolved) == run
