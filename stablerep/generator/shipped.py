"""Where the shipped generator and its fidelity classifier live (package data, no heavy imports).

``stablerep/assets/procedural-ldm/``: ``model/`` (a diffusers Stable Diffusion pipeline folder made
by `stablerep generator train`), ``fidelity_classifier.{safetensors,json}`` (made by `stablerep
generator classifier`), and ``train_log.jsonl``, ``loss_curve.png``, ``RECIPE.md`` (the command,
seed and log that made them)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SHIPPED = "procedural-ldm"


def shipped_dir() -> Path:
    return Path(str(resources.files("stablerep") / "assets" / SHIPPED))


def shipped_generator() -> Path:
    """The generator that ships with the package."""
    return shipped_dir() / "model"


def shipped_classifier() -> str:
    """Path prefix of the shipped attribute classifier (``.safetensors`` and ``.json``)."""
    return str(shipped_dir() / "fidelity_classifier")
