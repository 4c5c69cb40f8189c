"""The bad-input corpus (tests/corpus/): every malformed recording and broken config has a stated
outcome in expected.toml, and the bot meets it: a RecordingError naming the line (or a counted
skip), a book that goes unhealthy and resyncs, or `bot check-config` exit 78 naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bot.market.book import OrderBook
from bot.market.recorder import RecordingError, RecordingReader
from bot.model import Trade

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
EXPECTED: dict[str, dict[str, dict[str, Any]]] = tomllib.loads((CORPUS / "expected.toml").read_text())


def test_every_corpus_file_has_an_expected_outcome() -> None:
    for kind, pattern in (("recordings", "*.jsonl"), ("configs", "*.toml")):
        on_disk = {p.name for p in (CORPUS / kind).glob(pattern)}
        assert on_disk == set(EXPECTED[kind]), f"{kind}: files and expected.toml differ"


@pytest.mark.parametrize("name", sorted(EXPECTED["recordings"]))
def test_bad_recording(name: str) -> None:
    exp = EXPECTED["recordings"][name]
    path = CORPUS / "recordings" / name
    if "truncated" in exp:
        reader = RecordingReader(path, on_error="stop")
        assert len(list(reader)) == exp["events"]
        assert reader.truncated is True
        assert [e.line_no for e in reader.errors] == [exp["error_line"]]
        assert exp["message"] in reader.errors[0].message
        return
    if "error_line" in exp:
        with pytest.raises(RecordingError) as info:
            list(RecordingReader(path, on_error="stop"))
        assert info.value.line_no == exp["error_line"]
        assert exp["message"] in info.value.message
        assert str(info.value).startswith(f"{path}:{exp['error_line']}: ")
    if "skipped" in exp:
        reader = RecordingReader(path, on_error="skip")
        assert len(list(reader)) == exp["events"]
        assert reader.skipped == exp["skipped"]
    if "book_reason" in exp:
        reader = RecordingReader(path, on_error="stop")
        book = OrderBook("BTC/USDT", tick=0.01)
        reasons: list[str] = []
        events = 0
        for ev in reader:
            events += 1
            if type(ev) is not Trade:
                book.apply(ev)
                if not book.healthy and book.reason:
                    reasons.append(book.reason)
        assert events == exp["events"]
        assert any(exp["book_reason"] in r for r in reasons), reasons


@pytest.mark.parametrize("name", sorted(EXPECTED["configs"]))
def test_broken_config_check_config_exit_78(name: str, tmp_path: Path) -> None:
    exp = EXPECTED["configs"][name]
    src = CORPUS / "configs" / name
    cfg = tmp_path / name
    cfg.write_bytes(src.read_bytes())
    cfg.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    proc = subprocess.run([sys.executable, "-m", "bot", "check-config", str(cfg)], capture_output=True,
                          text=True, env=env, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 78, out
    assert exp["key"] in proc.stderr, proc.stderr
    if "absent" in exp:
        assert exp["absent"] not in out
