"""Compare training methods across seeds: means, 95% intervals, and which differences the
intervals support. One table, one plot, one summary.json.

Every run of every method (and, per seed, the untrained architecture: the floor) is scored
through the evaluation suite, on each probe label of the procedural probe set (the object's
shape, its colour: :func:`compare_runs`) or on labelled datasets (:func:`compare_on_suite`). A
method's figure for a seed is the mean over the labels (datasets); its headline is the mean over
seeds with a Student-t 95% interval. A difference between two methods is called supported when
the Welch 95% interval of the difference excludes zero.
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


def comparison_encoders(runs: dict[str, dict[int, str]], random_init: bool = True
                        ) -> tuple[dict[str, str], dict[str, list[int]]]:
    """(encoder name -> spec, method -> seeds) for every run; with ``random_init`` each seed's
    untrained architecture (the first method's run at that seed) as ``random_init``."""
    if not runs or not any(runs.values()):
        raise ValueError("nothing to compare: give at least one training run")
    encoders = {_encoder_name(m, s): d for m, by_seed in runs.items() for s, d in by_seed.items()}
    seeds_of = {m: sorted(by_seed) for m, by_seed in runs.items()}
    if random_init:
        first = next(iter(runs.values()))
        seeds_of[FLOOR] = sorted(first)
        encoders.update({_encoder_name(FLOOR, s): f"random:{d}" for s, d in first.items()})
    return encoders, seeds_of


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
    encoders, seeds_of = comparison_encoders(runs, random_init)
    suite = probe_suite(encoders, labels, per_class, test_per_class, l2_values, few_shot_episodes, cache,
                        render_size)
    evaluation = run_evaluation(suite, out=None, progress=False, on_step=progress)
    for label, by_encoder in evaluation["results"].items():
        for name, scores in by_encoder.items():
            missing = {m: scores["not_applicable"].get(m, "not computed") for m in METRICS if scores.get(m) is None}
            if missing:
                raise ValueError(f"procedural:{label}, {name}: no figure for {missing}")
    summary = summarise(evaluation, seeds_of, list(labels))
    summary["by_label"] = summary.pop("by_dataset")
    test_images = evaluation["datasets"][labels[0]]["test_images"]
    summary["probe_set"] = {"labels": list(labels), "per_class": per_class,
                            "test_per_class": test_images // len(ATTRIBUTES[labels[0]]),
                            "chance": {label: 1 / len(ATTRIBUTES[label]) for label in labels}}
    return summary


def comparison_protocols(l2_values: int = 12, few_shot_episodes: int = 100) -> dict[str, Any]:
    """The protocols of a comparison: linear probe, kNN and 5-way 5-shot (no zero-shot: the floor
    and the image-only methods have no text tower)."""
    return {"linear_probe": {"l2_values": l2_values},
            "few_shot": {"shots": [FEW_SHOT], "queries": 5, "episodes": few_shot_episodes},
            "zero_shot": {"enabled": False}}


def compare_on_suite(runs: dict[str, dict[int, str]], datasets: dict[str, Any], *,
                     protocols: dict[str, Any] | None = None, features: dict[str, Any] | None = None,
                     random_init: bool = True, seed: int = 0, progress=None) -> dict[str, Any]:
    """Score ``runs`` on labelled ``datasets`` (name -> ``KIND:...`` spec or its options), the
    evaluation suite's path (:func:`run_evaluation`, as `stablerep evaluate`). The summary has the
    keys of :func:`compare_runs` with ``by_dataset`` for ``by_label`` and ``suite`` for
    ``probe_set``; a headline metric averages the datasets that support it, and a protocol a
    dataset cannot support is listed under ``not_applicable`` (dataset -> metric -> reason)."""
    encoders, seeds_of = comparison_encoders(runs, random_init)
    suite = EvalSuite.model_validate({"encoders": encoders, "datasets": datasets, "seed": seed,
                                      "protocols": protocols or comparison_protocols(),
                                      "features": {"cache": None, **(features or {})}})
    evaluation = run_evaluation(suite, out=None, progress=False, on_step=progress)
    names = list(suite.datasets)
    summary = summarise(evaluation, seeds_of, names)
    described = evaluation["datasets"]
    summary["suite"] = {"datasets": names, "specs": {n: suite.datasets[n].spec for n in names},
                        "chance": {n: 1 / described[n]["classes"] for n in names}}
    return summary


def summarise(evaluation: dict[str, Any], seeds_of: dict[str, list[int]], datasets: list[str]) -> dict[str, Any]:
    """Means over seeds with 95% intervals of each metric (each seed's figure averages
    ``datasets``), per dataset too, and every pairwise difference. A metric is averaged over the
    datasets where every encoder has it; the others go under ``not_applicable``."""
    results = evaluation["results"]
    where: dict[str, list[str]] = {}
    not_applicable: dict[str, dict[str, str]] = {}
    for metric in METRICS:
        where[metric] = []
        for d in datasets:
            reasons = [s["not_applicable"].get(metric, "not computed") for s in results[d].values()
                       if s.get(metric) is None]
            if reasons:
                not_applicable.setdefault(d, {})[metric] = reasons[0]
            else:
                where[metric].append(d)
    metrics = [m for m in METRICS if where[m]]
    if not metrics:
        raise ValueError(f"no protocol gave a figure on {datasets}: {not_applicable}")

    def values(metric: str, method: str, label_set: list[str]) -> list[float]:
        return [float(np.mean([results[d][_encoder_name(method, s)][metric] for d in label_set]))
                for s in seeds_of[method]]

    summary: dict[str, Any] = {"seeds": seeds_of, "ci95": {}, "per_seed": {}, "by_dataset": {}}
    for metric in metrics:
        per = {m: values(metric, m, where[metric]) for m in seeds_of}
        summary["per_seed"][metric] = per
        summary[metric] = {m: mean_interval(v).mean for m, v in per.items()}
        summary["ci95"][metric] = {m: _finite(mean_interval(v).half_width) for m, v in per.items()}
    for d in datasets:
        summary["by_dataset"][d] = {metric: {m: _interval_dict(values(metric, m, [d])) for m in seeds_of}
                                    for metric in metrics if d in where[metric]}
    summary["metrics"] = metrics
    summary["differences"] = differences(summary["per_seed"])
    if not_applicable:
        summary["not_applicable"] = not_applicable
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


def _parts(summary: dict[str, Any]) -> dict[str, Any]:
    """What the table and plot show of a probe comparison or a suite comparison: the metrics, the
    per-dataset figures (the headline metric on each probe label or suite dataset) and chance."""
    metrics = summary.get("metrics", list(METRICS))
    if "probe_set" in summary:
        probe = summary["probe_set"]
        return {"metrics": metrics, "by": summary["by_label"], "names": probe["labels"], "chance": probe["chance"],
                "column": "probe: {}".format, "what": "the probe labels",
                "title": "Procedural probe set: frozen features"}
    suite = summary["suite"]
    head = METRIC_NAMES[metrics[0]]
    return {"metrics": metrics, "by": summary["by_dataset"], "names": suite["datasets"], "chance": suite["chance"],
            "column": lambda d: f"{d}: {head}", "what": f"the datasets ({', '.join(suite['datasets'])})",
            "title": f"Evaluation suite ({', '.join(suite['datasets'])}): frozen features"}


def _per_dataset(parts: dict[str, Any], name: str, method: str) -> tuple[float | None, float | None]:
    """(mean, ci95) of the headline metric for ``method`` on dataset ``name`` (None: not applicable)."""
    entry = parts["by"][name].get(parts["metrics"][0], {}).get(method)
    return (entry["mean"], entry["ci95"]) if entry else (None, None)


def protocol_line(summary: dict[str, Any]) -> str:
    """The protocol settings the comparison scored with, read from its evaluation settings, and
    where they differ from the documented protocol (45 L2 values, kNN k 20 and T 0.07, 600
    few-shot episodes), saying so."""
    protocols = summary.get("evaluation", {}).get("settings", {}).get("protocols")
    if not protocols:
        return ""
    probe, knn, few = protocols["linear_probe"], protocols["knn"], protocols["few_shot"]
    documented = {"L2 values": (probe["l2_values"], 45), "kNN k": (knn["k"], 20),
                  "kNN temperature": (knn["temperature"], 0.07), "few-shot episodes": (few["episodes"], 600)}
    changed = [f"{name} {ours} (documented: {doc})" for name, (ours, doc) in documented.items() if ours != doc]
    text = (f"\nProtocols: linear probe by L-BFGS over {probe['l2_values']} L2 values on a validation split, "
            f"kNN k {knn['k']} at temperature {knn['temperature']}, {few['ways']}-way few-shot over "
            f"{few['episodes']} episodes.")
    text += (" Reduced from the documented protocol: " + "; ".join(changed) + ".\n") if changed else \
        " The documented protocol.\n"
    return text


def markdown_table(summary: dict[str, Any]) -> str:
    """Methods as rows; headline metrics (mean ± 95% interval over seeds), then the first metric
    (the linear probe) per probe label or per dataset; the budget; what the intervals support."""
    parts = _parts(summary)
    metrics, names = parts["metrics"], parts["names"]
    if "suite" in summary and len(names) == 1:
        names = []  # the headline columns are that dataset's figures
    head = ["encoder", "seeds"] + [METRIC_NAMES[m] for m in metrics] + [parts["column"](n) for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in summary[metrics[0]]:
        cells = [method, str(len(summary["seeds"][method]))]
        cells += [_fmt(summary[m][method], summary["ci95"][m][method]) for m in metrics]
        for name in names:
            mean, ci = _per_dataset(parts, name, method)
            cells.append("n/a" if mean is None else _fmt(mean, ci))
        lines.append("| " + " | ".join(cells) + " |")
    chance = ", ".join(f"{label} {value:.3f}" for label, value in parts["chance"].items())
    text = "\n".join(lines) + (f"\n\nMean ± 95% interval over training seeds (Student t). Chance: {chance}. "
                               f"Headline columns average {parts['what']}.\n")
    text += protocol_line(summary)
    if "suite" in summary:
        described = summary["evaluation"]["datasets"]
        text += "\n| dataset | spec | classes | train images | test images |\n|---|---|---|---|---|\n"
        for name in names:
            d = described[name]
            text += f"| {name} | `{d['spec']}` | {d['classes']} | {d['train_images']} | {d['test_images']} |\n"
        for name, by_metric in summary.get("not_applicable", {}).items():
            for metric, reason in by_metric.items():
                text += f"\n{METRIC_NAMES[metric]} on {name}: not applicable ({reason})."
        text += "\n" if summary.get("not_applicable") else ""
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
    """Grouped bars with 95% intervals: one group per metric, then the first metric per probe
    label (or dataset), with chance marked."""
    plt = pyplot()
    parts = _parts(summary)
    metrics, labels = parts["metrics"], parts["names"]
    methods = list(summary[metrics[0]])
    groups = [METRIC_NAMES[m] for m in metrics] + [parts["column"](label) for label in labels]
    fig, ax = plt.subplots(figsize=(max(9, 1.3 * len(groups) + 2), 4), dpi=100)
    width = 0.8 / len(methods)
    x = np.arange(len(groups))
    for i, method in enumerate(methods):
        by_label = [_per_dataset(parts, label, method) for label in labels]
        means = [summary[m][method] for m in metrics] + [mean or 0.0 for mean, _ in by_label]
        cis = [summary["ci95"][m][method] for m in metrics] + [ci for _, ci in by_label]
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, label=method,
                      yerr=[c or 0.0 for c in cis], capsize=2)
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=2)
    for j, label in enumerate(labels):  # chance on the per-dataset groups
        chance = parts["chance"][label]
        ax.hlines(chance, len(metrics) + j - 0.45, len(metrics) + j + 0.45, colors="gray", linestyles=":")
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (mean ± 95% interval over seeds)")
    ax.set_title(parts["title"])
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def write_comparison_report(out: str, summary: dict[str, Any]) -> dict[str, str]:
    """Write OUT/results.md, OUT/results.png and OUT/summary.json (last); returns their URLs."""
    return write_report_files(out, summary, markdown_table(summary), plot_summary(summary))
