"""Evaluate encoders on labelled datasets: the `evaluate-encoders` deployment."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import Field

from stablerep.evaluation.suite import EvalSuite
from stablerep.stages import EvaluationJob
from tasks.evaluation import evaluate_suite


class EvaluateRequest(EvalSuite):
    """A suite (datasets, encoders, protocols) inline or from a suite file, and where to report."""

    out: str = Field(description="directory for summary.json, results.md, results.png")
    suite_file: str | None = Field(None, description="a suite YAML on the worker; inline fields add to it")


@flow(name="evaluate-encoders", log_prints=True)
def evaluate_encoders_flow(request: EvaluateRequest) -> dict[str, Any]:
    """Linear probe, kNN, few-shot and zero-shot of every encoder on every dataset."""
    inline = request.model_dump(exclude={"out", "suite_file"}, exclude_unset=True)
    return evaluate_suite(EvaluationJob(out=request.out, suite_file=request.suite_file, suite=inline))
