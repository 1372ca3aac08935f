"""The README's speed table, rendered from the committed results files (benchmarks/results/).

Every ratio each benchmark reports, above 1 or below: ours against each baseline measured in the
same run, with the rates behind it, the file it comes from and the host's load average.

    python benchmarks/speed_table.py           # print the table
    python benchmarks/speed_table.py --write   # replace the README's table and docs/speed.md's sections

It also renders docs/speed.md's loader and evaluation sections, whose sentences about which arm is
faster are made from the timed windows (overlapping windows: "this run does not separate them").
tests/test_readme.py fails when the README or docs/speed.md hold anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
START, END = "<!-- speed-table:start -->", "<!-- speed-table:end -->"


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _load(d: dict[str, Any]) -> str:
    load = d.get("host_load_1min") or {}
    return f"{load['start']:.1f}-{load['end']:.1f}" if load else "-"


Row = tuple[str, str, str, str, str]  # (what, ours, baseline, ratio, note)


def _synthesis(d: dict[str, Any]) -> list[Row]:
    arms = d["arms"]
    return [("synthesis: `DiffusersBackend` vs the plain `pipe(...)` call, same batch and seeds",
             f"{arms['ours']['images_per_s']:.2f} images/s", f"{arms['baseline']['images_per_s']:.2f}",
             f"{d['ratio']:.2f}x", f"pixels differing: {arms['ours']['pixel_diff_vs_baseline']['max']} max")]


def _train_step(d: dict[str, Any]) -> list[Row]:
    arms = d["arms"]
    return [("training step: ours (bf16 autocast, fused AdamW where the device has them) vs fp32 + for-each AdamW",
             f"{_rate(arms['ours']['images_per_s'])} images/s", _rate(arms["baseline"]["images_per_s"]),
             f"{d['ratio']:.2f}x", _precisions(arms))]


def _precisions(arms: dict[str, Any]) -> str:
    ours, base = arms["ours"]["precision"], arms["baseline"]["precision"]
    if ours == base:
        return f"both arms ran {ours} here: the same arithmetic, so the ratio is the host's noise"
    return f"ours ran {ours}, the baseline {base}"


def _loader(d: dict[str, Any]) -> list[Row]:
    first = d["runs"][str(d["settings"]["workers"]).split(",")[0]]
    ours = f"{_rate(first['shards']['images_per_s'])} images/s"
    jpeg, png = d["jpeg_kb_per_image"], d["png_kb_per_image"]
    return [
        ("loader: our shards vs a JPEG folder + CSV read by the paper's code path (the same JPEG bytes)",
         ours, _rate(first["jpeg_folder"]["images_per_s"]), f"{first['ratio_to_jpeg_folder']:.2f}x",
         f"JPEG q95, {jpeg:.0f} KB per image"),
        ("loader: our shards vs the paper's PNG folder + CSV (format and code path together)",
         ours, _rate(first["png_folder"]["images_per_s"]), f"{first['ratio_to_png_folder']:.2f}x",
         f"PNG {png:.0f} KB per image"),
        ("loader: our shards vs the same JPEG bytes held in memory (the ceiling)",
         ours, _rate(first["in_memory"]["images_per_s"]), f"{first['ratio_to_memory']:.2f}x",
         "above 1 is noise: the ceiling does the same work" if first["ratio_to_memory"] > 1 else ""),
    ]


def _evaluation(d: dict[str, Any]) -> list[Row]:
    fx, sgd = d["feature_extraction"], d["sgd_probe"]
    ours = f"{_rate(fx['ours']['images_per_s'])} images/s"
    rows = [("feature extraction: `encode_split` vs a batched DataLoader loop (PIL + torchvision v2, "
             f"batch {fx['batch_size']}, {fx['workers']} workers)", ours,
             _rate(fx["batched_dataloader"]["images_per_s"]), f"{fx['ratio']:.2f}x",
             f"features differ by {fx['max_abs_feature_difference']:.1e} at most")]
    if "batch_of_one" in fx:
        rows.append(("feature extraction: `encode_split` vs one image per forward (a floor, not a fair baseline)",
                     ours, _rate(fx["batch_of_one"]["images_per_s"]), f"{fx['ratio_to_batch_of_one']:.1f}x", ""))
    n, dim = sgd["features"]
    rows.append((f"SGD probe: {len(sgd['lrs'])} learning rates trained in one pass vs one head at a time "
                 f"({n:,} x {dim} features, {sgd['classes']:,} classes, {sgd['epochs']} epoch)",
                 f"{sgd['seconds']:.1f} s", f"{sgd['baseline_seconds']:.1f} s", f"{sgd['ratio']:.2f}x",
                 "ratio = baseline time / ours"))
    return rows


def _import(d: dict[str, Any]) -> list[Row]:
    return [
        ("corpus import: `stablerep dataset import` vs a plain tarfile + pyarrow loop, one process",
         f"{_rate(d['images_per_s'])} images/s", _rate(d["baseline_images_per_s"]), f"{d['ratio']:.2f}x",
         f"goal {d['goal_ratio']}: {'met' if d['goal_met'] else 'not met'}"),
        ("corpus import with 2 worker processes vs the same plain loop",
         f"{_rate(d['workers_images_per_s'])} images/s", _rate(d["baseline_images_per_s"]),
         f"{d['ratio_workers']:.2f}x", f"goal {'met' if d['goal_met_with_workers'] else 'not met'}"),
    ]


def _prefect(d: dict[str, Any]) -> list[Row]:
    arms = d["arms"]
    direct = arms["direct call (baseline)"]["s_per_shard"]
    task = arms["Prefect task, inline"]["s_per_shard"]
    return [("a shard as a Prefect task vs a direct call (ratio of shards per second)",
             f"{task:.1f} s per shard", f"{direct:.1f} s", f"{d['ratio']:.2f}x",
             f"Prefect's own work {d['overhead_share']:.2%} of the shard")]


BENCHMARKS: tuple[tuple[str, Callable[[dict[str, Any]], list[Row]]], ...] = (
    ("synthesis-cpu.json", _synthesis),
    ("train_step-cpu.json", _train_step),
    ("loader-cpu.json", _loader),
    ("evaluation-cpu.json", _evaluation),
    ("import-cpu.json", _import),
    ("prefect_overhead-cpu.json", _prefect),
)


DOC = ROOT / "docs" / "speed.md"
DOC_START, DOC_END = "<!-- loader-evaluation:start -->", "<!-- loader-evaluation:end -->"
LOADER_EVALUATION = """**Loader** (`benchmarks/loader.py`): the same training batches (16 captions x m = 6, 224 px crops of
256 px images with photo-like texture: JPEG q95 {jkb:.0f} KB, PNG {pkb:.0f} KB) made four ways with the same
number of loader workers: our shards; the paper's code path (a file per image plus a CSV, PIL
decode and torchvision's per-image PIL transforms) over JPEG files holding the shards' own bytes,
the fair baseline, and over PNG files, the paper's layout, where the format adds its share; and
our decode + augmentation from bytes in memory (the ceiling). Timed windows never cross an epoch.
`--profile` also measures the workers' per-caption job in one process and thread (CPU
milliseconds) and writes a cProfile.

