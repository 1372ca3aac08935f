"""Evaluation speed, each part against a baseline measured in the same run.

1. Feature extraction: `encode_split` (decode + crop in DataLoader workers, batched forward, bf16 on
   CUDA) against the plain loop a user writes first: for each image, open it, transform it, run the
   model on a batch of one. Same images (a folder of real PNGs: scikit-learn's digits, or
   --folder DIR), same model and transform; prints images/s and the ratio.
2. The ImageNet protocol (SGD linear probe, a grid of learning rates) on random features of
   ImageNet's shape: N x 768, 1,000 classes (N = 1,281,167 with --full, default on CUDA; 1/20 of
   that on CPU). Ours trains every learning rate's head in one pass over the data; the baseline
   trains one head per learning rate, one after another (the same SGD, epochs and batch). Prints
   wall time per epoch for both, the ratio and the projected 90-epoch time.

    python benchmarks/evaluation.py                                   # CPU: tiny ViT, 1/20 ImageNet, 2 epochs
    python benchmarks/evaluation.py --backbone vit_base_patch16_224 --img-size 224 --full --epochs 90   # GPU

Writes benchmarks/results/evaluation-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from stablerep.data.eval_datasets import load_labelled
from stablerep.devices import autocast, resolve_device, resolve_dtype
from stablerep.evaluation.encoders import RunEncoder
from stablerep.evaluation.features import encode_split
from stablerep.evaluation.linear_probe import sgd_probe
from stablerep.evaluation.transforms import EvalTransform
from stablerep.models import create_model

IMAGENET = 1_281_167


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def plain_loop(model: torch.nn.Module, files: list[str], transform: EvalTransform, device: torch.device,
               dtype: torch.dtype) -> torch.Tensor:
    out = []
    crop = transform.geometric()
    for path in files:
        x = crop(TF.pil_to_tensor(Image.open(path).convert("RGB")))
        with autocast(device, dtype):
            out.append(model(transform.normalise(x[None].to(device)))["features"].float().cpu())
    return torch.cat(out)


def bench_features(args, device: torch.device) -> dict:
    from stablerep.testing import write_digits_imagefolder

    folder = args.folder or write_digits_imagefolder(tempfile.mkdtemp(prefix="bench-digits-"))
    data = load_labelled("bench", f"imagefolder:{folder}")
    split = data.train
    if args.images:
        split = split.subset(np.arange(min(args.images, len(split))))
    files = [split.images.describe(i) for i in range(len(split))]
    torch.manual_seed(0)
    model = RunEncoder(create_model(args.backbone, img_size=args.img_size, head_hidden_dim=64, head_out_dim=32))
    model = model.eval().to(device)
    transform = EvalTransform(size=args.img_size, resize=args.img_size)
    dtype = resolve_dtype("auto", device)
    plain_loop(model, files[:8], transform, device, dtype)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    reference = plain_loop(model, files, transform, device, dtype)
    _sync(device)
    t_plain = time.perf_counter() - t0
    encode_split(model, split.subset(np.arange(min(64, len(split)))), transform, device=str(device), workers=0)
    t0 = time.perf_counter()
    ours = encode_split(model, split, transform, device=str(device), batch_size=args.batch_size,
                        workers=args.workers)
    _sync(device)
    t_ours = time.perf_counter() - t0
    diff = float((ours.features - reference).abs().max())
    return {"images": len(files), "images_per_s": len(files) / t_ours, "baseline_images_per_s": len(files) / t_plain,
            "ratio": t_plain / t_ours, "max_abs_feature_difference": diff, "workers": args.workers,
            "batch_size": args.batch_size, "backbone": args.backbone, "img_size": args.img_size}


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
    _sync(device)
    t0 = time.perf_counter()
    ours = sgd_probe(x, y, tx, ty, lrs=lrs, **common)
    _sync(device)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    separate = [sgd_probe(x, y, tx, ty, lrs=(lr,), **common) for lr in lrs]
    _sync(device)
    t_base = time.perf_counter() - t0
    return {"features": [n, dim], "classes": classes, "epochs": args.epochs, "lrs": list(lrs),
            "seconds": t_ours, "seconds_per_epoch": t_ours / args.epochs,
            "projected_90_epochs_s": t_ours / args.epochs * 90, "baseline_seconds": t_base,
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
    parser.add_argument("--full", action="store_true", help="ImageNet's 1.28M rows (default on CUDA)")
    parser.add_argument("--epochs", type=int, default=None, help="SGD epochs (default 90 on CUDA, 2 on CPU)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    parser.add_argument("--skip-probe", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    args.full = args.full or device.type == "cuda"
    args.epochs = args.epochs or (90 if device.type == "cuda" else 2)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"benchmark": "evaluation", "device": name, "host": platform.node(),
              "versions": {"torch": torch.__version__, "python": platform.python_version()},
              "settings": {k: v for k, v in vars(args).items() if k != "folder"}}
    features = bench_features(args, device)
    print(f"features: ours {features['images_per_s']:.0f} images/s, plain loop {features['baseline_images_per_s']:.0f} "
          f"images/s, ratio {features['ratio']:.2f}x (max feature difference {features['max_abs_feature_difference']:.1e})")
    result["feature_extraction"] = features
    result["images_per_s"], result["ratio"] = features["images_per_s"], features["ratio"]
    if not args.skip_probe:
        probe = bench_sgd_probe(args, device)
        print(f"ImageNet protocol on {probe['features'][0]:,} x {probe['features'][1]} random features, "
              f"{len(probe['lrs'])} learning rates, {probe['epochs']} epoch(s): one pass {probe['seconds']:.1f} s "
              f"({probe['seconds_per_epoch']:.1f} s/epoch, 90 epochs ~ {probe['projected_90_epochs_s'] / 60:.1f} min), "
              f"one head at a time {probe['baseline_seconds']:.1f} s, ratio {probe['ratio']:.2f}x")
        result["sgd_probe"] = probe
    out = Path(__file__).parent / "results" / f"evaluation-{'cpu' if device.type != 'cuda' else 'cuda'}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
