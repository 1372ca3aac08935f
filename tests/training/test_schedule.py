import math

import pytest

from stablerep.training import lr_at


def test_warmup_then_cosine_to_min():
    total, warm, base = 100, 10, 1.0
    lrs = [lr_at(s, total, base, warm) for s in range(total)]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    mid = 10 + (total - 1 - 10) / 2
    assert lr_at(int(mid), total, base, warm) == pytest.approx(0.5 * (1 + math.cos(math.pi * (int(mid) - 10) / 89)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_min_lr_floor():
    assert lr_at(99, 100, 1.0, 0, min_lr=0.1) == pytest.approx(0.1)
