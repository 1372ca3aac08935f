"""Evaluation speed, each part against a baseline measured in the same run.

1. Feature extraction: `encode_split` (decode + crop in DataLoader workers, uint8 batches,
   normalised on the device, batched forward, bf16 on CUDA) against the loop a careful user
   writes: a Dataset that opens each file with PIL and applies the same resize + centre crop +
   normalisation with torchvision's v2 transforms, a plain torch DataLoader at the same batch size
   and workers, the model's forward under no_grad (and the same autocast dtype). The two take
   turns, --repeats windows each in rotating order; ``ratio`` is ours / that loop (medians).
   A secondary arm, labelled ``batch_of_one``, runs the first loop people write (open, transform,
   forward one image at a time) once, as a floor; ``ratio_to_batch_of_one`` is ours / it.
   Same images (a folder of real PNGs: scikit-learn's digits, or --folder DIR), same model and
   transform; the largest feature difference of each baseline against ours is recorded.
2. The ImageNet protocol (SGD linear probe, a grid of learning rates) on random features of
   ImageNet's shape: N x 768, 1,000 classes (N = 1,281,167 with --full, default on CUDA; 1/20 of
   that on CPU). Ours trains every learning rate's head in one pass over the data; the baseline
   trains one head per learning rate, one after another (the same SGD, epochs and batch); they take
   turns --probe-repeats times. ``ratio_sgd_grid`` is baseline / ours (above 1: the one pass is
   faster; below 1: slower), with the projected 90-epoch time.

    python benchmarks/evaluation.py                                   # CPU: tiny ViT, 1/20 ImageNet, 1 epoch
    python benchmarks/evaluation.py --backbone vit_base_patch16_224 --img-size 224 --full --epochs 90   # GPU

Writes benchmarks/results/evaluation-<device>.json (benchmarks/results_io.py): ``ratio`` (features,
ours / the batched DataLoader loop), ``ratio_to_batch_of_one``, ``ratio_sgd_grid``, and the same
three under ``ratios``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.helpers
from results_io import ResultFile, sync  # noqa: E402

from stablerep.devices import autocast, resolve_device, resolve_dtype  # noqa: E402
from stablerep.evaluation.datasets import load_labelled  # noqa: E402
from stablerep.evaluation.encoders import RunEncoder  # noqa: E402
from stablerep.evaluation.features import encode_split  # noqa: E402
from stablerep.evaluation.linear_probe import sgd_probe  # noqa: E402
from stablerep.evaluation.transforms import INTERPOLATIONS, EvalTransform  # noqa: E402
from stablerep.models import create_model  # noqa: E402

IMAGENET = 1_281_167


class Files(Dataset):
    """The careful user's dataset: PIL decode + a torchvision transform, per file."""

    def __init__(self, files: list[str], transform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(Image.open(self.files[i]).convert("RGB"))


def user_transform(t: EvalTransform):
    """The same resize + centre crop + normalisation as ``t``, written with torchvision's v2 API."""
    return T.Compose([T.PILToTensor(), T.Resize(t.resize, interpolation=INTERPOLATIONS[t.interpolation], antialias=True),
                      T.CenterCrop(t.size), T.ToDtype(torch.float32, scale=True), T.Normalize(t.mean, t.std)])


@torch.no_grad()
def batched_loop(model: torch.nn.Module, files: list[str], transform: EvalTransform, device: torch.device,
                 dtype: torch.dtype, batch_size: int, workers: int) -> torch.Tensor:
    """THE baseline: a plain DataLoader at our batch size and workers, forward under no_grad."""
    loader = DataLoader(Files(files, user_transform(transform)), batch_size=batch_size, num_workers=workers,
                        pin_memory=device.type == "cuda")
    out = []
    for x in loader:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out.append(model(x.to(device, non_blocking=True))["features"].float().cpu())
    return torch.cat(out)


@torch.no_grad()
def batch_of_one(model: torch.nn.Module, files: list[str], transform: EvalTransform, device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """Secondary arm, a floor: open, transform and encode one image at a time, in one process."""
    out = []
    crop = transform.geometric()
    for path in files:
        x = crop(TF.pil_to_tensor(Image.open(path).convert("RGB")))
        with autocast(device, dtype):
            out.append(model(transform.normalise(x[None].to(device)))["features"].float().cpu())
    return torch.cat(out)


def _timed(device: torch.device, fn):
    sync(device)
    t0 = time.perf_counter()
    value = fn()
    sync(device)
    return time.perf_counter() - t0, value


def bench_features(args, device: torch.device) -> dict:
    from tests.helpers.datasets import write_digits_imagefolder

    folder = args.folder or write_digits_imagefolder(tempfile.mkdtemp(prefix="bench-digits-"))
    split = load_labelled("bench", f"imagefolder:{folder}").train
    if args.images:
        split = split.subset(np.arange(min(args.images, len(split))))
    files = [split.images.describe(i) for i in range(len(split))]
    torch.manual_seed(0)
    model = RunEncoder(create_model(args.backbone, img_size=args.img_size, head_hidden_dim=64, head_out_dim=32))
    model = model.eval().to(device)
    transform = EvalTransform(size=args.img_size, resize=args.img_size)
    dtype = resolve_dtype("auto", device)
    bs, workers = args.batch_size, args.workers
    arms = {
        "ours": lambda: encode_split(model, split, transform, device=str(device), batch_size=bs,
                                     workers=workers).features,
        "batched_dataloader": lambda: batched_loop(model, files, transform, device, dtype, bs, workers),
    }
    warm = split.subset(np.arange(min(64, len(split))))  # first-call costs (allocator, kernels) out of the windows
    encode_split(model, warm, transform, device=str(device), workers=0)
    batched_loop(model, files[:64], transform, device, dtype, bs, 0)
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    features: dict[str, torch.Tensor] = {}
    names = list(arms)
    for r in range(args.repeats):  # the arms take turns, in rotating order
        for name in names[r % len(names):] + names[:r % len(names)]:
            t, features[name] = _timed(device, arms[name])
            seconds[name].append(t)
    out = {"images": len(files), "repeats": args.repeats, "workers": workers, "batch_size": bs,
           "backbone": args.backbone, "img_size": args.img_size, "dtype": str(dtype).removeprefix("torch.")}
    for name in names:
        med = statistics.median(seconds[name])
        out[name] = {"images_per_s": len(files) / med, "seconds": seconds[name]}
    out["baseline"] = ("batched_dataloader: PIL decode + torchvision v2 resize/centre-crop/normalise in a plain "
                       f"DataLoader (batch {bs}, {workers} workers), forward under no_grad")
    out["images_per_s"] = out["ours"]["images_per_s"]
    out["baseline_images_per_s"] = out["batched_dataloader"]["images_per_s"]
    out["ratio"] = out["images_per_s"] / out["baseline_images_per_s"]
    out["max_abs_feature_difference"] = float((features["ours"] - features["batched_dataloader"]).abs().max())
    if not args.skip_batch_of_one:
        batch_of_one(model, files[:8], transform, device, dtype)  # warm-up
        t, reference = _timed(device, lambda: batch_of_one(model, files, transform, device, dtype))
        out["batch_of_one"] = {"images_per_s": len(files) / t, "seconds": [t],
                               "max_abs_feature_difference": float((features["ours"] - reference).abs().max()),
                               "note": "secondary arm, a floor: one image per forward, no workers, run once"}
        out["ratio_to_batch_of_one"] = out["images_per_s"] / out["batch_of_one"]["images_per_s"]
    return out


def bench_sgd_probe(args, device: torch.device) -> dict:
    n = IMAGENET if args.full else IMAGENET // 20
    g = torch.Generator().manual_seed(0)
    classes, dim = 1000, 768
    centres = torch.randn(classes, dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] * 0.3 + torch.randn(n, dim, generator=g)  # separable-ish, so learning rates matter
    ty = torch.randint(0, classes, (n // 25,), generator=g)
    tx = centres[ty] * 0.3 + torch.randn(len(ty), dim, generator=g)
    lrs = tuple(args.lrs)
    common = {"epochs": args.epochs, "batch_size": 1024, "device": str(device), "num_classes": classes}
    arms = {"one_pass": lambda: sgd_probe(x, y, tx, ty, lrs=lrs, **common),
            "one_head_at_a_time": lambda: [sgd_probe(x, y, tx, ty, lrs=(lr,), **common) for lr in lrs]}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    value: dict = {}
    names = list(arms)
    for r in range(args.probe_repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t, value[name] = _timed(device, arms[name])
            seconds[name].append(t)
    t_ours, t_base = (statistics.median(seconds[name]) for name in names)
    ours, separate = value["one_pass"], value["one_head_at_a_time"]
    return {"features": [n, dim], "classes": classes, "epochs": args.epochs, "lrs": list(lrs),
            "repeats": args.probe_repeats, "seconds": t_ours, "seconds_runs": seconds["one_pass"],
            "seconds_per_epoch": t_ours / args.epochs, "projected_90_epochs_s": t_ours / args.epochs * 90,
            "baseline": "one_head_at_a_time: sgd_probe with one learning rate, once per rate, one after another",
            "baseline_seconds": t_base, "baseline_seconds_runs": seconds["one_head_at_a_time"],
            "ratio": t_base / t_ours, "test_accuracy": ours.accuracy, "chosen_lr": ours.best,
            "baseline_accuracies": {str(lr): r.accuracy for lr, r in zip(lrs, separate, strict=True)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="vit_tiny_cpu")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--folder", help="image folder to encode (default: the digits, written to a temp dir)")
    parser.add_argument("--images", type=int, default=0, help="encode only this many (0: all)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed windows per feature-extraction arm")
    parser.add_argument("--skip-batch-of-one", action="store_true", help="skip the secondary batch-of-one arm")
    parser.add_argument("--full", action="store_true", help="ImageNet's 1.28M rows (default on CUDA)")
    parser.add_argument("--epochs", type=int, default=None, help="SGD epochs (default 90 on CUDA, 1 on CPU)")
    parser.add_argument("--probe-repeats", type=int, default=2, help="timed runs per SGD arm")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    parser.add_argument("--skip-probe", action="store_true")
    parser.add_argument("--out-dir", default=None, help="default: benchmarks/results")
    args = parser.parse_args()
    device = resolve_device(args.device)
    args.full = args.full or device.type == "cuda"
    args.epochs = args.epochs or (90 if device.type == "cuda" else 1)
    settings = {k: v for k, v in vars(args).items() if k not in ("folder", "out_dir")}
    result = ResultFile("evaluation", device, settings, args.out_dir)
    f = bench_features(args, device)
    ratios = {"features_vs_batched_dataloader": f["ratio"]}
    print(f"features ({f['images']} images, batch {f['batch_size']}, {f['workers']} workers, median of {f['repeats']}): "
          f"ours {f['images_per_s']:.0f} images/s, batched DataLoader loop {f['baseline_images_per_s']:.0f} images/s, "
          f"ratio {f['ratio']:.2f}x (max feature difference {f['max_abs_feature_difference']:.1e})")
    if "batch_of_one" in f:
        b = f["batch_of_one"]
        ratios["features_vs_batch_of_one"] = f["ratio_to_batch_of_one"]
        print(f"  secondary: batch-of-one loop {b['images_per_s']:.0f} images/s, ours / it "
              f"{f['ratio_to_batch_of_one']:.2f}x (max feature difference {b['max_abs_feature_difference']:.1e})")
    result.update(feature_extraction=f, images_per_s=f["images_per_s"], ratio=f["ratio"],
                  ratio_to_batch_of_one=f.get("ratio_to_batch_of_one"), ratios=ratios)
    if not args.skip_probe:
        p = bench_sgd_probe(args, device)
        ratios["sgd_grid_one_pass_vs_one_head_at_a_time"] = p["ratio"]
        verdict = "faster" if p["ratio"] > 1 else "slower"
        print(f"ImageNet protocol on {p['features'][0]:,} x {p['features'][1]} random features, {len(p['lrs'])} "
              f"learning rates, {p['epochs']} epoch(s), median of {p['repeats']}: one pass {p['seconds']:.1f} s "
              f"({p['seconds_per_epoch']:.1f} s/epoch, 90 epochs ~ {p['projected_90_epochs_s'] / 60:.1f} min), "
              f"one head at a time {p['baseline_seconds']:.1f} s")
        print(f"  SGD grid ratio (one head at a time / one pass): {p['ratio']:.2f}x: the one pass is {verdict} here")
        result.update(sgd_probe=p, ratio_sgd_grid=p["ratio"], ratios=ratios)
    path = result.finish()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
