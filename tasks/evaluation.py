"""Evaluation tasks: score encoders on labelled datasets (or compare an experiment's training runs,
on the procedural probe set or on its evaluation suite) and show the tables and plots in the UI."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from stablerep import storage
from stablerep.evaluation.report import markdown_report, metrics_present
from stablerep.experiments.compare import markdown_table, write_comparison_report
from stablerep.experiments.plan import ExperimentPlan, evaluate_runs, finish_summary
from stablerep.stages import EvaluationJob, evaluate
from tasks.artifacts import artifact_key, png_markdown
from tasks.retry import IO_RETRIES


@task(name="evaluate-encoders", **IO_RETRIES)
def evaluate_suite(job: EvaluationJob) -> dict[str, Any]:
    """Every encoder on every dataset (linear probe, kNN, few-shot, zero-shot) through the
    evaluation stage; OUT/summary.json, results.md, results.png, and the same tables and plot as
    artifacts."""
    summary = evaluate(job.model_copy(update={"progress": False}))
    metrics = metrics_present(summary)
    rows = [{"dataset": d, "encoder": e, **{m: None if r.get(m) is None else round(r[m], 4) for m in metrics}}
            for d, by_enc in summary["results"].items() for e, r in by_enc.items()]
    create_table_artifact(key=artifact_key("evaluation"), table=rows,
                          description=f"Accuracies in [0, 1] ({', '.join(metrics)})")
    create_markdown_artifact(key=artifact_key("evaluation-report"), description=f"Evaluation: {job.out}",
                             markdown=markdown_report(summary) + "\n" + png_markdown(
                                 "Accuracies", storage.read_bytes(summary["report"]["plot"])))
    return {"report": summary["report"], "cache": summary["cache"], "results": summary["results"]}


@task(name="compare-encoders", **IO_RETRIES)
def compare_encoders(plan: ExperimentPlan, runs: dict[str, dict[int, str]],
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The experiment's comparison (every method over its seeds, plus each seed's random init, on
    the procedural probe set or the plan's evaluation suite, through the evaluation suite's path),
    written to the plan's OUT and shown in the UI."""
    summary = finish_summary(plan, evaluate_runs(plan, runs), runs)
    summary.update(extra or {})
    summary["report"] = write_comparison_report(plan.out, summary)
    metrics = summary["metrics"]
    seeds = sorted({s for by_seed in runs.values() for s in by_seed})
    create_table_artifact(key=artifact_key("evaluation"), description="Accuracies: mean and 95% interval over "
                          f"seeds {seeds} ({plan.evaluation.kind} evaluation)",
                          table=[{"encoder": name, **{m: round(summary[m][name], 4) for m in metrics},
                                  **{f"{m}_ci95": summary["ci95"][m][name] for m in metrics}}
                                 for name in summary[metrics[0]]])
    create_markdown_artifact(key=artifact_key("evaluation-report"), description=f"Comparison: {plan.out}",
                             markdown=markdown_table(summary) + "\n" + png_markdown(
                                 "Accuracies", storage.read_bytes(summary["report"]["plot"])))
    return {key: summary[key] for key in (*metrics, "metrics", "ci95", "report")}
