"""Evaluation tasks: score encoders on labelled datasets (or compare training runs on the
procedural probe set, for the demo pipeline) and show the tables and plots in the UI."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from stablerep import storage
from stablerep.demo import DemoConfig, compare_methods
from stablerep.evaluation.compare import METRICS, markdown_table, write_report
from stablerep.evaluation.report import markdown_report, metrics_present
from stablerep.evaluation.suite import EvalSuite, run_evaluation
from tasks.artifacts import artifact_key, png_markdown
from tasks.retry import IO_RETRIES


@task(name="evaluate-encoders", **IO_RETRIES)
def evaluate_suite(suite: EvalSuite, out: str) -> dict[str, Any]:
    """Every encoder on every dataset (linear probe, kNN, few-shot, zero-shot); OUT/summary.json,
    results.md, results.png, and the same tables and plot as artifacts."""
    summary = run_evaluation(suite, out, progress=False)
    metrics = metrics_present(summary)
    rows = [{"dataset": d, "encoder": e, **{m: None if r.get(m) is None else round(r[m], 4) for m in metrics}}
            for d, by_enc in summary["results"].items() for e, r in by_enc.items()]
    create_table_artifact(key=artifact_key("evaluation"), table=rows,
                          description=f"Accuracies in [0, 1] ({', '.join(metrics)})")
    create_markdown_artifact(key=artifact_key("evaluation-report"), description=f"Evaluation: {out}",
                             markdown=markdown_report(summary) + "\n" + png_markdown(
                                 "Accuracies", storage.read_bytes(summary["report"]["plot"])))
    return {"report": summary["report"], "cache": summary["cache"], "results": summary["results"]}


@task(name="compare-encoders", **IO_RETRIES)
def compare_encoders(out: str, demo: DemoConfig, runs: dict[str, dict[int, str]],
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The demo's comparison (every method over its seeds, plus random init, on the procedural
    probe set, through the same evaluation suite), written to OUT and shown in the UI."""
    summary = compare_methods(out, demo, runs)
    summary.update(extra or {})
    summary["runs"] = runs
    summary["report"] = write_report(out, summary)
    create_table_artifact(key=artifact_key("evaluation"), description="Probe accuracies: mean and 95% interval "
                          f"over seeds {demo.seeds} (mean over {list(demo.probe_labels)})",
                          table=[{"encoder": name, **{m: round(summary[m][name], 4) for m in METRICS},
                                  **{f"{m}_ci95": summary["ci95"][m][name] for m in METRICS}}
                                 for name in summary["linear_probe"]])
    create_markdown_artifact(key=artifact_key("evaluation-report"), description=f"Comparison: {out}",
                             markdown=markdown_table(summary) + "\n" + png_markdown(
                                 "Probe accuracies", storage.read_bytes(summary["report"]["plot"])))
    return {key: summary[key] for key in ("linear_probe", "knn", "few_shot_5way_5shot", "ci95", "report")}
