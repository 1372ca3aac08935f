"""The demo with the shipped generator as its synthetic source, and the guidance-scale study, at a
reduced budget: the generated datasets come through the diffusers backend at the asked guidance,
every run shares one budget, fidelity is scored per scale, and the report has its table and plot."""

import json

import pytest

from stablerep.experiments.demo import DemoConfig, run_demo
from stablerep.experiments.guidance import GuidanceStudyConfig, run_guidance_study
from stablerep.generator.fidelity import chance
from stablerep.generator.shipped import shipped_generator
from stablerep.shards import read_manifest

pytestmark = pytest.mark.slow

SMALL = {"captions": 64, "steps": 20, "images_per_step": 32, "seeds": [0, 1], "probe_per_class": 8,
         "probe_test_per_class": 10, "captions_per_shard": 32}


def test_demo_takes_its_synthetic_images_from_the_shipped_generator(tmp_path):
    cfg = DemoConfig(source="generator", methods=["stablerep"], ceiling=False, **{**SMALL, "seeds": [0]})
    summary = run_demo(str(tmp_path), cfg, progress=False)
    synthetic = read_manifest(str(tmp_path / "synthetic"))["config"]
    recommended = json.loads((shipped_generator() / "stablerep_generation.json").read_text())
    assert synthetic["backend"] == "diffusers" and synthetic["model"] == str(shipped_generator())
    assert (synthetic["guidance"], synthetic["steps"], synthetic["resolution"]) == (
        recommended["guidance_scale"], recommended["num_inference_steps"], recommended["resolution"])
    assert read_manifest(str(tmp_path / "real"))["config"]["backend"] == "procedural"
    assert set(summary["linear_probe"]) == {"stablerep", "random_init"}


def test_renderer_demo_refuses_generator_settings():
    with pytest.raises(ValueError, match="source=generator only"):
        DemoConfig(guidance=4.0)


def test_guidance_study_trains_every_method_at_every_scale_under_one_budget(tmp_path):
    cfg = GuidanceStudyConfig(scales=[1.0, 4.0], fidelity_images=64, demo=DemoConfig(source="generator", **SMALL))
    summary = run_guidance_study(str(tmp_path), cfg, progress=False)
    assert set(summary["linear_probe"]) == {"stablerep-w1", "simclr-w1", "stablerep-w4", "simclr-w4", "clip-real",
                                            "simclr-real", "random_init"}
    for w in (1.0, 4.0):
        made = read_manifest(str(tmp_path / f"w{w:g}" / "synthetic"))["config"]
        assert made["backend"] == "diffusers" and made["guidance"] == w
    budgets = summary["budget"]
    assert {b["images_per_step"] for b in budgets.values()} == {32} and {b["steps"] for b in budgets.values()} == {20}
    assert len({json.dumps(b["augmentation"], sort_keys=True) for b in budgets.values()}) == 1
    assert all(len(v) == 2 for v in summary["per_seed"]["linear_probe"].values())
    floor = chance()
    assert set(summary["fidelity"]) == {"1", "4"}
    for scores in summary["fidelity"].values():
        assert set(scores) == set(floor) and scores["colour"] > floor["colour"] + 0.2, scores
    table = (tmp_path / "results.md").read_text()
    assert "| guidance w |" in table and "| 4 |" in table and "real renders: clip" in table
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["fidelity"] == summary["fidelity"] and saved["scales"] == [1.0, 4.0]


def test_guidance_study_rejects_a_renderer_source_and_a_fixed_guidance():
    with pytest.raises(ValueError, match="source must be generator"):
        GuidanceStudyConfig(demo=DemoConfig())
    with pytest.raises(ValueError, match="set by the study"):
        GuidanceStudyConfig(demo=DemoConfig(source="generator", guidance=2.0))
