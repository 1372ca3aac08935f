"""Projection heads."""

from __future__ import annotations

from torch import nn


def build_mlp_head(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256, layers: int = 3) -> nn.Sequential:
    """StableRep's projection head: (Linear, BatchNorm, ReLU) x (layers - 1), then Linear.

    768 -> 4096 -> 4096 -> 256 for ViT-B/16 in the paper. Under DDP the BatchNorms are converted
    to SyncBatchNorm by the training loop.
    """
    if layers < 1:
        raise ValueError(f"head layers must be >= 1, got {layers}")
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)
