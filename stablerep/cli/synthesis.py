"""`stablerep synthesize` and `stablerep captions procedural`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from stablerep.cli.common import friendly_errors, parse_set_options


@friendly_errors
def synthesize_command(
    captions: Annotated[str, typer.Option(help="dataset root holding captions.parquet")],
    out: Annotated[str, typer.Option(help="dataset root to write (may equal --captions)")],
    backend: Annotated[str | None, typer.Option(help="diffusers, tiny or procedural (default procedural)")] = None,
    images_per_caption: Annotated[int | None, typer.Option(help="K images per caption (default 10)")] = None,
    seed: Annotated[int | None, typer.Option(help="base seed; image seeds derive from it (default 0)")] = None,
    model: Annotated[str | None, typer.Option(help="diffusers model id or local path")] = None,
    steps: Annotated[int | None, typer.Option(help="sampler steps (default: the backend's own; diffusers 50, tiny 4)")] = None,
    guidance: Annotated[float | None, typer.Option(help="classifier-free guidance (default: the model's saved recommendation, else 2.0)")] = None,
    resolution: Annotated[int | None, typer.Option(help="generation size in px (default: the backend's own; SD v1.5 512, tiny 16, procedural 512)")] = None,
    image_size: Annotated[int | None, typer.Option(help="stored size in px (default 256)")] = None,
    image_format: Annotated[str | None, typer.Option("--format", help="jpeg, webp or png")] = None,
    captions_per_shard: Annotated[int | None, typer.Option(help="captions per shard (default 100)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="images per backend call (default 8)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="any SynthesisConfig field, key=value")] = None,
    request: Annotated[str | None, typer.Option(help="YAML/JSON file of SynthesisConfig fields (options override it)")] = None,
    shards: Annotated[str | None, typer.Option(help="only these planned shards, e.g. 0,3,7 (default: all)")] = None,
) -> None:
    """Generate K images per caption into Parquet shards; committed shards are skipped."""
    from pathlib import Path

    import yaml

    # imported here: `stablerep --help` loads the CLI in 0.2 s; this loads torch (the stages: 5.7 s measured)
    from stablerep.config import SynthesisConfig
    from stablerep.stages import SynthesisJob, synthesize

    base = {}
    if request is not None:
        base = yaml.safe_load(Path(request).read_text(encoding="utf-8")) or {}
        if not isinstance(base, dict):
            raise ValueError(f"{request}: expected a mapping of SynthesisConfig fields")
    fields = {"backend": backend, "images_per_caption": images_per_caption, "seed": seed, "model": model,
              "steps": steps, "guidance": guidance, "resolution": resolution, "image_size": image_size,
              "image_format": image_format, "captions_per_shard": captions_per_shard,
              "batch_size": batch_size, "device": device}
    fields.update(parse_set_options(set_))
    explicit = {k: v for k, v in fields.items() if v is not None}
    cfg = SynthesisConfig.model_validate({**base, **explicit})
    chosen = None
    if shards:
        try:
            chosen = sorted({int(part) for part in shards.split(",") if part.strip()})
        except ValueError:
            raise ValueError(f"--shards takes comma-separated shard numbers, got {shards!r}") from None
    result = synthesize(SynthesisJob(captions=captions, out=out, synthesis=cfg, shards=chosen,
                                     owner="stablerep synthesize"))
    typer.echo(json.dumps(result))


@friendly_errors
def captions_procedural(
    out: Annotated[str, typer.Option(help="text file to write, one caption a line (path or URL)")],
    n: Annotated[int, typer.Option(help="captions to generate")] = 1000,
    seed: Annotated[int, typer.Option(help="generator seed")] = 0,
) -> None:
    """Write N distinct captions of the procedural grammar (for offline runs)."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; pyarrow, PIL and pydantic models cost 0.2-0.5 s more
    from stablerep.world import write_procedural_captions

    write_procedural_captions(out, n, seed)
    typer.echo(json.dumps({"out": out, "captions": n}))
