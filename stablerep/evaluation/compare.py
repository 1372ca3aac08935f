"""Compare training methods across seeds on the procedural probe set: means, 95% intervals, and
which differences the intervals support. One table, one plot, one summary.json.

Every run of every method (and, per seed, the untrained architecture: the floor) is scored
through the evaluation suite on each probe label (the object's shape, its colour). A method's
figure for a seed is the mean over the labels; its headline is the mean over seeds with a
Student-t 95% interval. A difference between two methods is called supported when the Welch 95%
interval of the difference excludes zero.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np

from stablerep.evaluation.report import write_report_files
from stablerep.evaluation.stats import difference_interval, mean_interval
from stablerep.evaluation.suite import EvalSuite, run_evaluation
from stablerep.plots import figure_png, pyplot
from stablerep.world import ATTRIBUTES

METRICS = ("linear_probe", "knn", "few_shot_5way_5shot")
PROBE_LABELS = ("shape", "colour")
METRIC_NAMES = {"linear_probe": "linear probe", "knn": "kNN", "few_shot_5way_5shot": "5-way 5-shot"}
FLOOR = "random_init"
FEW_SHOT = 5  # shots per class in the few-shot metric (few_shot_5way_5shot)


def probe_suite(encoders: dict[str, str], labels: tuple[str, ...] = PROBE_LABELS, per_class: int = 40,
                test_per_class: int | None = None, l2_values: int = 12, few_shot_episodes: int = 100,
                cache: str | None = None, render_size: int = 128) -> EvalSuite:
    """Every encoder (name -> spec) on ``procedural:LABEL`` for each label (rendered at ``render_size``)."""
    bad = [label for label in labels if label not in PROBE_LABELS]
    if bad:
        raise ValueError(f"unknown probe label(s) {bad}: choose from {list(PROBE_LABELS)}")
    if test_per_class is not None and test_per_class < FEW_SHOT + 1:
        raise ValueError(f"test_per_class={test_per_class}: {FEW_SHOT}-shot episodes need at least {FEW_SHOT + 1} "
                         "test images per class (the shots and one query)")
    # queries per class: five, or what the test split holds beyond the shots
    queries = 5 if test_per_class is None else min(5, test_per_class - FEW_SHOT)
    datasets = {label: {"spec": f"procedural:{label}", "per_class": per_class, "test_per_class": test_per_class,
                            "size": render_size} for label in labels}
    return EvalSuite.model_validate({
        "encoders": encoders, "datasets": datasets, "features": {"cache": cache, "device": "cpu"},
        "protocols": {"linear_probe": {"l2_values": l2_values},
                      "few_shot": {"shots": [FEW_SHOT], "queries": queries, "episodes": few_shot_episodes},
                      "zero_shot": {"enabled": False}}})


def _encoder_name(method: str, seed: int) -> str:
    return f"{method}@{seed}"


def compare_runs(runs: dict[str, dict[int, str]], *, labels: tuple[str, ...] = PROBE_LABELS, per_class: int = 40,
                 test_per_class: int | None = None, random_init: bool = True, l2_values: int = 12,
                 few_shot_episodes: int = 100, cache: str | None = None, render_size: int = 128,
                 progress=None) -> dict[str, Any]:
    """Score ``runs`` (method -> seed -> run directory) on every probe label.

    Returns ``{metric: {method: mean over seeds}}`` for each metric in METRICS (each seed's figure
    is the mean over ``labels``), ``ci95`` (metric -> method -> 95% half-width; null with one
    seed), ``seeds`` (method -> seeds), ``per_seed`` (metric -> method -> values), ``by_label``
    (label -> metric -> method -> {mean, ci95, per_seed}), ``differences`` (every pair of methods on
    every metric, with its interval and whether it excludes zero), ``probe_set`` and ``evaluation``
    (the suite's datasets, encoders, settings, timings). With ``random_init`` each seed's
    untrained architecture (the first method's run at that seed) is scored as ``random_init``.
    """
    if not runs or not any(runs.values()):
        raise ValueError("nothing to compare: give at least one training run")
    encoders = {_encoder_name(m, s): d for m, by_seed in runs.items() for s, d in by_seed.items()}
    seeds_of = {m: sorted(by_seed) for m, by_seed in runs.items()}
    if random_init:
        first = next(iter(runs.values()))
        seeds_of[FLOOR] = sorted(first)
        encoders.update({_encoder_name(FLOOR, s): f"random:{d}" for s, d in first.items()})
    suite = probe_suite(encoders, labels, per_class, test_per_class, l2_values, few_shot_episodes, cache,
                        render_size)
    evaluation = run_evaluation(suite, out=None, progress=False, on_step=progress)
    results = evaluation["results"]
    for label, by_encoder in results.items():
        for name, scores in by_encoder.items():
            missing = {m: scores["not_applicable"].get(m, "not computed") for m in METRICS if scores.get(m) is None}
            if missing:
                raise ValueError(f"procedural:{label}, {name}: no figure for {missing}")

    def values(metric: str, method: str, label_set: tuple[str, ...]) -> list[float]:
        return [float(np.mean([results[label][_encoder_name(method, s)][metric] for label in label_set]))
                for s in seeds_of[method]]

    summary: dict[str, Any] = {"seeds": seeds_of, "ci95": {}, "per_seed": {}, "by_label": {}}
    for metric in METRICS:
        per = {m: values(metric, m, labels) for m in seeds_of}
        summary["per_seed"][metric] = per
        summary[metric] = {m: mean_interval(v).mean for m, v in per.items()}
        summary["ci95"][metric] = {m: _finite(mean_interval(v).half_width) for m, v in per.items()}
    for label in labels:
        summary["by_label"][label] = {metric: {m: _interval_dict(values(metric, m, (label,))) for m in seeds_of}
                                      for metric in METRICS}
    summary["differences"] = differences(summary["per_seed"])
    test_images = evaluation["datasets"][labels[0]]["test_images"]
    summary["probe_set"] = {"labels": list(labels), "per_class": per_class,
                            "test_per_class": test_images // len(ATTRIBUTES[labels[0]]),
                            "chance": {label: 1 / len(ATTRIBUTES[label]) for label in labels}}
    summary["evaluation"] = {k: evaluation[k] for k in ("datasets", "encoders", "settings", "timings_s", "cache")}
    return summary


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x


def _interval_dict(vals: list[float]) -> dict[str, Any]:
    iv = mean_interval(vals)
    return {"mean": iv.mean, "ci95": _finite(iv.half_width), "per_seed": vals}


def differences(per_seed: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Every pair of methods on every metric: mean difference, Welch 95% interval, supported?"""
    out = []
    for metric, by_method in per_seed.items():
        for a, b in combinations(list(by_method), 2):
            iv = difference_interval(by_method[a], by_method[b])
            out.append({"metric": metric, "a": a, "b": b, "difference": iv.mean, "ci95": _finite(iv.half_width),
                        "supported": bool(math.isfinite(iv.half_width) and abs(iv.mean) > iv.half_width)})
    return out


def findings(summary: dict[str, Any]) -> list[str]:
    """The differences in words: each one the intervals support, then those they do not."""
    supported, unsupported, single = [], [], []
    for d in summary["differences"]:
        if FLOOR in (d["a"], d["b"]) and d["metric"] != "linear_probe":
            continue  # against the floor, the linear probe says enough
        name = METRIC_NAMES[d["metric"]]
        ahead, behind = (d["a"], d["b"]) if d["difference"] >= 0 else (d["b"], d["a"])
        gap = abs(d["difference"])
        if d["ci95"] is None:
            single.append(f"{name} {ahead} vs {behind}")
        elif d["supported"]:
            supported.append(f"{name}: {ahead} is ahead of {behind} by {gap:.3f} (95% interval of the difference "
                             f"{gap - d['ci95']:.3f} to {gap + d['ci95']:.3f}): supported by the intervals.")
        else:
            unsupported.append(f"{name} {ahead} vs {behind} ({gap:.3f} ± {d['ci95']:.3f})")
    lines = supported
    if unsupported:
        lines.append("Within the seeds' noise (95% interval of the difference includes zero), so not claimed: "
                     + "; ".join(unsupported) + ".")
    if single:
        lines.append("One seed only, no interval, no claim: " + "; ".join(single) + ".")
    return lines


def _fmt(mean: float, ci: float | None) -> str:
    return f"{mean:.3f} ± {ci:.3f}" if ci is not None else f"{mean:.3f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """Methods as rows; headline metrics (mean ± 95% interval over seeds), then linear probe per label."""
    labels = summary["probe_set"]["labels"]
    head = ["encoder", "seeds", "linear probe", "kNN", "5-way 5-shot"] + [f"probe: {label}" for label in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in summary["linear_probe"]:
        cells = [name, str(len(summary["seeds"][name]))]
        cells += [_fmt(summary[m][name], summary["ci95"][m][name]) for m in METRICS]
        cells += [_fmt(summary["by_label"][label]["linear_probe"][name]["mean"],
                       summary["by_label"][label]["linear_probe"][name]["ci95"]) for label in labels]
        lines.append("| " + " | ".join(cells) + " |")
    chance = ", ".join(f"{label} {value:.3f}" for label, value in summary["probe_set"]["chance"].items())
    text = "\n".join(lines) + (f"\n\nMean ± 95% interval over training seeds (Student t). Chance: {chance}. "
                               "Headline columns average the probe labels.\n")
    if "budget" in summary:
        text += "\n| method | images per step | captions per step | steps | augmentation |\n|---|---|---|---|---|\n"
        for name, b in summary["budget"].items():
            aug = b["augmentation"]
            text += (f"| {name} | {b['images_per_step']} | {b['captions_per_step']} | {b['steps']} | crop "
                     f"{aug['crop_scale'][0]}-{aug['crop_scale'][1]}, jitter p {aug['color_jitter_p']}, gray p "
                     f"{aug['grayscale_p']}, blur {aug['blur_sigma'][0]}-{aug['blur_sigma'][1]} p {aug['blur_p']} |\n")
    words = findings(summary)
    if words:
        text += "\n" + "\n".join(f"- {w}" for w in words) + "\n"
    return text


def plot_summary(summary: dict[str, Any]) -> bytes:
    """Grouped bars with 95% intervals: one group per metric (and per-label linear probe)."""
    plt = pyplot()
    names = list(summary["linear_probe"])
    labels = summary["probe_set"]["labels"]
    groups = [METRIC_NAMES[m] for m in METRICS] + [f"probe: {label}" for label in labels]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    width = 0.8 / len(names)
    x = np.arange(len(groups))
    for i, name in enumerate(names):
        means = [summary[m][name] for m in METRICS] + [summary["by_label"][lab]["linear_probe"][name]["mean"]
                                                       for lab in labels]
        cis = [summary["ci95"][m][name] for m in METRICS] + [summary["by_label"][lab]["linear_probe"][name]["ci95"]
                                                             for lab in labels]
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, means, width, label=name,
                      yerr=[c or 0.0 for c in cis], capsize=2)
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=2)
    for j, label in enumerate(labels):
        chance = summary["probe_set"]["chance"][label]
        ax.hlines(chance, len(METRICS) + j - 0.45, len(METRICS) + j + 0.45, colors="gray", linestyles=":")
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (mean ± 95% interval over seeds)")
    ax.set_title("Procedural probe set: frozen features")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def write_report(out: str, summary: dict[str, Any]) -> dict[str, str]:
    """Write OUT/results.md, OUT/results.png and OUT/summary.json (last); returns their URLs."""
    return write_report_files(out, summary, markdown_table(summary), plot_summary(summary))
