"""Client ids, the order state machine and the position from fills."""

from __future__ import annotations

import re
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.execution.client_ids import BINANCE_CLIENT_ID, ClientIdFactory, parse_client_id
from bot.execution.orders import ALLOWED, IllegalTransition, PositionTracker, apply_report, transition
from bot.model import Fill, Liquidity, Order, OrderStatus, OrderType, Side

S = OrderStatus


def _order(status: OrderStatus = S.NEW, amount: str = "1", filled: str = "0") -> Order:
    return Order("ofi-1-1", "BTC/USDT", Side.BUY, OrderType.LIMIT, D(amount), D("100"), status, D(filled))


def test_client_ids_are_deterministic_and_unique_across_runs() -> None:
    a = ClientIdFactory(run_id=7)
    assert [a.next() for _ in range(3)] == ["ofi-7-1", "ofi-7-2", "ofi-7-3"]
    assert ClientIdFactory(run_id=7).next() == "ofi-7-1"  # replay gives the same ids
    b = ClientIdFactory(run_id=8)
    assert b.next() == "ofi-8-1"
    assert parse_client_id("ofi-7-a").seq == 10  # type: ignore[union-attr]
    assert parse_client_id("x-TKT5PX2F662cde7a90114475b86e21") is None
    assert a.is_ours("ofi-zz-1") and not a.is_ours("web_123") and not a.is_ours(None)


@given(run=st.integers(0, 36**10 - 1), seq=st.integers(0, 36**10 - 2))
def test_client_ids_fit_binance_limits(run: int, seq: int) -> None:
    cid = ClientIdFactory(run_id=run, start_seq=seq).next()
    assert BINANCE_CLIENT_ID.match(cid) and len(cid) <= 36
    parsed = parse_client_id(cid)
    assert parsed is not None and (parsed.run_id, parsed.seq) == (run, seq + 1)


def test_bad_prefix_rejected() -> None:
    with pytest.raises(ValueError, match="prefix"):
        ClientIdFactory(1, prefix="bad-prefix")


def test_transition_writes_an_event_row() -> None:
    o, ev = transition(_order(), S.SUBMITTED, 1000)
    assert (
        o.status is S.SUBMITTED and ev.status is S.SUBMITTED and ev.ts == 1000 and ev.client_id == "ofi-1-1"
    )
    o, ev = transition(o, S.ACKED, 1001, exchange_id="42")
    assert o.exchange_id == "42" and ev.exchange_id == "42"


def test_terminal_states_are_final() -> None:
    for st_ in (S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED):
        assert ALLOWED[st_] == frozenset()
        with pytest.raises(IllegalTransition, match=f"{st_} -> acked is not allowed"):
            transition(_order(st_), S.ACKED, 1)


def test_new_cannot_skip_to_filled() -> None:
    with pytest.raises(IllegalTransition):
        transition(_order(), S.FILLED, 1)


def test_stale_report_never_moves_backwards() -> None:
    filled = _order(S.FILLED, filled="1")
    o, ev = apply_report(filled, S.ACKED, 5)  # the REST ack arriving after the websocket fill
    assert ev is None and o.status is S.FILLED


def test_report_skips_states_and_completes_partials() -> None:
    o, ev = apply_report(_order(S.SUBMITTED), S.PARTIALLY_FILLED, 5, filled=D("1"))
    assert o.status is S.FILLED and ev is not None and ev.filled == D("1")
    o, ev = apply_report(_order(S.ACKED), S.ACKED, 5, filled=D("0.4"))  # an ack that carries fills
    assert o.status is S.PARTIALLY_FILLED and o.filled == D("0.4")
    same, ev = apply_report(o, S.PARTIALLY_FILLED, 6, filled=D("0.4"))
    assert ev is None and same == o


def test_unknown_is_open_and_can_be_settled_either_way() -> None:
    u, _ = transition(_order(S.SUBMITTED), S.UNKNOWN, 1, reason="timeout")
    assert u.status.is_open
    acked, ev = apply_report(u, S.ACKED, 2, exchange_id="9")
    assert acked.status is S.ACKED and ev is not None
    rejected, ev = apply_report(u, S.REJECTED, 2, reason="never reached the exchange")
    assert rejected.status is S.REJECTED and ev is not None and ev.reason == "never reached the exchange"


def _fill(side: Side, price: str, amount: str, fee: str = "0", ccy: str = "USDT", tid: str = "1") -> Fill:
    return Fill(tid, "c", "BTC/USDT", side, D(price), D(amount), D(fee), ccy, Liquidity.TAKER, 0)


def test_position_avg_cost_and_realized_pnl() -> None:
    p = PositionTracker("BTC/USDT")
    p.apply(_fill(Side.BUY, "100", "1", fee="0.1"))
    p.apply(_fill(Side.BUY, "110", "1", fee="0.11"))
    assert p.amount == D("2") and p.avg_price == D("105")
    p.apply(_fill(Side.SELL, "120", "3", fee="0.36"))  # closes 2 at +15 each, opens 1 short
    assert p.amount == D("-1") and p.realized_pnl == D("30") and p.avg_price == D("120")
    assert p.fees == D("0.57")


def test_fee_in_base_reduces_the_position_like_the_balance() -> None:
    p = PositionTracker("BTC/USDT")
    p.apply(_fill(Side.BUY, "100", "1", fee="0.001", ccy="BTC"))
    assert p.amount == D("0.999") and p.fees == D("0.1")
    assert re.fullmatch(r"0\.999", str(p.snapshot(0).amount))
