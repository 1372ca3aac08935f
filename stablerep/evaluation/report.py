"""The evaluation report: results.md (one table per protocol, datasets as rows and encoders as
columns, like the paper's tables), results.png (one panel per protocol) and summary.json (last)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from stablerep import storage
from stablerep.plots import figure_png, pyplot

TITLES = {"linear_probe": "Linear probe (L-BFGS, L2 on validation)",
          "linear_probe_sgd": "Linear probe (SGD, learning-rate grid)",
          "knn": "kNN (k = 20, cosine, temperature-weighted)",
          "few_shot_5way_1shot": "5-way 1-shot (nearest centroid)",
          "few_shot_5way_5shot": "5-way 5-shot (nearest centroid)",
          "zero_shot": "Zero-shot (class-name prompts)"}


def metrics_present(summary: dict[str, Any]) -> list[str]:
    """The protocols with at least one value, in report order."""
    seen = {k for by_enc in summary["results"].values() for r in by_enc.values() for k, v in r.items()
            if v is not None and k in TITLES}
    extra = sorted(k for k in seen if k not in TITLES)
    return [k for k in TITLES if k in seen] + extra


def _cell(result: dict[str, Any], metric: str) -> str:
    value = result.get(metric)
    if value is None:
        return "n/a" if metric in result.get("not_applicable", {}) else "–"
    ci = result.get(f"{metric}_ci95")
    return f"{100 * value:.1f} ± {100 * ci:.1f}" if ci is not None else f"{100 * value:.1f}"


def markdown_report(summary: dict[str, Any]) -> str:
    results, datasets = summary["results"], summary["datasets"]
    encoders = list(summary["encoders"])
    lines = ["# Evaluation", "", "Accuracies in %; few-shot as mean ± 95% interval over episodes. "
             "Mean per-class accuracy where a dataset's metric says so.", ""]
    for metric in metrics_present(summary):
        lines += [f"## {TITLES.get(metric, metric)}", "", "| dataset | " + " | ".join(encoders) + " |",
                  "|---|" + "---|" * len(encoders)]
        for dname, by_enc in results.items():
            lines.append(f"| {dname} | " + " | ".join(_cell(by_enc[e], metric) for e in encoders) + " |")
        lines.append("")
    lines += ["## Datasets", "", "| dataset | spec | classes | train | test | metric | notes |", "|---|---|---|---|---|---|---|"]
    for dname, d in datasets.items():
        lines.append(f"| {dname} | `{d['spec']}` | {d['classes']} | {d['train_images']} | {d['test_images']} | "
                     f"{d['metric']} | {'; '.join(d['notes'])} |")
    lines += ["", "## Encoders", "", "| encoder | spec | kind | image size |", "|---|---|---|---|"]
    for name, e in summary["encoders"].items():
        lines.append(f"| {name} | `{e['spec']}` | {e.get('kind', '')} | {e['transform']['size']} |")
    na = sorted({f"{metric} on {d} for {e}: {reason}" for d, by_enc in results.items() for e, r in by_enc.items()
                 for metric, reason in r.get("not_applicable", {}).items()})
    if na:
        lines += ["", "Not applicable:", *[f"- {line}" for line in na]]
    return "\n".join(lines) + "\n"


def plot_report(summary: dict[str, Any]) -> bytes:
    """One panel per protocol: datasets on the x axis, a bar per encoder."""
    plt = pyplot()
    metrics = metrics_present(summary) or ["linear_probe"]
    datasets, encoders = list(summary["results"]), list(summary["encoders"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.0, 1.2 + 1.1 * len(datasets) * max(1, len(encoders)) / 2)
                                                        * len(metrics), 3.6), dpi=100, squeeze=False)
    width = 0.8 / max(1, len(encoders))
    x = np.arange(len(datasets))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, enc in enumerate(encoders):
            values = [summary["results"][d][enc].get(metric) for d in datasets]
            heights = [v if v is not None else 0.0 for v in values]
            errs = [summary["results"][d][enc].get(f"{metric}_ci95") or 0.0 for d in datasets]
            ax.bar(x + (i - (len(encoders) - 1) / 2) * width, heights, width, yerr=errs if any(errs) else None,
                   label=enc, capsize=2)
        ax.set_xticks(x, datasets, rotation=20 if len(datasets) > 3 else 0)
        ax.set_ylim(0, 1)
        ax.set_title(TITLES.get(metric, metric).split(" (")[0], fontsize=9)
        ax.set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def write_report(out: str, summary: dict[str, Any]) -> dict[str, str]:
    """Write OUT/results.md, OUT/results.png and OUT/summary.json (last: the run is done)."""
    return write_report_files(out, summary, markdown_report(summary), plot_report(summary))


def write_report_files(out: str, summary: dict[str, Any], table: str, plot: bytes) -> dict[str, str]:
    """OUT/results.md (``table``), OUT/results.png (``plot``), then OUT/summary.json with their
    URLs (last: its presence says the report is complete); returns the URLs."""
    urls = {"summary": storage.join(out, "summary.json"), "table": storage.join(out, "results.md"),
            "plot": storage.join(out, "results.png")}
    storage.write_bytes(urls["table"], table.encode())
    storage.write_bytes(urls["plot"], plot)
    storage.write_bytes(urls["summary"], json.dumps({**summary, "report": urls}, indent=2).encode())
    return urls
