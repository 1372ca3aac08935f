"""Evaluation choices that change every reported number, pinned with values computed by hand:
kNN's temperature-weighted votes and defaults, the L-BFGS probe's L2 grid, tie-breaking, validation
split, refit and metric, the few-shot episodes (how many, from which split, their interval), and the
datasets scored by mean per-class accuracy. Each is checked on data built so that the wrong choice
gives a different number."""

import math
import statistics

import numpy as np
import pytest
import torch

from stablerep.data.labelled import LabelledDataset, LabelledSplit, MemoryImages
from stablerep.data.torchvision_sets import REGISTRY
from stablerep.evaluation import (
    SplitFeatures,
    few_shot,
    knn_accuracy,
    knn_predict,
    lbfgs_probe,
    score,
)
from stablerep.evaluation.suite import ProtocolSettings, score_encoder

ONLY = {"linear_probe": {"enabled": False}, "knn": {"enabled": False}, "few_shot": {"enabled": False},
        "zero_shot": {"enabled": False}}


def _scored(train, test, protocols, val=None, metric="accuracy"):
    """score_encoder on given features: each split is (features (N, D), labels (N,)); ``protocols``
    switches on what the test needs over ONLY (everything off), the rest at its defaults."""
    def split(labels):
        return LabelledSplit(MemoryImages([], "features"), np.asarray(labels, dtype=np.int64))

    splits = {"train": train, "test": test, **({"val": val} if val is not None else {})}
    classes = int(max(int(torch.as_tensor(y).max()) for _, y in splits.values())) + 1
    dataset = LabelledDataset("d", "features", [str(c) for c in range(classes)], split(train[1]), split(test[1]),
                              "fingerprint", metric, val=split(val[1]) if val is not None else None)
    feats = {name: SplitFeatures(torch.as_tensor(x).float(), torch.ones(len(y), dtype=torch.bool))
             for name, (x, y) in splits.items()}
    settings = ProtocolSettings.model_validate({**ONLY, **protocols})
    return score_encoder(dataset, None, feats, settings)  # no encoder: zero-shot is off


def test_protocol_defaults_are_the_papers():
    p = ProtocolSettings()
    assert p.linear_probe.l2_values == 45
    assert (p.knn.k, p.knn.temperature) == (20, 0.07)
    assert (p.few_shot.ways, p.few_shot.shots, p.few_shot.episodes) == (5, [1, 5], 600)
    assert not p.linear_probe_sgd.enabled  # the ImageNet protocol is asked for, never a default
    mean_per_class = {name for name, entry in REGISTRY.items() if entry.metric == "mean_per_class"}
    assert mean_per_class == {"aircraft", "caltech101", "flowers102", "pets"}


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


def _unit(dim, **components):
    v = torch.zeros(dim)
    for axis, value in components.items():
        v[int(axis[1:])] = value
    return v


def test_knn_defaults_are_k_20_and_temperature_0_07():
    # query e0 (class 0): its 20 nearest are 20 class-0 points at cosine 0.95; 150 class-1 points at
    # 0.90 outvote them once k reaches 200 (150 e^(0.9/T) > 20 e^(0.95/T) at T = 0.07 or 1).
    # query e1 (class 2): one class-2 point at 0.99 and 40 class-3 points at 0.6; its 20 nearest are
    # the one and 19 of the 40: e^(0.99/0.07) > 19 e^(0.6/0.07), but 19 e^0.6 > e^0.99 at T = 1
    points = [(_unit(6, e0=0.95, e2=math.sqrt(1 - 0.95 ** 2)), 0, 20), (_unit(6, e0=0.9, e3=math.sqrt(1 - 0.81)), 1, 150),
              (_unit(6, e1=0.99, e4=math.sqrt(1 - 0.99 ** 2)), 2, 1), (_unit(6, e1=0.6, e5=0.8), 3, 40)]
    train_x = torch.stack([v for v, _, n in points for _ in range(n)])
    train_y = torch.tensor([c for _, c, n in points for _ in range(n)])
    test_x, test_y = torch.stack([_unit(6, e0=1.0), _unit(6, e1=1.0)]), torch.tensor([0, 2])
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=200) == 0.5  # the data tells k apart
    assert knn_accuracy(train_x, train_y, test_x, test_y, temperature=1.0) == 0.5  # and T
    assert knn_accuracy(train_x, train_y, test_x, test_y) == 1.0  # the function's defaults
    assert _scored((train_x, train_y), (test_x, test_y), {"knn": {}})["knn"] == 1.0  # the suite's defaults


