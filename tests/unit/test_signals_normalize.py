"""EWMA scales (scale-only normalisation), ring buffers and the slot clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bot.signals.normalize import EwmaScale, RingBuffer, RollingSums, SlotClock, alpha_from_halflife


def test_alpha_from_halflife() -> None:
    a = alpha_from_halflife(10.0, 1.0)
    assert (1 - a) ** 10 == pytest.approx(0.5)


def test_ewma_scale_is_a_plain_rms_early_and_scores_before_updating() -> None:
    z = EwmaScale(alpha=0.01)
    assert z.update(0.0) == 0.0
    assert z.update(-2.0) == -1.0  # no scale yet: the value in units of itself
    assert z.rms == pytest.approx(math.sqrt(4.0 / 2))  # mean of 0², 2²
    assert z.update(4.0) == pytest.approx(4.0 / math.sqrt(2.0))  # measured before 4 enters
    assert z.ms == pytest.approx((0.0 + 4.0 + 16.0) / 3)
    assert z.score(-1.0) == pytest.approx(-1.0 / math.sqrt(20.0 / 3))  # score() does not learn
    assert z.n == 3


def test_ewma_scale_follows_a_regime_change() -> None:
    rng = np.random.default_rng(1)
    z = EwmaScale(alpha_from_halflife(50, 1))
    for x in rng.normal(0, 1, 2000):
        z.update(float(x))
    assert z.rms == pytest.approx(1.0, rel=0.3)
    for x in rng.normal(0, 10, 2000):
        z.update(float(x))
    assert z.rms == pytest.approx(10.0, rel=0.3)  # thresholds in units of the scale survive the regime change


def test_a_burst_of_outliers_does_not_inflate_the_scale() -> None:
    """One pressure episode (25 steps at +7) must not make the next one look ordinary."""
    rng = np.random.default_rng(2)
    z = EwmaScale(alpha_from_halflife(300, 1))
    for x in rng.normal(0, 1, 200):
        z.update(float(x))
    rms_before = z.rms
    first = [z.update(7.0 + float(e)) for e in rng.normal(0, 1, 25)]
    for x in rng.normal(0, 1, 100):
        z.update(float(x))
    second = [z.update(7.0 + float(e)) for e in rng.normal(0, 1, 25)]
    assert z.rms == pytest.approx(rms_before, rel=0.15)
    assert min(first) > 4.0 and min(second) > 4.0  # the second episode scores like the first


def test_a_lasting_change_of_magnitude_is_adopted_after_max_skip() -> None:
    from bot.signals.normalize import MAX_SKIP

    rng = np.random.default_rng(3)
    z = EwmaScale(alpha_from_halflife(50, 1))
    for x in rng.normal(0, 1, 200):
        z.update(float(x))
    scores = [z.update(20.0 + float(e)) for e in rng.normal(0, 1, MAX_SKIP + 800)]
    assert scores[0] > 10.0  # scored against the old scale first
    assert min(scores[:MAX_SKIP]) > 10.0  # not learnt from while it could be an episode
    # then learnt from (one value per MAX_SKIP + 1 steps until the scale has grown to within
    # REJECT of it): after ~10 half-lives the new magnitude is the scale
    assert max(abs(v) for v in scores[-100:]) < 1.5
    assert min(scores) > 0.0  # and a lasting one-sided flow never scores against itself


def test_continued_weaker_buying_after_a_burst_still_scores_positive() -> None:
    """The defect (issue "Exact numbers", item 6): a z-score against an adaptive mean that rose in a
    burst of buying scored continued, weaker buying negative. A scale has no mean to drift."""
    rng = np.random.default_rng(4)
    z = EwmaScale(alpha_from_halflife(30, 1))
    for x in rng.normal(0, 1, 100):
        z.update(float(x))
    burst = [z.update(8.0 + float(e)) for e in rng.normal(0, 0.5, 150)]  # long enough to be learnt
    weaker = [z.update(2.0 + float(e)) for e in rng.normal(0, 0.2, 60)]
    assert min(burst) > 0 and min(weaker) > 0


def test_the_score_keeps_the_sign_at_the_edges_of_floating_point() -> None:
    z = EwmaScale(0.1)
    for _ in range(40):
        z.update(1e150)
    assert z.update(5e-324) > 0.0 and z.update(-5e-324) < 0.0  # underflowing quotients keep the sign
    assert z.update(math.inf) == math.inf  # scored ...
    assert math.isnan(z.update(math.nan))
    assert math.isfinite(z.rms) and z.rms > 0.0  # ... but never learnt
    assert z.score(0.0) == 0.0


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
