"""An experiment as a plan of stage jobs, and the one executor of plans.

A plan is data (pydantic, JSON-able): the dataset steps in order (sample captions, import a
corpus, synthesise from a root's captions), the training runs (a name in the report, a seed and a
:class:`~stablerep.stages.TrainingJob` each), and the evaluation (the procedural probe
comparison, or an evaluation suite of labelled datasets). The recipes build plans
(:mod:`stablerep.experiments.demo`, :mod:`stablerep.experiments.corpus`, the guidance study);
:func:`run_plan` executes one in this process through :mod:`stablerep.stages`, and the Prefect
pipeline flow executes the same plan with its tasks. Every step skips committed work (captions,
shards, finished checkpoints), so a rerun resumes.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm.auto import tqdm

from stablerep import storage
from stablerep.captions.sample import sample_captions, write_captions
from stablerep.config import RunConfig
from stablerep.evaluation.suite import DatasetEntry, check_datasets, dataset_short_forms
from stablerep.experiments.budget import budget_of
from stablerep.experiments.compare import (
    compare_on_suite,
    compare_runs,
    comparison_protocols,
    write_comparison_report,
)
from stablerep.shards.layout import captions_url
from stablerep.stages import ImportJob, SynthesisJob, TrainingJob, import_dataset, synthesize, train
from stablerep.world import write_procedural_captions


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaptionsStep(_Step):
    """Sample ``n`` captions of ``source`` into ``root`` (skipped when ``root`` has captions);
    with ``procedural``, first write ``n`` captions of the procedural grammar to ``source``."""

    kind: Literal["captions"] = "captions"
    name: str = "captions"
    root: str
    source: str
    n: int = Field(ge=1)
    seed: int = 0
    procedural: bool = False


class SynthesisStep(_Step):
    """A synthetic dataset (stablerep.stages.synthesize): ``job.captions`` -> ``job.out``."""

    kind: Literal["synthesize"] = "synthesize"
    name: str
    job: SynthesisJob


class ImportStep(_Step):
    """A real image-caption corpus imported into our layout (stablerep.stages.import_dataset)."""

    kind: Literal["import"] = "import"
    name: str
    job: ImportJob


DatasetStep = Annotated[CaptionsStep | SynthesisStep | ImportStep, Field(discriminator="kind")]


class TrainingStep(_Step):
    """One training run: ``name`` is the method as the report names it (the guidance study names
    its runs by method and scale), ``seed`` its training seed."""

    name: str
    seed: int
    job: TrainingJob


class ProbeEvaluation(_Step):
    """Every run and each seed's untrained architecture on the procedural probe set."""

    kind: Literal["probe"] = "probe"
    labels: list[Literal["shape", "colour"]] = Field(default_factory=lambda: ["shape", "colour"])
    per_class: int = Field(40, ge=2)
    test_per_class: int | None = Field(None, ge=1)
    render_size: int = Field(128, ge=16)
    random_init: bool = True


