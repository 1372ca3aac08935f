"""A reduced offline demo: StableRep on procedural synthetic images clearly beats random init."""

import json

from stablerep.demo import DemoConfig, run_demo


def test_reduced_demo_learns(tmp_path):
    cfg = DemoConfig(captions=192, steps=300, methods=["stablerep"], probe_per_class=24, captions_per_shard=64)
    summary = run_demo(str(tmp_path), cfg, progress=False)
    probe = summary["linear_probe"]
    assert probe["stablerep"] > probe["random_init"] + 0.08, summary["by_label"]
    assert summary["knn"]["stablerep"] > summary["knn"]["random_init"] + 0.05
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["linear_probe"] == probe and set(saved["timings_s"]) >= {"train stablerep", "evaluate", "total"}
    table = (tmp_path / "results.md").read_text()
    assert table.splitlines()[0].startswith("| encoder | linear probe") and "random_init" in table
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a rerun resumes: shards and checkpoints are committed, so nothing is trained again
    again = run_demo(str(tmp_path), cfg, progress=False)
    assert again["linear_probe"]["stablerep"] == probe["stablerep"]
    assert again["timings_s"]["train stablerep"] < summary["timings_s"]["train stablerep"]
