"""Queue/depth imbalance and microprice on hand-computed books."""

from __future__ import annotations

import numpy as np
import pytest

from bot.signals.book_imbalance import (
    depth_imbalance,
    microprice,
    microprice_array,
    queue_imbalance,
    queue_imbalance_array,
)


def test_queue_imbalance() -> None:
    assert queue_imbalance(3.0, 1.0) == pytest.approx(0.5)
    assert queue_imbalance(1.0, 3.0) == pytest.approx(-0.5)
    assert queue_imbalance(0.0, 0.0) == 0.0
    np.testing.assert_allclose(queue_imbalance_array(np.array([3.0, 0.0]), np.array([1.0, 0.0])), [0.5, 0.0])


def test_depth_imbalance_over_top_levels() -> None:
    bids = [(100.0, 1.0), (99.0, 2.0), (98.0, 10.0)]
    asks = [(101.0, 1.0), (102.0, 1.0), (103.0, 1.0)]
    assert depth_imbalance(bids, asks, 2) == pytest.approx((3.0 - 2.0) / 5.0)
    assert depth_imbalance(bids, asks, 3) == pytest.approx((13.0 - 3.0) / 16.0)


def test_microprice_leans_to_the_thin_side() -> None:
    # bid 100 x 3, ask 101 x 1: I = 3/4, microprice = 101*0.75 + 100*0.25
    assert microprice(100.0, 3.0, 101.0, 1.0) == pytest.approx(100.75)
    assert microprice(100.0, 1.0, 101.0, 1.0) == pytest.approx(100.5)
    assert microprice(100.0, 0.0, 101.0, 0.0) == pytest.approx(100.5)
    arr = microprice_array(np.array([100.0]), np.array([3.0]), np.array([101.0]), np.array([1.0]))
    assert arr[0] == pytest.approx(100.75)
