"""The ``stablerep`` command. Errors a user can fix are one line on stderr and exit code 2."""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated

import typer

from stablerep.cli.common import friendly_errors
from stablerep.cli.corpus import dataset_import, dataset_pair
from stablerep.cli.data import captions_app, dataset_app
from stablerep.cli.demo import compare, demo
from stablerep.cli.evaluate import evaluate_command
from stablerep.cli.experiment import experiment
from stablerep.cli.generator import generator_app
from stablerep.cli.synthesis import captions_procedural, synthesize_command

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="StableRep: synthetic images from captions -> multi-positive contrastive encoders.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect configuration presets.")
app.add_typer(config_app, name="config")
app.add_typer(captions_app, name="captions")
app.add_typer(dataset_app, name="dataset")
app.add_typer(generator_app, name="generator")
app.command("synthesize")(synthesize_command)
app.command("evaluate")(evaluate_command)
app.command("compare")(compare)
app.command("demo")(demo)
app.command("experiment")(experiment)
captions_app.command("procedural")(captions_procedural)
dataset_app.command("import")(dataset_import)
dataset_app.command("pair")(dataset_pair)


@config_app.command("show")
@friendly_errors
def config_show(
    name: Annotated[str, typer.Argument(help="preset name (stablerep/presets/NAME.yaml; see `config list`) or a YAML path")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. train.steps=10")] = None,
) -> None:
    """Print the resolved config (defaults filled in, lr derived) as JSON."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; pyarrow, PIL and pydantic models cost 0.2-0.5 s more
    from stablerep.config import load_config

    typer.echo(json.dumps(load_config(name, set_ or []).resolved(), indent=2))


@config_app.command("list")
def config_list() -> None:
    """List the bundled presets."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; pyarrow, PIL and pydantic models cost 0.2-0.5 s more
    from stablerep.config import PRESET_DIR

    for path in sorted(PRESET_DIR.glob("*.yaml")):
        typer.echo(path.stem)


@app.command("train")
@friendly_errors
def train_command(
    out: Annotated[str, typer.Option(help="run directory: local path or fsspec URL")],
    config: Annotated[str, typer.Option(help="preset name or YAML path")] = "tiny_cpu",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. train.steps=10")] = None,
    data: Annotated[str, typer.Option(help="'random' (random tensors, smoke runs) or a shard dataset root")] = "random",
    resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint in --out")] = True,
) -> None:
    """Train an encoder. Under ``torchrun -m stablerep train ...`` every rank trains its share."""
    import os

    # imported here: `stablerep --help` loads the CLI in 0.2 s; this loads torch (the stages: 5.7 s measured)
    from stablerep.config import load_config
    from stablerep.stages import TrainingJob, train

    summary = train(TrainingJob(run=load_config(config, set_ or []), data=data, run_dir=out, resume=resume))
    # one summary line per node (its local rank 0), so every node's launcher gets one
    if os.environ.get("LOCAL_RANK", "0") == "0":
        typer.echo(json.dumps(summary))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app()


if __name__ == "__main__":
    sys.exit(main())
