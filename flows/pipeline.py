"""The end-to-end pipeline: captions -> synthetic and real datasets -> encoders -> comparison.

The flow builds the same plan of stage jobs as `stablerep demo` / `stablerep experiment`
(stablerep.experiments) and runs its jobs as tasks: captions and imports through tasks/captions.py
and tasks/corpora.py, synthesis through the dataset build (flows/dataset.py run_build), training
through tasks/training.py, the comparison through tasks/evaluation.py. On the embedded defaults
(procedural captions and backend, small ResNets) it is the offline demo
(`stablerep-pipeline/offline-demo`); with ``corpus`` it is the paper's comparison on a user's
image-caption corpus (`stablerep-pipeline/corpus`).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.dataset import DatasetRequest, run_build
from stablerep.experiments.corpus import CorpusExperimentConfig, build_corpus_plan
from stablerep.experiments.demo import DemoConfig, build_demo_plan
from stablerep.experiments.plan import (
    CaptionsStep,
    ExperimentPlan,
    ImportStep,
    SynthesisStep,
    check_plan,
)
from tasks.captions import copy_captions, procedural_captions, sample_captions
from tasks.corpora import import_corpus
from tasks.evaluation import compare_encoders
from tasks.training import train_encoder


def run_dataset_step(step: CaptionsStep | ImportStep | SynthesisStep) -> dict[str, Any]:
    """One dataset step of a plan as tasks (each skips committed work)."""
    if isinstance(step, CaptionsStep):
        if step.procedural:
            procedural_captions(step.source, step.n, step.seed)
        return sample_captions(step.source, step.root, step.n, step.seed)
    if isinstance(step, ImportStep):
        return import_corpus(step.job.model_dump(mode="json"))
    job = step.job
    if job.captions.rstrip("/") != job.out.rstrip("/"):
        copy_captions(job.captions, job.out)  # the dataset build reads the captions from its own root
    return run_build(DatasetRequest(root=job.out, synthesis=job.synthesis, executor="inline"))


def run_plan_as_tasks(plan: ExperimentPlan, launcher: Literal["subprocess", "inline"]) -> dict[str, Any]:
    """Every dataset step, every training run, then the comparison and its report."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    check_plan(plan)
    for step in plan.datasets:
        result = run_dataset_step(step)
        logger.info("%s: %s", step.name, result.get("totals") or {k: result.get(k) for k in ("root", "images")})
    for step in plan.runs:
        job = step.job
        train_encoder(job.run, job.data, job.run_dir, launcher=launcher)
    summary = compare_encoders(plan, plan.runs_by_method())
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


@flow(name="stablerep-pipeline", log_prints=True)
def stablerep_pipeline(out: str = "runs/pipeline", demo: DemoConfig | None = None,
                       corpus: CorpusExperimentConfig | None = None,
                       launcher: Literal["subprocess", "inline"] = "subprocess") -> dict[str, Any]:
    """Train StableRep on synthetic images and SimCLR / CLIP on real ones of the same captions,
    under one budget, for every seed, and compare them with 95% intervals: the offline demo
    (``demo``, the default), or the comparison on an image-caption corpus (``corpus``: its
    sources, evaluation suite and settings)."""
    if demo is not None and corpus is not None:
        raise ValueError("give demo or corpus, not both")
    plan = build_corpus_plan(out, corpus) if corpus is not None else build_demo_plan(out, demo or DemoConfig())
    return run_plan_as_tasks(plan, launcher)
