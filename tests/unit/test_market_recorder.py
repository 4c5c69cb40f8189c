"""Recording format: round trip, validation with line numbers, truncated tails, real files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bot.market.recorder import (
    RecordingError,
    RecordingHeader,
    RecordingReader,
    RecordingWriter,
    read_recording,
)
from bot.model import BookDelta, BookSnapshot, MarketEvent, Side, Trade

EVENTS: list[MarketEvent] = [
    BookSnapshot(ts=1000, bids=[(100.0, 1.5), (99.99, 0.00009)], asks=[(100.01, 2.0)], seq=41, recv=1003),
    BookDelta(ts=1100, bids=[(100.0, 0.0), (99.98, 3.0)], asks=[(100.02, 1.0)], seq=43, first_seq=42),
    Trade(ts=1098, price=100.01, amount=0.25, side=Side.BUY, trade_id="77"),  # ts steps back: accepted
    Trade(ts=1150, price=99.99, amount=1.0, side=Side.SELL),
    BookDelta(ts=1200, bids=[], asks=[(100.01, 0.0)], seq=44, recv=1201),
]


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.gz"])
def test_write_then_read_back_is_identical(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    with RecordingWriter(p, "binance", "BTC/USDT", 0.01) as w:
        for ev in EVENTS:
            w.write(ev)
    assert w.files == [p]
    r = RecordingReader(p)
    assert r.header == RecordingHeader("binance", "BTC/USDT", 0.01, "bot-recording/1")
    assert list(r) == EVENTS
    assert r.errors == [] and r.line_no == 6 and not r.truncated
    assert list(read_recording(p)) == EVENTS  # iterating again re-reads the file
    if name.endswith(".gz"):
        assert p.read_bytes()[:2] == b"\x1f\x8b"


def test_plain_file_is_flushed_line_by_line(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    w = RecordingWriter(p, "binance", "BTC/USDT", 0.01)
    w.write(EVENTS[0])
    # readable while still open (a crash now keeps the header and the snapshot)
    assert list(RecordingReader(p)) == EVENTS[:1]
    w.close()


def test_integer_numbers_become_floats(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"type":"snapshot","ts":5,"bids":[[100,2]],"asks":[[101,0.5]]}\n')
    (ev,) = list(RecordingReader(p))
    assert isinstance(ev, BookSnapshot)
    assert ev.bids == [(100.0, 2.0)] and all(type(x) is float for lv in ev.bids + ev.asks for x in lv)


def test_header_is_optional(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"type":"trade","ts":5,"price":1,"amount":2,"side":"sell"}\n')
    r = RecordingReader(p)
    assert r.header.tick is None and r.header.symbol == ""
    assert list(r) == [Trade(ts=5, price=1.0, amount=2.0, side=Side.SELL)]


BAD_LINES = [
    ('{"type":"trade","ts":5,"price":1,"amount":2,"side":"hold"}', "'side' must be 'buy' or 'sell', got 'hold'"),
    ('{"type":"trade","ts":"5","price":1,"amount":2,"side":"buy"}', "'ts' must be an integer, got '5'"),
    ('{"type":"trade","ts":5,"price":-1,"amount":2,"side":"buy"}', "'price' must be positive and finite, got -1.0"),
    ('{"type":"trade","ts":5,"price":1,"amount":-2,"side":"buy"}',
     "'amount' must be non-negative and finite, got -2.0"),
    ('{"type":"delta","ts":5,"bids":[[1.0,"2"]],"asks":[]}', "'bids' size must be a number, got '2'"),
    ('{"type":"delta","ts":5,"bids":[],"asks":[[0,1]]}', "'asks' price must be positive and finite, got 0.0"),
    ('{"type":"delta","ts":5,"bids":[],"asks":[[1.0,true]]}', "'asks' size must be a number, got True"),
    ('{"type":"delta","ts":5,"bids":[[1.0,2.0],3],"asks":[]}', "'bids' level must be [price, size], got 3"),
    ('{"type":"delta","ts":5,"bids":[[1.0,2.0,3.0]],"asks":[]}',
     "'bids' level must be [price, size], got [1.0, 2.0, 3.0]"),
    ('{"type":"delta","ts":5,"bids":{"a":1},"asks":[]}', "'bids' must be a list of [price, size], got {'a': 1}"),
    ('{"type":"delta","ts":5,"bids":[[1.0]],"asks":[]}', "'bids' level must be [price, size], got [1.0]"),
    ('{"type":"delta","ts":5,"seq":1.5,"bids":[],"asks":[]}', "'seq' must be an integer, got 1.5"),
    ('{"type":"delta","bids":[],"asks":[]}', "missing 'ts'"),
    ('{"type":"quote","ts":5}', "unknown line type 'quote'"),
    ("[1,2]", "expected a JSON object, got list"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_bad_line_stops_with_its_line_number(tmp_path: Path, line: str, message: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(
        '{"type":"header","format":"bot-recording/1","exchange":"x","symbol":"A/B","tick":0.5}\n'
        '{"type":"trade","ts":1,"price":1,"amount":2,"side":"buy"}\n' + line + "\n"
        '{"type":"trade","ts":9,"price":1,"amount":2,"side":"buy"}\n'
    )
    got: list[MarketEvent] = []
    with pytest.raises(RecordingError) as ei:
        for ev in RecordingReader(p):
            got.append(ev)
    assert str(ei.value) == f"{p}:3: {message}"
    assert ei.value.line_no == 3 and ei.value.message == message
    assert got == [Trade(ts=1, price=1.0, amount=2.0, side=Side.BUY)]  # nothing before it is lost


def test_skip_mode_counts_and_goes_on(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(
        '{"type":"trade","ts":1,"price":1,"amount":2,"side":"buy"}\n'
        "{not json\n"
        "\n"
        '{"type":"trade","ts":2,"price":1,"amount":2,"side":"up"}\n'
        '{"type":"trade","ts":3,"price":1,"amount":2,"side":"sell"}\n'
    )
    r = RecordingReader(p, on_error="skip")
    assert [e.ts for e in r] == [1, 3]
    assert r.skipped == 2
    assert [e.line_no for e in r.errors] == [2, 4]
    assert r.errors[0].message.startswith("invalid JSON")


def test_bad_header_format(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"type":"header","format":"bot-recording/9"}\n')
    with pytest.raises(RecordingError, match=r":1: unsupported format 'bot-recording/9'"):
        RecordingReader(p)


def test_truncated_gzip_tail_is_reported_not_raised(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl.gz"
    with RecordingWriter(p, "binance", "BTC/USDT", 0.01) as w:
        for i in range(2000):
            w.write(Trade(ts=i, price=100.0 + i % 7, amount=0.1 * (i % 5), side=Side.BUY))
    data = p.read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])  # the recorder was killed mid-write
    r = RecordingReader(cut)
    got = list(r)
    assert 0 < len(got) < 2000
    assert [e.ts for e in got] == list(range(len(got)))  # every complete line before the cut
    assert r.truncated and len(r.errors) == 1
    assert "truncated compressed stream" in r.errors[0].message


def test_truncated_plain_last_line(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"type":"trade","ts":1,"price":1,"amount":2,"side":"buy"}\n{"type":"trade","ts":2,"pri')
    r = RecordingReader(p)
    assert [e.ts for e in r] == [1]
    assert r.truncated and r.errors[0].line_no == 2
    assert r.errors[0].message.startswith("incomplete last line")


def test_last_line_without_newline_is_fine_when_complete(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"type":"trade","ts":1,"price":1,"amount":2,"side":"buy"}')
    r = RecordingReader(p)
    assert [e.ts for e in r] == [1] and not r.truncated


def test_not_gzip_data_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl.gz"
    p.write_bytes(b"this is not gzip\n")
    r = RecordingReader(p)
    assert list(r) == [] and r.truncated
    assert "corrupt compressed data" in r.errors[0].message


def test_rotation_makes_self_contained_files(tmp_path: Path) -> None:
    p = tmp_path / "rec.jsonl.gz"
    with RecordingWriter(p, "binance", "BTC/USDT", 0.01, rotate_bytes=400) as w:
        w.write(BookSnapshot(ts=1, bids=[(10.0, 1.0)], asks=[(11.0, 1.0)], seq=1))
        for i in range(2, 20):
            w.write(BookDelta(ts=i, bids=[(10.0 - i * 0.01, float(i))], asks=[], seq=i))
    assert w.files[0] == p and len(w.files) > 2
    assert w.files[1] == tmp_path / "rec.1.jsonl.gz"
    second = list(RecordingReader(w.files[1]))
    assert isinstance(second[0], BookSnapshot)
    # the snapshot at the start of a rotated file equals the book at that point
    from bot.market.book import OrderBook

    ref = OrderBook()
    for ev in read_recording(w.files[0]):
        ref.apply(ev)
    assert second[0].bids == ref.bids() and second[0].asks == ref.asks() and second[0].seq == ref.seq
    total = [e for f in w.files for e in read_recording(f) if not isinstance(e, BookSnapshot)]
    assert [e.ts for e in total] == list(range(2, 20))


def test_write_after_close_fails(tmp_path: Path) -> None:
    w = RecordingWriter(tmp_path / "r.jsonl", "x", "A/B", None)
    w.close()
    with pytest.raises(ValueError, match="is closed"):
        w.write(EVENTS[0])


def test_real_recordings_parse_fully(real_recordings: dict[str, Path]) -> None:
    counts = {}
    for name, path in real_recordings.items():
        r = RecordingReader(path)
        c = {"snapshot": 0, "delta": 0, "trade": 0}
        for ev in r:
            c[{BookSnapshot: "snapshot", BookDelta: "delta", Trade: "trade"}[type(ev)]] += 1
        assert r.errors == [] and r.header.tick == 0.01 and r.header.exchange == "binance"
        counts[name] = c
    assert counts["btcusdt"] == {"snapshot": 1, "delta": 6493, "trade": 19903}
    assert counts["ethusdt"] == {"snapshot": 1, "delta": 6468, "trade": 14515}


def test_real_recording_round_trips_through_the_writer(real_recordings: dict[str, Path], tmp_path: Path) -> None:
    src = real_recordings["btcusdt"]
    events = list(read_recording(src))
    out = tmp_path / "copy.jsonl.gz"
    with RecordingWriter(out, "binance", "BTC/USDT", 0.01) as w:
        for ev in events:
            w.write(ev)
    assert list(read_recording(out)) == events
    with gzip.open(src, "rt") as f:
        assert sum(1 for _ in f) == 1 + len(events)
