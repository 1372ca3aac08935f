"""A reduced offline demo: every method over two seeds under one budget, intervals in the summary,
StableRep clearly above its untrained architecture (kNN, and the linear probe on colour; at this
budget shape stays near chance for the self-supervised methods), and a rerun that trains nothing."""

import json
from pathlib import Path

from stablerep.experiments.budget import budget_of
from stablerep.experiments.demo import DemoConfig, run_demo
from stablerep.experiments.plan import saved_run_config


def _files(root: Path) -> dict[str, tuple[int, int] | bytes]:
    """Every file under root with its size and modification time (ns); a run's config.json, which
    a rerun writes again before it finds its checkpoint, by its content."""
    return {str(f.relative_to(root)): f.read_bytes() if f.name == "config.json" else
            (f.stat().st_size, f.stat().st_mtime_ns) for f in root.rglob("*") if f.is_file()}


def test_reduced_demo_learns_and_reports_intervals(tmp_path):
    cfg = DemoConfig(captions=512, steps=200, seeds=[0, 1], methods=["stablerep", "simclr"], probe_per_class=16,
                     probe_test_per_class=30, captions_per_shard=128)
    summary = run_demo(str(tmp_path), cfg, progress=False)
    probe = summary["linear_probe"]
    assert set(probe) == {"stablerep", "simclr", "supervised", "random_init"}
    assert summary["knn"]["stablerep"] > summary["knn"]["random_init"] + 0.05, summary["knn"]
    colour = summary["by_label"]["colour"]["linear_probe"]
    assert colour["stablerep"]["mean"] > colour["random_init"]["mean"] + 0.05, colour
    assert summary["seeds"]["stablerep"] == [0, 1] and len(summary["per_seed"]["linear_probe"]["simclr"]) == 2
    assert all(v is not None and v > 0 for v in summary["ci95"]["linear_probe"].values())
    # the budget each run trained with, read from the config it saved beside its checkpoints
    trained = [budget_of(saved_run_config(d)) for seeds in summary["runs"].values() for d in seeds.values()]
    assert len(trained) == 3 * 2  # stablerep, simclr, supervised x 2 seeds
    assert {b["images_per_step"] for b in trained} == {64} and {b["steps"] for b in trained} == {200}
    assert len({json.dumps(b["augmentation"], sort_keys=True) for b in trained}) == 1
    assert all(summary["budget"][m] == budget_of(saved_run_config(next(iter(s.values())))) for m, s in summary["runs"].items())
    # SimCLR learns too, and the supervised ceiling is above every self-supervised method on colour
    assert summary["knn"]["simclr"] > summary["knn"]["random_init"] + 0.05, summary["knn"]
    assert colour["supervised"]["mean"] > max(colour["stablerep"]["mean"], colour["simclr"]["mean"]), colour
    assert any(d["a"] == "stablerep" and d["b"] == "simclr" for d in summary["differences"])
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["linear_probe"] == probe and saved["ci95"] == summary["ci95"]
    assert set(saved["timings_s"]) >= {"train stablerep seed 0", "train supervised seed 1", "evaluate", "total"}
    table = (tmp_path / "results.md").read_text()
    assert table.splitlines()[0].startswith("| encoder | seeds | linear probe") and " ± " in table
    assert "images per step" in table
    # every difference the intervals support is stated as such, and no other
    claimed = [d for d in summary["differences"] if d["supported"]
               and ("random_init" not in (d["a"], d["b"]) or d["metric"] == "linear_probe")]
    assert table.count("supported by the intervals.") == len(claimed)
    for d in claimed:
        ahead, behind = (d["a"], d["b"]) if d["difference"] >= 0 else (d["b"], d["a"])
        assert f"{ahead} is ahead of {behind} by {abs(d['difference']):.3f}" in table
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a rerun resumes: shards and checkpoints are committed, so nothing is trained again
    before = _files(tmp_path / "runs")
    again = run_demo(str(tmp_path), cfg, progress=False)
    assert again["linear_probe"] == probe and again["per_seed"] == summary["per_seed"]
    assert _files(tmp_path / "runs") == before  # no checkpoint or log written again, the same configs


def test_the_report_states_the_protocol_it_scored_with_and_where_it_is_reduced():
    from stablerep.experiments.compare import protocol_line

    def summary(l2, episodes):
        return {"evaluation": {"settings": {"protocols": {
            "linear_probe": {"l2_values": l2}, "knn": {"k": 20, "temperature": 0.07},
            "few_shot": {"ways": 5, "episodes": episodes}}}}}

    reduced = protocol_line(summary(12, 100))
    assert "over 12 L2 values" in reduced and "over 100 episodes" in reduced
    assert "L2 values 12 (documented: 45); few-shot episodes 100 (documented: 600)" in reduced
    assert "The documented protocol." in protocol_line(summary(45, 600))
    assert "Reduced" not in protocol_line(summary(45, 600))
    assert protocol_line({}) == ""
