import math

import pytest

from stablerep.evaluation.stats import difference_interval, mean_interval, t975


def test_mean_interval_is_student_t():
    iv = mean_interval([0.40, 0.46, 0.43])
    # mean 0.43, sample std 0.03, t(0.975, 2) = 4.303: half-width 4.303 * 0.03 / sqrt(3)
    assert iv.mean == pytest.approx(0.43) and iv.std == pytest.approx(0.03)
    assert iv.half_width == pytest.approx(4.303 * 0.03 / math.sqrt(3))
    assert math.isinf(mean_interval([0.5]).half_width)
    assert t975(1) == 12.706 and t975(30) == 2.042 and t975(2.7) == 4.303  # fractional df rounds down
    assert abs(t975(120) - 1.980) < 0.002


def test_difference_interval_is_welch():
    a, b = [0.50, 0.52, 0.54], [0.40, 0.41, 0.45]
    iv = difference_interval(a, b)
    va, vb = 0.02 ** 2 / 3, (math.sqrt(((0.40 - 0.42) ** 2 + (0.41 - 0.42) ** 2 + (0.45 - 0.42) ** 2) / 2)) ** 2 / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert iv.mean == pytest.approx(0.10)
    assert iv.half_width == pytest.approx(t975(df) * math.sqrt(va + vb))
    assert abs(iv.mean) > iv.half_width  # this gap is supported
    close = difference_interval([0.50, 0.55, 0.45], [0.49, 0.54, 0.47])
    assert abs(close.mean) < close.half_width  # this one is noise