| command (results/loader-cpu.json) | shards | JPEG folder | PNG folder | in memory | shards / JPEG | shards / PNG | shards / in memory |
|---|---|---|---|---|---|---|---|
| `{cmd}` | {shards} images/s | {jpeg} | {png} | {mem} | {r_jpeg:.2f}x | {r_png:.2f}x | {r_mem:.2f}x |

On the same JPEG files the paper's code path made {inv_jpeg:.0%} of our rate, and on PNG files
{png_share:.0%} less again. With 2 workers on 2 cores the consumer's batched photometric half
shares the CPU with the workers, so the windows of all four loaders compete with it; the three
windows of the shards ({sh_lo:.2f}-{sh_hi:.2f} batches/s) and of the in-memory ceiling
({me_lo:.2f}-{me_hi:.2f}) {overlap}. Per caption in one process, where only the workers' job is
timed: shards {pc_s:.2f} CPU ms, in memory {pc_m:.2f} ({pc_r:.2f}x) (results/loader_profile-cpu.txt).
Profiling found what made the reader trail memory: each caption's `torch.manual_seed` queued a
seed for every accelerator backend not yet initialised, capturing a Python stack trace each time;
the reader now seeds only the CPU generator, which gives the same crops.

**Evaluation** (`benchmarks/evaluation.py`). Feature extraction: `encode_split` (decode + crop in
DataLoader workers, uint8 batches normalised on the device, batched forward) against the loop a
careful user writes: a Dataset opening each file with PIL, torchvision's v2 resize + centre crop +
normalisation, a plain DataLoader at the same batch size and workers, the forward under no_grad;
the arms take turns, {fx_repeats} windows each, over scikit-learn's digits as a folder of PNGs. A
batch-of-one loop runs once as a floor, labelled as such. The ImageNet protocol's SGD probe trains
every learning rate's head in one pass over the features; its baseline trains one head per
learning rate, one after another, with the same SGD, epochs and batch.

