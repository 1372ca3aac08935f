import math

import pytest
import torch

from stablerep.evaluation import (
    EvalTransform,
    centroid_predict,
    encode_split,
    few_shot,
    knn_accuracy,
    knn_predict,
    lbfgs_probe,
    score,
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
    # 50 features of pure noise and labels unrelated to them: a weakly regularised fit memorises
    # the training part and is at chance on validation; a strong one predicts the majority class,
    # which the labels are skewed towards (70/30), so validation prefers strong regularisation
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 50, generator=g)
    y = (torch.rand(300, generator=g) < 0.3).long()
    result = lbfgs_probe(x[:200], y[:200], x[200:], y[200:], l2_grid=[1e-6, 1e-2, 1e5])
    assert result.best == 1e5, result.validation
    assert result.validation[1e5] > result.validation[1e-6]
    majority = float((y[200:] == 0).float().mean())
    assert result.accuracy == pytest.approx(majority)  # the strongly regularised fit predicts the majority


def test_lbfgs_uses_an_official_validation_split_and_mean_per_class():
    x, y = _separable(300, classes=3, seed=6)
    vx, vy = _separable(90, classes=3, seed=6, noise_seed=11)
    tx, ty = _separable(90, classes=3, seed=6, noise_seed=12)
    result = lbfgs_probe(x, y, tx, ty, val_x=vx, val_y=vy, l2_grid=[1e-3, 1.0], metric="mean_per_class")
    assert set(result.validation) == {1e-3, 1.0} and result.accuracy >= 0.95


def test_mean_per_class_accuracy_weights_classes_equally():
    target = torch.tensor([0] * 8 + [1] * 2)
    pred = torch.tensor([0] * 8 + [0, 1])  # class 0 all right, class 1 half right
    assert score(pred, target) == pytest.approx(0.9)
    assert score(pred, target, "mean_per_class") == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="unknown metric"):
        score(pred, target, "top5")


def test_zero_shot_picks_the_most_similar_class_text():
    from stablerep.evaluation.zero_shot import class_embeddings, zero_shot_accuracy

    vocab = {"cat": torch.tensor([1.0, 0.0]), "dog": torch.tensor([0.0, 1.0])}

    def tokenize(texts):  # one "token" per prompt: the index of the class word in it
        return torch.tensor([[0] if "cat" in t else [1] for t in texts])

    def encode(tokens):
        return torch.stack([vocab["cat"] if int(t[0]) == 0 else vocab["dog"] for t in tokens])

    classifier = class_embeddings(["cat", "dog"], tokenize, encode, ("a {}", "the {}"))
    assert torch.allclose(classifier, torch.eye(2))
    images = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.5]])
    assert zero_shot_accuracy(images, torch.tensor([0, 1, 1]), classifier) == pytest.approx(2 / 3)


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


def test_encode_split_uses_cls_features_in_eval_mode():
    import numpy as np
    from PIL import Image

    from stablerep.data.labelled import LabelledSplit, MemoryImages
    from stablerep.evaluation.encoders import RunEncoder
    from stablerep.models import create_model

    model = create_model("vit_tiny_cpu", img_size=32, head_hidden_dim=16, head_out_dim=8)
    model.train()
    encoder = RunEncoder(model)
    encoder.train()
    images = [Image.new("RGB", (40, 48), (i * 20, 100, 200)) for i in range(5)]
    split = LabelledSplit(MemoryImages(images, "test"), np.zeros(5, dtype=np.int64))
    transform = EvalTransform(size=32, resize=32)
    feats = encode_split(encoder, split, transform, batch_size=2, device="cpu")
    assert feats.features.shape == (5, 64) and encoder.training  # mode restored
    assert bool(feats.keep.all()) and feats.embed is None
    model.eval()
    with torch.no_grad():  # the CLS features of the resized, centre-cropped, normalised image
        x = transform.normalise(transform.geometric()(torch.as_tensor(np.array(images[3])).permute(2, 0, 1))[None])
        assert torch.allclose(feats.features[3], model.encode_image(x)[0], atol=1e-5)
