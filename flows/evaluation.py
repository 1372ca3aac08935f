"""Evaluate trained encoders side by side on the procedural probe set."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from tasks.evaluation import evaluate_encoders


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runs: dict[str, str] = Field(description="name -> training run directory")
    out: str = Field(description="directory for summary.json, results.md, results.png")
    labels: list[Literal["shape", "colour"]] = Field(default_factory=lambda: ["shape", "colour"])
    per_class: int = Field(40, ge=2)


@flow(name="evaluate-encoders", log_prints=True)
def evaluate_encoders_flow(request: EvaluateRequest) -> dict[str, Any]:
    """Linear probe, kNN and few-shot of every run plus the untrained architecture."""
    return evaluate_encoders(request.runs, request.out, list(request.labels), request.per_class)
