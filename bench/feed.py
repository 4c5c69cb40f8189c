"""Benchmark: the feed path per exchange websocket message, ccxt's share against ours, offline.

    python -m bench.feed [--quick]

Why: in live trading every Binance message first goes through ccxt pro (JSON decode,
dispatch, sequence checks, its own order book) and then through our ``MarketFeed``
(``BookDiffer``: ccxt's book -> ``BookDelta``; ``trade_from_ccxt``: ccxt trade -> ``Trade``).
Our part should be small next to ccxt's (target: ours <= 25% of ccxt's).

Data: the real capture ``hftbacktest/spot_btcusdt_20240808.gz`` (lines ``<ns> <raw JSON>``,
combined-stream envelopes; 3,451 ``depth@100ms`` and 9,757 ``trade`` messages). No network:

* ``ccxt.pro.binance()`` gets a one-market table (``set_markets``) and an order book entry
  in the state ``handle_order_book_subscription`` leaves (``nonce`` None, empty cache); the
  depth messages received before the REST snapshot line are buffered by ccxt itself, then
  ccxt's own ``fetch_order_book_snapshot`` runs with the capture's snapshot (the REST call
  replaced by a coroutine returning it) and unrolls the buffer. That setup is untimed.
* Timed, per message after that: ccxt = ``orjson.loads(raw)`` (what ccxt's ws client uses)
  + ``exchange.handle_message(client, msg)`` (envelope unwrap, dispatch, ``U``/``u`` checks,
  ``bookside.store`` per level / trade parsing into its cache) + ``orderbook.limit()`` (what
  ``watch_order_book`` returns). Ours = ``BookDiffer.update(book, ts, recv)`` for depth
  messages, ``trade_from_ccxt`` for trades. The stub client's ``resolve`` is a no-op, so the
  asyncio future hand-off between ccxt and the feed is in neither figure.

A correctness check runs first: the deltas ours produces, applied to our ``OrderBook``, equal
ccxt's top ``levels`` at every message (else the race would be unfair).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bot.logging import configure_logging

configure_logging("error")

from bot.market.book import OrderBook  # noqa: E402
from bot.market.feed import BookDiffer, trade_from_ccxt  # noqa: E402

CAPTURE = (
    Path(__file__).resolve().parent.parent.parent
    / "shared"
    / "data"
    / "hftbacktest"
    / "spot_btcusdt_20240808.gz"
)
SYMBOL = "BTC/USDT"
LEVELS = 5  # the default [signals] levels: the window the feed keeps

_MARKET: dict[str, Any] = {
    "id": "BTCUSDT",
    "symbol": SYMBOL,
    "base": "BTC",
    "quote": "USDT",
    "baseId": "BTC",
    "quoteId": "USDT",
    "type": "spot",
    "spot": True,
    "margin": False,
    "swap": False,
    "future": False,
    "option": False,
    "contract": False,
    "linear": None,
    "inverse": None,
    "active": True,
    "lowercaseId": "btcusdt",
    "precision": {"price": 0.01, "amount": 1e-5},
    "limits": {},
    "info": {},
}


class StubClient:
    """What ccxt's handlers touch on a ws ``Client``: ``url`` (spot detection), subscriptions,
    ``resolve``/``reject`` (counted; a reject means ccxt found a sequence gap)."""

    url = "wss://stream.binance.com:9443/stream"

    def __init__(self) -> None:
        self.subscriptions: dict[str, Any] = {}
        self.resolved = 0
        self.errors: list[BaseException] = []

    def resolve(self, result: Any, message_hash: str) -> None:
        self.resolved += 1

    def reject(self, error: BaseException, message_hash: str | None = None) -> None:
        self.errors.append(error)


def load_capture(
    path: Path = CAPTURE, limit: int | None = None
) -> tuple[list[bytes], bytes, list[tuple[int, bytes]]]:
    """(depth messages before the snapshot, the snapshot JSON, then (recv_ns, raw) of every depth/trade message)."""
    pre: list[bytes] = []
    snap: bytes | None = None
    post: list[tuple[int, bytes]] = []
    with gzip.open(path, "rb") as f:
        for line in f:
            ns, raw = line.rstrip(b"\n").split(b" ", 1)
            if snap is None:
                if raw.startswith(b'{"lastUpdateId"'):
                    snap = raw
                elif b"@depth" in raw[:40]:
                    pre.append(raw)
                continue
            head = raw[:40]
            if b"@depth" in head or b"@trade" in head:
                post.append((int(ns), raw))
                if limit is not None and len(post) >= limit:
                    break
    if snap is None:
        raise ValueError(f"{path}: no REST snapshot line")
    return pre, snap, post


def synced_exchange(pre: list[bytes], snap: bytes) -> tuple[Any, StubClient]:
    """A ``ccxt.pro.binance`` whose BTC/USDT book is synced exactly as ``watch_order_book`` would."""
    import ccxt.pro

    ex = ccxt.pro.binance()
    ex.set_markets([dict(_MARKET)])
    client = StubClient()
    ob = ex.order_book({}, 1000)  # handle_order_book_subscription
    ob["nonce"] = None
    ob.cache = []
    ex.orderbooks[SYMBOL] = ob
    for raw in pre:  # buffered by ccxt (nonce None)
        ex.handle_message(client, orjson.loads(raw))
    snapshot = orjson.loads(snap)

    async def rest(symbol: str, limit: Any = None, params: Any = None) -> Any:
        book = ex.parse_order_book(snapshot, symbol)
        book["nonce"] = snapshot["lastUpdateId"]
        return book

    ex.fetch_rest_order_book_safe = rest
    asyncio.run(ex.fetch_order_book_snapshot(client, None, {"symbol": SYMBOL, "type": "spot", "limit": 1000}))
    if client.errors or ex.orderbooks[SYMBOL]["nonce"] is None:
        raise RuntimeError(f"ccxt did not sync the book: {client.errors}")
    return ex, client


def check_same(pre: list[bytes], snap: bytes, post: list[tuple[int, bytes]]) -> int:
    """Ours reproduces ccxt's top ``LEVELS`` after every depth message; returns messages checked."""
    ex, client = synced_exchange(pre, snap)
    differ = BookDiffer(LEVELS)
    book = OrderBook()
    n = 0
    for ns, raw in post:
        if b"@depth" not in raw[:40]:
            continue
        ex.handle_message(client, orjson.loads(raw))
        ob = ex.orderbooks[SYMBOL].limit()
        ev = differ.update(ob, int(ob["timestamp"] or 0), ns // 1_000_000)
        if ev is not None:
            book.apply(ev)
        want_b = [(float(p), float(q)) for p, q in ob["bids"][:LEVELS]]
        want_a = [(float(p), float(q)) for p, q in ob["asks"][:LEVELS]]
        assert book.top_bids(LEVELS) == want_b, f"bids differ at message {n}"
        assert book.top_asks(LEVELS) == want_a, f"asks differ at message {n}"
        n += 1
    assert not client.errors, client.errors
    return n


def _one_pass(pre: list[bytes], snap: bytes, post: list[tuple[int, bytes]]) -> dict[str, float]:
    ex, client = synced_exchange(pre, snap)
    differ = BookDiffer(LEVELS)
    ob_cache = ex.orderbooks[SYMBOL]
    trades = None
    handle, loads, pc = ex.handle_message, orjson.loads, time.perf_counter
    c_depth = o_depth = c_trade = o_trade = 0.0
    n_depth = n_trade = 0
    events = 0
    for ns, raw in post:
        if b"@depth" in raw[:40]:
            t0 = pc()
            handle(client, loads(raw))
            ob = ob_cache.limit()
            t1 = pc()
            ts = ob["timestamp"]
            ev = differ.update(ob, int(ts) if ts is not None else 0, ns // 1_000_000)
            t2 = pc()
            c_depth += t1 - t0
            o_depth += t2 - t1
            n_depth += 1
            events += ev is not None
        else:
            t0 = pc()
            handle(client, loads(raw))
            if trades is None:
                trades = ex.trades[SYMBOL]
            t = trades[-1]
            t1 = pc()
            tr = trade_from_ccxt(t, ns // 1_000_000)
            t2 = pc()
            c_trade += t1 - t0
            o_trade += t2 - t1
            n_trade += 1
            events += tr is not None
    if client.errors:
        raise RuntimeError(f"ccxt rejected the stream: {client.errors[0]}")
    return {
        "c_depth": c_depth,
        "o_depth": o_depth,
        "c_trade": c_trade,
        "o_trade": o_trade,
        "n_depth": n_depth,
        "n_trade": n_trade,
        "events": events,
    }


def run(quick: bool = False, limit: int | None = None) -> dict[str, Any]:
    """Measure; ``limit`` caps the messages (tests use a tiny one)."""
    pre, snap, post = load_capture(CAPTURE, limit)
    checked = check_same(pre, snap, post)
    repeats = 3 if quick else 7
    runs: list[dict[str, float]] = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            runs.append(_one_pass(pre, snap, post))
    finally:
        gc.enable()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    n_depth, n_trade = int(runs[0]["n_depth"]), int(runs[0]["n_trade"])
    c_depth, o_depth, c_trade, o_trade = med("c_depth"), med("o_depth"), med("c_trade"), med("o_trade")
    n = n_depth + n_trade
    ccxt_all, ours_all = c_depth + c_trade, o_depth + o_trade
    return {
        "data": CAPTURE.name,
        "depth_messages": n_depth,
        "trade_messages": n_trade,
        "checked_messages": checked,
        "repeats": repeats,
        "ccxt_us_per_msg": round(ccxt_all / n * 1e6, 3),
        "ours_us_per_msg": round(ours_all / n * 1e6, 3),
        "feed_overhead_vs_ccxt": round(ours_all / ccxt_all, 3),
        "ccxt_depth_us_per_msg": round(c_depth / max(n_depth, 1) * 1e6, 3),
        "ours_depth_us_per_msg": round(o_depth / max(n_depth, 1) * 1e6, 3),
        "feed_depth_overhead_vs_ccxt": round(o_depth / c_depth, 3) if c_depth else float("nan"),
        "ccxt_trade_us_per_msg": round(c_trade / max(n_trade, 1) * 1e6, 3),
        "ours_trade_us_per_msg": round(o_trade / max(n_trade, 1) * 1e6, 3),
        "feed_trade_overhead_vs_ccxt": round(o_trade / c_trade, 3) if c_trade else float("nan"),
        "feed_levels": LEVELS,
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    args = ap.parse_args(argv)
    res = run(args.quick)
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
