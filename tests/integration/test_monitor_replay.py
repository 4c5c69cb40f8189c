"""`bot monitor --replay`: the same view driven by the engine replaying a recording."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console

from bot.config import Settings
from bot.market.synthetic import write_synthetic_recording
from bot.monitor import resolve_replay, run_replay_monitor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def replay_available() -> None:
    try:
        resolve_replay()
    except RuntimeError as exc:
        pytest.skip(f"engine replay with status not available yet: {exc}")


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    p = tmp_path / "synthetic.jsonl.gz"
    write_synthetic_recording(p, 30, seed=7)
    return p


async def test_replay_drives_the_view_to_the_end(replay_available: None, recording: Path, tmp_path: Path) -> None:
    console = Console(record=True, width=120, height=44, file=io.StringIO(), color_system=None, force_terminal=False)
    code = await run_replay_monitor(recording, Settings(), speed=1000.0, console=console,
                                    db_url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", wait_at_end=False)
    text = console.export_text()
    assert code == 0, text
    assert "replay of synthetic.jsonl.gz finished" in text
    assert "replay synthetic" in text
    m = re.search(r"── mid (\d+\.?\d*)  spread (\d+\.?\d*) ──", text)
    assert m is not None, text
    assert float(m.group(2)) > 0
    assert re.search(r"position\s+-?\d", text)  # the engine's position, not a dash
    assert "Traceback" not in text


async def test_replay_of_a_broken_file_shows_the_failure(replay_available: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type":"header","format":"something-else/9"}\n')
    console = Console(record=True, width=120, height=44, file=io.StringIO(), color_system=None, force_terminal=False)
    code = await run_replay_monitor(bad, Settings(), speed=1000.0, console=console,
                                    db_url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", wait_at_end=False)
    assert code == 1
    assert "replay failed:" in console.export_text()


def test_cli_replay_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    import subprocess

    r = subprocess.run([sys.executable, "-m", "bot", "monitor", "--replay", str(tmp_path / "nope.jsonl")],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert "--replay: no such recording file" in r.stderr
