"""Synthesis throughput: our backend against the plain diffusers call at the same batch size.

Baseline (what a careful diffusers user writes): ``pipe(prompt=[B captions], generator=[B
generators, one per image], ...)`` with the same scheduler (DDIM), steps, guidance and size, fp16
on CUDA with diffusers' default SDPA attention, B images per call. Ours: DiffusersBackend, which
adds text embeddings once per caption (and the unconditional once), channels_last, fused QKV,
TF32, cudnn autotuning and, as a second arm, torch.compile of the UNet and VAE decoder at a
static batch. All arms run the same requests (K images per caption, seeds from
stablerep.seeding), batch by batch in rotating order, so that a busy moment of the host does not
fall on one arm only.

Also measured, in the same run: images/s for each batch size of --sweep (ours, uncompiled; the
sweep ranks batch sizes at --sweep-steps, since batch size changes the per-step cost) and the
best is used for every arm; the pixel difference (max and mean, 0-255) between ours and the
baseline on the same seeds, next to the baseline against itself at half the batch size (the
device's own rounding noise); the shard worker end to end (JPEG encoding on threads, shard
written to a local folder); MFU of the whole image (UNet steps + VAE decode, FLOPs counted by
torch.utils.flop_counter, see sd_models.py) against the dense bf16 peak. --profile writes a
torch.profiler table of one batch of ours. Results: benchmarks/results/synthesis-<device>.json.

    python benchmarks/synthesis.py --arch tiny --k 4 --batch 8 --steps 10 --resolution 64
    python benchmarks/synthesis.py --arch sd15 --sweep 16,32,64 --compile   # paper settings, GPU
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import ResultFile, peak_bf16, sync  # noqa: E402
from sd_models import build_sd15_random, count_flops_per_image  # noqa: E402

from stablerep.devices import resolve_device  # noqa: E402
from stablerep.seeding import image_seed  # noqa: E402
from stablerep.synthesis import GenerationRequest  # noqa: E402
from stablerep.synthesis.diffusers_backend import DiffusersBackend, load_pipeline, pipeline_dtype  # noqa: E402
from stablerep.synthesis.tiny import tiny_pipeline_path  # noqa: E402
from stablerep.world import procedural_captions  # noqa: E402


def make_requests(n: int, k: int) -> list[GenerationRequest]:
    """n requests, k images per caption, seeds as the worker derives them."""
    captions = procedural_captions(math.ceil(n / k), seed=0)
    return [GenerationRequest(i, c, j, image_seed(0, i, j)) for i, c in enumerate(captions) for j in range(k)][:n]


class Plain:
    """The baseline call, fp16 on CUDA, SDPA (diffusers' default), DDIM, one generator per image."""

    def __init__(self, model: str, dtype: torch.dtype, device: torch.device, args) -> None:
        from diffusers import DDIMScheduler

        self.pipe = load_pipeline(model, dtype=dtype).to(device)
        self.pipe.scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config)
        self.pipe.set_progress_bar_config(disable=True)
        self.device, self.args = device, args

    def generate(self, requests: list[GenerationRequest]):
        a = self.args
        return self.pipe(prompt=[r.caption for r in requests],
                         generator=[torch.Generator(self.device).manual_seed(r.seed) for r in requests],
                         num_inference_steps=a.steps, guidance_scale=a.guidance, height=a.resolution,
                         width=a.resolution).images


def time_batches(backend, requests, batch: int, device, warmup: int = 1) -> tuple[dict, list]:
    """({images_per_s over the timed batches, warmup_s}, the first timed batch's images);
    ``requests`` holds the warm-up batches first."""
    t = time.perf_counter()
    for w in range(warmup):
        backend.generate(requests[w * batch:(w + 1) * batch])
    sync(device)
    warm = time.perf_counter() - t
    timed = requests[warmup * batch:]
    first, t = None, time.perf_counter()
    for s in range(0, len(timed), batch):
        images = backend.generate(timed[s:s + batch])
        first = images if first is None else first
    sync(device)
    return {"images_per_s": len(timed) / (time.perf_counter() - t), "warmup_s": warm}, first


def pixel_diff(a, b) -> dict[str, float]:
    x = np.stack([np.asarray(i, dtype=np.int16) for i in a])
    y = np.stack([np.asarray(i, dtype=np.int16) for i in b])
    d = np.abs(x - y)
    return {"max": int(d.max()), "mean": float(d.mean()), "pixels_differing": float((d > 0).mean())}


def ours(model, args, dtype_name, **kw) -> DiffusersBackend:
    return DiffusersBackend(model, device=args.device, dtype=dtype_name, steps=kw.pop("steps", args.steps),
                            guidance=args.guidance, resolution=args.resolution, **kw)


