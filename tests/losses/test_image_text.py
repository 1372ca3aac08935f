import math

import pytest
import torch
import torch.nn.functional as F

from stablerep.losses import ClipLoss, ImageTextLoss, MultiPosConLoss, NTXentLoss, StableRepPlusLoss


def clip_reference(img, txt, scale):
    """Textbook CLIP: symmetric cross-entropy with diagonal targets."""
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = scale * img @ txt.T
    target = torch.arange(len(img))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def test_clip_loss_equals_textbook_clip():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    labels = torch.tensor([11, 22, 33, 44, 55, 66])
    log_scale = torch.tensor(math.log(1 / 0.07))
    got = ClipLoss()(img, labels, txt, labels, log_scale)["loss"]
    assert got.item() == pytest.approx(clip_reference(img, txt, 1 / 0.07).item(), rel=1e-5)


def test_text_to_image_has_m_positives():
    g = torch.Generator().manual_seed(1)
    n, m = 3, 4
    img, txt = torch.randn(n * m, 8, generator=g), torch.randn(n, 8, generator=g)
    text_labels = torch.tensor([5, 900, 13])
    image_labels = text_labels.repeat_interleave(m)
    out = ImageTextLoss()(img, image_labels, txt, text_labels, torch.tensor(math.log(10.0)))
    zi, zt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = 10.0 * zt @ zi.T  # (n, n*m)
    expected_t2i = 0.0
    for t in range(n):
        logq = torch.log_softmax(logits[t], 0)
        expected_t2i += -sum(logq[t * m + j] for j in range(m)) / m
    expected_i2t = F.cross_entropy(10.0 * zi @ zt.T, torch.arange(n).repeat_interleave(m))
    assert out["t2i"].item() == pytest.approx(expected_t2i.item() / n, rel=1e-5)
    assert out["i2t"].item() == pytest.approx(expected_i2t.item(), rel=1e-5)


def test_logit_scale_is_clamped_to_ln_100():
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    labels = torch.arange(4)
    big = ClipLoss()(img, labels, txt, labels, torch.tensor(10.0))["loss"]
    at_cap = ClipLoss()(img, labels, txt, labels, torch.tensor(math.log(100)))["loss"]
    neg = ClipLoss()(img, labels, txt, labels, torch.tensor(-3.0))["loss"]
    at_zero = ClipLoss()(img, labels, txt, labels, torch.tensor(0.0))["loss"]
    assert big.item() == pytest.approx(at_cap.item(), rel=1e-6)
    assert neg.item() == pytest.approx(at_zero.item(), rel=1e-6)


def test_stablerep_plus_is_multipos_plus_half_image_text():
    g = torch.Generator().manual_seed(3)
    feats, img, txt = torch.randn(8, 6, generator=g), torch.randn(8, 5, generator=g), torch.randn(2, 5, generator=g)
    text_labels = torch.tensor([70, 80])
    image_labels = text_labels.repeat_interleave(4)
    scale = torch.tensor(2.0)
    out = StableRepPlusLoss(0.1, 0.5)(feats, img, image_labels, txt, text_labels, scale)
    mp = MultiPosConLoss(0.1)(feats, image_labels)["loss"]
    it = ImageTextLoss()(img, image_labels, txt, text_labels, scale)
    assert out["loss"].item() == pytest.approx((mp + 0.5 * (it["i2t"] + it["t2i"])).item(), rel=1e-6)


def test_nt_xent_equals_textbook_simclr():
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    sim = z @ z.T / 0.5
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(4, 8), torch.arange(0, 4)])
    expected = F.cross_entropy(sim, target)
    assert NTXentLoss(0.5)(z1, z2)["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_image_text_gradcheck_float64():
    g = torch.Generator().manual_seed(5)
    img = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    txt = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    tl = torch.tensor([1, 2, 3])
    fn = ImageTextLoss()
    assert torch.autograd.gradcheck(lambda a, b, s: fn(a, tl.repeat_interleave(2), b, tl, s)["loss"],
                                    (img, txt, scale))
