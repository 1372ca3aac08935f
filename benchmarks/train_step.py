"""Training-step throughput and MFU: StableRep's step against a fair fp32 baseline, same run.

Every arm times what the training loop does per step, from a loader batch of uint8 crops
(captions, m, 3, S, S) in (pinned, on CUDA) host memory: stablerep.training.loop.prepare_batch
(copy to the device, the batched photometric augmentation of stablerep.data.augment, seeded per
step, normalisation), then the forward, loss, backward and optimiser step.

  baseline        fp32 with TF32 matmuls and convolutions, PyTorch's default AdamW (for-each)
  ours            bf16 autocast (the config's "auto" precision on CUDA), fused AdamW, fp32 loss
  ours_compiled   the same with torch.compile(model) (train.compile=true)   [--compile]

The arms are timed in alternating blocks of --steps steps (--repeats rounds, the order rotated
each round), so that a busy moment of the host does not fall on one arm only.

MFU = model FLOPs per step (torch.utils.flop_counter over forward + backward of one prepared
batch; the augmentation's few FLOPs are left out of the count but its time stays in the step)
/ seconds per step / the GPU's dense bf16 peak. Results: benchmarks/results/train_step-<device>.json.

    python benchmarks/train_step.py --backbone vit_base_patch16_224 --captions 43 --m 6 --compile
    python benchmarks/train_step.py --backbone vit_tiny_cpu --img-size 32 --captions 16 --m 4   # CPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import ResultFile, peak_bf16, sync  # noqa: E402

from stablerep.config import AugmentConfig, LossConfig, ModelConfig  # noqa: E402
from stablerep.data import RandomCaptionBatches  # noqa: E402
from stablerep.data.augment import BatchPhotometric  # noqa: E402
from stablerep.devices import resolve_device, resolve_dtype  # noqa: E402
from stablerep.losses import create_loss  # noqa: E402
from stablerep.models import create_model  # noqa: E402
from stablerep.training.loop import prepare_batch  # noqa: E402
from stablerep.training.optim import build_optimizer, param_groups  # noqa: E402
from stablerep.training.step import train_step  # noqa: E402


def loader_batches(args, device: torch.device, count: int = 2) -> list[dict]:
    """uint8 crops as the loader hands them over (pinned on CUDA, as with pin_memory=True)."""
    src = RandomCaptionBatches(args.captions, args.m, args.img_size, num_captions=max(512, args.captions))
    out = []
    for i in range(count):
        b = src.batch(i)
        images = (b["images"].clamp(0, 1) * 255).round().to(torch.uint8)
        out.append({"images": images.pin_memory() if device.type == "cuda" else images, "labels": b["labels"]})
    return out


def median_step(step_fn, batches, device, steps: int) -> float:
    """Median seconds of ``steps`` steps, each synchronised."""
    times = []
    for i in range(steps):
        t = time.perf_counter()
        step_fn(i, batches[i % len(batches)])
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build(args, device, arm: str):
    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone=args.backbone, img_size=args.img_size,
                                     head_hidden_dim=args.head_hidden, head_out_dim=args.head_out)).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if arm == "baseline":  # PyTorch's defaults: for-each on CUDA
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.98))
    else:
        opt = build_optimizer(model, 1e-4)
    return model, opt


def count_model_flops(step, batch) -> int:
    with FlopCounterMode(display=False) as counter:
        step(batch)
    return counter.get_total_flops()


class Arm:
    """One way of running the step: its model, optimiser and the loop's per-step work."""

    def __init__(self, name: str, args, device, dtype, loss_fn, photometric) -> None:
        self.name, self.device, self.photometric = name, device, photometric
        self.model, self.opt = build(args, device, name)
        self.module = torch.compile(self.model) if name == "ours_compiled" else self.model
        self.dtype = torch.float32 if name == "baseline" else dtype
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.loss_fn = loss_fn
        self.adamw = "default (for-each)" if name == "baseline" else "fused" if device.type == "cuda" else "default"

    def step(self, batch):
        return train_step("stablerep", self.module, self.loss_fn, self.opt, self.scaler, batch, self.device,
                          self.dtype)

    def full_step(self, i: int, loader_batch):  # what the loop does per step
        return self.step(prepare_batch(loader_batch, self.device, self.photometric, seed=i))

    def model_flops(self, loader_batch) -> int | None:
        """Forward + backward FLOPs of one step (eager arms only: a dispatch mode does not see
        inside compiled graphs; the compiled model does the same FLOPs)."""
        if self.name == "ours_compiled":
            return None
        batch = prepare_batch(loader_batch, self.device, self.photometric, seed=0)
        with FlopCounterMode(display=False) as counter:
            self.step(batch)
        return counter.get_total_flops()


def time_arms(arms: dict[str, Arm], batches, device, args, failed: dict[str, dict],
              on_block=lambda figures: None) -> dict[str, dict]:
    """Warm every arm (its first step includes compilation), then time ``repeats`` blocks of
    ``steps`` steps per arm, rotating the arms' order between blocks, so that a slow moment of the
    host falls on every arm alike. ``on_block`` gets the figures so far after each round."""
    out: dict[str, dict] = {}
    for name, arm in list(arms.items()):
        try:
            t = time.perf_counter()
            arm.full_step(0, batches[0])
            sync(device)
            first = time.perf_counter() - t
            for i in range(args.warmup):
                arm.full_step(i, batches[i % len(batches)])
            sync(device)
        except Exception as exc:  # e.g. a compiler failure: keep the other arms
            failed[name] = error_record(exc)
            del arms[name]
            continue
        out[name] = {"first_step_s": first, "repeats_s_per_step": [], "precision": str(arm.dtype).removeprefix("torch."),
                     "adamw": arm.adamw}
    names = list(arms)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out[name]["repeats_s_per_step"].append(median_step(arms[name].full_step, batches, device, args.steps))
        for arm in out.values():
            arm["s_per_step"] = statistics.median(arm["repeats_s_per_step"])
            arm["images_per_s"] = args.captions * args.m / arm["s_per_step"]
        on_block(out)
    return out


