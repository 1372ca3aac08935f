"""Training-step throughput: images/s of StableRep's step, against a plain baseline in the same run.

Ours: the library's step (stablerep.training.step.train_step) with bf16 autocast on GPU (the
config's "auto" precision), fused AdamW and the fp32 loss. Baseline, same model and batch: the
step as commonly written first: fp32, no autocast, for-each AdamW. On CUDA it also prints the
model FLOPs utilisation (FLOPs counted by torch.utils.flop_counter for one step, divided by the
step time and the GPU's dense bf16 peak).

    python benchmarks/train_step.py --backbone vit_base_patch16_224 --captions 43 --m 6
    python benchmarks/train_step.py --backbone vit_tiny_cpu --img-size 32 --captions 16 --m 4   # CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from stablerep.config import LossConfig, ModelConfig
from stablerep.data import RandomCaptionBatches
from stablerep.losses import create_loss
from stablerep.models import create_model
from stablerep.training.optim import build_optimizer, param_groups
from stablerep.training.precision import resolve_device, resolve_dtype
from stablerep.training.step import train_step

# Dense (no sparsity) bf16 tensor-core peaks, in FLOP/s, from the vendors' data sheets.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step_fn, batches, device, warmup: int, steps: int, repeats: int) -> list[float]:
    """Seconds per step, one median per repeat."""
    for i in range(warmup):
        step_fn(batches[i % len(batches)])
    _sync(device)
    medians = []
    for _ in range(repeats):
        times = []
        for i in range(steps):
            t = time.perf_counter()
            step_fn(batches[i % len(batches)])
            _sync(device)
            times.append(time.perf_counter() - t)
        medians.append(statistics.median(times))
    return medians


def build(args, device, fused: bool):
    torch.manual_seed(0)
    model_cfg = ModelConfig(backbone=args.backbone, img_size=args.img_size,
                            head_hidden_dim=args.head_hidden, head_out_dim=args.head_out)
    model = create_model(model_cfg).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if fused:
        opt = build_optimizer(model, 1e-4)
    else:
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.98), foreach=False)
    return model, opt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="vit_tiny_cpu")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--captions", type=int, default=16, help="captions per step (this process)")
    p.add_argument("--m", type=int, default=6, help="images per caption")
    p.add_argument("--head-hidden", type=int, default=None, help="default: 4096 (paper), 128 for *_cpu")
    p.add_argument("--head-out", type=int, default=None, help="default: 256 (paper), 64 for *_cpu")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="also time torch.compile(model)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    small = args.backbone.endswith("_cpu")
    args.img_size = args.img_size or (32 if small else 224)
    args.head_hidden = args.head_hidden or (128 if small else 4096)
    args.head_out = args.head_out or (64 if small else 256)

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.precision, device)
    src = RandomCaptionBatches(args.captions, args.m, args.img_size, num_captions=max(512, args.captions))
    batches = [{k: v.to(device) for k, v in src.batch(i).items()} for i in range(2)]
    images_per_step = args.captions * args.m
    loss_fn = create_loss(LossConfig(method="stablerep")).to(device)
    results: dict = {"backbone": args.backbone, "img_size": args.img_size, "captions": args.captions,
                     "m": args.m, "images_per_step": images_per_step, "device": str(device),
                     "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "precision": str(dtype).removeprefix("torch."), "torch": torch.__version__}

    def runner(model, opt, step_dtype):
        scaler = torch.amp.GradScaler(device.type, enabled=step_dtype == torch.float16)
        return lambda b: train_step("stablerep", model, loss_fn, opt, scaler, b, device, step_dtype)

    variants = [("baseline_fp32_eager", False, torch.float32, False), ("stablerep", True, dtype, False)]
    if args.compile:
        variants.append(("stablerep_compiled", True, dtype, True))
    for name, fused, step_dtype, compiled in variants:
        model, opt = build(args, device, fused)
        module = torch.compile(model) if compiled else model
        step = runner(module, opt, step_dtype)
        secs = time_steps(step, batches, device, args.warmup, args.steps, args.repeats)
        med = statistics.median(secs)
        results[name] = {"s_per_step": med, "images_per_s": images_per_step / med,
                         "repeats_s_per_step": secs}
        if name == "stablerep":
            with FlopCounterMode(display=False) as counter:
                step(batches[0])
            _sync(device)
            flops = counter.get_total_flops()
            results["flops_per_step"] = flops
            peak = peak_flops(device)
            if peak:
                results["peak_bf16_flops"] = peak
                results["mfu"] = flops / med / peak
        del model, opt, module
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results["speedup_vs_baseline"] = results["stablerep"]["images_per_s"] / results["baseline_fp32_eager"]["images_per_s"]
    if args.compile:
        results["compiled_speedup_vs_baseline"] = (results["stablerep_compiled"]["images_per_s"]
                                                   / results["baseline_fp32_eager"]["images_per_s"])
    if device.type == "cuda":
        results["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30

    print(f"{results['backbone']} @ {args.img_size}px, {args.captions} captions x m={args.m} "
          f"= {images_per_step} images/step on {results['device_name']} ({results['precision']})")
    for name, *_ in variants:
        r = results[name]
        print(f"  {name:22s} {r['images_per_s']:10.1f} images/s  ({r['s_per_step'] * 1e3:.1f} ms/step)")
    print(f"  ratio stablerep / baseline: {results['speedup_vs_baseline']:.2f}x")
    print(f"  model FLOPs per step: {results['flops_per_step'] / 1e12:.3f} TFLOP"
          + (f", MFU {results['mfu'] * 100:.1f}% of {results['peak_bf16_flops'] / 1e12:.0f} TFLOP/s" if "mfu" in results else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
