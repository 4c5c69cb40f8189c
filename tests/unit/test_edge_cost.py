"""``CostGate``: enter only when the expected move beats half-spread + fee + margin; calibration."""

from __future__ import annotations

import math

import pytest

from bot.analytics.cost import DEFAULT_SLOPE_BPS, CostGate


def gate(**kw: object) -> CostGate:
    args: dict[str, object] = {"taker_fee_bps": 10.0, "maker_fee_bps": 2.0, "min_edge_bps": 0.5}
    args.update(kw)
    return CostGate(**args)  # type: ignore[arg-type]


def test_default_prior_is_linear_and_symmetric() -> None:
    g = gate()
    assert g.expected_move_bps(3.0) == pytest.approx(3 * DEFAULT_SLOPE_BPS)
    assert g.expected_move_bps(-3.0) == g.expected_move_bps(3.0)


def test_fees_higher_than_the_edge_refuse_and_count() -> None:
    g = gate(mapping=[(0.0, 0.0), (2.0, 4.0), (4.0, 8.0)], calibrate=False)
    ok, reason = g.allow(3.0, half_spread_bps=0.25, aggressive=True)
    assert not ok
    assert reason == ("expected move 6.000 bps at strength 3.00 <= cost 10.750 bps "
                      "(half-spread 0.250 + taker fee 10.000 + min_edge 0.500)")
    assert g.skipped_for_cost == 1
    ok, reason = g.allow(3.0, half_spread_bps=0.25, aggressive=False)  # maker: 0.25 + 2 + 0.5 = 2.75 < 6
    assert ok and "> cost 2.750 bps" in reason and "maker fee 2.000" in reason
    assert g.skipped_for_cost == 1 and g.allowed == 1


def test_zero_fees_let_any_positive_edge_through() -> None:
    g = CostGate(taker_fee_bps=0, maker_fee_bps=0, min_edge_bps=0)
    assert g.allow(2.0, half_spread_bps=0.0008, aggressive=True)[0]
    assert g.skipped_for_cost == 0


def test_cost_is_strictly_exceeded() -> None:
    g = gate(mapping=lambda s: 10.5, calibrate=False)
    assert not g.allow(2.0, 0.0, True)[0]  # 10.5 is not > 10 + 0.5
    assert gate(mapping=lambda s: 10.5001, calibrate=False).allow(2.0, 0.0, True)[0]


def test_piecewise_mapping_interpolates_and_is_flat_beyond_the_ends() -> None:
    g = gate(mapping=[(4.0, 8.0), (2.0, 4.0)], calibrate=False)
    assert g.expected_move_bps(3.0) == 6.0
    assert g.expected_move_bps(1.0) == 4.0 and g.expected_move_bps(10.0) == 8.0


def test_calibration_moves_from_the_prior_to_the_data() -> None:
    g = gate(mapping=lambda s: 2.0 * s, prior_weight=20.0, typical_strength=2.0)
    assert g.factor == 1.0
    # realised moves are half what the prior expects: c -> 0.5 as data accumulates
    for _ in range(20):
        g.observe(2.0, 2.0)
    lam = 20.0 * 4.0**2
    assert g.factor == pytest.approx((20 * 4.0 * 2.0 + lam) / (20 * 16.0 + lam))  # = 0.75: prior and data weigh equally
    for _ in range(2000):
        g.observe(2.0, 2.0)
    assert g.observations == 500  # rolling window
    assert g.factor == pytest.approx((500 * 8.0 + lam) / (500 * 16.0 + lam))
    assert g.expected_move_bps(2.0) == pytest.approx(4.0 * g.factor)


def test_signals_that_stop_paying_close_the_gate() -> None:
    g = gate(taker_fee_bps=0, maker_fee_bps=0, min_edge_bps=0)
    assert g.allow(2.0, 0.0, True)[0]
    for _ in range(500):
        g.observe(2.0, -1.0)
    assert g.factor < 0
    ok, _ = g.allow(2.0, 0.0, True)
    assert not ok and g.skipped_for_cost == 1


def test_no_calibration_and_bad_input() -> None:
    g = gate(calibrate=False)
    g.observe(2.0, 100.0)
    assert g.factor == 1.0 and g.observations == 0
    g2 = gate()
    g2.observe(math.nan, 1.0)
    g2.observe(2.0, math.inf)
    assert g2.observations == 0
    with pytest.raises(ValueError, match="taker_fee_bps"):
        gate(taker_fee_bps=math.nan)
    with pytest.raises(ValueError, match="mapping"):
        gate(mapping=[])
