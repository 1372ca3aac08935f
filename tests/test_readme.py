"""The README's own-loop example runs as written (on the tiny ViT, to stay fast)."""

import re
from pathlib import Path

import torch

from benchmarks.speed_table import (
    DOC,
    DOC_END,
    DOC_START,
    between,
    render,
    render_loader_evaluation,
)

README = Path(__file__).resolve().parent.parent / "README.md"


def test_own_loop_example_runs():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Use the library in your own loop\n\n```python\n(.*?)```", text, re.S).group(1)
    assert 'create_model("vit_base_patch16_224")' in block
    small = block.replace('"vit_base_patch16_224"', '"vit_tiny_cpu", img_size=32').replace("224, 224", "32, 32")
    scope: dict = {}
    exec(compile(small, str(README), "exec"), scope)
    assert torch.isfinite(scope["loss"]).item()
    assert scope["features"].shape == (48, 256)


def test_speed_table_is_rendered_from_the_committed_results_files():
    table = render()
    assert between(README.read_text(encoding="utf-8")) == table, \
        "README's speed table is stale: run python benchmarks/speed_table.py --write"
    assert between(DOC.read_text(encoding="utf-8"), DOC_START, DOC_END) == render_loader_evaluation().strip("\n") + "\n", \
        "docs/speed.md's loader and evaluation sections are stale: run python benchmarks/speed_table.py --write"
    ratios = [line.split(" | ")[3] for line in table.splitlines()[2:]]
    assert len(ratios) >= 11 and all(r.endswith("x") for r in ratios)
    assert any(float(r[:-1]) < 1 for r in ratios)  # ratios below 1 are listed, not dropped


def test_the_mutation_figure_is_the_results_file_s():
    import json

    results = json.loads((README.parent / "benchmarks" / "results" / "mutation-check.json").read_text())
    caught = sum(m["caught"] for m in results["mutations"])
    assert results["command"] == "python benchmarks/mutation_check.py"  # every mutation, not a subset
    assert f"Its last run caught {caught} of {len(results['mutations'])} mutations." in README.read_text()
