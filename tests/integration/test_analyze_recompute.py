"""Every number of `bot analyze --json` recomputed independently on the real recordings.

The recomputation below shares no code with ``bot.signals.analyze``: it reads the recording
lines itself, keeps its own book (a dict per side), computes Cont-Kukanov-Stoikov OFI per delta
message and level itself, buckets and sums with pandas, and fits OLS with ``numpy.linalg.lstsq``.
It follows DESIGN.md's "`bot analyze --json` output" word for word:

- bucket = floor(ts / interval), every event by its own ts (arrival order != ts order between
  the book and trade streams); buckets before the first snapshot's bucket and empty buckets are
  left out;
- the mid of a bucket is the mid after the last *book* event whose ts is in the bucket (the book
  as of the bucket's end); a trade never sets it; a bucket with trades only carries the previous
  bucket's mid forward; mid change = mid minus the previous non-empty bucket's mid, in ticks;
- OFI per delta message (a snapshot contributes none, it only resets the book); multi-level OFI
  is the vector of per-level OFIs, levels 1..5 (the CLI default); TFI = buy minus sell volume;
- R² of OLS with intercept; ``hit_rate_next`` = share of rows k whose OFI sign equals the sign of
  bucket k+1's mid change, among pairs where bucket k+1 is a row and both are non-zero.

Each recording is read once by the test and once by one CLI call for both intervals.
"""

from __future__ import annotations

import gzip
import heapq
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app

pd = pytest.importorskip("pandas", reason="pandas (the `test` extra) is needed for the independent recomputation")

LEVELS = 5  # `bot analyze`'s default --levels
INTERVALS_MS = (1000, 10_000)
TOL = 1e-9
OFI_COLS = [f"ofi{m}" for m in range(1, LEVELS + 1)]


# --------------------------------------------------------------------------- the recomputation


def _top(side: dict[float, float], best_high: bool) -> list[tuple[float, float]]:
    """Best LEVELS (price, size) of one side, padded: bid (0, 0), ask (inf, 0)."""
    prices = heapq.nlargest(LEVELS, side) if best_high else heapq.nsmallest(LEVELS, side)
    pad = (0.0, 0.0) if best_high else (math.inf, 0.0)
    return [(p, side[p]) for p in prices] + [pad] * (LEVELS - len(prices))


def _cks(before: tuple[list[Any], list[Any]], after: tuple[list[Any], list[Any]]) -> list[float]:
    """Per-level e = 1{Pb>=Pb'}qb - 1{Pb<=Pb'}qb' - 1{Pa<=Pa'}qa + 1{Pa>=Pa'}qa' (primed: before)."""
    out = []
    for m in range(LEVELS):
        (pb, qb), (pa, qa) = after[0][m], after[1][m]
        (pb0, qb0), (pa0, qa0) = before[0][m], before[1][m]
        e = 0.0
        if pb >= pb0:
            e += qb
        if pb <= pb0:
            e -= qb0
        if pa <= pa0:
            e -= qa
        if pa >= pa0:
            e += qa0
        out.append(e)
    return out


def events_frame(path: Path) -> tuple[Any, int, float]:
    """(one row per event in arrival order, ts of the first snapshot, tick) from the raw lines."""
    rows: list[tuple[Any, ...]] = []
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    view: tuple[list[Any], list[Any]] | None = None
    start_ts = -1
    tick = math.nan
    zeros = [0.0] * LEVELS
    with gzip.open(path, "rt") as f:
        for raw in f:
            line = json.loads(raw)
            kind = line["type"]
            if kind == "header":
                tick = float(line["tick"])
                continue
            if kind == "trade":
                signed = float(line["amount"]) if line["side"] == "buy" else -float(line["amount"])
                rows.append((line["ts"], False, signed, math.nan, *zeros))
                continue
            if kind == "snapshot":
                bids = {float(p): float(q) for p, q in line["bids"] if float(q) > 0}
                asks = {float(p): float(q) for p, q in line["asks"] if float(q) > 0}
                if start_ts < 0:
                    start_ts = line["ts"]
                ofi = zeros
            else:
                assert kind == "delta", kind
                if start_ts < 0:
                    continue  # no book before the first snapshot
                for side, levels in ((bids, line["bids"]), (asks, line["asks"])):
                    for p, q in levels:
                        if float(q) == 0:
                            side.pop(float(p), None)
                        else:
                            side[float(p)] = float(q)
            new = (_top(bids, True), _top(asks, False))
            # the recordings never cross (so the book is usable after every message; no resync logic needed)
            assert new[0][0][0] < new[1][0][0], f"crossed book at ts {line['ts']}"
            if kind == "delta":
                assert view is not None
                ofi = _cks(view, new)
            view = new
            mid = (new[0][0][0] + new[1][0][0]) / 2
            rows.append((line["ts"], True, 0.0, mid, *ofi))
    frame = pd.DataFrame(rows, columns=["ts", "is_book", "tfi", "mid", *OFI_COLS])
    assert start_ts >= 0 and math.isfinite(tick)
    return frame, start_ts, tick


