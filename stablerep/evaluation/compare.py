"""Compare encoders on the procedural probe set: one table, one plot, one summary.json.

Every encoder (and the untrained architecture, the floor) is scored by linear probe, kNN and
few-shot on each probe label (the object's shape, its colour). The headline figure of a method is
the mean over the labels; the per-label figures stay in the summary.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from stablerep import storage
from stablerep.evaluation.suite import EvalSuite, run_evaluation
from stablerep.plots import figure_png, pyplot
from stablerep.world import COLOURS, SHAPES

METRICS = ("linear_probe", "knn", "few_shot_5way_5shot")
PROBE_LABELS = ("shape", "colour")


def probe_suite(runs: dict[str, str], labels: tuple[str, ...] = PROBE_LABELS, per_class: int = 40,
                test_per_class: int | None = None, random_init: bool = True, l2_values: int = 12,
                few_shot_episodes: int = 100, cache: str | None = None) -> EvalSuite:
    """The comparison as an evaluation suite: every run (plus, with ``random_init``, the first
    run's architecture untrained) on ``procedural:LABEL`` for each label."""
    if not runs:
        raise ValueError("nothing to compare: give at least one training run")
    bad = [label for label in labels if label not in PROBE_LABELS]
    if bad:
        raise ValueError(f"unknown probe label(s) {bad}: choose from {list(PROBE_LABELS)}")
    encoders = dict(runs)
    if random_init:
        encoders["random_init"] = "random:" + next(iter(runs.values()))
    datasets = {label: {"spec": f"procedural:{label}", "per_class": per_class, "test_per_class": test_per_class}
                for label in labels}
    return EvalSuite.model_validate({
        "encoders": encoders, "datasets": datasets, "features": {"cache": cache, "device": "cpu"},
        "protocols": {"linear_probe": {"l2_values": l2_values}, "few_shot": {"shots": [5], "queries": 5, "episodes": few_shot_episodes},
                      "zero_shot": {"enabled": False}}})


def compare_runs(runs: dict[str, str], *, labels: tuple[str, ...] = PROBE_LABELS, per_class: int = 40,
                 test_per_class: int | None = None, random_init: bool = True, l2_values: int = 12,
                 few_shot_episodes: int = 100, cache: str | None = None, progress=None) -> dict[str, Any]:
    """Score each run directory in ``runs`` (name -> run dir) on every probe label, through the
    evaluation suite (:func:`stablerep.evaluation.suite.run_evaluation`).

    Returns ``{"linear_probe": {name: acc}, "knn": {...}, "few_shot_5way_5shot": {...},
    "by_label": {label: {name: metrics}}, "probe_set": {...}, "evaluation": <the suite's summary>}``;
    accuracies are in [0, 1] and the top-level ones are means over ``labels``. ``progress`` is called
    with a message after each encoder.
    """
    suite = probe_suite(runs, labels, per_class, test_per_class, random_init, l2_values, few_shot_episodes, cache)
    evaluation = run_evaluation(suite, out=None, progress=False, on_step=progress)
    by_label = evaluation["results"]
    names = list(suite.encoders)
    summary: dict[str, Any] = {metric: {name: float(np.mean([by_label[label][name][metric] for label in labels]))
                                        for name in names} for metric in METRICS}
    summary["by_label"] = by_label
    summary["probe_set"] = {"labels": list(labels), "per_class": per_class,
                            "test_per_class": evaluation["datasets"][labels[0]]["test_images"]
                            // len(_classes(labels[0])),
                            "chance": {label: 1 / len(_classes(label)) for label in labels}}
    summary["evaluation"] = {k: evaluation[k] for k in ("datasets", "encoders", "settings", "timings_s", "cache")}
    return summary


def _classes(label: str) -> tuple[str, ...]:
    return SHAPES if label == "shape" else tuple(COLOURS)


def markdown_table(summary: dict[str, Any]) -> str:
    """Methods as rows; the headline metrics then linear probe per label."""
    labels = summary["probe_set"]["labels"]
    head = ["encoder", "linear probe", "kNN", "5-way 5-shot"] + [f"probe: {label}" for label in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in summary["linear_probe"]:
        cells = [name] + [f"{summary[m][name]:.3f}" for m in METRICS]
        cells += [f"{summary['by_label'][label][name]['linear_probe']:.3f}" for label in labels]
        lines.append("| " + " | ".join(cells) + " |")
    chance = ", ".join(f"{label} {value:.3f}" for label, value in summary["probe_set"]["chance"].items())
    return "\n".join(lines) + f"\n\nChance: {chance}. Headline columns are means over the probe labels.\n"


def plot_summary(summary: dict[str, Any]) -> bytes:
    """A grouped bar chart (PNG bytes): one group per metric, one bar per encoder."""
    plt = pyplot()
    names = list(summary["linear_probe"])
    labels = summary["probe_set"]["labels"]
    groups = list(METRICS) + [f"probe: {label}" for label in labels]
    values = [[summary[m][n] for m in METRICS] + [summary["by_label"][label][n]["linear_probe"] for label in labels]
              for n in names]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    width = 0.8 / len(names)
    x = np.arange(len(groups))
    for i, (name, row) in enumerate(zip(names, values, strict=True)):
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, row, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("Procedural probe set: frozen features")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def write_report(out: str, summary: dict[str, Any]) -> dict[str, str]:
    """Write OUT/summary.json, OUT/results.md and OUT/results.png; returns their URLs."""
    urls = {"summary": storage.join(out, "summary.json"), "table": storage.join(out, "results.md"),
            "plot": storage.join(out, "results.png")}
    storage.write_bytes(urls["table"], markdown_table(summary).encode())
    storage.write_bytes(urls["plot"], plot_summary(summary))
    storage.write_bytes(urls["summary"], json.dumps(summary, indent=2).encode())  # last: the run is done
    return urls
