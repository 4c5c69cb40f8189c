"""OFI pinned on the event cases of Cont, Kukanov & Stoikov (2014), and multi-level OFI."""

from __future__ import annotations

import numpy as np
import pytest

from bot.signals.ofi import INF, OfiTracker, cks_e, cks_e_array, integrated_ofi

# (before bid, before ask) -> (after bid, after ask); levels are (price, size)
B0, A0 = (100.0, 5.0), (101.0, 4.0)

CKS_CASES = [
    # bid side
    ("limit buy joins the best bid", (100.0, 7.0), A0, +2.0),
    ("new better bid (price improves)", (100.5, 3.0), A0, +3.0),
    ("bid size shrinks (cancel or sell market order)", (100.0, 1.5), A0, -3.5),
    ("best bid depleted, price drops", (99.5, 6.0), A0, -5.0),
    # ask side
    ("limit sell joins the best ask", B0, (101.0, 6.0), -2.0),
    ("new better ask (price improves)", B0, (100.5, 2.5), -2.5),
    ("ask size shrinks (cancel or buy market order)", B0, (101.0, 1.0), +3.0),
    ("best ask depleted, price rises", B0, (101.5, 9.0), +4.0),
    ("nothing at the touch changes", B0, A0, 0.0),
    ("both sides move: bid up, ask up", (100.5, 1.0), (101.5, 2.0), +1.0 + 4.0),
]


@pytest.mark.parametrize(("case", "bid", "ask", "expected"), CKS_CASES, ids=[c[0] for c in CKS_CASES])
def test_cks_event_cases(case: str, bid: tuple[float, float], ask: tuple[float, float], expected: float) -> None:
    e = cks_e(bid[0], bid[1], ask[0], ask[1], B0[0], B0[1], A0[0], A0[1])
    assert e == pytest.approx(expected, abs=1e-12)
    tr = OfiTracker(1)
    tr.reset([B0], [A0])
    assert tr.update([bid], [ask])
    assert tr.last[0] == e
    arr = cks_e_array(*(np.array([v]) for v in (bid[0], bid[1], ask[0], ask[1], B0[0], B0[1], A0[0], A0[1])))
    assert arr[0] == e  # scalar and vectorised paths agree bit for bit


def test_multi_level_ofi_per_level_and_missing_levels() -> None:
    tr = OfiTracker(3)
    tr.reset([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0), (102.0, 2.0), (103.0, 3.0)])
    # level 1: bid +0.5; level 2: bid 99 -> 99.5 (new 4.0); level 3 bid appears (98, 1.0) = +1
    # ask level 3 vanishes: price inf >= 103 -> +3 (old size leaves the ask)
    assert tr.update([(100.0, 1.5), (99.5, 4.0), (98.0, 1.0)], [(101.0, 1.0), (102.0, 2.0)])
    assert tr.last == [0.5, 4.0, 1.0 + 3.0]
    assert integrated_ofi(tr.last, mean_depth=2.0) == pytest.approx(4.25)


def test_first_view_and_reset_produce_no_ofi() -> None:
    tr = OfiTracker(2)
    assert not tr.update([(100.0, 1.0)], [(101.0, 1.0)])
    assert tr.last == [0.0, 0.0]
    tr.reset()
    assert not tr.valid
    assert not tr.update([(100.0, 9.0)], [(101.0, 1.0)])
    assert tr.last == [0.0, 0.0]
    assert INF > 1e300