def sweep_batch_sizes(model, args, dtype_name, result: ResultFile) -> int:
    """Ours (uncompiled) at each batch size, at --sweep-steps; returns the fastest."""
    backend = ours(model, args, dtype_name, compile=False, steps=args.sweep_steps)
    rates: dict[int, float | None] = {}
    for i, b in enumerate(int(s) for s in args.sweep.split(",")):
        warmup = 1 if i == 0 else 0
        try:
            timing, _ = time_batches(backend, make_requests((warmup + 1) * b, args.k), b, backend.device, warmup)
        except torch.OutOfMemoryError:
            rates[b] = None
            break
        rates[b] = timing["images_per_s"]
        result.update(batch_sweep={"steps": args.sweep_steps, "images_per_s": rates})
    del backend
    return max((b for b, r in rates.items() if r), key=lambda b: rates[b])


def profile_batch(backend, requests, path: str) -> dict[str, float]:
    """torch.profiler over one batch: a table of the top kernels, and how busy the device was."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if backend.device.type == "cuda" else [])
    sync(backend.device)
    t = time.perf_counter()
    with profile(activities=activities) as prof:
        backend.generate(requests)
        sync(backend.device)
    wall = time.perf_counter() - t
    key = "self_device_time_total" if backend.device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=25)
    busy = sum(getattr(e, key) for e in prof.key_averages()) / 1e6
    Path(path).write_text(f"one batch of {len(requests)} images, wall {wall:.3f} s, "
                          f"device busy {busy:.3f} s ({busy / wall:.1%})\n{table}\n")
    return {"wall_s": wall, "device_busy_s": busy, "busy_fraction": busy / wall}


class Arms:
    """The arms' figures, written to the result file after each one."""

    def __init__(self, result: ResultFile, flops_per_image: float, peak: float | None) -> None:
        self.result, self.flops, self.peak = result, flops_per_image, peak
        self.arms: dict[str, dict] = {}
        self.reference: list | None = None  # the baseline's first timed batch

    def record(self, name: str, timing: dict, images: list, **extra) -> None:
        rate = timing["images_per_s"]
        arm = {**timing, "s_per_image": 1 / rate, "mfu": rate * self.flops / self.peak if self.peak else None, **extra}
        if name == "baseline":
            self.reference = images
        else:
            arm["pixel_diff_vs_baseline"] = pixel_diff(images, self.reference)
        self.arms[name] = arm
        self.publish()

    def fail(self, name: str, exc: BaseException) -> None:
        self.arms[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                           "traceback": traceback.format_exc()[-3000:]}
        self.publish()

    def publish(self) -> None:
        ok = {k: a for k, a in self.arms.items() if "images_per_s" in a}
        best = max((a for k, a in ok.items() if k != "baseline"), key=lambda a: a["images_per_s"], default=None)
        fields = {"arms": self.arms}
        if best is not None:
            fields.update(images_per_s=best["images_per_s"], mfu=best["mfu"])
            if "baseline" in ok:
                fields["ratio"] = best["images_per_s"] / ok["baseline"]["images_per_s"]
        self.result.update(**fields)


def interleaved(backends: dict, requests: list, batch: int, device, arms: Arms) -> dict[str, list]:
    """Warm each arm on the first batch (compilation, cuDNN autotuning), then time the other
    batches one by one, rotating which arm goes first, so that a slow moment of the host falls on
    every arm alike. Records each arm; returns each arm's first timed batch of images. An arm that
    fails is recorded as failed and dropped."""
    warm: dict[str, float] = {}
    for name, backend in list(backends.items()):
        t = time.perf_counter()
        try:
            backend.generate(requests[:batch])
            sync(device)
        except Exception as exc:  # e.g. a compiler failure: keep the other arms
            arms.fail(name, exc)
            del backends[name]
            continue
        warm[name] = time.perf_counter() - t
    seconds = dict.fromkeys(backends, 0.0)
    first: dict[str, list] = {}
    names = list(backends)
    for i, start in enumerate(range(batch, len(requests), batch)):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t = time.perf_counter()
            images = backends[name].generate(requests[start:start + batch])
            sync(device)
            seconds[name] += time.perf_counter() - t
            first.setdefault(name, images)
    timed = len(requests) - batch
    for name in names:  # the baseline first: the others' pixel differences are against it
        arms.record(name, {"images_per_s": timed / seconds[name], "warmup_s": warm[name]}, first[name],
                    **({"speed": vars(backends[name].speed)} if name != "baseline" else {}))
    return first


