"""N-way K-shot episodes on frozen features, classified by the nearest class centroid (cosine)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class FewShotResult:
    accuracy: float  # mean over episodes, in [0, 1]
    ci95: float  # half-width of the 95% confidence interval of the mean: 1.96 * std / sqrt(episodes)
    episodes: int
    per_episode: list[float] = field(default_factory=list)  # each episode's accuracy, in draw order


def centroid_predict(support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
    """Labels of ``query_x`` by the most cosine-similar centroid of the support classes."""
    support = F.normalize(support_x.float(), dim=1)
    classes = torch.unique(support_y)
    centroids = F.normalize(torch.stack([support[support_y == c].mean(0) for c in classes]), dim=1)
    return classes[(F.normalize(query_x.float(), dim=1) @ centroids.T).argmax(1)]


def few_shot(features, labels, n_way: int = 5, k_shot: int = 5, queries: int = 15, episodes: int = 600,
             seed: int = 0) -> FewShotResult:
    """Mean accuracy of ``episodes`` N-way K-shot episodes drawn from (features, labels) (the
    paper: 600 episodes of the test split), with the normal 95% interval of that mean."""
    x, y = torch.as_tensor(features), torch.as_tensor(labels).long()
    by_class = {int(c): (y == c).nonzero().flatten().tolist() for c in torch.unique(y)}
    eligible = [c for c, idx in by_class.items() if len(idx) >= k_shot + queries]
    if len(eligible) < n_way:
        raise ValueError(f"{n_way}-way {k_shot}-shot with {queries} queries needs {n_way} classes of at least "
                         f"{k_shot + queries} samples; only {len(eligible)} have enough")
    rng = random.Random(seed)
    accs = []
    for _ in range(episodes):
        classes = rng.sample(eligible, n_way)
        s_idx, q_idx = [], []
        for c in classes:
            chosen = rng.sample(by_class[c], k_shot + queries)
            s_idx += chosen[:k_shot]
            q_idx += chosen[k_shot:]
        pred = centroid_predict(x[s_idx], y[s_idx], x[q_idx])
        accs.append(float((pred == y[q_idx]).float().mean()))
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / max(1, len(accs) - 1))
    return FewShotResult(mean, 1.96 * std / math.sqrt(len(accs)), len(accs), accs)
