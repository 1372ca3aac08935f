"""`stablerep captions ...` and `stablerep dataset ...`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stablerep.cli.common import UserError, friendly_errors

captions_app = typer.Typer(no_args_is_help=True, help="Caption corpora: sample captions into a dataset root.")
dataset_app = typer.Typer(no_args_is_help=True, help="Inspect and verify a shard dataset.")


def read_blocklist(path: Path | None) -> set[str]:
    if path is None:
        return set()
    if not path.is_file():
        raise FileNotFoundError(f"blocklist file not found: {path}")
    return {w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip() and not w.startswith("#")}


@captions_app.command("sample")
@friendly_errors
def captions_sample(
    source: Annotated[str, typer.Argument(help="caption file: .txt, .csv, .tsv, .jsonl, .parquet (local or URL)")],
    out: Annotated[str, typer.Option(help="dataset root (local path or fsspec URL)")],
    n: Annotated[int, typer.Option(help="captions to sample")],
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    column: Annotated[str, typer.Option(help="caption column/key (csv, tsv, jsonl, parquet)")] = "caption",
    fmt: Annotated[str | None, typer.Option("--format", help="override the format from the extension")] = None,
    min_chars: Annotated[int, typer.Option(help="drop shorter captions")] = 1,
    max_chars: Annotated[int, typer.Option(help="cut longer captions at a word boundary")] = 1000,
    min_words: Annotated[int, typer.Option(help="drop captions with fewer words")] = 1,
    blocklist: Annotated[Path | None, typer.Option(help="file of words (one a line) that drop a caption")] = None,
    allow_fewer: Annotated[bool, typer.Option(help="use every caption when fewer than --n pass")] = False,
) -> None:
    """Sample N distinct, normalised captions deterministically into OUT/captions.parquet."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; pyarrow, PIL and pydantic models cost 0.2-0.5 s more
    from stablerep.captions import CaptionFilter, sample_captions, write_captions

    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    flt = CaptionFilter(min_chars=min_chars, max_chars=max_chars, min_words=min_words,
                        blocklist=read_blocklist(blocklist))
    result = sample_captions(source, n, seed, fmt=fmt, column=column, caption_filter=flt,
                             allow_fewer=allow_fewer)
    url = write_captions(out, result)
    stats = result.stats
    typer.echo(f"{stats['sampled']} captions -> {url} (read {stats['read']}, dropped "
               + ", ".join(f"{k} {v}" for k, v in stats["dropped"].items())
               + f", truncated {stats['truncated']})", err=True)
    typer.echo(json.dumps(stats))


@dataset_app.command("verify")
@friendly_errors
def dataset_verify(
    root: Annotated[str, typer.Argument(help="dataset root")],
    deep: Annotated[bool, typer.Option(help="also read every row's image bytes")] = False,
) -> None:
    """Check the manifest, every shard's mark, sha256 and row count. Exit 0 only when sound."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; pyarrow, PIL and pydantic models cost 0.2-0.5 s more
    from stablerep.shards import verify_dataset

    report = verify_dataset(root, deep=deep)
    if not report.ok:
        more = f" (and {len(report.problems) - 1} more problems)" if len(report.problems) > 1 else ""
        raise UserError(f"{report.problems[0]}{more}")
    typer.echo(f"ok: {report.shards_checked} shards, {report.images_checked} images verified at {root}")


@dataset_app.command("stats")
@friendly_errors
def dataset_stats_cmd(root: Annotated[str, typer.Argument(help="dataset root")]) -> None:
    """Totals, images per caption, shard sizes and lineage, from the manifest."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; pyarrow, PIL and pydantic models cost 0.2-0.5 s more
    from stablerep.shards import dataset_stats

    typer.echo(json.dumps(dataset_stats(root), indent=2))


@dataset_app.command("export")
@friendly_errors
def dataset_export(
    root: Annotated[str, typer.Argument(help="dataset root (local path or fsspec URL)")],
    out: Annotated[str, typer.Option(help="output directory: local path or fsspec URL, new or empty")],
    fmt: Annotated[str, typer.Option("--format", help="export format (only: webdataset)")] = "webdataset",
    samples_per_tar: Annotated[int, typer.Option(help="samples per tar; the last may hold fewer")] = 1000,
) -> None:
    """Write the dataset as WebDataset tars (KEY.jpg/png, KEY.txt, KEY.json) plus sizes.json and
    export.json, for open_clip's --train-data and webdataset's readers."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; pyarrow, PIL and pydantic models cost 0.2-0.5 s more
    from stablerep.shards.export import export_webdataset

    if fmt != "webdataset":
        raise UserError(f"--format: {fmt!r} is not supported; the only export format is webdataset")
    summary = export_webdataset(root, out, samples_per_tar=samples_per_tar)
    typer.echo(f"{summary['samples']} samples in {summary['tars']} tars -> {summary['train_data']}", err=True)
    typer.echo(json.dumps(summary))
