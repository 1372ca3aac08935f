"""Evaluation task: score encoders on the probe set and show the comparison in the UI."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.artifacts import artifact_key, png_markdown
from tasks.retry import IO_RETRIES


@task(name="evaluate-encoders", **IO_RETRIES)
def evaluate_encoders(runs: dict[str, str], out: str, labels: list[str], per_class: int = 40,
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Linear probe, kNN and few-shot of each run (plus random init); OUT/summary.json, table, plot."""
    from stablerep import storage
    from stablerep.evaluation.compare import METRICS, compare_runs, markdown_table, write_report

    summary = compare_runs(runs, labels=tuple(labels), per_class=per_class)
    summary.update(extra or {})
    summary["runs"] = runs
    summary["report"] = write_report(out, summary)
    create_table_artifact(key=artifact_key("evaluation"), description=f"Probe accuracies (mean over {labels})",
                          table=[{"encoder": name, **{m: round(summary[m][name], 4) for m in METRICS}}
                                 for name in summary["linear_probe"]])
    create_markdown_artifact(key=artifact_key("evaluation-report"), description=f"Comparison: {out}",
                             markdown=markdown_table(summary) + "\n" + png_markdown(
                                 "Probe accuracies", storage.read_bytes(summary["report"]["plot"])))
    return {key: summary[key] for key in ("linear_probe", "knn", "few_shot_5way_5shot", "report")}
