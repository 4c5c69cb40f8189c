"""Benchmark: our OrderBook against ccxt's own OrderBook doing the same work, in one process.

    python -m bench.book [--quick]

Work per book event, for both books: apply the delta, read best bid and best ask, read the
top 10 levels of each side (what the signals read after every exchange message). Data:
the real BTCUSDT recording's deltas (6,493 Binance ``depth@100ms`` messages, ~46 level
updates each), replayed from its snapshot as many times as needed to reach 1M level
updates (``--quick``: 200k); the snapshot is applied outside the timer at each pass.
Without the recording, a synthetic market with a similar level distribution is used.

ccxt is used the way ``ccxt.pro.binance`` uses it for diff depth: per level
``bookside.store(price, size)`` (``handle_delta``), then ``orderbook.limit()`` (what
``watch_order_book`` returns); reads are ``ob['bids'][0]`` and ``ob['bids'][:10]``.
String-to-float parsing is excluded from both (our recorder and ccxt's parser both do it
before the book).

Two shapes are measured, interleaved (ours, ccxt, SortedList variant, per repeat), median of
repeats:

- ``msg``: one event = one exchange message (the real stream), the headline numbers
  ``book_us`` / ``ccxt_book_us`` / ``book_vs_ccxt_ratio``;
- ``level``: one event = one price-level update followed by the reads (the read-heavy
  worst case; ``book_level_us`` ...).

``sortedlist_us`` is the same ``msg`` work with ``sortedcontainers.SortedList`` as the price
index instead of a bisect-maintained list (the alternative the design names). Memory: the
book's traced allocations are sampled while applying 1M level updates; flat means the
end is within a few hundred KB of the middle.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bot.logging import configure_logging

# before bot.market.book binds its logger: the level-split shape crosses the book
# transiently, and the warnings it logs would drown the numbers
configure_logging("error")

from bot.market.book import OrderBook  # noqa: E402
from bot.model import BookDelta, BookSnapshot, Level  # noqa: E402

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "recordings" / "btcusdt_spot_20240808.jsonl.gz"


def _load() -> tuple[str, BookSnapshot, list[BookDelta]]:
    if REAL.is_file():
        from bot.market.recorder import RecordingReader

        snap: BookSnapshot | None = None
        deltas: list[BookDelta] = []
        for ev in RecordingReader(REAL):
            if type(ev) is BookSnapshot and snap is None:
                snap = ev
            elif type(ev) is BookDelta and snap is not None:
                deltas.append(ev)
        assert snap is not None
        return REAL.name, snap, deltas
    from bot.market.synthetic import SyntheticMarket

    m = SyntheticMarket(seed=7, levels=1000)
    snap = m.snapshot()
    deltas = [e for _ in range(6500) for e in m.step() if type(e) is BookDelta]
    return "synthetic (levels=1000)", snap, deltas


def _passes(deltas: list[BookDelta], target_levels: int) -> tuple[int, list[BookDelta]]:
    """How many full passes (and a final partial pass) reach ``target_levels`` level updates."""
    per_pass = sum(len(d.bids) + len(d.asks) for d in deltas)
    full = target_levels // per_pass
    rest = target_levels - full * per_pass
    tail: list[BookDelta] = []
    n = 0
    for d in deltas:
        if n >= rest:
            break
        tail.append(d)
        n += len(d.bids) + len(d.asks)
    return full, tail


# --------------------------------------------------------------------------- the loops


def _ours(snap: BookSnapshot, chunks: list[list[BookDelta]]) -> float:
    total = 0.0
    for chunk in chunks:
        b = OrderBook()
        b.apply_snapshot(snap)
        apply, bb, ba, tb, ta = b.apply_delta, b.best_bid, b.best_ask, b.top_bids, b.top_asks
        t0 = time.perf_counter()
        for d in chunk:
            apply(d)
            bb()
            ba()
            tb(10)
            ta(10)
        total += time.perf_counter() - t0
    return total


def _ccxt_book(snap: BookSnapshot) -> Any:
    from ccxt.async_support.base.ws.order_book import OrderBook as CcxtOrderBook

    ob = CcxtOrderBook({})
    ob.reset({"bids": [[p, q] for p, q in snap.bids], "asks": [[p, q] for p, q in snap.asks]})
    return ob


def _ccxt(snap: BookSnapshot, chunks: list[list[BookDelta]]) -> float:
    total = 0.0
    for chunk in chunks:
        ob = _ccxt_book(snap)
        bids, asks, limit = ob["bids"], ob["asks"], ob.limit
        bstore, astore = bids.store, asks.store
        t0 = time.perf_counter()
        for d in chunk:
            for p, q in d.bids:
                bstore(p, q)
            for p, q in d.asks:
                astore(p, q)
            limit()
            bids[0]
            asks[0]
            bids[:10]
            asks[:10]
        total += time.perf_counter() - t0
    return total


class _SortedListBook:
    """The same book with ``sortedcontainers.SortedList`` as the price index (for comparison)."""

    def __init__(self, snap: BookSnapshot) -> None:
        from sortedcontainers import SortedList

        self.bids = {p: q for p, q in snap.bids if q > 0}
        self.asks = {p: q for p, q in snap.asks if q > 0}
        self.bk = SortedList(-p for p in self.bids)
        self.ak = SortedList(self.asks)

    def apply(self, d: BookDelta) -> None:
        book, keys = self.bids, self.bk
        for p, q in d.bids:
            if q > 0.0:
                if p not in book:
                    keys.add(-p)
                book[p] = q
            elif p in book:
                del book[p]
                keys.remove(-p)
        book, keys = self.asks, self.ak
        for p, q in d.asks:
            if q > 0.0:
                if p not in book:
                    keys.add(p)
                book[p] = q
            elif p in book:
                del book[p]
                keys.remove(p)

    def top_bids(self, n: int) -> list[Level]:
        book = self.bids
        return [(-k, book[-k]) for k in self.bk.islice(0, n)]

    def top_asks(self, n: int) -> list[Level]:
        book = self.asks
        return [(k, book[k]) for k in self.ak.islice(0, n)]


def _sortedlist(snap: BookSnapshot, chunks: list[list[BookDelta]]) -> float:
    total = 0.0
    for chunk in chunks:
        b = _SortedListBook(snap)
        apply, tb, ta = b.apply, b.top_bids, b.top_asks
        t0 = time.perf_counter()
        for d in chunk:
            apply(d)
            b.bids[-b.bk[0]]
            b.asks[b.ak[0]]
            tb(10)
            ta(10)
        total += time.perf_counter() - t0
    return total


def _split_levels(chunks: list[list[BookDelta]]) -> list[list[BookDelta]]:
    """The same updates, one price level per event."""
    out = []
    for chunk in chunks:
        one: list[BookDelta] = []
        for d in chunk:
            one.extend(BookDelta(d.ts, [lv], []) for lv in d.bids)
            one.extend(BookDelta(d.ts, [], [lv]) for lv in d.asks)
        out.append(one)
    return out


def _memory(snap: BookSnapshot, chunks: list[list[BookDelta]]) -> list[tuple[float, int]]:
    """Traced KB held by one book, and its level count, after 10%, 50% and 100% of the updates.

    One book across all passes (no snapshot in between), so the book grows only as far as
    the price range the data visits; after the first pass the same levels come back.
    """
    flat = [d for c in chunks for d in c]
    marks = [len(flat) // 10, len(flat) // 2, len(flat) - 1]
    out: list[tuple[float, int]] = []
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    b = OrderBook()
    b.apply_snapshot(snap)
    for i, d in enumerate(flat):
        b.apply_delta(d)
        b.top_bids(10)
        b.top_asks(10)
        if i in marks:
            out.append(((tracemalloc.get_traced_memory()[0] - base) / 1024, len(b.bids()) + len(b.asks())))
    tracemalloc.stop()
    return out


def _replay() -> tuple[int, float]:
    """End-to-end replay of the recording file: gunzip + parse + validate + book apply."""
    from bot.market.recorder import RecordingReader

    if not REAL.is_file():
        return 0, float("nan")
    t0 = time.perf_counter()
    b = OrderBook()
    n = 0
    for ev in RecordingReader(REAL):
        b.apply(ev)
        n += 1
    return n, time.perf_counter() - t0


def _check_same(snap: BookSnapshot, deltas: list[BookDelta]) -> None:
    """Both books must hold the same levels after the same updates (else the race is unfair)."""
    b = OrderBook()
    b.apply_snapshot(snap)
    ob = _ccxt_book(snap)
    for d in deltas:
        b.apply_delta(d)
        for p, q in d.bids:
            ob["bids"].store(p, q)
        for p, q in d.asks:
            ob["asks"].store(p, q)
    assert b.bids() == [tuple(x) for x in ob["bids"]], "bids differ from ccxt's"
    assert b.asks() == [tuple(x) for x in ob["asks"]], "asks differ from ccxt's"


def run(quick: bool = False) -> dict[str, Any]:
    name, snap, deltas = _load()
    _check_same(snap, deltas)
    target = 200_000 if quick else 1_000_000
    repeats = 5
    full, tail = _passes(deltas, target)
    chunks = [deltas] * full + ([tail] if tail else [])
    level_chunks = _split_levels(chunks)
    n_msgs = sum(len(c) for c in chunks)
    n_levels = sum(len(c) for c in level_chunks)

    ours_t: list[float] = []
    ccxt_t: list[float] = []
    sl_t: list[float] = []
    ours_l: list[float] = []
    ccxt_l: list[float] = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            ours_t.append(_ours(snap, chunks))
            ccxt_t.append(_ccxt(snap, chunks))
            sl_t.append(_sortedlist(snap, chunks))
            ours_l.append(_ours(snap, level_chunks))
            ccxt_l.append(_ccxt(snap, level_chunks))
    finally:
        gc.enable()
    o, c, s = statistics.median(ours_t), statistics.median(ccxt_t), statistics.median(sl_t)
    ol, cl = statistics.median(ours_l), statistics.median(ccxt_l)
    (m10, l10), (m50, l50), (m100, l100) = _memory(snap, chunks)
    replays = [_replay() for _ in range(3)]
    n_replay, t_replay = replays[0][0], statistics.median(t for _, t in replays)
    return {
        "data": name,
        "messages": n_msgs,
        "level_updates": n_levels,
        "repeats": repeats,
        "book_us": round(o / n_msgs * 1e6, 3),
        "ccxt_book_us": round(c / n_msgs * 1e6, 3),
        "sortedlist_us": round(s / n_msgs * 1e6, 3),
        "book_vs_ccxt_ratio": round(o / c, 3),
        "sortedlist_vs_ccxt_ratio": round(s / c, 3),
        "book_events_per_s": round(n_msgs / o),
        "ccxt_events_per_s": round(n_msgs / c),
        "book_level_us": round(ol / n_levels * 1e6, 3),
        "ccxt_book_level_us": round(cl / n_levels * 1e6, 3),
        "book_vs_ccxt_level_ratio": round(ol / cl, 3),
        "book_level_updates_per_s": round(n_levels / ol),
        "mem_kb_at_10pct": round(m10, 1),
        "mem_kb_at_50pct": round(m50, 1),
        "mem_kb_at_100pct": round(m100, 1),
        "book_levels_at_10_50_100pct": f"{l10}/{l50}/{l100}",
        "replay_events": n_replay,
        "replay_events_per_s": round(n_replay / t_replay) if n_replay else float("nan"),
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200k level updates instead of 1M (< 20 s)")
    args = ap.parse_args(argv)
    res = run(args.quick)
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
