"""Ownership drills: a person trades on the bot's account, and the bot acts only on what is its own.

The person is a second, real ccxt client with the same API keys (as a trader at the exchange's
web page would be, from the exchange's point of view): market orders before and while the bot
runs, resting limit orders far from the market (a hedge), a cancel. The exchange's truth (the
emulator's admin API) is split by client id: the bot's orders carry its prefix, the person's
``web_...``. What must hold (docs/execution.md, "Ownership"):

* none of the person's orders is cancelled or adopted, none of the person's fills is in the
  bot's ``fills`` or position; each is a ``foreign_*`` row in ``reconcile_differences``;
* the bot's position equals the signed sum of its own fills on the exchange, each stored once;
* a fresh database on an account with 200 past trades starts at position 0, ready in < 10 s;
* SIGTERM with open orders, 5 times: no order row without this instance's prefix (a cancel's
  answer once created ``cancel-...`` rows).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.emulator.client import make_ccxt_client
from bot.execution.client_ids import parse_client_id

from drills.audit import API_KEY, SCALE, Bot, bot_prefix, wait_for
from drills.conftest import SECRET, Drill

pytestmark = pytest.mark.slow

SYMBOL = "BTC/USDT"


class Person:
    """A person at the same account: every action is its own ccxt REST client, as from a browser."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _do(self, action: Callable[[Any], Any]) -> Any:
        async def run() -> Any:
            ex = make_ccxt_client(self.url, API_KEY, SECRET, pro=False)
            try:
                await ex.load_markets()
                return await action(ex)
            finally:
                await ex.close()

        return asyncio.run(run())

    def market(self, side: str, amount: str, cid: str) -> None:
        self._do(lambda ex: ex.create_order(SYMBOL, "market", side, float(amount), None, {"newClientOrderId": cid}))

    def markets(self, n: int, amount: str) -> None:
        """``n`` market orders, alternating buy and sell, on one connection (the account's history)."""
        async def many(ex: Any) -> None:
            for i in range(n):
                side = "buy" if i % 2 == 0 else "sell"
                await ex.create_order(SYMBOL, "market", side, float(amount), None, {"newClientOrderId": f"web_h{i}"})

        self._do(many)

    def limit(self, side: str, amount: str, price: float, cid: str) -> None:
        self._do(lambda ex: ex.create_order(SYMBOL, "limit", side, float(amount), price, {"newClientOrderId": cid}))

    def cancel(self, cid: str) -> None:
        self._do(lambda ex: ex.cancel_order("", SYMBOL, {"origClientOrderId": cid}))


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _mid(d: Drill) -> float:
    book = d.emu._get("book?symbol=BTC/USDT")
    return (float(book["bids"][0][0]) + float(book["asks"][0][0])) / 2


def _status(d: Drill, cid: str) -> str:
    return next(o["status"] for o in d.emu.orders() if o["clientOrderId"] == cid)


def _ready_within(d: Drill, seconds: float) -> float:
    t0 = time.monotonic()
    wait_for(lambda: d.bot.count("ready") >= d.bot.starts or not d.bot.alive(), 30, "the bot's ready event")
    assert d.bot.alive(), d.bot.text()[-3000:]
    took = time.monotonic() - t0
    assert took < seconds, f"ready took {took:.1f} s (limit {seconds} s)"
    return took


