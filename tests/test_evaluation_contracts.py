"""Evaluation choices that change every reported number, pinned with values computed by hand:
kNN's temperature-weighted votes, and the L-BFGS probe's L2 grid and tie-breaking."""

import math

import pytest
import torch

from stablerep.evaluation import knn_predict, lbfgs_probe


def test_knn_votes_are_weighted_by_exp_similarity_over_temperature():
    # one class-0 neighbour at cosine 1.0, two class-1 neighbours at cosine 0.6 each
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[2.0, 0.0]])  # unnormalised on purpose: votes use cosine similarity
    for t in (0.1, 0.5, 1.0):
        scores = knn_predict(train, labels, query, k=3, temperature=t, num_classes=2)
        assert scores[0, 0].item() == pytest.approx(math.exp(1.0 / t), rel=1e-5)
        assert scores[0, 1].item() == pytest.approx(2 * math.exp(0.6 / t), rel=1e-5)
    # the temperature decides: at 1.0 the two near neighbours outvote the closest (2 e^0.6 > e^1),
    # at 0.1 the closest wins (e^10 > 2 e^6)
    assert knn_predict(train, labels, query, k=3, temperature=1.0).argmax(1).item() == 1
    assert knn_predict(train, labels, query, k=3, temperature=0.1).argmax(1).item() == 0


def test_lbfgs_default_grid_is_45_log_spaced_values_from_1e_minus_6_to_1e5():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, generator=g), torch.arange(40) % 2
    result = lbfgs_probe(x[:30], y[:30], x[30:], y[30:])
    grid = sorted(result.validation)
    assert len(grid) == 45
    assert grid[0] == pytest.approx(1e-6) and grid[-1] == pytest.approx(1e5)
    ratios = [b / a for a, b in zip(grid, grid[1:], strict=False)]
    assert ratios == pytest.approx([10 ** (11 / 44)] * 44)  # 11 decades in 44 equal steps


def test_lbfgs_ties_go_to_the_strongest_regularisation():
    # constant features: every L2 strength predicts the majority class, so validation ties everywhere
    # and the strongest value must be chosen (the least overfit, as in the paper's protocol)
    x = torch.zeros(60, 4)
    y = torch.tensor([0] * 40 + [1] * 20)[torch.randperm(60, generator=torch.Generator().manual_seed(1))]
    result = lbfgs_probe(x[:45], y[:45], x[45:], y[45:], l2_grid=[1e-3, 1.0, 1e3])
    assert len(set(result.validation.values())) == 1, result.validation
    assert result.best == 1e3
