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
from stablerep.evaluation.suite import evaluate_encoder, load_encoder, probe_split

METRICS = ("linear_probe", "knn", "few_shot_5way_5shot")
PROBE_LABELS = ("shape", "colour")


def compare_runs(runs: dict[str, str], *, labels: tuple[str, ...] = PROBE_LABELS, per_class: int = 40,
                 random_init: bool = True, l2_values: int = 12, few_shot_episodes: int = 100,
                 progress=None) -> dict[str, Any]:
    """Score each run directory in ``runs`` (name -> run dir) on every probe label.

    Returns ``{"linear_probe": {name: acc}, "knn": {...}, "few_shot_5way_5shot": {...},
    "by_label": {label: {name: metrics}}, "probe_set": {...}}``; accuracies are in [0, 1] and the
    top-level ones are means over ``labels``. ``random_init`` adds the first run's architecture,
    untrained, as ``random_init``. ``progress`` is called with a message after each encoder.
    """
    if not runs:
        raise ValueError("nothing to compare: give at least one training run")
    bad = [label for label in labels if label not in PROBE_LABELS]
    if bad:
        raise ValueError(f"unknown probe label(s) {bad}: choose from {list(PROBE_LABELS)}")
    grid = list(np.logspace(-6, 5, l2_values))
    encoders = {name: load_encoder(run_dir) for name, run_dir in runs.items()}
    if random_init:
        encoders["random_init"] = load_encoder(next(iter(runs.values())), random_init=True)
    by_label: dict[str, dict[str, Any]] = {}
    for label in labels:
        data_by_size: dict[int, dict[str, Any]] = {}
        by_label[label] = {}
        for name, (model, cfg) in encoders.items():
            size = cfg.data.image_size
            data = data_by_size.setdefault(size, probe_split(per_class, size, label))
            by_label[label][name] = evaluate_encoder(model, data, size, l2_grid=grid,
                                                     few_shot_episodes=few_shot_episodes)
            if progress:
                progress(f"{label}: {name}")
    summary: dict[str, Any] = {metric: {name: float(np.mean([by_label[label][name][metric] for label in labels]))
                                        for name in encoders} for metric in METRICS}
    summary["by_label"] = by_label
    summary["probe_set"] = {"labels": list(labels), "per_class": per_class,
                            "chance": {label: 1 / len(_classes(label)) for label in labels}}
    return summary


def _classes(label: str) -> tuple[str, ...]:
    from stablerep.synthesis.procedural import COLOURS, SHAPES

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
    from stablerep.plots import figure_png, pyplot

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
