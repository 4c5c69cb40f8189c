"""EWMA z-scores, ring buffers and the slot clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bot.signals.normalize import EwmaZ, RingBuffer, RollingSums, SlotClock, alpha_from_halflife


def test_alpha_from_halflife() -> None:
    a = alpha_from_halflife(10.0, 1.0)
    assert (1 - a) ** 10 == pytest.approx(0.5)


def test_ewma_z_is_plain_mean_and_variance_early_and_scores_before_updating() -> None:
    z = EwmaZ(alpha=0.01)
    assert z.update(1.0) == 0.0  # no spread yet
    assert z.update(3.0) == 0.0  # variance 0 before this value
    # after 1, 3: mean 2, population variance 1
    assert z.mean == pytest.approx(2.0)
    assert z.var == pytest.approx(1.0)
    assert z.update(5.0) == pytest.approx(3.0)  # (5 - 2)/1, measured before 5 enters
    assert z.mean == pytest.approx(3.0)


def test_ewma_z_follows_a_regime_change() -> None:
    rng = np.random.default_rng(1)
    z = EwmaZ(alpha_from_halflife(50, 1))
    for x in rng.normal(0, 1, 2000):
        z.update(float(x))
    assert z.std == pytest.approx(1.0, rel=0.3)
    for x in rng.normal(0, 10, 2000):
        z.update(float(x))
    assert z.std == pytest.approx(10.0, rel=0.3)  # thresholds in SD survive the regime change


def test_a_burst_of_outliers_does_not_inflate_the_baseline() -> None:
    """One pressure episode (25 steps at +7 sigma) must not make the next one look ordinary."""
    rng = np.random.default_rng(2)
    z = EwmaZ(alpha_from_halflife(300, 1))
    for x in rng.normal(0, 1, 200):
        z.update(float(x))
    std_before = z.std
    first = [z.update(7.0 + float(e)) for e in rng.normal(0, 1, 25)]
    for x in rng.normal(0, 1, 100):
        z.update(float(x))
    second = [z.update(7.0 + float(e)) for e in rng.normal(0, 1, 25)]
    assert z.std == pytest.approx(std_before, rel=0.15)
    assert min(first) > 4.0 and min(second) > 4.0  # the second episode scores like the first


def test_a_lasting_level_shift_is_adopted_after_max_skip() -> None:
    from bot.signals.normalize import MAX_SKIP

    rng = np.random.default_rng(3)
    z = EwmaZ(alpha_from_halflife(50, 1))
    for x in rng.normal(0, 1, 200):
        z.update(float(x))
    scores = [z.update(20.0 + float(e)) for e in rng.normal(0, 1, MAX_SKIP + 500)]
    assert scores[0] > 10.0  # scored against the old level first
    assert min(scores[:MAX_SKIP]) > 10.0  # not learnt from while it could be an episode
    # then learnt from: within ~8 half-lives the new level is the baseline
    assert max(abs(v) for v in scores[-100:]) < 3.0


def test_ring_buffer_wraps_oldest_first() -> None:
    rb = RingBuffer(3)
    for v in (1.0, 2.0, 3.0, 4.0):
        rb.append(v)
    assert rb.values()[:, 0].tolist() == [2.0, 3.0, 4.0]
    assert rb.sum()[0] == 9.0
    assert rb.oldest()[0] == 2.0
    assert rb.last()[0] == 4.0
    assert len(rb) == 3


def test_slot_clock_and_rolling_sums_with_quiet_gaps() -> None:
    clock = SlotClock(250)
    roll = RollingSums(4, 1)
    assert clock.advance(1010) == 0  # opens [1000, 1250)
    assert clock.advance(1240) == 0
    assert clock.advance(1200) == 0  # a step back stays in the open slot
    assert clock.advance(1250) == 1
    roll.close([1.0], 1)
    n = clock.advance(2010)  # [1250,1500), [1500,1750), [1750,2000) closed
    assert n == 3
    roll.close([2.0], n)  # the 2.0 slot, then two empty ones
    assert roll.sums() == [3.0]
    roll.close([0.5], 1)  # window now holds 2.0, 0, 0, 0.5: the 1.0 slot fell out
    assert roll.sums() == [2.5]
    roll.close([0.0], 10)
    assert roll.sums() == [0.0]
    assert not math.isnan(roll.sums()[0])
