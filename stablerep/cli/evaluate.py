"""`stablerep evaluate`: encoders x datasets x protocols -> OUT/summary.json, results.md, results.png."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from stablerep.cli.common import UserError, friendly_errors

PROTOCOLS = ("linear_probe", "linear_probe_sgd", "knn", "few_shot", "zero_shot")


def named_specs(items: list[str], what: str) -> dict[str, str]:
    """``NAME=SPEC`` items (a bare SPEC is named after its last path component, without a
    ``#metric=...`` suffix)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name or ":" in name or "/" in name or "#" in name:
            spec = item
            name = item.split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        if name in out:
            raise UserError(f"two {what}s named {name!r}: name them with NAME=SPEC")
        out[name] = spec
    return out


@friendly_errors
def evaluate_command(
    out: Annotated[str, typer.Option(help="directory for summary.json, results.md, results.png")],
    encoder: Annotated[list[str] | None, typer.Option(
        help="NAME=SPEC (repeatable): RUN_DIR, random:RUN_DIR, timm:MODEL[:WEIGHTS], open_clip:ARCH:WEIGHTS")] = None,
    dataset: Annotated[list[str] | None, typer.Option(
        help="NAME=SPEC (repeatable): imagefolder:PATH, parquet:PATH, torchvision:NAME:ROOT, procedural:shape|colour; "
             "end a SPEC in #metric=mean_per_class or #metric=accuracy to set its metric")] = None,
    suite: Annotated[str | None, typer.Option(help="suite YAML: datasets, encoders, protocols, features")] = None,
    protocol: Annotated[list[str] | None, typer.Option(
        help=f"run only these (repeatable): {', '.join(PROTOCOLS)}")] = None,
    skip_bad_images: Annotated[bool, typer.Option(help="skip (and count) unreadable images instead of failing")] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    batch_size: Annotated[int | None, typer.Option(help="images per encoder call")] = None,
    workers: Annotated[int | None, typer.Option(help="loader workers (default: 0 for small sets)")] = None,
    cache: Annotated[str | None, typer.Option(help="feature cache directory (default ~/.cache/stablerep/features)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="encode everything again, cache nothing")] = False,
) -> None:
    """Score encoders on labelled datasets: linear probe (L-BFGS), kNN, few-shot, zero-shot."""
    # imported here: the stages load torch, which `stablerep --help` does not need
    from stablerep.evaluation.report import markdown_report
    from stablerep.stages import EvaluationJob, evaluate

    overrides: dict = {"encoders": named_specs(encoder or [], "encoder"),
                       "datasets": named_specs(dataset or [], "dataset")}
    if protocol:
        unknown = sorted(set(protocol) - set(PROTOCOLS))
        if unknown:
            raise UserError(f"--protocol {unknown[0]!r}: use one of {', '.join(PROTOCOLS)}")
        overrides["protocols"] = {name: {"enabled": name in protocol} for name in PROTOCOLS}
    features = {key: value for key, value in (("device", device), ("batch_size", batch_size),
                                              ("workers", workers), ("cache", cache)) if value is not None}
    if no_cache:
        features["cache"] = None
    if features:
        overrides["features"] = features
    summary = evaluate(EvaluationJob(out=out, suite_file=suite, suite=overrides, skip_bad_images=skip_bad_images))
    typer.echo(markdown_report(summary), err=True)
    typer.echo(json.dumps({"report": summary["report"], "cache": summary["cache"],
                           "timings_s": {"total": summary["timings_s"]["total"]}}))