| command (results/evaluation-cpu.json) | ours | batched DataLoader | ours / batched | batch of one | ours / batch of one | SGD grid, one pass | one head at a time | baseline / ours |
|---|---|---|---|---|---|---|---|---|
| `python benchmarks/evaluation.py` | {fx_ours} images/s | {fx_base} | {fx_ratio:.2f}x | {fx_one} | {fx_r_one:.1f}x | {sgd_s:.1f} s | {sgd_b:.1f} s | {sgd_r:.2f}x |

The batched loop and ours compute the same features (within {fx_diff:.1e}); by the medians ours is
{fx_word}, and the windows of the two (ours {o_lo:.1f}-{o_hi:.1f} s a pass, the loop
{b_lo:.1f}-{b_hi:.1f} s; load {ld0:.1f} to {ld1:.1f}) {fx_overlap}. The SGD grid ({sgd_n:,} x {sgd_d}
random features, {sgd_c:,} classes, 1/20 of ImageNet, {sgd_e} epoch) trained its {sgd_l} heads in one
pass {sgd_r:.2f}x as fast as one after another, and chose the rate {sgd_lr} (test accuracy
{sgd_acc:.3f}); 90 epochs of it project to {sgd_90:,.0f} s on this machine.

"""


def _overlap(a: list[float], b: list[float]) -> str:
    """What two arms' timed windows say: overlapping windows do not separate the arms."""
    if min(a) <= max(b) and min(b) <= max(a):
        return "overlap: this run does not separate them"
    return "do not overlap"


