import math

import pytest
import torch

from stablerep.evaluation import (
    centroid_predict,
    extract_features,
    few_shot,
    knn_accuracy,
    knn_predict,
    lbfgs_probe,
    sgd_probe,
)


def _separable(n, classes=4, dim=12, seed=0, spread=0.6, noise_seed=None):
    """Gaussian clusters around centres drawn from ``seed``; ``noise_seed`` draws other samples."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(seed)) * 3
    y = torch.arange(n) % classes
    g = torch.Generator().manual_seed(seed + 1000 if noise_seed is None else noise_seed)
    return centres[y] + spread * torch.randn(n, dim, generator=g), y


def test_lbfgs_probe_on_a_linearly_separable_set():
    x, y = _separable(400)
    xt, yt = _separable(200, noise_seed=9)  # same clusters, new samples
    result = lbfgs_probe(x, y, xt, yt, l2_grid=[1e-4, 1e-2, 1.0, 100.0])
    assert result.accuracy >= 0.95
    assert set(result.validation) == {1e-4, 1e-2, 1.0, 100.0}


def test_lbfgs_chooses_strong_regularisation_for_noise_features():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(120, 50, generator=g), torch.randint(0, 2, (120,), generator=g)
    result = lbfgs_probe(x, y, x[:10], y[:10], l2_grid=[1e-6, 1e5])
    # labels unrelated to features: validation cannot prefer the unregularised fit by a margin
    assert result.best in (1e-6, 1e5)
    assert 0 <= result.accuracy <= 1


def test_logistic_matches_closed_form_expectations():
    from stablerep.evaluation import fit_logistic

    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    w = fit_logistic(x, y, 2, l2=1.0)
    logits = torch.cat([x, torch.ones(4, 1, dtype=torch.float64)], 1) @ w
    assert (logits.argmax(1) == y).all()
    assert abs(float(w[1, 0] + w[1, 1])) < 1e-4  # symmetric data: the biases cancel


def test_sgd_probe_grid_trains_all_heads_and_picks_on_validation():
    x, y = _separable(500, seed=3)
    result = sgd_probe(x[:400], y[:400], x[400:], y[400:], lrs=(1e-5, 0.1), epochs=20, batch_size=64)
    assert result.validation[0.1] > result.validation[1e-5]
    assert result.best == 0.1 and result.accuracy >= 0.95


def test_knn_hand_checked():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    query = torch.tensor([[1.0, 0.05], [0.05, 1.0], [-1.0, 0.1]])
    scores = knn_predict(train, labels, query, k=2, temperature=1.0, num_classes=3)
    assert scores.argmax(1).tolist() == [0, 1, 2]
    # query 3's two nearest: (-1, 0) of class 2 (cos 0.995), then (0, 1) of class 1 (cos 0.0995)
    cos_a = float(torch.nn.functional.cosine_similarity(query[2:], train[4:5]))
    cos_b = float(torch.nn.functional.cosine_similarity(query[2:], train[2:3]))
    assert scores[2, 2].item() == pytest.approx(math.exp(cos_a))
    assert scores[2, 1].item() == pytest.approx(math.exp(cos_b))
    assert knn_accuracy(train, labels, query, torch.tensor([0, 1, 2]), k=2) == 1.0


def test_few_shot_hand_checked():
    support = torch.tensor([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.2, 1.0]])
    labels = torch.tensor([5, 5, 9, 9])
    query = torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.7, 0.6]])
    # centroids: (1, 0.1) and (0.1, 1); the third query is closer in angle to the first
    assert centroid_predict(support, labels, query).tolist() == [5, 9, 5]
    x, y = _separable(200, classes=6, seed=4, spread=0.3)
    result = few_shot(x, y, n_way=5, k_shot=5, queries=5, episodes=20)
    assert result.accuracy == pytest.approx(1.0) and result.episodes == 20
    with pytest.raises(ValueError, match="needs 5 classes"):
        few_shot(x[:30], y[:30], n_way=5, k_shot=5, queries=5)


def test_extract_features_uses_cls_features_in_eval_mode():
    from PIL import Image

    from stablerep.models import create_model

    model = create_model("vit_tiny_cpu", img_size=32, head_hidden_dim=16, head_out_dim=8)
    model.train()
    images = [Image.new("RGB", (40, 48), (i * 20, 100, 200)) for i in range(5)]
    feats = extract_features(model, images, 32, batch_size=2)
    assert feats.shape == (5, 64) and model.training  # mode restored
    again = extract_features(model, images[:3], 32, batch_size=3)
    assert torch.allclose(feats[:3], again, atol=1e-5)
