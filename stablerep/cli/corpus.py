"""`stablerep dataset import` and `stablerep dataset pair`: real image-caption corpora in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stablerep.cli.common import UserError, friendly_errors, parse_set_options
from stablerep.cli.data import read_blocklist


@friendly_errors
def dataset_import(
    sources: Annotated[list[str], typer.Argument(help="img2dataset output (webdataset tars or parquet), WebDataset "
                                                      "tars, Hugging Face Parquet or a CSV/TSV of image,caption: "
                                                      "files, folders, globs or brace patterns, local or s3://")],
    out: Annotated[str, typer.Option(help="dataset root to write (local path or fsspec URL)")],
    n: Annotated[int | None, typer.Option(help="sample this many captions (the rule of `captions sample`)")] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="auto, webdataset, img2dataset-parquet, hf-parquet, csv, tsv")] = "auto",
    image_column: Annotated[str | None, typer.Option(help="image column (img2dataset: jpg, HF: image, CSV: image)")] = None,
    caption_column: Annotated[str, typer.Option(help="caption column (parquet, CSV)")] = "caption",
    image_size: Annotated[int | None, typer.Option(help="resize to this shorter side (default: bytes as they came)")] = None,
    captions_per_shard: Annotated[int, typer.Option(help="captions per output shard")] = 1000,
    skip_bad_images: Annotated[bool, typer.Option(help="skip and count undecodable or truncated images")] = False,
    allow_fewer: Annotated[bool, typer.Option(help="with --n: use every caption when fewer are usable")] = False,
    blocklist: Annotated[Path | None, typer.Option(help="file of words (one a line) that drop a caption")] = None,
    workers: Annotated[int, typer.Option(help="processes reading and writing input files at once")] = 1,
    set_: Annotated[list[str] | None, typer.Option("--set", help="any ImportConfig field, key=value")] = None,
) -> None:
    """Import a corpus with real images into OUT (captions.parquet, shards, marks, manifest); resumable."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; this loads torch (the stages: 5.7 s measured)
    from stablerep.corpora.importer import ImportConfig
    from stablerep.stages import ImportJob, import_dataset

    if n is not None and n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    fields = {"n": n, "seed": seed, "format": fmt, "image_column": image_column, "caption_column": caption_column,
              "image_size": image_size, "captions_per_shard": captions_per_shard,
              "skip_bad_images": skip_bad_images, "allow_fewer": allow_fewer,
              "blocklist": sorted(read_blocklist(blocklist))}
    fields.update(parse_set_options(set_))
    cfg = ImportConfig.model_validate(fields)
    summary = import_dataset(ImportJob(sources=sources, out=out, config=cfg, owner="stablerep dataset import",
                                       workers=workers))
    skipped = ", ".join(f"{k} {v}" for k, v in summary["skipped_rows"].items()) or "none"
    typer.echo(f"{summary['images']} images of {summary['captions']} captions in {summary['shards']} shards -> {out} "
               f"(rows skipped: {skipped})", err=True)
    typer.echo(json.dumps(summary))


@friendly_errors
def dataset_pair(
    real: Annotated[str, typer.Argument(help="a dataset root (e.g. an imported corpus)")],
    synthetic: Annotated[str, typer.Argument(help="another root (e.g. the synthetic images of its captions)")],
) -> None:
    """The caption overlap of two roots, both ways; exit 0 only when their caption ids are identical."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; pyarrow, PIL and pydantic models cost 0.2-0.5 s more
    from stablerep.shards.pair import pair_report

    report = pair_report(real, synthetic)
    typer.echo(json.dumps(report))
    if not report["identical"]:
        typer.echo(f"error: {real} and {synthetic} differ: {report['only_first']} caption(s) only in the first, "
                   f"{report['only_second']} only in the second, {report['common']} in both", err=True)
        raise typer.Exit(1)
