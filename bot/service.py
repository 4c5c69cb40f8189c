"""systemd integration: sd_notify READY / WATCHDOG / STOPPING / STATUS, credentials, and the
signals that arrive before the engine's event loop handles them.

Written by hand rather than with a library: the notify protocol is one datagram on a unix
socket named by ``$NOTIFY_SOCKET`` (abstract when it starts with ``@``), and the maintained
packages for it (sdnotify, systemd-python) either add a C build or are unmaintained. Without
``$NOTIFY_SOCKET`` (not under systemd, or in tests) every call is a no-op.

Keys may come from systemd credentials (``LoadCredential=`` / ``LoadCredentialEncrypted=``):
``load_credentials`` reads ``$CREDENTIALS_DIRECTORY/bot_api_key`` and ``bot_api_secret`` into
the environment variables the config reads, so keys never sit in a plain EnvironmentFile.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bot.config import ENV_API_KEY, ENV_API_SECRET

CREDENTIAL_FILES = {"bot_api_key": ENV_API_KEY, "bot_api_secret": ENV_API_SECRET}


class Notifier:
    """Sends sd_notify messages; silent when not run by systemd."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.sent: list[str] = []
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, message: str) -> bool:
        if not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), addr)
        except OSError:
            return False
        self.sent.append(message)
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s(default: float = 10.0) -> float:
    """Half of systemd's WatchdogSec (``$WATCHDOG_USEC``), the interval systemd recommends."""
    usec = os.environ.get("WATCHDOG_USEC")
    if usec and usec.isdigit() and int(usec) > 0:
        return int(usec) / 2_000_000
    return default


def load_credentials(env: MutableMapping[str, str] | None = None) -> list[str]:
    """Copy systemd credentials into the environment variables the config reads.

    Returns the names of the variables set. An environment variable already set wins, so an
    operator can still override a credential for one run.
    """
    env = os.environ if env is None else env
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return []
    loaded = []
    for filename, var in CREDENTIAL_FILES.items():
        path = Path(directory) / filename
        if var not in env and path.is_file():
            env[var] = path.read_text().strip()
            loaded.append(var)
    return loaded


# --------------------------------------------------------------------------- early signals


@dataclass
class EarlySignals:
    """What arrived before ``LiveRunner.run`` took the signals over."""

    stop: str | None = None  # "SIGTERM" or "SIGINT": the first stop signal
    reload: bool = False  # a SIGHUP: re-read the risk limits once the engine exists


_early = EarlySignals()


def _remember(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGHUP:
        _early.reload = True
    elif _early.stop is None:
        _early.stop = signal.Signals(signum).name


def catch_signals_early() -> None:
    """From the first moment of ``bot run``: remember SIGTERM / SIGINT / SIGHUP instead of dying.

    Why: the default action of SIGTERM (and SIGHUP) kills the process, and SIGINT raises
    ``KeyboardInterrupt`` wherever it lands, so a stop while the modules load or the store
    opens would exit 143 and leave the ``runs`` row open. Remembered here, the stop is made
    by ``LiveRunner.run`` as soon as it installs the event loop's handlers
    (``take_early_signals``): the run is closed and the exit code is 0. Main thread only.
    """
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _remember)


def take_early_signals() -> EarlySignals:
    """The signals remembered so far (they are handed over once, then forgotten)."""
    global _early
    taken, _early = _early, EarlySignals()
    return taken
