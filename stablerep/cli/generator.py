"""`stablerep generator ...`: train the small text-to-image model and its fidelity classifier,
measure fidelity per guidance scale, and run the guidance-scale study (encoders trained on its
images at each scale)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from stablerep.cli.common import friendly_errors, parse_set_options

generator_app = typer.Typer(no_args_is_help=True, help="The small latent text-to-image model (offline).")


@generator_app.command("train")
@friendly_errors
def generator_train(
    out: Annotated[str, typer.Option(help="directory: checkpoints, model/ (a diffusers pipeline), log, loss curve")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="a GeneratorConfig field, e.g. unet_steps=2000")] = None,
) -> None:
    """Train the generator on real procedural renders (resumes from OUT's checkpoints)."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; this loads torch (the stages: 5.7 s measured)
    from stablerep.generator.config import GeneratorConfig
    from stablerep.generator.train import train_generator

    command = " ".join(["stablerep generator train", *(f"--set {item}" for item in set_ or [])])
    summary = train_generator(out, GeneratorConfig.model_validate(parse_set_options(set_)), command=command)
    typer.echo(json.dumps(summary))


@generator_app.command("classifier")
@friendly_errors
def generator_classifier(
    out: Annotated[str, typer.Option(help="path prefix: writes OUT.safetensors and OUT.json")],
    size: Annotated[int, typer.Option(help="image size (px)")] = 32,
    steps: Annotated[int, typer.Option(help="training steps")] = 3000,
    seed: Annotated[int, typer.Option(help="seed of its render stream")] = 1000,
) -> None:
    """Train the attribute classifier that scores fidelity (supervised on real renders)."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; this loads torch (the stages: 5.7 s measured)
    from stablerep.generator.fidelity import train_classifier

    classifier = train_classifier(size, steps=steps, seed=seed)
    classifier.save(out)
    typer.echo(json.dumps({"out": out, "heldout_accuracy": classifier.heldout}))


@generator_app.command("fidelity")
@friendly_errors
def generator_fidelity(
    out: Annotated[str, typer.Option(help="directory for fidelity.json, fidelity.png and sample grids")],
    model: Annotated[str | None, typer.Option(help="generator folder (default: the shipped one)")] = None,
    guidance: Annotated[str, typer.Option(help="guidance scales, comma-separated")] = "1,2,4,8",
    captions: Annotated[int, typer.Option(help="captions to generate (one image each)")] = 256,
    seed: Annotated[int, typer.Option(help="caption and image seed")] = 0,
    classifier: Annotated[str | None, typer.Option(help="attribute classifier path prefix (from "
                                                   "`generator classifier`; default: the shipped one)")] = None,
) -> None:
    """Per guidance scale: how often generated images show the attributes their captions name."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; this loads torch (the stages: 5.7 s measured)
    from stablerep.experiments.fidelity import fidelity_study

    scales = [float(g) for g in guidance.split(",") if g.strip()]
    typer.echo(json.dumps(fidelity_study(out, model, scales, captions, seed, classifier_path=classifier), indent=2))


@generator_app.command("study")
@friendly_errors
def generator_study(
    out: Annotated[str, typer.Option(help="directory: generated datasets, runs, summary.json, results.md/png")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="a GuidanceStudyConfig field, e.g. "
                                                   "scales=[1,2,4,8] or demo.seeds=[0,1]")] = None,
) -> None:
    """The guidance-scale study: StableRep and SimCLR on generated images at each guidance scale,
    CLIP and SimCLR on the real renders, one budget, several seeds, 95% intervals, one plot."""
    # imported here: `stablerep --help` loads the CLI in 0.2 s; this loads torch (the stages: 5.7 s measured)
    from stablerep.experiments.guidance import GuidanceStudyConfig, run_guidance_study, study_table

    summary = run_guidance_study(out, GuidanceStudyConfig.model_validate(parse_set_options(set_)))
    typer.echo(study_table(summary), err=True)
    typer.echo(json.dumps({key: summary[key] for key in ("linear_probe", "ci95", "fidelity", "report", "timings_s")}))
