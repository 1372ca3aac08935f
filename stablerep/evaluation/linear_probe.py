"""Linear probes on frozen features: L-BFGS logistic regression with the L2 strength chosen on a
validation split (the fine-grained protocol), and SGD with a grid of learning rates trained in
one pass (for large sets)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from stablerep.data.labelled import stratified_split
from stablerep.evaluation.metrics import score


@dataclass
class ProbeResult:
    accuracy: float  # on the test set, in [0, 1]
    best: float  # the chosen L2 strength (L-BFGS) or learning rate (SGD)
    validation: dict[float, float] = field(default_factory=dict)  # setting -> validation accuracy


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 1000,
                 init: torch.Tensor | None = None, tol: float = 1e-4) -> torch.Tensor:
    """Multinomial logistic regression by full-batch L-BFGS; returns W (D + 1, C), bias last row.

    Loss: mean cross-entropy + l2 / 2 * ||W without bias||^2 / N (scikit-learn's C = 1 / l2). It
    stops when the largest gradient entry is below ``tol`` (scikit-learn's default 1e-4) or after
    ``max_iter`` iterations. The
    gradient is written out (X^T (softmax - onehot) / N + l2 W / N) rather than taken by autograd:
    on small probes autograd's bookkeeping was most of the time of each of the ~500 evaluations."""
    n, d = x.shape
    xb = torch.cat([x, torch.ones(n, 1, dtype=x.dtype, device=x.device)], 1)  # (N, D + 1)
    onehot = F.one_hot(y, num_classes).to(x.dtype)  # (N, C)
    w = init.clone() if init is not None else torch.zeros(d + 1, num_classes, dtype=x.dtype, device=x.device)
    w.requires_grad_(True)
    decay = torch.ones(d + 1, 1, dtype=x.dtype, device=x.device)
    decay[-1] = 0  # no penalty on the bias
    opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")

    @torch.no_grad()
    def closure():
        logits = xb @ w  # (N, C)
        log_p = logits.log_softmax(1)
        loss = -(onehot * log_p).sum() / n + 0.5 * l2 * ((w * decay) ** 2).sum() / n
        w.grad = xb.T @ (log_p.exp() - onehot) / n + l2 * w * decay / n
        return loss

    opt.step(closure)
    return w.detach()


@contextlib.contextmanager
def _threads_for(work: float, device: torch.device):
    """One CPU thread for small problems: L-BFGS on a few thousand samples is many tiny matrix
    products, where thread start-up costs more than it saves, and on a busy machine spinning
    threads made it up to 10x slower (measured: 1.2 s vs 14 s for one fit of 1,438 x 64 features)."""
    if device.type != "cpu" or work > 5e7:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _predict(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    xb = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1)
    return (xb @ w).argmax(1)


def lbfgs_probe(train_x, train_y, test_x, test_y, *, val_x=None, val_y=None, val_fraction: float = 0.2,
                l2_grid: list[float] | None = None, max_iter: int = 1000, seed: int = 0,
                metric: str = "accuracy", num_classes: int | None = None, device: str = "cpu") -> ProbeResult:
    """The fine-grained protocol: choose the L2 strength on validation (45 log-spaced values in
    1e-6..1e5 by default), refit on train + validation with it, report the test ``metric``.

    Validation is ``(val_x, val_y)`` when the dataset has an official split, else a stratified
    ``val_fraction`` of the training set (seeded)."""
    dev = torch.device(device)
    train_x, train_y = torch.as_tensor(train_x).double(), torch.as_tensor(train_y).long()
    test_x, test_y = torch.as_tensor(test_x).double(), torch.as_tensor(test_y).long()
    if val_x is None:
        fit_idx, val_idx = stratified_split(train_y.numpy(), val_fraction, seed)
        fit_x, fit_y = train_x[fit_idx], train_y[fit_idx]
        val_x, val_y = train_x[val_idx], train_y[val_idx]
    else:
        fit_x, fit_y = train_x, train_y
        val_x, val_y = torch.as_tensor(val_x).double(), torch.as_tensor(val_y).long()
    all_x, all_y = torch.cat([fit_x, val_x]), torch.cat([fit_y, val_y])
    grid = l2_grid if l2_grid is not None else list(np.logspace(-6, 5, 45))
    classes = num_classes or int(max(all_y.max(), test_y.max())) + 1
    fx, vx = (t.to(dev) for t in _standardise(fit_x, val_x))
    fy = fit_y.to(dev)
    scores: dict[float, float] = {}
    w = None
    with _threads_for(len(all_x) * all_x.shape[1] * classes, dev):
        for l2 in sorted(grid, reverse=True):  # strong to weak regularisation, warm-started
            w = fit_logistic(fx, fy, classes, l2, max_iter, init=w)
            scores[float(l2)] = score(_predict(w, vx), val_y, metric)
        best = max(scores, key=lambda k: (scores[k], k))  # ties: the stronger regularisation
        ax, tx = (t.to(dev) for t in _standardise(all_x, test_x))
        w = fit_logistic(ax, all_y.to(dev), classes, best, max_iter)
    return ProbeResult(score(_predict(w, tx), test_y, metric), best, scores)


def sgd_probe(train_x, train_y, test_x, test_y, *, lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
              epochs: int = 90, batch_size: int = 1024, batch_norm: bool = False, val_fraction: float = 0.2,
              seed: int = 0, metric: str = "accuracy", num_classes: int | None = None,
              device: str = "cpu") -> ProbeResult:
    """The ImageNet protocol: one linear head per learning rate, all trained together in one pass
    over the data (SGD, momentum 0.9, no weight decay, cosine schedule per iteration), optionally
    after a BatchNorm without affine. The learning rate is chosen on a stratified held-out part of
    the training set; that head's test ``metric`` is reported."""
    dev = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    train_x, train_y = torch.as_tensor(train_x).float(), torch.as_tensor(train_y).long()
    test_x, test_y = torch.as_tensor(test_x).float(), torch.as_tensor(test_y).long()
    classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    fit_idx, val_idx = (torch.as_tensor(i) for i in stratified_split(train_y.numpy(), val_fraction, seed))
    x, y = train_x.to(dev), train_y.to(dev)
    d, h = train_x.shape[1], len(lrs)
    torch.manual_seed(seed)
    norm = (torch.nn.BatchNorm1d(d, affine=False) if batch_norm else torch.nn.Identity()).to(dev)
    heads = torch.nn.Linear(d, classes * h).to(dev)  # all heads as one matrix: (D) -> (H * C)
    # one optimiser, a learning rate per head: scaling a head's gradient by lr / base is the same as
    # giving it that learning rate (SGD with momentum is linear in the gradient)
    base = max(lrs)
    opt = torch.optim.SGD(heads.parameters(), lr=base, momentum=0.9)
    scale = (torch.tensor(lrs).repeat_interleave(classes) / base).to(dev)  # (H * C,)
    steps = epochs * math.ceil(len(fit_idx) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    norm.train()
    for _ in range(epochs):
        order = fit_idx[torch.randperm(len(fit_idx), generator=g)].to(dev)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            logits = heads(norm(x[idx])).view(-1, h, classes)  # (B, H, C)
            loss = F.cross_entropy(logits.permute(0, 2, 1), y[idx][:, None].expand(-1, h)) * h
            opt.zero_grad(set_to_none=False)
            loss.backward()
            heads.weight.grad.mul_(scale[:, None])
            heads.bias.grad.mul_(scale)
            opt.step()
            sched.step()
    norm.eval()
    with torch.no_grad():
        val = heads(norm(x[val_idx.to(dev)])).view(-1, h, classes).argmax(-1).cpu()  # (V, H)
        test = torch.cat([heads(norm(test_x[s:s + 65536].to(dev))).view(-1, h, classes).argmax(-1).cpu()
                          for s in range(0, len(test_x), 65536)])  # (T, H)
    val_scores = [score(val[:, i], train_y[val_idx], metric) for i in range(h)]
    best = max(range(h), key=lambda i: (val_scores[i], -i))
    return ProbeResult(score(test[:, best], test_y, metric), lrs[best], dict(zip(lrs, val_scores, strict=True)))