def test_drill_person_trades_on_the_same_account(drill: Callable[..., Drill]) -> None:
    d = drill(warmup="1s", aggressive_z="1.5", order_ttl="2s")
    prefix = bot_prefix(d.bot.config)
    person = Person(d.emu.url)
    # Before the bot: 200 trades of history, a resting hedge above and a bid below the market.
    person.markets(200, "0.001")
    mid = _mid(d)
    person.limit("sell", "0.02", round(mid * 1.2, 2), "web_hedge1")
    person.limit("buy", "0.02", round(mid * 0.8, 2), "web_bid1")
    d.bot.start()
    took = _ready_within(d, 10.0)
    first = next(e for e in d.bot.events() if e.get("event") == "reconciled")
    assert first["position"] == "0", first  # a fresh database books none of the account's history
    assert _rows(d.db, "SELECT count(*) FROM fills") == [(0,)]
    d.start_traffic()
    wait_for(lambda: any(o["clientOrderId"].startswith(prefix) for o in d.emu.orders()) or not d.bot.alive(),
             40, "the bot's first order")
    # While the bot trades: a market buy by hand, another resting hedge, a cancel of the bid.
    person.market("buy", "0.03", "web_mkt1")
    person.limit("sell", "0.01", round(mid * 1.25, 2), "web_hedge2")
    person.cancel("web_bid1")
    time.sleep(12)  # the bot trades on; its reconciler runs (interval 30 s, so start-up + the stream)
    d.stop_traffic()
    assert d.bot.terminate() == 0, d.bot.text()[-3000:]

    # The person's resting orders are still there, untouched; their cancel was theirs.
    assert _status(d, "web_hedge1") == "NEW" and _status(d, "web_hedge2") == "NEW"
    assert _status(d, "web_bid1") == "CANCELED"
    # No order row, fill or event of the person's in the bot's tables.
    order_ids = [r[0] for r in _rows(d.db, "SELECT client_id FROM orders")]
    assert order_ids and all(parse_client_id(c, prefix) is not None for c in order_ids), order_ids
    event_ids = {r[0] for r in _rows(d.db, "SELECT DISTINCT client_id FROM order_events")}
    assert event_ids <= set(order_ids)
    ex_fills = d.emu.fills()
    persons = {str(f["id"]) for f in ex_fills if not f["clientOrderId"].startswith(prefix)}
    bots = [f for f in ex_fills if f["clientOrderId"].startswith(prefix)]
    stored = _rows(d.db, "SELECT trade_id, client_id, side, amount, fee, fee_currency, position_after "
                         "FROM fills ORDER BY id")
    assert not persons & {str(r[0]) for r in stored}, "a person's fill was booked as the bot's"
    assert sorted(str(r[0]) for r in stored) == sorted(str(f["id"]) for f in bots), "bot fills lost or extra"
    # The bot's position is the signed sum of its own fills on the exchange (less BTC fees).
    own = Decimal(0)
    for f in bots:
        own += Decimal(f["qty"]) * (1 if f["side"] == "BUY" else -1)
        if f["commissionAsset"] == "BTC":
            own -= Decimal(f["commission"])
    last = Decimal(stored[-1][6]) * SCALE if stored else Decimal(0)
    assert last == own, f"store position {last} != the bot's fills on the exchange {own}"
    # Each foreign thing seen is a row: the resting hedges (start-up and later) and the hand trade.
    foreign = _rows(d.db, "SELECT kind, client_id FROM reconcile_differences WHERE kind LIKE 'foreign_%'")
    kinds = {(k, c) for k, c in foreign}
    assert ("foreign_order", "web_hedge1") in kinds and ("foreign_order", "web_bid1") in kinds, foreign
    assert ("foreign_fill", "web_mkt1") in kinds, foreign
    orders_reported = Counter(c for k, c in foreign if k == "foreign_order")
    assert max(orders_reported.values()) == 1, f"a foreign order reported twice: {orders_reported}"
    fills_reported = Counter(c for k, c in foreign if k == "foreign_fill")
    trades_of = Counter(f["clientOrderId"] for f in ex_fills if not f["clientOrderId"].startswith(prefix))
    assert all(n == trades_of[c] for c, n in fills_reported.items()), "a foreign trade reported twice"
    assert fills_reported["web_mkt1"] == trades_of["web_mkt1"]  # each of its trades, once
    assert not any(e.get("event") in ("unknown_order",) for e in d.bot.events())
    print(f"drill person_on_account: ready {took:.1f} s after start on 200 past trades; bot fills {len(bots)}, "
          f"person fills {len(persons)} (none booked); foreign rows {len(foreign)}; position {own}")