def ols(y: np.ndarray, x: np.ndarray) -> tuple[float, np.ndarray]:
    a = np.column_stack([np.ones(len(y)), x])
    coef = np.linalg.lstsq(a, y, rcond=None)[0]
    resid = y - a @ coef
    dev = y - y.mean()
    return 1.0 - float(resid @ resid) / float(dev @ dev), coef[1:]


def recompute(frame: Any, start_ts: int, tick: float, interval_ms: int) -> dict[str, Any]:
    df = frame.assign(bucket=frame["ts"] // interval_ms)
    df = df[df["bucket"] >= start_ts // interval_ms]  # buckets before the first snapshot: left out
    sums = df.groupby("bucket", sort=True)[[*OFI_COLS, "tfi"]].sum()  # non-empty buckets only
    book = df[df["is_book"]]
    # the last book event of each bucket in arrival order (groupby/drop_duplicates keep that order)
    book_mid = book.drop_duplicates("bucket", keep="last").set_index("bucket")["mid"]
    mid = book_mid.reindex(sums.index).ffill()  # trades-only buckets carry the mid forward
    table = sums.assign(dmid=(mid - mid.shift(1)) / tick)
    table = table[table["dmid"].notna()]  # the first snapshot's bucket has no previous mid
    y = table["dmid"].to_numpy()
    ofi = table["ofi1"].to_numpy()
    tfi = table["tfi"].to_numpy()
    r2_ofi, beta_ofi = ols(y, ofi[:, None])
    r2_mlofi, _ = ols(y, table[OFI_COLS].to_numpy())
    r2_tfi, _ = ols(y, tfi[:, None])
    r2_ofi_tfi, _ = ols(y, np.column_stack([ofi, tfi]))
    # hit_rate_next: row k and row k+1 (the next bucket, itself a row), both signs non-zero
    pairs = pd.DataFrame({
        "s": np.sign(ofi[:-1]),
        "d": np.sign(y[1:]),
        "next": table.index.to_numpy()[1:] == table.index.to_numpy()[:-1] + 1,
    })
    pairs = pairs[pairs["next"] & (pairs["s"] != 0) & (pairs["d"] != 0)]
    return {
        "rows": len(table),
        "interval_s": interval_ms / 1000,
        "r2_ofi": r2_ofi,
        "r2_mlofi": r2_mlofi,
        "r2_tfi": r2_tfi,
        "r2_ofi_tfi": r2_ofi_tfi,
        "beta_ofi": float(beta_ofi[0]),
        "hit_rate_next": float((pairs["s"] == pairs["d"]).mean()),
    }


# --------------------------------------------------------------------------- the test


@pytest.fixture(scope="module", params=["btcusdt", "ethusdt"])
def pair(request: pytest.FixtureRequest, real_recordings: dict[str, Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(CLI JSON objects, recomputed objects) for one recording, intervals 1 s and 10 s."""
    name = request.param
    if name not in real_recordings:
        pytest.skip(f"{name} recording not present")
    path = real_recordings[name]
    spec = ",".join(f"{ms // 1000}s" for ms in INTERVALS_MS)
    r = CliRunner().invoke(app, ["analyze", str(path), "--interval", spec, "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    frame, start_ts, tick = events_frame(path)
    want = [recompute(frame, start_ts, tick, ms) for ms in INTERVALS_MS]
    return got, want


@pytest.mark.parametrize("i", range(len(INTERVALS_MS)), ids=[f"{ms // 1000}s" for ms in INTERVALS_MS])
def test_bot_analyze_json_equals_an_independent_recomputation(pair: tuple[list[Any], list[Any]], i: int) -> None:
    got, want = pair[0][i], pair[1][i]
    assert got["interval_s"] == want["interval_s"]
    assert got["rows"] == want["rows"] > 60
    for key in ("r2_ofi", "r2_mlofi", "r2_tfi", "r2_ofi_tfi", "beta_ofi", "hit_rate_next"):
        assert got[key] is not None, key
        assert abs(got[key] - want[key]) <= TOL, (key, got[key], want[key])