def measure(args, result: ResultFile, model: str, device: torch.device, dtype: torch.dtype) -> None:
    dtype_name = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    batch = sweep_batch_sizes(model, args, dtype_name, result) if args.sweep else args.batch
    requests = make_requests(batch * (1 + args.batches), args.k)  # one warm-up batch, then the timed ones
    first_timed = requests[batch:2 * batch]
    flops = count_flops_per_image(model, args.resolution, args.steps, guided=args.guidance > 1)
    result.update(batch=batch, flops=flops, peak_bf16_flops=peak_bf16(device))
    arms = Arms(result, flops["per_image"], peak_bf16(device))

    backends = {"baseline": Plain(model, dtype, device, args),
                "ours": ours(model, args, dtype_name, compile=False, batch_size=batch)}
    if args.compile:
        try:
            backends["ours_compiled"] = ours(model, args, dtype_name, compile=True, batch_size=batch)
        except Exception as exc:
            arms.fail("ours_compiled", exc)
    first = interleaved(backends, requests, batch, device, arms)
    plain = backends["baseline"]
    halves = plain.generate(first_timed[:batch // 2]) + plain.generate(first_timed[batch // 2:])
    arms.arms["baseline"]["pixel_diff_half_batch"] = pixel_diff(halves, first["baseline"])
    if args.profile:
        arms.arms["ours"]["profile"] = profile_batch(backends["ours"], first_timed, args.profile)
    best = max((n for n in backends if n != "baseline"), key=lambda n: arms.arms[n]["images_per_s"])
    arms.arms[best]["worker_images_per_s"] = run_worker(backends[best], requests[batch:], batch, args)
    arms.publish()


def run_worker(backend, requests, batch: int, args) -> float:
    """The shard worker end to end (generate, JPEG q95 at 256 px on threads, write the shard) on
    the timed requests: images/s. Compare with the arm's images/s: equal means encoding is hidden."""
    from stablerep.config import SynthesisConfig
    from stablerep.synthesis.worker import ShardPlan, synthesize_shard

    captions = tuple(dict.fromkeys((r.caption_id, r.caption) for r in requests))
    cfg = SynthesisConfig(backend="tiny", images_per_caption=args.k, batch_size=batch, resolution=args.resolution,
                          steps=args.steps, guidance=args.guidance, captions_per_shard=len(captions))
    with tempfile.TemporaryDirectory() as root:
        sync(backend.device)
        t = time.perf_counter()
        _, written = synthesize_shard(root, ShardPlan(0, captions), backend, cfg)
        rate = len(captions) * args.k / (time.perf_counter() - t)
    assert written
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["tiny", "sd15"], default="tiny")
    p.add_argument("--model", default=None, help="a saved pipeline folder instead of --arch")
    p.add_argument("--k", type=int, default=10, help="images per caption")
    p.add_argument("--batch", type=int, default=8, help="images per call, both arms (unless --sweep)")
    p.add_argument("--batches", type=int, default=2, help="timed batches per arm, after one warm-up")
    p.add_argument("--sweep", default=None, help="batch sizes to try, e.g. 16,32,64 (the fastest is used)")
    p.add_argument("--sweep-steps", type=int, default=10)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--compile", action="store_true", help="also time ours with torch.compile")
    p.add_argument("--profile", default=None, help="write a torch.profiler table of one batch of ours here")
    p.add_argument("--model-cache", default=None, help="keep the built sd15 folder here")
    p.add_argument("--out-dir", default=None, help="default: benchmarks/results")
    args = p.parse_args()

    device = resolve_device(args.device)
    dtype = pipeline_dtype(args.dtype, device)
    result = ResultFile("synthesis", device, {**vars(args), "dtype": str(dtype).removeprefix("torch."),
                                              "baseline": "pipe(prompt=[...], generator=[...]) at the same batch"},
                        args.out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model = args.model
        elif args.arch == "tiny":
            model = str(tiny_pipeline_path())
        else:
            model = str(build_sd15_random(Path(args.model_cache or tmp) / "sd15-random", device, dtype))
        measure(args, result, model, device, dtype)
    path = result.finish()
    report(result.data, path)


def report(data: dict, path: Path) -> None:
    s = data["settings"]
    print(f"{s['arch'] if not s['model'] else s['model']} @ {s['resolution']} px, {s['steps']} steps, guidance "
          f"{s['guidance']}, batch {data['batch']}, on {data['device']} ({s['dtype']})")
    for name, sweep_rate in (data.get("batch_sweep") or {}).get("images_per_s", {}).items():
        print(f"  sweep ({data['batch_sweep']['steps']} steps) batch {name}: "
              + (f"{sweep_rate:.2f} images/s" if sweep_rate else "out of memory"))
    for name, arm in data["arms"].items():
        if "error" in arm:
            print(f"  {name:14s} failed: {arm['error']}")
            continue
        mfu = f"  MFU {arm['mfu']:.1%}" if arm.get("mfu") else ""
        diff = arm.get("pixel_diff_vs_baseline") or arm.get("pixel_diff_half_batch")
        print(f"  {name:14s} {arm['images_per_s']:8.2f} images/s{mfu}"
              + (f"  pixel diff max {diff['max']} mean {diff['mean']:.3f}" if diff else "")
              + (f"  worker {arm['worker_images_per_s']:.2f} images/s" if "worker_images_per_s" in arm else ""))
    print(f"  ratio (best of ours / baseline): {data['ratio']:.2f}x   FLOPs per image "
          f"{data['flops']['per_image'] / 1e12:.3f} TFLOP   -> {path}")


if __name__ == "__main__":
    main()