def test_drill_sigterm_with_open_orders_leaves_no_foreign_rows(drill: Callable[..., Drill]) -> None:
    d = drill(warmup="1s", aggressive_z="5", order_ttl="4s")  # entries join the touch and rest
    prefix = bot_prefix(d.bot.config)
    d.start_traffic()
    stops = attempts = 0
    open_at_stop: list[int] = []
    while stops < 5 and attempts < 8:
        attempts += 1
        d.bot.start()
        _ready_within(d, 15.0)

        def resting() -> int:
            return sum(1 for o in d.emu.open_orders() if o["clientOrderId"].startswith(prefix))

        try:
            wait_for(lambda: resting() >= 1 or not d.bot.alive(), 20, "a resting order of the bot")
        except AssertionError:
            assert d.bot.terminate() == 0
            continue
        n = resting()
        assert d.bot.terminate() == 0, d.bot.text()[-3000:]
        if n:
            stops += 1
            open_at_stop.append(n)
            assert not [o for o in d.emu.open_orders() if o["clientOrderId"].startswith(prefix)]
    d.stop_traffic()
    assert stops == 5, f"only {stops} of {attempts} stops found an open order"
    rows = [r[0] for r in _rows(d.db, "SELECT client_id FROM orders")]
    assert all(parse_client_id(c, prefix) is not None for c in rows), [c for c in rows if not c.startswith(prefix)]
    events = {r[0] for r in _rows(d.db, "SELECT DISTINCT client_id FROM order_events")}
    assert events <= set(rows)
    print(f"drill sigterm_open_orders: 5 stops with {open_at_stop} open orders; {len(rows)} order rows, all {prefix}-")


def test_drill_paper_then_testnet_on_one_database(drill: Callable[..., Drill]) -> None:
    """A paper run leaves a position in the database; a testnet run on the same database and account
    starts from the exchange's truth for its own orders (0), and sends nothing to "flatten" paper."""
    d = drill(warmup="1s", aggressive_z="1.5", order_ttl="2s")
    paper_cfg = d.workdir / "paper.toml"
    paper_cfg.write_text(d.bot.config.read_text().replace('mode = "testnet"', 'mode = "paper"'))
    paper_cfg.chmod(0o600)
    paper = Bot(paper_cfg, SECRET, d.workdir / "paper.out")
    d.start_traffic()
    held = Decimal(0)
    for _attempt in range(3):  # stop the paper bot while it holds a position
        paper.start()
        try:
            wait_for(lambda: paper.count("ready") >= paper.starts or not paper.alive(), 30, "paper ready")

            def holding() -> bool:
                rows = _rows(d.db, "SELECT position_after FROM fills WHERE mode = 'paper' ORDER BY id DESC LIMIT 1")
                return bool(rows) and rows[0][0] != 0

            wait_for(lambda: holding() or not paper.alive(), 40, "a paper position")
        finally:
            assert paper.terminate() == 0, paper.text()[-3000:]
        rows = _rows(d.db, "SELECT position_after FROM fills WHERE mode = 'paper' ORDER BY id DESC LIMIT 1")
        held = Decimal(rows[0][0]) * SCALE if rows else Decimal(0)
        if held:
            break
    assert held, "the paper run never stopped holding a position"
    assert d.emu.orders() == [], "a paper order reached the exchange"

    d.bot.start()  # testnet, same database, same account name ("default")
    _ready_within(d, 10.0)
    restored = next(e for e in d.bot.events() if e.get("event") == "inventory_restored")
    assert restored["position"] == "0" and restored["fills"] == 0, restored
    time.sleep(8)  # trading on; the pressure episodes go on
    d.stop_traffic()
    assert d.bot.terminate() == 0, d.bot.text()[-3000:]
    testnet = _rows(d.db, "SELECT client_id, reason FROM orders WHERE mode = 'testnet' ORDER BY created_at, id")
    if testnet:  # its first order is an entry of its own, never an exit of the paper position
        assert testnet[0][1].startswith("entry"), testnet[0]
    own = Decimal(0)
    for f in d.emu.fills():
        own += Decimal(f["qty"]) * (1 if f["side"] == "BUY" else -1) - (
            Decimal(f["commission"]) if f["commissionAsset"] == "BTC" else 0)
    last = _rows(d.db, "SELECT position_after FROM fills WHERE mode = 'testnet' ORDER BY id DESC LIMIT 1")
    stored = Decimal(last[0][0]) * SCALE if last else Decimal(0)
    assert stored == own, f"testnet position {stored} != the exchange's {own} (paper held {held})"
    paper_after = _rows(d.db, "SELECT position_after FROM fills WHERE mode = 'paper' ORDER BY id DESC LIMIT 1")
    assert Decimal(paper_after[0][0]) * SCALE == held  # the paper book is untouched by the testnet run
    print(f"drill paper_then_testnet: paper held {held}; testnet started at 0, {len(testnet)} orders, "
          f"position {stored} = exchange {own}")
