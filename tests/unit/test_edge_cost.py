"""``CostGate``: enter only when the expected move beats a round trip's costs (both legs); calibration."""

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


def test_a_round_trip_pays_both_legs_and_refusals_count() -> None:
    g = gate(mapping=[(0.0, 0.0), (2.0, 4.0), (4.0, 8.0), (8.0, 30.0)], calibrate=False)
    ok, reason = g.allow(3.0, half_spread_bps=0.25, aggressive=True)
    assert not ok  # cross in and out: 0.25 + 10 + 0.25 + 10 + 0.5 = 21 > 6
    assert reason == ("expected move 6.000 bps at strength 3.00 <= round-trip cost 21.000 bps "
                      "(entry spread +0.250 + entry fee 10.000 + adverse 0.000 + exit spread +0.250"
                      " + exit fee 10.000 + min_edge 0.500)")
    assert g.skipped_for_cost == 1
    # join the touch: earns the half-spread, pays maker 2; the exit still crosses (0.25 + taker 10)
    ok, reason = g.allow(3.0, half_spread_bps=0.25, aggressive=False)
    assert not ok and "round-trip cost 12.500 bps" in reason
    ok, reason = g.allow(8.0, half_spread_bps=0.25, aggressive=False)  # 30 > 12.5
    assert ok and g.skipped_for_cost == 2 and g.allowed == 1


def test_passive_entries_pay_the_adverse_selection_measured_on_passive_fills() -> None:
    g = gate(taker_fee_bps=0.0, maker_fee_bps=0.0, min_edge_bps=0.0, mapping=lambda s: 3.0, calibrate=False)
    assert g.passive_adverse_bps == 0.0 and g.allow(2.0, 1.0, aggressive=False)[0]  # 3 > -1 + 1
    for move in (-6.0, -4.0, -2.0, 2.0):  # the mid went against our passive fills: -2.5 bps on average
        g.observe_passive_fill(move)
    assert g.passive_adverse_bps == pytest.approx(2.5)
    cost = g.round_trip(1.0, aggressive=False)
    assert (cost.entry_spread_bps, cost.adverse_bps, cost.exit_spread_bps) == (-1.0, 2.5, 1.0)
    assert cost.total_bps == pytest.approx(2.5) and g.allow(2.0, 1.0, aggressive=False)[0]
    g.observe_passive_fill(-20.0)  # mean -6: adverse 6 > 3 of expected move
    assert not g.allow(2.0, 1.0, aggressive=False)[0]
    assert g.round_trip(1.0, aggressive=True).adverse_bps == 0.0  # a taker entry is not selected against


def test_zero_fees_let_any_positive_edge_through() -> None:
    g = CostGate(taker_fee_bps=0, maker_fee_bps=0, min_edge_bps=0)
    assert g.allow(2.0, half_spread_bps=0.0008, aggressive=True)[0]
    assert g.skipped_for_cost == 0


def test_cost_is_strictly_exceeded() -> None:
    g = gate(mapping=lambda s: 20.5, calibrate=False)
    assert not g.allow(2.0, 0.0, True)[0]  # 20.5 is not > 10 + 10 + 0.5
    assert gate(mapping=lambda s: 20.5001, calibrate=False).allow(2.0, 0.0, True)[0]


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
