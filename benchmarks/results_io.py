"""What every benchmark writes: benchmarks/results/<benchmark>-<device>.json, one schema.

Fields: ``benchmark`` (synthesis, loader or train_step), ``device`` (the GPU's name, or cpu),
``versions``, ``settings``, ``ratio`` (ours / the fair baseline measured in the same run),
``images_per_s`` and ``mfu`` (a fraction of the device's dense bf16 peak; null where no peak is
known, e.g. on CPU) where they apply, the loader's ``ratio_to_memory``, then each benchmark's
details. A run writes its file after every arm, with ``complete`` false until the end, so a run
cut short by a time limit still leaves what it measured.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from the vendors' data sheets (fp16 is the same).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "timm", "pyarrow", "pillow", "numpy")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def device_slug(device: torch.device) -> str:
    """File-name form of the device: ``nvidia-h200``, ``cpu``."""
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def peak_bf16(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit() -> str | None:
    """HEAD of the checkout that ran, with ``+dirty`` when tracked files other than the results
    differ from it (None outside git)."""
    head = _git("rev-parse", "HEAD")
    if not head:
        return None
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)benchmarks/results")
    return head + ("+dirty" if dirty else "")


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["cuda"] = torch.version.cuda
    found["stablerep_commit"] = _git_commit()
    return found


class ResultFile:
    """Accumulates one benchmark's figures and rewrites its JSON file after every update."""

    def __init__(self, benchmark: str, device: torch.device, settings: dict[str, Any],
                 out_dir: str | Path | None = None) -> None:
        self.path = Path(out_dir or RESULTS_DIR) / f"{benchmark}-{device_slug(device)}.json"
        self.data: dict[str, Any] = {
            "benchmark": benchmark, "device": device_name(device), "versions": versions(),
            "settings": settings, "ratio": None, "complete": False,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "host_cpus": _cpus(),
            "host_load_1min": {"start": _load()}}

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")

    def finish(self, **fields: Any) -> Path:
        """Final write; the host's load average beside the start's says how busy the run's host was
        (other processes on a shared machine slow every arm alike, but noisily)."""
        self.data["host_load_1min"]["end"] = _load()
        self.update(**fields, complete=True)
        return self.path


def _load() -> float | None:
    import os

    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