def error_record(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
            "traceback": traceback.format_exc()[-3000:]}


def profile_steps(full_step, batches, device, path: str, steps: int = 3) -> dict:
    """torch.profiler over a few full steps: a table of the top kernels, and how busy the device was."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    sync(device)
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for i in range(steps):
            full_step(i, batches[i % len(batches)])
        sync(device)
    wall = time.perf_counter() - t
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    busy = sum(getattr(e, key) for e in prof.key_averages()) / 1e6
    Path(path).write_text(f"{steps} steps, wall {wall:.3f} s, device busy {busy:.3f} s ({busy / wall:.1%})\n"
                          + prof.key_averages().table(sort_by=key, row_limit=30) + "\n")
    return {"wall_s": wall, "device_busy_s": busy, "busy_fraction": busy / wall}


def time_augmentation(args, device, batches, photometric) -> float:
    """Seconds per batch of prepare_batch alone (copy, augmentation, normalisation)."""
    def prepare(i, b):
        return prepare_batch(b, device, photometric, seed=i)

    median_step(prepare, batches, device, args.warmup)
    return statistics.median(median_step(prepare, batches, device, args.steps) for _ in range(args.repeats))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="vit_tiny_cpu")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--captions", type=int, default=16, help="captions per step (this process)")
    p.add_argument("--m", type=int, default=6, help="images per caption")
    p.add_argument("--head-hidden", type=int, default=None, help="default: 4096 (paper), 128 for *_cpu")
    p.add_argument("--head-out", type=int, default=None, help="default: 256 (paper), 64 for *_cpu")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16"], help="ours (baseline: fp32)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(model)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", default=None, help="write a torch.profiler table of 3 steps of ours here")
    p.add_argument("--out-dir", default=None, help="default: benchmarks/results")
    args = p.parse_args()
    small = args.backbone.endswith("_cpu")
    args.img_size = args.img_size or (32 if small else 224)
    args.head_hidden = args.head_hidden or (128 if small else 4096)
    args.head_out = args.head_out or (64 if small else 256)

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.precision, device)
    if device.type == "cuda":  # the baseline's TF32; ours runs its matmuls in bf16 under autocast
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
    augment = AugmentConfig()
    result = ResultFile("train_step", device, {**vars(args), "images_per_step": args.captions * args.m,
                                               "augment": augment.model_dump(mode="json"), "tf32": device.type == "cuda"},
                        args.out_dir)
    photometric = BatchPhotometric(augment)
    batches = loader_batches(args, device)
    loss_fn = create_loss(LossConfig(method="stablerep")).to(device)
    peak = peak_bf16(device)
    result.update(augmentation_s_per_batch=time_augmentation(args, device, batches, photometric))
    failed: dict[str, dict] = {}
    arms: dict[str, Arm] = {}
    for name in ["baseline", "ours"] + (["ours_compiled"] if args.compile else []):
        try:
            arms[name] = Arm(name, args, device, dtype, loss_fn, photometric)
        except Exception as exc:
            failed[name] = error_record(exc)
    flops = arms["ours"].model_flops(batches[0])

    def on_block(figures):
        for arm in figures.values():
            arm["mfu"] = flops / arm["s_per_step"] / peak if peak else None
        publish(result, {**figures, **failed}, flops, peak)

    figures = time_arms(arms, batches, device, args, failed, on_block)
    if args.profile and "ours" in arms:
        figures["ours"]["profile"] = profile_steps(arms["ours"].full_step, batches, device, args.profile)
    publish(result, {**figures, **failed}, flops, peak)
    path = result.finish()
    report(result.data, path)


def publish(result: ResultFile, arms: dict, flops: int, peak: float | None) -> None:
    ok = {k: a for k, a in arms.items() if "images_per_s" in a}
    best = max((a for k, a in ok.items() if k != "baseline"), key=lambda a: a["images_per_s"], default=None)
    fields = {"arms": arms, "model_flops_per_step": flops, "peak_bf16_flops": peak}
    if best is not None:
        fields.update(images_per_s=best["images_per_s"], mfu=best["mfu"])
        if "baseline" in ok:
            fields["ratio"] = best["images_per_s"] / ok["baseline"]["images_per_s"]
    result.update(**fields)


def report(data: dict, path: Path) -> None:
    s = data["settings"]
    print(f"{s['backbone']} @ {s['img_size']} px, {s['captions']} captions x m={s['m']} = {s['images_per_step']} "
          f"images/step on {data['device']}; augmentation {data['augmentation_s_per_batch'] * 1e3:.1f} ms/batch")
    for name, arm in data.get("arms", {}).items():
        if "error" in arm:
            print(f"  {name:14s} failed: {arm['error']}")
            continue
        mfu = f"  MFU {arm['mfu']:.1%}" if arm.get("mfu") is not None else ""
        print(f"  {name:14s} {arm['images_per_s']:10.1f} images/s  ({arm['s_per_step'] * 1e3:.1f} ms/step){mfu}")
    if data.get("ratio"):
        print(f"  ratio (best of ours / baseline): {data['ratio']:.2f}x   model FLOPs per step "
              f"{data['model_flops_per_step'] / 1e9:.2f} GFLOP   -> {path}")


if __name__ == "__main__":
    main()
