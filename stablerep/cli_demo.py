"""`stablerep demo` and `stablerep compare`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from stablerep.cli_common import UserError, friendly_errors, parse_set_options


@friendly_errors
def demo(
    out: Annotated[str, typer.Option(help="output directory (local path or fsspec URL)")] = "runs/demo",
    set_: Annotated[list[str] | None, typer.Option("--set", help="a DemoConfig field, e.g. steps=300")] = None,
) -> None:
    """The offline end-to-end run: captions -> synthesis -> shards -> StableRep, SimCLR and CLIP
    encoders -> probes against random init -> OUT/summary.json, results.md, results.png."""
    from stablerep.demo import DemoConfig, run_demo
    from stablerep.evaluation.compare import markdown_table

    summary = run_demo(out, DemoConfig.model_validate(parse_set_options(set_)))
    typer.echo(markdown_table(summary), err=True)
    typer.echo(json.dumps({key: summary[key] for key in ("linear_probe", "knn", "report", "timings_s")}))


@friendly_errors
def compare(
    run: Annotated[list[str], typer.Option(help="NAME=RUN_DIR or RUN_DIR (repeatable)")],
    out: Annotated[str, typer.Option(help="directory for summary.json, results.md, results.png")],
    label: Annotated[list[str] | None, typer.Option(help="probe label(s): shape, colour")] = None,
    per_class: Annotated[int, typer.Option(help="probe-set training images per class")] = 40,
    random_init: Annotated[bool, typer.Option(help="also score the untrained architecture")] = True,
) -> None:
    """Score trained encoders side by side on the procedural probe set and write the report."""
    from stablerep.evaluation.compare import (
        PROBE_LABELS,
        compare_runs,
        markdown_table,
        write_report,
    )

    runs = {}
    for item in run:
        name, sep, path = item.partition("=")
        name, path = (name, path) if sep else (item.rstrip("/").rsplit("/", 1)[-1], item)
        if name in runs:
            raise UserError(f"two runs named {name!r}: name them with NAME=RUN_DIR")
        runs[name] = path
    summary = compare_runs(runs, labels=tuple(label or PROBE_LABELS), per_class=per_class, random_init=random_init)
    summary["runs"] = runs
    summary["report"] = write_report(out, summary)
    typer.echo(markdown_table(summary), err=True)
    typer.echo(json.dumps({key: summary[key] for key in ("linear_probe", "knn", "report")}))
