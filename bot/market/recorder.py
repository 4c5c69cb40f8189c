"""Record and replay market data in the ``bot-recording/1`` format of DESIGN.md.

One JSON object per line, ``.jsonl`` or ``.jsonl.gz`` (chosen by the file name)::

    {"type":"header","format":"bot-recording/1","exchange":"binance","symbol":"BTC/USDT","tick":0.01}
    {"type":"snapshot","ts":...,"seq":...,"bids":[[p,q],...],"asks":[[p,q],...]}
    {"type":"delta","ts":...,"first_seq":...,"seq":...,"bids":[[p,q],...],"asks":[[p,q],...]}
    {"type":"trade","ts":...,"price":p,"amount":q,"side":"buy","id":"123"}

``seq``/``first_seq`` (book lines), ``id`` (trades) and ``recv`` (local receive time, ms)
are optional. The header is optional too (``tick`` is then ``None``).

Why it is built this way:

* orjson and chunked reads: replay and ``bot analyze`` parse whole recordings, and the
  parse is most of their cost (>= 100k events/s end to end is the target, see
  ``bench/book.py``).
* Every line is validated (types, finite positive prices, non-negative sizes, both within
  the sanity limits of ``bot.market.sanity``, known side) so a corrupted file fails with ``path:line: what is wrong`` instead of a ``KeyError``
  deep inside a signal. ``on_error="skip"`` counts and logs bad lines and goes on.
* A truncated tail (a recorder killed mid-write leaves a gzip stream without its end, or a
  last line without its newline) is the normal result of a crash: everything before it is
  yielded, the tail is reported in ``errors``/``truncated`` and logged, and iteration ends
  normally in both modes. A bad line in the middle of a file is a real error.
* The writer writes line by line: a plain file is flushed after every line, a gzip file
  is sync-flushed at least every second, so a crash loses at most that much.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, cast

import orjson

from bot.logging import get_logger
from bot.market.sanity import MAX_AMOUNT, MAX_PRICE
from bot.model import BookDelta, BookSnapshot, Level, MarketEvent, Side, Trade

log = get_logger("market.recorder")

FORMAT = "bot-recording/1"
_CHUNK = 1 << 18
_INF = math.inf
_SIDES = {"buy": Side.BUY, "sell": Side.SELL}
_SIZE = itemgetter(1)
_FLOAT_ONLY = {float}  # ints (converted) and bools (rejected) take the slow path
_SYMBOL = re.compile(r"[A-Za-z0-9]{1,20}/[A-Za-z0-9]{1,20}(?::[A-Za-z0-9]{1,20})?")  # header symbol
_EXCHANGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # header exchange id


class RecordingError(ValueError):
    """A line of a recording that cannot be used; ``str(e)`` is ``path:line_no: message``."""

    def __init__(self, path: str | Path, line_no: int, message: str) -> None:
        self.path = path
        self.line_no = line_no
        self.message = message
        super().__init__(f"{path}:{line_no}: {message}")


@dataclass(frozen=True)
class RecordingHeader:
    exchange: str
    symbol: str
    tick: float | None
    format: str = FORMAT


class _Bad(Exception):
    """Internal: a validation failure of one line (the reader adds path and line number)."""


def _is_gz(path: Path) -> bool:
    return path.name.endswith(".gz")


# --------------------------------------------------------------------------- parsing


def _int(d: dict[str, Any], key: str, required: bool) -> int | None:
    v = d.get(key)
    if v is None:
        if required:
            raise _Bad(f"missing {key!r}")
        return None
    if type(v) is not int:
        raise _Bad(f"{key!r} must be an integer, got {v!r}")
    return v


def _levels(raw: Any, name: str) -> list[Level]:
    """Validated levels; the common all-good case runs at C speed (map/min/max), a failure
    re-checks level by level (``_levels_slow``) for a precise message."""
    if type(raw) is list:
        try:
            out: list[Level] = list(map(tuple, raw))
            if out:
                lens = list(map(len, out))
                if (
                    min(lens) == 2
                    and max(lens) == 2
                    and min(out)[0] > 0
                    and max(out)[0] <= MAX_PRICE
                    and 0 <= min(out, key=_SIZE)[1]
                    and max(out, key=_SIZE)[1] <= MAX_AMOUNT
                    and set(map(type, chain.from_iterable(out))) == _FLOAT_ONLY
                ):
                    return out
            else:
                return out
        except (TypeError, ValueError):
            pass
    return _levels_slow(raw, name)


def _levels_slow(raw: Any, name: str) -> list[Level]:
    if type(raw) is not list:
        raise _Bad(f"{name!r} must be a list of [price, size], got {raw!r}"[:200])
    out: list[Level] = []
    append = out.append
    for lv in raw:
        try:
            p, q = lv
        except (TypeError, ValueError):
            raise _Bad(f"{name!r} level must be [price, size], got {lv!r}") from None
        tp = type(p)
        if tp is not float:
            if tp is not int:
                raise _Bad(f"{name!r} price must be a number, got {p!r}")
            p = float(p)
        tq = type(q)
        if tq is not float:
            if tq is not int:
                raise _Bad(f"{name!r} size must be a number, got {q!r}")
            q = float(q)
        if not 0.0 < p < _INF:
            raise _Bad(f"{name!r} price must be positive and finite, got {p!r}")
        if not 0.0 <= q < _INF:
            raise _Bad(f"{name!r} size must be non-negative and finite, got {q!r}")
        if p > MAX_PRICE:
            raise _Bad(f"{name!r} price is too large (limit {MAX_PRICE:g}), got {p!r}")
        if q > MAX_AMOUNT:
            raise _Bad(f"{name!r} size is too large (limit {MAX_AMOUNT:g}), got {q!r}")
        append((p, q))
    return out


def _number(d: dict[str, Any], key: str, positive: bool, limit: float) -> float:
    v = d.get(key)
    t = type(v)
    if t is not float:
        if t is not int:
            raise _Bad(f"{key!r} must be a number, got {v!r}")
        v = float(v)  # type: ignore[arg-type]
    assert isinstance(v, float)
    if positive:
        if not 0.0 < v < _INF:
            raise _Bad(f"{key!r} must be positive and finite, got {v!r}")
    elif not 0.0 <= v < _INF:
        raise _Bad(f"{key!r} must be non-negative and finite, got {v!r}")
    if v > limit:
        raise _Bad(f"{key!r} is too large (limit {limit:g}), got {v!r}")
    return v


def parse_event(d: Any) -> MarketEvent | RecordingHeader:
    """Validate one decoded line and build its event (raises ``_Bad`` with the reason)."""
    if type(d) is not dict:
        raise _Bad(f"expected a JSON object, got {type(d).__name__}")
    t = d.get("type")
    if t == "delta":
        return BookDelta(
            _int(d, "ts", True),  # type: ignore[arg-type]
            _levels(d.get("bids", []), "bids"),
            _levels(d.get("asks", []), "asks"),
            _int(d, "seq", False),
            _int(d, "first_seq", False),
            _int(d, "recv", False),
        )
    if t == "trade":
        raw_side = d.get("side")
        side = _SIDES.get(raw_side) if isinstance(raw_side, str) else None
        if side is None:
            raise _Bad(f"'side' must be 'buy' or 'sell', got {d.get('side')!r}")
        tid = d.get("id")
        return Trade(
            _int(d, "ts", True),  # type: ignore[arg-type]
            _number(d, "price", True, MAX_PRICE),
            _number(d, "amount", False, MAX_AMOUNT),
            side,
            None if tid is None else str(tid),
            _int(d, "recv", False),
        )
    if t == "snapshot":
        return BookSnapshot(
            _int(d, "ts", True),  # type: ignore[arg-type]
            _levels(d.get("bids", []), "bids"),
            _levels(d.get("asks", []), "asks"),
            _int(d, "seq", False),
            _int(d, "recv", False),
        )
    if t == "header":
        fmt = d.get("format")
        if fmt != FORMAT:
            raise _Bad(f"unsupported format {fmt!r} (expected {FORMAT!r})")
        tick = d.get("tick")
        if tick is not None:
            tick = _number(d, "tick", True, MAX_PRICE)
        symbol = d.get("symbol") or ""
        if symbol and not (type(symbol) is str and _SYMBOL.fullmatch(symbol)):
            raise _Bad(f"header 'symbol' must look like BASE/QUOTE, e.g. BTC/USDT, got {symbol!r}"[:200])
        exchange = d.get("exchange") or ""
        if exchange and not (type(exchange) is str and _EXCHANGE.fullmatch(exchange)):
            raise _Bad(f"header 'exchange' must be an exchange id like binance, got {exchange!r}"[:200])
        return RecordingHeader(exchange, symbol, tick, fmt)
    raise _Bad(f"unknown line type {t!r}")


def event_to_dict(ev: MarketEvent) -> dict[str, Any]:
    """The JSON object of one event, in the recording format."""
    if type(ev) is Trade:
        out: dict[str, Any] = {"type": "trade", "ts": ev.ts, "price": ev.price, "amount": ev.amount,
                               "side": ev.side.value}
        if ev.trade_id is not None:
            out["id"] = ev.trade_id
    elif type(ev) is BookDelta:
        out = {"type": "delta", "ts": ev.ts}
        if ev.first_seq is not None:
            out["first_seq"] = ev.first_seq
        if ev.seq is not None:
            out["seq"] = ev.seq
        out["bids"] = ev.bids
        out["asks"] = ev.asks
    elif type(ev) is BookSnapshot:
        out = {"type": "snapshot", "ts": ev.ts}
        if ev.seq is not None:
            out["seq"] = ev.seq
        out["bids"] = ev.bids
        out["asks"] = ev.asks
    else:
        raise TypeError(f"not a market event: {ev!r}")
    if ev.recv is not None:
        out["recv"] = ev.recv
    return out


# --------------------------------------------------------------------------- reading


def _open_binary(path: Path) -> IO[bytes]:
    if _is_gz(path):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


class RecordingReader:
    """Iterate the events of a recording, validating every line.

    Each ``iter()`` re-reads the file from the start (and resets ``errors``, ``skipped``,
    ``line_no``). ``header`` is read at construction.
    """

    def __init__(self, path: str | Path, on_error: Literal["stop", "skip"] = "stop") -> None:
        if on_error not in ("stop", "skip"):
            raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
        self.path = Path(path)
        self.on_error = on_error
        self.errors: list[RecordingError] = []
        self.skipped = 0
        self.line_no = 0
        self.events = 0
        self.truncated = False
        self._tail_error: str | None = None
        self.header = self._read_header()

    def _read_header(self) -> RecordingHeader:
        default = RecordingHeader("", "", None, FORMAT)
        with _open_binary(self.path) as f:
            try:
                first = f.readline()
            except (EOFError, OSError, zlib.error):
                return default  # reported, with its line number, when iterated
        if not first.strip():
            return default
        try:
            obj = orjson.loads(first)
        except orjson.JSONDecodeError:
            return default
        if type(obj) is dict and obj.get("type") == "header":
            try:
                h = parse_event(obj)
            except _Bad as exc:
                if self.on_error == "stop":
                    raise RecordingError(self.path, 1, str(exc)) from None
                return default
            assert isinstance(h, RecordingHeader)
            return h
        return default

    def _fail(self, line_no: int, message: str, *, tail: bool = False) -> None:
        err = RecordingError(self.path, line_no, message)
        self.errors.append(err)
        if tail:
            self.truncated = True
            log.warning("recording_truncated", path=str(self.path), line_no=line_no, error=message,
                        events=self.events)
            return
        if self.on_error == "stop":
            raise err
        self.skipped += 1
        log.warning("recording_bad_line", path=str(self.path), line_no=line_no, error=message)

    def _chunks(self, f: IO[bytes]) -> Iterator[bytes]:
        read = getattr(f, "read1", f.read)
        while True:
            try:
                chunk = read(_CHUNK)
            except EOFError as exc:  # gzip stream without its end: crash while writing
                self._tail_error = f"truncated compressed stream ({exc})"
                return
            except (OSError, zlib.error) as exc:  # corrupt compressed data
                self._tail_error = f"corrupt compressed data ({type(exc).__name__}: {exc})"
                return
            if not chunk:
                return
            yield chunk

    def __iter__(self) -> Iterator[MarketEvent]:
        self.errors = []
        self.skipped = 0
        self.line_no = 0
        self.events = 0
        self.truncated = False
        self._tail_error = None
        loads = orjson.loads
        JSONDecodeError = orjson.JSONDecodeError
        parse = parse_event
        line_no = 0
        rest = b""
        with _open_binary(self.path) as f:
            for chunk in self._chunks(f):
                lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
                rest = lines.pop()
                for line in lines:
                    line_no += 1
                    try:
                        ev = parse(loads(line))
                    except JSONDecodeError as exc:
                        if not line.strip():
                            continue
                        self.line_no = line_no
                        self._fail(line_no, f"invalid JSON ({exc})")
                        continue
                    except _Bad as exc:
                        self.line_no = line_no
                        self._fail(line_no, str(exc))
                        continue
                    if type(ev) is RecordingHeader:
                        if line_no != 1:
                            self.line_no = line_no
                            self._fail(line_no, "header line after the first line")
                        continue
                    self.events += 1
                    yield ev  # type: ignore[misc]
                self.line_no = line_no
        # the last line has no newline: fine if complete, a truncated tail if not
        if rest.strip():
            line_no += 1
            self.line_no = line_no
            try:
                ev = parse(loads(rest))
            except (JSONDecodeError, _Bad) as exc:
                msg = f"incomplete last line ({exc})"
                if self._tail_error:
                    msg = f"{self._tail_error}; {msg}"
                    self._tail_error = None
                self._fail(line_no, msg, tail=True)
            else:
                if type(ev) is not RecordingHeader:
                    self.events += 1
                    yield ev  # type: ignore[misc]
        if self._tail_error:
            self._fail(line_no + 1, self._tail_error, tail=True)


def read_recording(path: str | Path, on_error: Literal["stop", "skip"] = "stop") -> Iterator[MarketEvent]:
    """The events of a recording (see ``RecordingReader``)."""
    yield from RecordingReader(path, on_error)


# --------------------------------------------------------------------------- writing


@dataclass
class _Out:
    path: Path
    fh: IO[bytes]
    bytes: int = 0


class RecordingWriter:
    """Write events to a recording, with an optional size-based rotation.

    With ``rotate_bytes`` the writer moves on to ``name.1.jsonl.gz``, ``name.2.jsonl.gz``
    ... once a file holds that many bytes of JSON text (uncompressed). Every file starts
    with the header and, from the second on, a snapshot of the book as it stood, so each
    file replays on its own. ``files`` lists the files written, in order.
    """

    def __init__(
        self,
        path: str | Path,
        exchange: str,
        symbol: str,
        tick: float | None,
        rotate_bytes: int | None = None,
        flush_interval_s: float = 1.0,
    ) -> None:
        from bot.market.book import OrderBook  # the book of the recording, for rotation snapshots

        self.path = Path(path)
        self.exchange = exchange
        self.symbol = symbol
        self.tick = tick
        self.rotate_bytes = rotate_bytes
        self.flush_interval_s = flush_interval_s
        self.files: list[Path] = []
        self.events = 0
        self._book = OrderBook(symbol, tick) if rotate_bytes else None
        self._last_ts = 0
        self._closed = False
        self._last_flush = time.monotonic()
        self._out = self._open(self.path)

    def _open(self, path: Path) -> _Out:
        path.parent.mkdir(parents=True, exist_ok=True)
        # owner-only (0600), whatever the umask: a recording shows what this account watched
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
        except OSError:  # not ours to change (another owner's file we may still write)
            pass
        finally:
            os.close(fd)
        fh = cast(IO[bytes], gzip.open(path, "wb", compresslevel=6)) if _is_gz(path) else open(path, "wb")
        out = _Out(path, fh)
        self.files.append(path)
        header = {"type": "header", "format": FORMAT, "exchange": self.exchange, "symbol": self.symbol,
                  "tick": self.tick}
        self._raw(out, orjson.dumps(header) + b"\n")
        self._flush(out)
        return out

    def _raw(self, out: _Out, data: bytes) -> None:
        out.fh.write(data)
        out.bytes += len(data)

    def _flush(self, out: _Out) -> None:
        fh = out.fh
        if isinstance(fh, gzip.GzipFile):
            fh.flush(zlib.Z_SYNC_FLUSH)
        else:
            fh.flush()
        self._last_flush = time.monotonic()

    def _rotated_path(self, n: int) -> Path:
        name = self.path.name
        for suffix in (".jsonl.gz", ".jsonl", ".gz"):
            if name.endswith(suffix):
                return self.path.with_name(f"{name[: -len(suffix)]}.{n}{suffix}")
        return self.path.with_name(f"{name}.{n}")

    def _rotate(self) -> None:
        self._out.fh.close()
        self._out = self._open(self._rotated_path(len(self.files)))
        book = self._book
        if book is not None and book.has_snapshot:
            snap = BookSnapshot(self._last_ts, book.bids(), book.asks(), book.seq)
            self._raw(self._out, orjson.dumps(event_to_dict(snap)) + b"\n")

    def write(self, ev: MarketEvent) -> None:
        """Append one event (a line); rotates first when the current file is full."""
        if self._closed:
            raise ValueError(f"recording {self.path} is closed")
        out = self._out
        if self.rotate_bytes and out.bytes >= self.rotate_bytes:
            self._rotate()
            out = self._out
        line = orjson.dumps(event_to_dict(ev)) + b"\n"
        self._raw(out, line)
        self.events += 1
        if self._book is not None and type(ev) is not Trade:
            self._book.apply(ev)
        self._last_ts = max(self._last_ts, ev.ts)
        if not isinstance(out.fh, gzip.GzipFile) or time.monotonic() - self._last_flush >= self.flush_interval_s:
            self._flush(out)

    def flush(self) -> None:
        if not self._closed:
            self._flush(self._out)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.fh.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
