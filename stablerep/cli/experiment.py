"""`stablerep experiment`: the paper's comparison on your own image-caption corpus."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from stablerep.cli.common import UserError, friendly_errors, parse_set_options
from stablerep.cli.evaluate import named_specs


@friendly_errors
def experiment(
    corpus: Annotated[list[str], typer.Option(
        help="the corpus (repeatable): img2dataset output (webdataset tars or parquet), WebDataset tars, Hugging "
             "Face Parquet or a CSV of image,caption; files, folders, globs or brace patterns, local or s3://")],
    suite: Annotated[list[str], typer.Option(
        help="evaluation dataset NAME=SPEC (repeatable): imagefolder:PATH, parquet:PATH, torchvision:NAME:ROOT")],
    out: Annotated[str, typer.Option(help="output directory (local path or fsspec URL)")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="a CorpusExperimentConfig field, e.g. captions=1000, seeds=[0,1], synthesis.backend=tiny, "
                      "synthesis.model=PATH, reader.caption_column=text")] = None,
) -> None:
    """Import captions with their real images -> synthesise K images per caption -> StableRep on the
    synthetic images, SimCLR and CLIP on the real ones, one budget, several seeds -> every encoder
    and each seed's random init on your labelled datasets -> OUT/summary.json, results.md,
    results.png with 95% intervals and what they support."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; this loads torch (the stages: 5.7 s measured)
    from stablerep.experiments.compare import markdown_table
    from stablerep.experiments.corpus import CorpusExperimentConfig, run_corpus_experiment

    tree = parse_set_options(set_)
    if "sources" in tree or "suite" in tree:
        raise UserError("--set: give the corpus with --corpus and the datasets with --suite")
    tree["sources"] = list(corpus)
    tree["suite"] = named_specs(list(suite), "dataset")
    summary = run_corpus_experiment(out, CorpusExperimentConfig.model_validate(tree))
    typer.echo(markdown_table(summary), err=True)
    typer.echo(json.dumps({key: summary[key] for key in (*summary["metrics"], "ci95", "report", "timings_s")}))