class SuiteEvaluation(_Step):
    """Every run and each seed's untrained architecture on labelled datasets (the evaluation
    suite's ``NAME=KIND:...`` datasets: imagefolder, parquet, torchvision, procedural)."""

    kind: Literal["suite"] = "suite"
    datasets: dict[str, DatasetEntry] = Field(min_length=1)
    protocols: dict[str, Any] = Field(default_factory=comparison_protocols)
    device: str = "cpu"
    cache: str | None = Field(None, description="feature cache directory (null: none)")
    random_init: bool = True
    seed: int = Field(0, description="validation splits and few-shot episodes")

    @field_validator("datasets", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return dataset_short_forms(value)


Evaluation = Annotated[ProbeEvaluation | SuiteEvaluation, Field(discriminator="kind")]


class ExperimentPlan(BaseModel):
    """What an experiment does, in order; ``settings`` is the request it was built from."""

    model_config = ConfigDict(extra="forbid")

    recipe: str = Field(description="the recipe that built the plan: demo, corpus, guidance-study, ...")
    out: str = Field(description="where the report goes (summary.json, results.md, results.png)")
    datasets: list[DatasetStep]
    roots: dict[str, str] = Field(description="the datasets the runs train on: name (synthetic, real) -> root")
    runs: list[TrainingStep] = Field(min_length=1)
    evaluation: Evaluation
    budget_match: Literal["images", "captions"] = "images"
    settings: dict[str, Any] = Field(default_factory=dict)

    def runs_by_method(self) -> dict[str, dict[int, str]]:
        """name -> seed -> run directory, names in the order of their first run."""
        out: dict[str, dict[int, str]] = {}
        for step in self.runs:
            out.setdefault(step.name, {})[step.seed] = step.job.run_dir
        return out


# ------------------------------------------------------------------------------- the steps

def run_captions_step(step: CaptionsStep) -> dict[str, Any]:
    if storage.exists(captions_url(step.root)):
        return {"root": step.root, "skipped": True}
    if step.procedural:
        write_procedural_captions(step.source, step.n, step.seed)
    write_captions(step.root, sample_captions(step.source, step.n, step.seed, progress=False))
    return {"root": step.root, "skipped": False}


def run_dataset_step(step: CaptionsStep | SynthesisStep | ImportStep) -> dict[str, Any]:
    """One dataset step in this process; its stage's summary."""
    if isinstance(step, CaptionsStep):
        return run_captions_step(step)
    if isinstance(step, ImportStep):
        return import_dataset(step.job)
    return synthesize(step.job)


def check_plan(plan: ExperimentPlan) -> None:
    """What can be checked before any work: the evaluation datasets exist, read as asked, and hold
    enough images per class for the protocols (a listing, no image decoded)."""
    if isinstance(plan.evaluation, SuiteEvaluation):
        check_datasets(plan.evaluation.datasets, plan.evaluation.protocols)


def evaluate_runs(plan: ExperimentPlan, runs: dict[str, dict[int, str]], progress=None) -> dict[str, Any]:
    """Every run (and each seed's floor) scored as the plan says; means, intervals, differences,
    and the budget each method spent, read from the config its first run saved."""
    ev = plan.evaluation
    if isinstance(ev, ProbeEvaluation):
        summary = compare_runs(runs, labels=tuple(ev.labels), per_class=ev.per_class,
                               test_per_class=ev.test_per_class, render_size=ev.render_size,
                               random_init=ev.random_init, progress=progress)
    else:
        summary = compare_on_suite(runs, {n: e.model_dump() for n, e in ev.datasets.items()},
                                   protocols=ev.protocols, features={"device": ev.device, "cache": ev.cache},
                                   random_init=ev.random_init, seed=ev.seed, progress=progress)
    summary["budget"] = {name: budget_of(saved_run_config(next(iter(by_seed.values()))))
                         for name, by_seed in runs.items()}
    summary["budget_match"] = plan.budget_match
    return summary


def saved_run_config(run_dir: str) -> RunConfig:
    """The config a run saved beside its checkpoints (run_dir/config.json)."""
    return RunConfig.model_validate(json.loads(storage.read_bytes(storage.join(run_dir, "config.json"))))


def finish_summary(plan: ExperimentPlan, summary: dict[str, Any], runs: dict[str, dict[int, str]],
                   timings: dict[str, float] | None = None) -> dict[str, Any]:
    """The request, the timings, the runs and the datasets beside the figures."""
    summary["settings"] = plan.settings
    if timings is not None:
        summary["timings_s"] = {**timings, "total": round(sum(timings.values()), 2)}
    summary["runs"] = runs
    summary["datasets"] = dict(plan.roots)
    return summary


def scorings(plan: ExperimentPlan) -> int:
    """(dataset, encoder) pairs the evaluation scores: every run and each floor, on each dataset."""
    ev = plan.evaluation
    floors = len(plan.runs_by_method()[plan.runs[0].name]) if ev.random_init else 0
    datasets = len(ev.labels) if isinstance(ev, ProbeEvaluation) else len(ev.datasets)
    return (len(plan.runs) + floors) * datasets


def execute_plan(plan: ExperimentPlan, progress: bool = True) -> dict[str, Any]:
    """Every dataset step, every run, then the evaluation, in this process; the summary (no
    report written). Timings are kept per step under ``timings_s``."""
    check_plan(plan)
    timings: dict[str, float] = {}
    total = len(plan.datasets) + len(plan.runs) + scorings(plan)
    with tqdm(total=total, desc=plan.recipe, unit="stage", disable=None if progress else True, position=0) as bar:
        def stage(name: str, fn, *args):
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            value = fn(*args)
            timings[name] = round(time.perf_counter() - t0, 2)
            bar.update()
            return value

        for step in plan.datasets:
            stage(step.name, run_dataset_step, step)
        for step in plan.runs:
            stage(f"train {step.name} seed {step.seed}", train, step.job)

        def scored(message: str) -> None:
            bar.set_postfix_str(f"evaluated {message}")
            bar.update()

        t0 = time.perf_counter()
        runs = plan.runs_by_method()
        summary = evaluate_runs(plan, runs, progress=scored)
        timings["evaluate"] = round(time.perf_counter() - t0, 2)
    return finish_summary(plan, summary, runs, timings)


def run_plan(plan: ExperimentPlan, out: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Execute ``plan`` and write the report to ``out`` (default: the plan's): OUT/summary.json,
    OUT/results.md (figures with 95% intervals, the budget, what the intervals support) and
    OUT/results.png. Returns the summary."""
    summary = execute_plan(plan, progress)
    summary["report"] = write_comparison_report(out or plan.out, summary)
    return summary
