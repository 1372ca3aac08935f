"""MultiPosConLoss against a direct, loop-by-loop evaluation of the paper's formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from stablerep.losses import MultiPosConLoss, NTXentLoss


def paper_formula(features: torch.Tensor, labels: list[int], tau: float) -> float:
    """loss(a) = -sum_i p_i log q_i over every other sample b_i; mean over anchors (plain Python)."""
    z = F.normalize(features.double(), dim=-1)
    n = len(labels)
    total = 0.0
    for a in range(n):
        others = [b for b in range(n) if b != a]
        sims = {b: float(z[a] @ z[b]) / tau for b in others}
        denom = sum(math.exp(s) for s in sims.values())
        positives = [b for b in others if labels[b] == labels[a]]
        for b in positives:
            total += -(1 / len(positives)) * math.log(math.exp(sims[b]) / denom)
    return total / n


@pytest.mark.parametrize("counts", [[1, 2, 5], [2, 2, 2, 2], [5, 1], [3, 3, 1, 1]])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_matches_paper_formula_with_arbitrary_ids(counts, tau):
    g = torch.Generator().manual_seed(sum(counts))
    ids = [987654321987, -5, 42, 2**40 + 7][: len(counts)]  # hashes, not positions
    labels = [ids[c] for c, k in enumerate(counts) for _ in range(k)]
    perm = torch.randperm(len(labels), generator=g).tolist()  # captions need not be contiguous
    labels = [labels[i] for i in perm]
    feats = torch.randn(len(labels), 16, generator=g) * 3  # unnormalised on purpose
    got = MultiPosConLoss(tau)(feats, torch.tensor(labels))["loss"]
    assert got.item() == pytest.approx(paper_formula(feats, labels, tau), rel=1e-5, abs=1e-6)


def test_anchor_without_positive_adds_zero_but_counts_in_mean():
    feats = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([7, 7, 8, 9])  # 8 and 9 have no positive
    full = MultiPosConLoss(0.1)(feats, labels)["loss"]
    assert full.item() == pytest.approx(paper_formula(feats, labels.tolist(), 0.1), rel=1e-5)
    # by hand: only anchors 0 and 1 have a positive (each other); each is contrasted with the 3 other
    # samples, and the sum of their two terms is divided by all 4 anchors, not by the 2 with positives
    z = F.normalize(feats.double(), dim=-1)
    sims = z @ z.T / 0.1
    pair = sum(-math.log(math.exp(sims[a, 1 - a]) / sum(math.exp(sims[a, b]) for b in range(4) if b != a))
               for a in (0, 1))
    assert full.item() == pytest.approx(pair / 4, rel=1e-5)
    assert full.item() != pytest.approx(pair / 2, rel=1e-3)  # the mean over anchors with a positive only


def test_mask_is_rebuilt_every_call():
    loss_fn = MultiPosConLoss(0.1)
    feats = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    a = loss_fn(feats, torch.tensor([1, 1, 2, 2, 3, 3]))["loss"]
    b = loss_fn(feats, torch.tensor([1, 2, 3, 1, 2, 3]))["loss"]
    assert a.item() == pytest.approx(paper_formula(feats, [1, 1, 2, 2, 3, 3], 0.1), rel=1e-5)
    assert b.item() == pytest.approx(paper_formula(feats, [1, 2, 3, 1, 2, 3], 0.1), rel=1e-5)
    assert a.item() != pytest.approx(b.item())


def test_two_images_per_caption_equals_nt_xent():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(5, 12, generator=g), torch.randn(5, 12, generator=g)
    labels = torch.arange(5).repeat_interleave(2) * 1000 + 17
    stacked = torch.stack([z1, z2], dim=1).flatten(0, 1)  # (10, 12): views of a caption together
    multipos = MultiPosConLoss(0.2)(stacked, labels)["loss"]
    ntxent = NTXentLoss(0.2)(z1, z2)["loss"]
    assert multipos.item() == pytest.approx(ntxent.item(), rel=1e-6)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([3, 3, 9, 9, 9, 1, 4])
    loss_fn = MultiPosConLoss(0.5)
    assert torch.autograd.gradcheck(lambda f: loss_fn(f, labels)["loss"], (feats,))


def test_gradient_matches_autograd_of_direct_formula():
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, 1, 1, 2, 2, 3])
    MultiPosConLoss(0.1)(feats, labels)["loss"].backward()
    ours = feats.grad.clone()

    f2 = feats.detach().clone().requires_grad_(True)
    z = F.normalize(f2, dim=-1)
    sims = z @ z.T / 0.1
    n = len(labels)
    eye = torch.eye(n, dtype=torch.bool)
    loss = 0
    for a in range(n):
        row = sims[a][~eye[a]]
        pos = (labels == labels[a])[~eye[a]].double()
        if pos.sum() > 0:
            loss = loss - (pos / pos.sum() * torch.log_softmax(row, 0)).sum()
    (loss / n).backward()
    assert torch.allclose(ours, f2.grad, atol=1e-10)
    assert torch.isfinite(ours).all()


def test_large_logits_stay_finite_and_exact():
    # tau = 0.01 puts logits at up to 100: exp(100) overflows float32, so an unstabilised softmax (or
    # a -inf self mask multiplied by a zero target) gives inf or nan; the value must still be the formula's
    feats = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)) * 1e4
    labels = [0, 0, 1, 1, 2, 2, 3, 3]
    out = MultiPosConLoss(0.01)(feats, torch.tensor(labels))["loss"]
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert out.item() == pytest.approx(paper_formula(feats, labels, 0.01), rel=1e-5)


def test_bad_shapes_are_clear():
    with pytest.raises(ValueError, match=r"features must be \(N, D\)"):
        MultiPosConLoss()(torch.randn(2, 3, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="labels must be"):
        MultiPosConLoss()(torch.randn(4, 3), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="temperature"):
        MultiPosConLoss(0)