def render_loader_evaluation(results: Path = RESULTS) -> str:
    """docs/speed.md's loader and evaluation sections, every figure and comparison from the files."""
    loader = json.loads((results / "loader-cpu.json").read_text(encoding="utf-8"))
    evaluation = json.loads((results / "evaluation-cpu.json").read_text(encoding="utf-8"))
    st = loader["settings"]
    cmd = f"python benchmarks/loader.py --captions {st['captions']} --workers {st['workers']} --batches {st['batches']}"
    if st.get("profile"):
        cmd += f" --profile {st['profile']}"
    run = loader["runs"][str(st["workers"]).split(",")[0]]
    rates = {arm: run[arm]["images_per_s"] for arm in ("shards", "jpeg_folder", "png_folder", "in_memory")}
    shards, memory = run["shards"]["repeats"], run["in_memory"]["repeats"]
    per_caption = loader["per_caption"]
    fx, sgd = evaluation["feature_extraction"], evaluation["sgd_probe"]
    ours_s, base_s = fx["ours"]["seconds"], fx["batched_dataloader"]["seconds"]
    ratio = fx["ratio"]
    return LOADER_EVALUATION.format(
        cmd=cmd, jkb=loader["jpeg_kb_per_image"], pkb=loader["png_kb_per_image"],
        shards=_rate(rates["shards"]), jpeg=_rate(rates["jpeg_folder"]), png=_rate(rates["png_folder"]),
        mem=_rate(rates["in_memory"]), r_jpeg=run["ratio_to_jpeg_folder"], r_png=run["ratio_to_png_folder"],
        r_mem=run["ratio_to_memory"], inv_jpeg=1 / run["ratio_to_jpeg_folder"],
        png_share=1 - rates["png_folder"] / rates["jpeg_folder"],
        sh_lo=min(shards), sh_hi=max(shards), me_lo=min(memory), me_hi=max(memory), overlap=_overlap(shards, memory),
        pc_s=per_caption["shards_cpu_ms_per_caption"], pc_m=per_caption["in_memory_cpu_ms_per_caption"],
        pc_r=per_caption["shards_vs_in_memory_one_process"],
        fx_repeats=fx["repeats"], fx_ours=_rate(fx["ours"]["images_per_s"]),
        fx_base=_rate(fx["batched_dataloader"]["images_per_s"]), fx_ratio=ratio,
        fx_word=f"{1 - ratio:.0%} slower" if ratio < 1 else f"{ratio - 1:.0%} faster",
        o_lo=min(ours_s), o_hi=max(ours_s), b_lo=min(base_s), b_hi=max(base_s),
        ld0=evaluation["host_load_1min"]["start"], ld1=evaluation["host_load_1min"]["end"],
        fx_overlap=_overlap(ours_s, base_s), fx_diff=fx["max_abs_feature_difference"],
        fx_one=_rate(fx["batch_of_one"]["images_per_s"]), fx_r_one=fx["ratio_to_batch_of_one"],
        sgd_s=sgd["seconds"], sgd_b=sgd["baseline_seconds"], sgd_r=sgd["ratio"], sgd_n=sgd["features"][0],
        sgd_d=sgd["features"][1], sgd_c=sgd["classes"], sgd_e=sgd["epochs"], sgd_l=len(sgd["lrs"]),
        sgd_lr=sgd["chosen_lr"], sgd_acc=sgd["test_accuracy"], sgd_90=sgd["projected_90_epochs_s"])


def render(results: Path = RESULTS) -> str:
    """The table, one row per ratio, in the order of BENCHMARKS."""
    lines = ["| what (CPU, 2 cores) | ours | baseline | ours / baseline | note | results file (load avg) |",
             "|---|---|---|---|---|---|"]
    for name, rows in BENCHMARKS:
        data = json.loads((results / name).read_text(encoding="utf-8"))
        if not data.get("complete", True):
            raise SystemExit(f"{name} is incomplete (a run cut short): rerun its benchmark")
        for what, ours, base, ratio, note in rows(data):
            lines.append(f"| {what} | {ours} | {base} | {ratio} | {note} | {name} ({_load(data)}) |")
    return "\n".join(lines) + "\n"


def between(text: str, start_marker: str = START, end_marker: str = END) -> str:
    """What a file holds between two markers (the README's table by default)."""
    start, end = text.index(start_marker) + len(start_marker), text.index(end_marker)
    return text[start:end].strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="replace the README's table")
    args = parser.parse_args(argv)
    table = render()
    if not args.write:
        print(table, end="")
        return 0
    _replace_between(README, START, END, table)
    _replace_between(DOC, DOC_START, DOC_END, render_loader_evaluation())
    print(f"wrote the speed table into {README.relative_to(ROOT)} and its sections into {DOC.relative_to(ROOT)}")
    return 0


def _replace_between(path: Path, start_marker: str, end_marker: str, body: str) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = text.index(start_marker) + len(start_marker), text.index(end_marker)
    path.write_text(text[:start] + "\n" + body + text[end:], encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
