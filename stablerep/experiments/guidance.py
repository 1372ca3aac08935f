"""The paper's guidance-scale study, in miniature: StableRep and SimCLR trained on images that the
text-to-image model generated at several classifier-free guidance scales, beside CLIP and SimCLR
trained on the real renders of the same captions, every run under the demo's one budget (images
encoded per step, steps, augmentation) and scored the same way on the procedural probe set, with
several seeds and 95% intervals. The generated images are also scored for fidelity to their
captions by the attribute classifier, so the plot shows what guidance does to the images beside
what it does to the encoders trained on them.

Layout: OUT/w{scale}/ (that scale's captions, its generated dataset OUT/w{scale}/synthetic and its
runs), OUT/real/ (the real renders and the real-image baselines), then OUT/summary.json,
OUT/results.md and OUT/results.png. Every stage skips committed work, so a rerun resumes.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stablerep import storage
from stablerep.evaluation.report import write_report_files
from stablerep.experiments.compare import FLOOR, markdown_table
from stablerep.experiments.demo import DemoConfig, captions_step, probe_evaluation, synthesis_step
from stablerep.experiments.plan import ExperimentPlan, execute_plan
from stablerep.experiments.runs import training_step
from stablerep.generator.fidelity import FidelityClassifier, fidelity
from stablerep.generator.shipped import shipped_classifier
from stablerep.plots import figure_png, pyplot
from stablerep.shards.rows import iter_images


def _study_demo() -> DemoConfig:
    return DemoConfig(source="generator", ceiling=False)


class GuidanceStudyConfig(BaseModel):
    """The scales, the methods on each side, and the demo settings every run shares."""

    model_config = ConfigDict(extra="forbid")

    scales: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0],
                                description="classifier-free guidance scales of the generated datasets")
    on_generated: list[Literal["stablerep", "simclr"]] = Field(default_factory=lambda: ["stablerep", "simclr"])
    on_real: list[Literal["clip", "simclr"]] = Field(default_factory=lambda: ["clip", "simclr"])
    fidelity_images: int = Field(512, ge=0, description="generated images per scale scored for fidelity "
                                                        "(0: skip)")
    demo: DemoConfig = Field(default_factory=_study_demo, description="captions, K, budget, seeds, probe set "
                                                                      "(source must be generator)")

    @model_validator(mode="after")
    def _check(self) -> GuidanceStudyConfig:
        if not self.scales or len(set(self.scales)) != len(self.scales) or any(w < 0 for w in self.scales):
            raise ValueError(f"scales: give distinct non-negative guidance scales, got {self.scales}")
        if self.demo.source != "generator":
            raise ValueError("demo.source must be generator: the study trains on generated images")
        if self.demo.guidance is not None:
            raise ValueError("demo.guidance is set by the study (scales), leave it unset")
        if not self.on_generated:
            raise ValueError("on_generated: give at least one of stablerep, simclr")
        return self


def scale_name(w: float) -> str:
    return f"w{w:g}"


def generated_run(method: str, w: float) -> str:
    return f"{method}-{scale_name(w)}"


def real_run(method: str) -> str:
    return f"{method}-real"


def _fidelity_of_dataset(root: str, n: int, classifier) -> dict[str, float]:
    """The attribute classifier on the first image of the first ``n`` captions."""
    import io

    from PIL import Image

    images, captions = [], []
    for row in iter_images(root, ["caption", "image_index", "image"]):
        if row["image_index"] == 0:
            images.append(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
            captions.append(row["caption"])
            if len(images) == n:
                break
    return fidelity(classifier, images, captions)


def build_guidance_plan(out: str, cfg: GuidanceStudyConfig | None = None) -> ExperimentPlan:
    """The study as stage jobs: per scale, its captions, its generated dataset and the runs on it;
    the real renders and the runs on them; the probe comparison of every run."""
    cfg = cfg or GuidanceStudyConfig()
    demo, datasets, runs, roots = cfg.demo, [], [], {}
    for w in cfg.scales:
        sub, at_w = storage.join(out, scale_name(w)), demo.model_copy(update={"guidance": w})
        root = roots[scale_name(w)] = storage.join(sub, "synthetic")
        datasets += [captions_step(sub, at_w, root, f"captions w={w:g}"),
                     synthesis_step(at_w, "synthetic", root, root, f"generate w={w:g}")]
        runs += [training_step(sub, at_w, m, seed, root, generated_run(m, w)) for seed in demo.seeds
                 for m in cfg.on_generated]
    real = storage.join(out, "real")
    captions_root, roots["real"] = storage.join(real, "synthetic"), storage.join(real, "real")
    datasets += [captions_step(real, demo, captions_root, "captions real"),
                 synthesis_step(demo, "real", captions_root, roots["real"], "render real")]
    runs += [training_step(real, demo, m, seed, roots["real"], real_run(m)) for seed in demo.seeds for m in cfg.on_real]
    return ExperimentPlan(recipe="guidance study", out=out, roots=roots, datasets=datasets, runs=runs,
                          evaluation=probe_evaluation(demo), budget_match=demo.budget,
                          settings=cfg.model_dump(mode="json"))


def run_guidance_study(out: str, cfg: GuidanceStudyConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Generate, train and score every (method, scale) and the real baselines (the plan of
    :func:`build_guidance_plan`), score the generated images' fidelity, write the report."""
    cfg = cfg or GuidanceStudyConfig()
    plan = build_guidance_plan(out, cfg)
    summary = execute_plan(plan, progress)
    fidelity: dict[str, dict[str, float]] = {}
    if cfg.fidelity_images:  # the classifier is loaded once for every scale
        t0 = time.perf_counter()
        classifier = FidelityClassifier.load(shipped_classifier())
        for w in cfg.scales:
            fidelity[f"{w:g}"] = _fidelity_of_dataset(plan.roots[scale_name(w)], cfg.fidelity_images, classifier)
        timings = summary["timings_s"]
        timings["fidelity"] = round(time.perf_counter() - t0, 2)
        timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 2)
    summary["fidelity"] = fidelity
    summary["scales"] = cfg.scales
    summary["report"] = write_report_files(out, summary, study_table(summary), plot_study(summary))
    return summary


