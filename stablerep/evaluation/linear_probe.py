"""Linear probes on frozen features: L-BFGS logistic regression with the L2 strength chosen on a
validation split (the fine-grained protocol), and SGD with a grid of learning rates trained in
one pass (for large sets)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class ProbeResult:
    accuracy: float  # on the test set, in [0, 1]
    best: float  # the chosen L2 strength (L-BFGS) or learning rate (SGD)
    validation: dict[float, float] = field(default_factory=dict)  # setting -> validation accuracy


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 1000,
                 init: torch.Tensor | None = None) -> torch.Tensor:
    """Multinomial logistic regression by full-batch L-BFGS; returns W (D + 1, C), bias last row.

    Loss: mean cross-entropy + l2 / 2 * ||W without bias||^2 / N (scikit-learn's C = 1 / l2)."""
    n, d = x.shape
    xb = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1)  # (N, D + 1)
    w = (init.clone() if init is not None else torch.zeros(d + 1, num_classes, dtype=x.dtype)).requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xb @ w, y) + 0.5 * l2 * (w[:-1] ** 2).sum() / n
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def _accuracy(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    xb = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
    return float(((xb @ w).argmax(1) == y).float().mean())


def lbfgs_probe(train_x, train_y, test_x, test_y, *, val_fraction: float = 0.2,
                l2_grid: list[float] | None = None, max_iter: int = 1000, seed: int = 0) -> ProbeResult:
    """Choose the L2 strength on a held-out part of the training set (45 log-spaced values in
    1e-6..1e5 by default), refit on all training data with it, report test accuracy."""
    train_x, train_y = torch.as_tensor(train_x).double(), torch.as_tensor(train_y).long()
    test_x, test_y = torch.as_tensor(test_x).double(), torch.as_tensor(test_y).long()
    grid = l2_grid if l2_grid is not None else list(np.logspace(-6, 5, 45))
    classes = int(max(train_y.max(), test_y.max())) + 1
    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(len(train_x) * val_fraction))
    val_idx, fit_idx = perm[:n_val], perm[n_val:]
    fx, vx = _standardise(train_x[fit_idx], train_x[val_idx])
    scores: dict[float, float] = {}
    w = None
    for l2 in sorted(grid, reverse=True):  # strong to weak regularisation, warm-started
        w = fit_logistic(fx, train_y[fit_idx], classes, l2, max_iter, init=w)
        scores[float(l2)] = _accuracy(w, vx, train_y[val_idx])
    best = max(scores, key=lambda k: (scores[k], k))  # ties: the stronger regularisation
    ax, tx = _standardise(train_x, test_x)
    w = fit_logistic(ax, train_y, classes, best, max_iter)
    return ProbeResult(_accuracy(w, tx, test_y), best, scores)


def sgd_probe(train_x, train_y, test_x, test_y, *, lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
              epochs: int = 90, batch_size: int = 1024, batch_norm: bool = True, val_fraction: float = 0.2,
              seed: int = 0) -> ProbeResult:
    """One linear head per learning rate, trained together in one pass (SGD, momentum 0.9, no
    weight decay, cosine schedule), optionally after a BatchNorm without affine. The learning
    rate is chosen on a held-out part of the training set; its head's test accuracy is reported."""
    g = torch.Generator().manual_seed(seed)
    train_x, train_y = torch.as_tensor(train_x).float(), torch.as_tensor(train_y).long()
    test_x, test_y = torch.as_tensor(test_x).float(), torch.as_tensor(test_y).long()
    classes = int(max(train_y.max(), test_y.max())) + 1
    perm = torch.randperm(len(train_x), generator=g)
    n_val = max(1, int(len(train_x) * val_fraction))
    val_idx, fit_idx = perm[:n_val], perm[n_val:]
    d, h = train_x.shape[1], len(lrs)
    torch.manual_seed(seed)
    norm = torch.nn.BatchNorm1d(d, affine=False) if batch_norm else torch.nn.Identity()
    heads = torch.nn.Linear(d, classes * h)  # all heads as one matrix: (D) -> (H * C)
    # one optimiser, a learning rate per head: scale each head's gradient by lr / base
    base = max(lrs)
    opt = torch.optim.SGD(heads.parameters(), lr=base, momentum=0.9)
    scale = torch.tensor(lrs).repeat_interleave(classes) / base  # (H * C,)
    steps = epochs * math.ceil(len(fit_idx) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(epochs):
        order = fit_idx[torch.randperm(len(fit_idx), generator=g)]
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            norm.train()
            logits = heads(norm(train_x[idx])).view(-1, h, classes)  # (B, H, C)
            loss = F.cross_entropy(logits.permute(0, 2, 1), train_y[idx][:, None].expand(-1, h), reduction="mean") * h
            opt.zero_grad()
            loss.backward()
            heads.weight.grad.mul_(scale[:, None])
            heads.bias.grad.mul_(scale)
            opt.step()
            sched.step()
    norm.eval()
    with torch.no_grad():
        val = heads(norm(train_x[val_idx])).view(-1, h, classes).argmax(-1)
        test = heads(norm(test_x)).view(-1, h, classes).argmax(-1)
    val_acc = (val == train_y[val_idx][:, None]).float().mean(0)
    test_acc = (test == test_y[:, None]).float().mean(0)
    best = int(val_acc.argmax())
    return ProbeResult(float(test_acc[best]), lrs[best], {lr: float(a) for lr, a in zip(lrs, val_acc, strict=True)})
