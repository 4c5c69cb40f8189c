"""A benchmark's emulator in a child process: start it, read its port, stop it cleanly.

Why a child: the emulator's event loop must not share a loop (or, on 2 cores, a core) with the
bot it measures. The child prints ``PORT <n>`` once listening and exits when its stdin closes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def emulator_child(module: str, *args: str) -> Iterator[int]:
    """Run ``python -m <module> --serve <args>``; yield the port it listens on."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--serve", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("PORT "):
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the emulator child exited before listening")
        yield int(line.split()[1])
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