def _interval(summary: dict[str, Any], metric: str, name: str) -> tuple[float, float]:
    return summary[metric][name], summary["ci95"][metric][name] or 0.0


def study_table(summary: dict[str, Any]) -> str:
    """Linear probe (mean ± 95% interval) per method and guidance scale, the fidelity of the
    generated images per scale, then the full comparison table (every run, every metric, budget)."""
    scales, methods = summary["scales"], summary["settings"]["on_generated"]
    head = ["guidance w"] + [f"{m} (generated): linear probe" for m in methods]
    fid = summary["fidelity"]
    if fid:
        head += ["fidelity: colour", "fidelity: shape", "fidelity: all attributes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in scales:
        cells = [f"{w:g}"] + ["{:.3f} ± {:.3f}".format(*_interval(summary, "linear_probe", generated_run(m, w)))
                              for m in methods]
        if fid:
            f = fid[f"{w:g}"]
            cells += [f"{f['colour']:.3f}", f"{f['shape']:.3f}", f"{np.mean(list(f.values())):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    for m in summary["settings"]["on_real"]:
        lines.append(f"| real renders: {m} | " + "{:.3f} ± {:.3f}".format(
            *_interval(summary, "linear_probe", real_run(m))) + " |" * (len(head) - 1))
    text = ("Linear probe: mean over the probe labels, mean ± 95% interval over training seeds. Fidelity: share "
            "of generated images (one per caption) in which the attribute classifier reads what the caption "
            "names.\n\n" + "\n".join(lines) + "\n\n")
    return text + markdown_table(summary)


def plot_study(summary: dict[str, Any]) -> bytes:
    """Left: linear probe against guidance scale (generated-image methods as lines, real-image
    baselines as bands). Right: fidelity of the generated images against guidance scale."""
    plt = pyplot()
    scales = summary["scales"]
    fig, (ax, fx) = plt.subplots(1, 2, figsize=(11, 4), dpi=100, gridspec_kw={"width_ratios": [3, 2]})
    for m in summary["settings"]["on_generated"]:
        means, cis = zip(*(_interval(summary, "linear_probe", generated_run(m, w)) for w in scales), strict=True)
        ax.errorbar(scales, means, yerr=cis, marker="o", capsize=3, label=f"{m} on generated images")
    for m, style in zip(summary["settings"]["on_real"], ("--", ":", "-."), strict=False):
        mean, ci = _interval(summary, "linear_probe", real_run(m))
        line = ax.axhline(mean, linestyle=style, color="gray" if m == "clip" else "black",
                          label=f"{m} on real renders")
        ax.axhspan(mean - ci, mean + ci, color=line.get_color(), alpha=0.12)
    mean, ci = _interval(summary, "linear_probe", FLOOR)
    ax.axhline(mean, color="red", linewidth=0.8, label="untrained")
    for a in (ax, fx):
        a.set_xscale("log", base=2)
        a.set_xticks(scales, [f"{w:g}" for w in scales])
        a.set_xlabel("classifier-free guidance scale w")
    ax.set_ylabel("linear probe (mean ± 95% interval)")
    ax.set_title("Encoders trained on generated images")
    ax.legend(fontsize=7)
    if summary["fidelity"]:
        attributes = list(next(iter(summary["fidelity"].values())))
        for a in attributes:
            fx.plot(scales, [summary["fidelity"][f"{w:g}"][a] for w in scales], marker=".", label=a)
        fx.set_ylim(0, 1)
        fx.set_ylabel("attribute shown (classifier)")
        fx.legend(fontsize=7, ncol=2)
    fx.set_title("Fidelity of the generated images")
    fig.tight_layout()
    return figure_png(fig)
