"""The bad-input corpus (tests/corpus/): every malformed recording, broken config and bad command
line has a stated outcome in expected.toml, and the bot meets it: a RecordingError naming the line
(or a counted skip), a book that goes unhealthy and resyncs, `bot check-config` exit 78 naming the
key, or a `bot` command that ends with its exit code (2 usage, 78 config, 1 other) and one line on
stderr, no traceback, within 5 s, having written, changed or lost nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bot.market.book import OrderBook
from bot.market.recorder import RecordingError, RecordingReader
from bot.model import Trade

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
EXPECTED: dict[str, dict[str, dict[str, Any]]] = tomllib.loads((CORPUS / "expected.toml").read_text())
WITHIN_S = 5.0  # a bad input is answered at once, never after the work or a hang


def test_every_corpus_file_has_an_expected_outcome() -> None:
    for kind, pattern in (("recordings", "*.jsonl*"), ("configs", "*.toml")):
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


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}


def _bot(args: list[str], cwd: Path, prefix: list[str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``bot ARGS`` in ``cwd``; returns the finished process and how long it took."""
    started = time.monotonic()
    proc = subprocess.run([*(prefix or []), sys.executable, "-m", "bot", *args], capture_output=True, text=True,
                          env=_clean_env(), cwd=cwd, timeout=60)
    return proc, time.monotonic() - started


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under ``root`` with its content hash: equal before and after a
    failed command means nothing was written, changed or lost (no half-written file)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and 'File "' not in out, out[-3000:]


@pytest.mark.parametrize("name", sorted(EXPECTED["configs"]))
def test_config_corpus_check_config(name: str, tmp_path: Path) -> None:
    exp = EXPECTED["configs"][name]
    src = CORPUS / "configs" / name
    cfg = tmp_path / name
    cfg.write_bytes(src.read_bytes())
    cfg.chmod(0o600)
    before = _snapshot(tmp_path)
    proc, took = _bot(["check-config", str(cfg)], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == exp.get("exit", 78), out
    _no_traceback(proc)
    assert took < WITHIN_S, f"{took:.1f} s"
    if proc.returncode == 0:
        assert exp["stdout"] in proc.stdout.splitlines(), proc.stdout
    else:
        assert proc.stdout == ""
        lines = proc.stderr.splitlines()
        assert lines and all(": " in line for line in lines), proc.stderr  # one line per problem, each named
        for text in exp.get("keys", [exp.get("key")]):
            assert any(text in line for line in lines), proc.stderr
    if "absent" in exp:
        assert exp["absent"] not in out
    assert _snapshot(tmp_path) == before


def _setup_case(exp: dict[str, Any], case: Path) -> list[str]:
    """Prepare the case's directory; returns a command prefix (run as another user) or []."""
    setup = exp.get("setup")
    if setup in ("db", "db_newer"):
        import sqlite3

        from bot.store.db import upgrade_sync

        upgrade_sync(f"sqlite+aiosqlite:///{case / 'bot.db'}")
        if setup == "db_newer":  # written by a newer bot: a revision this one has never heard of
            conn = sqlite3.connect(case / "bot.db")
            with conn:
                conn.execute("UPDATE alembic_version SET version_num = '9999'")
            conn.close()  # the last connection: the WAL is checkpointed into bot.db and removed
    elif setup == "unreadable_config":
        (case / "unreadable.toml").write_text('mode = "paper"\n')
        (case / "unreadable.toml").chmod(0o000)
        if os.geteuid() == 0:  # root reads anything: run the command as nobody
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: cannot make a file unreadable")
            return ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    elif setup is not None:
        raise AssertionError(f"unknown setup {setup!r}")
    return []


def _expand(arg: str, case: Path) -> str:
    if arg.startswith("{cfg:") and arg.endswith("}"):
        name = arg[len("{cfg:"):-1]
        copy = case / name
        copy.write_bytes((CORPUS / "configs" / name).read_bytes())
        copy.chmod(0o600)
        return str(copy)
    return arg.replace("{corpus}", str(CORPUS)).replace("{tmp}", str(case))


@pytest.mark.parametrize("name", sorted(EXPECTED["cli"]))
def test_bad_command_line(name: str, tmp_path: Path) -> None:
    exp = EXPECTED["cli"][name]
    # a directory others may enter: the unreadable-config case runs the command as nobody
    case = Path(tempfile.mkdtemp(prefix=f"corpus-{name}-", dir=tmp_path if os.geteuid() else None))
    try:
        case.chmod(0o755)
        prefix = _setup_case(exp, case)
        args = [_expand(a, case) for a in exp["args"]]
        before, corpus_before = _snapshot(case), _snapshot(CORPUS)
        proc, took = _bot(args, case, prefix)
        out = proc.stdout + proc.stderr
        assert proc.returncode == exp["exit"], out[-3000:]
        _no_traceback(proc)
        assert took < WITHIN_S, f"{took:.1f} s"
        if exp["exit"] != 0:
            lines = proc.stderr.splitlines()
            assert len(lines) == 1, proc.stderr  # one line, whatever went wrong
            assert exp["message"] in lines[0], lines[0]
        if exp.get("json"):
            json.loads(proc.stdout)  # exactly one JSON document: logs went to stderr
            assert proc.stdout.count("\n") == 1, proc.stdout
        if "absent" in exp:
            assert exp["absent"] not in out
        assert _snapshot(case) == before, "the command wrote, changed or removed files"
        assert _snapshot(CORPUS) == corpus_before
    finally:
        shutil.rmtree(case, ignore_errors=True)
