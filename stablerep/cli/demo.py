"""`stablerep demo` and `stablerep compare`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from stablerep.cli.common import UserError, friendly_errors, parse_set_options


@friendly_errors
def demo(
    out: Annotated[str, typer.Option(help="output directory (local path or fsspec URL)")] = "runs/demo",
    set_: Annotated[list[str] | None, typer.Option("--set", help="a DemoConfig field, e.g. steps=300")] = None,
) -> None:
    """The offline end-to-end run: captions -> synthesis -> shards -> StableRep, SimCLR and CLIP
    encoders -> probes against random init -> OUT/summary.json, results.md, results.png."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; this loads torch (the stages: 5.7 s measured)
    from stablerep.experiments.compare import markdown_table
    from stablerep.experiments.demo import DemoConfig, run_demo

    summary = run_demo(out, DemoConfig.model_validate(parse_set_options(set_)))
    typer.echo(markdown_table(summary), err=True)
    typer.echo(json.dumps({key: summary[key] for key in ("linear_probe", "knn", "ci95", "report", "timings_s")}))


@friendly_errors
def compare(
    run: Annotated[list[str], typer.Option(help="NAME=RUN_DIR[,RUN_DIR...] (one directory per seed; repeatable)")],
    out: Annotated[str, typer.Option(help="directory for summary.json, results.md, results.png")],
    label: Annotated[list[str] | None, typer.Option(help="probe label(s): shape, colour")] = None,
    per_class: Annotated[int, typer.Option(help="probe-set training images per class")] = 40,
    test_per_class: Annotated[int | None, typer.Option(help="probe-set test images per class")] = None,
    random_init: Annotated[bool, typer.Option(help="also score each seed's untrained architecture")] = True,
) -> None:
    """Score training runs of several methods (several seeds each) on the procedural probe set:
    means, 95% intervals, and which differences the intervals support."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; this loads torch (the stages: 5.7 s measured)
    from stablerep.experiments.compare import (
        PROBE_LABELS,
        compare_runs,
        markdown_table,
        write_comparison_report,
    )

    runs: dict[str, dict[int, str]] = {}
    for item in run:
        name, sep, paths = item.partition("=")
        if not sep:
            name, paths = item.rstrip("/").rsplit("/", 1)[-1], item
        if name in runs:
            raise UserError(f"two runs named {name!r}: name them with NAME=RUN_DIR")
        runs[name] = {i: p for i, p in enumerate(p for p in paths.split(",") if p)}
    summary = compare_runs(runs, labels=tuple(label or PROBE_LABELS), per_class=per_class,
                           test_per_class=test_per_class, random_init=random_init)
    summary["runs"] = runs
    summary["report"] = write_comparison_report(out, summary)
    typer.echo(markdown_table(summary), err=True)
    typer.echo(json.dumps({key: summary[key] for key in ("linear_probe", "knn", "ci95", "report")}))
