"""A benchmark's emulator in a child process: start it, read its port, stop it cleanly.

Why a child: the emulator's event loop must not share a loop (or, on 2 cores, a core) with the
bot it measures. The child prints ``PORT <n>`` once listening and exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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


async def serve_until_stdin_closes(emu: Any, port: int) -> None:
    """The child's side: start ``emu`` on ``port``, print ``PORT <n>``, stop when stdin closes."""
    real = await emu.start(port=port)
    print(f"PORT {real}", flush=True)
    done = asyncio.Event()
    asyncio.get_running_loop().add_reader(sys.stdin.fileno(), done.set)  # parent closes stdin -> stop
    try:
        await done.wait()
    finally:
        await emu.stop()