def test_lbfgs_chooses_l2_on_the_official_validation_split_when_it_contradicts_train():
    # train: class 1 iff x0 > 0.5, learnable: a split of train prefers the weak L2. The official
    # validation split is all class 0 with random features: there the strong L2 (predict the
    # majority) is right and the weak one (x0 > 0.5) wrong a third of the time.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0.5).long()
    val_x, val_y = torch.randn(60, 5, generator=g, dtype=torch.float64), torch.zeros(60, dtype=torch.long)
    test_x = torch.randn(60, 5, generator=g, dtype=torch.float64)
    test_y = (test_x[:, 0] > 0.5).long()
    grid = [1e-6, 1e5]
    from_train = lbfgs_probe(x, y, test_x, test_y, l2_grid=grid)
    assert from_train.best == 1e-6, from_train.validation  # what ignoring the official split gives
    official = lbfgs_probe(x, y, test_x, test_y, val_x=val_x, val_y=val_y, l2_grid=grid)
    assert official.best == 1e5, official.validation
    assert official.validation[1e5] == 1.0 > official.validation[1e-6]
    scored = _scored((x, y), (test_x, test_y), {"linear_probe": {"l2_values": 2}}, val=(val_x, val_y))
    assert scored["linear_probe_l2"] == 1e5  # the suite hands its validation split to the probe


def _on_axis(axis, signs, dim=2, seed=0):
    """Points +-1 (by ``signs``) on ``axis`` with a little noise there, exactly 0 on the other axes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(signs), dim, dtype=torch.float64)
    x[:, axis] = torch.as_tensor(signs, dtype=torch.float64) * (1 + 0.1 * torch.rand(len(signs), generator=g))
    return x


def test_lbfgs_refits_on_train_plus_validation_with_the_chosen_l2():
    # train separates the classes on axis 0 only (axis 1 is exactly 0); validation and test on
    # axis 1 only. A fit on train alone has no weight on axis 1 and sees every test point alike
    # (half right at best); the refit on train + validation learns axis 1 and gets test all right.
    y = torch.arange(40) % 2
    signs = 2 * y - 1
    train_x, val_x, test_x = _on_axis(0, signs, seed=1), _on_axis(1, signs, seed=2), _on_axis(1, signs, seed=3)
    result = lbfgs_probe(train_x, y, test_x, y, val_x=val_x, val_y=y, l2_grid=[1e-3])
    assert result.validation == {1e-3: 0.5}  # the fit on train alone cannot tell validation's classes
    assert result.accuracy == 1.0


def test_probe_and_knn_report_the_datasets_metric_on_imbalanced_test_classes():
    # 1-d features: class 0 negative, class 1 positive. The test split has 8 class-0 points and 4
    # class-1 points, 2 of them on the class-0 side: 10 of 12 right (accuracy 5/6), but class 1
    # only half right (mean per class (1 + 0.5) / 2 = 0.75)
    y = torch.arange(60) % 2
    train_x, val_x = _on_axis(0, 2 * y - 1, dim=1, seed=4), _on_axis(0, 2 * y[:20] - 1, dim=1, seed=5)
    test_y = torch.tensor([0] * 8 + [1] * 4)
    test_x = _on_axis(0, [-1] * 8 + [1, 1, -1, -1], dim=1, seed=6)
    for metric, expected in (("mean_per_class", 0.75), ("accuracy", 10 / 12)):
        assert score(torch.tensor([0] * 8 + [1, 1, 0, 0]), test_y, metric) == pytest.approx(expected)
        probe = lbfgs_probe(train_x, y, test_x, test_y, val_x=val_x, val_y=y[:20], l2_grid=[1e-3], metric=metric)
        assert probe.accuracy == pytest.approx(expected), metric
        scored = _scored((train_x, y), (test_x, test_y), {"linear_probe": {"l2_values": 2}, "knn": {}},
                         val=(val_x, y[:20]), metric=metric)
        assert scored["metric"] == metric
        assert scored["linear_probe"] == pytest.approx(expected) and scored["knn"] == pytest.approx(expected)


def _clusters(per_class, classes=5, dim=8, seed=0):
    """``per_class`` points of each class tightly around its own axis: nearest centroid never errs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(per_class * classes) % classes
    return torch.eye(dim)[y] + 0.01 * torch.randn(len(y), dim, generator=g), y


def test_few_shot_runs_600_episodes_of_the_test_split():
    test_x, test_y = _clusters(20)  # every episode all right
    g = torch.Generator().manual_seed(1)
    train_x, train_y = torch.randn(100, 8, generator=g), torch.arange(100) % 5  # noise: about 1 in 5 right
    assert few_shot(train_x, train_y).accuracy < 0.5  # what episodes of the train split would score
    default = few_shot(test_x, test_y)
    assert default.episodes == len(default.per_episode) == 600 and default.accuracy == 1.0
    scored = _scored((train_x, train_y), (test_x, test_y), {"few_shot": {}})
    for shots in (1, 5):
        key = f"few_shot_5way_{shots}shot"
        assert scored[key] == 1.0 and scored[f"{key}_episodes"] == 600, scored


def test_few_shot_interval_is_1_96_standard_deviations_of_the_episodes_over_root_n():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(300, 6, generator=g), torch.arange(300) % 6
    x[:, 0] += 0.5 * y  # a little signal: episodes differ, some better than others
    result = few_shot(x, y, queries=5, episodes=50, seed=3)
    accs = result.per_episode
    assert len(accs) == 50 and len(set(accs)) > 3
    assert all(round(a * 25) == pytest.approx(a * 25) for a in accs)  # 25 queries an episode
    assert result.accuracy == pytest.approx(statistics.fmean(accs))
    assert result.ci95 == pytest.approx(1.96 * statistics.stdev(accs) / math.sqrt(50))
    assert result.ci95 > 0.01
