"""kNN classification on frozen features: cosine similarity, temperature-weighted votes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stablerep.evaluation.metrics import score


@torch.no_grad()
def knn_predict(train_x: torch.Tensor, train_y: torch.Tensor, query_x: torch.Tensor, k: int = 20,
                temperature: float = 0.07, num_classes: int | None = None, chunk: int = 1024) -> torch.Tensor:
    """Class scores (Q, C): each of the k most cosine-similar training samples votes for its class
    with weight exp(similarity / temperature)."""
    train = F.normalize(torch.as_tensor(train_x).float(), dim=1)
    labels = torch.as_tensor(train_y).long().to(train.device)
    classes = num_classes or int(labels.max()) + 1
    k = min(k, len(train))
    out = []
    for s in range(0, len(query_x), chunk):
        q = F.normalize(torch.as_tensor(query_x[s:s + chunk]).float().to(train.device), dim=1)
        sims, idx = (q @ train.T).topk(k, dim=1)  # (q, k)
        votes = torch.zeros(len(q), classes, device=train.device)
        votes.scatter_add_(1, labels[idx], (sims / temperature).exp())
        out.append(votes.cpu())
    return torch.cat(out)


def knn_accuracy(train_x, train_y, test_x, test_y, k: int = 20, temperature: float = 0.07,
                 metric: str = "accuracy", num_classes: int | None = None) -> float:
    test_y = torch.as_tensor(test_y).long()
    classes = num_classes or int(max(torch.as_tensor(train_y).max(), test_y.max())) + 1
    scores = knn_predict(train_x, train_y, test_x, k, temperature, classes)
    return score(scores.argmax(1), test_y, metric)
