"""structlog, configured once: JSON lines for journald, a readable console on a TTY.

Every line carries ``run_id``, ``mode`` and ``symbol`` (bound with ``bind_run``), and a
last processor replaces any known secret with ``***`` wherever it appears, so a key that
slips into an exception message or a ccxt URL still never reaches the journal.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from bot.config import secret_values

_configured = False


_to_stderr = False  # logs_to_stderr(): while stdout carries a command's result


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the moment of writing (not at configure time),
    so a swapped or closed stdout (test runners, daemonisation) never breaks logging; to
    ``sys.stderr`` instead while ``logs_to_stderr`` is on (also for loggers bound before)."""

    @staticmethod
    def _out() -> TextIO:
        return sys.stderr if _to_stderr else sys.stdout

    def write(self, text: str) -> int:
        return self._out().write(text)

    def flush(self) -> None:
        self._out().flush()

    def isatty(self) -> bool:
        return self._out().isatty()


def logs_to_stderr(enabled: bool = True) -> bool:
    """Send every log line to stderr (``enabled``) or back to stdout; returns the previous setting.

    For commands whose stdout is a result (``bot analyze --json``: exactly one JSON document),
    including loggers that modules bound at import time."""
    global _to_stderr
    previous, _to_stderr = _to_stderr, enabled
    return previous


class _Redactor:
    """structlog processor: scrub secrets from every string value of the event dict."""

    def __init__(self) -> None:
        self.secrets: list[str] = []

    def refresh(self) -> None:
        self.secrets = secret_values()

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not self.secrets:
            return event
        for k, v in event.items():
            if isinstance(v, str):
                for s in self.secrets:
                    if s in v:
                        v = v.replace(s, "***")
                event[k] = v
            elif not isinstance(v, int | float | bool) and v is not None:
                text = str(v)
                scrubbed = text
                for s in self.secrets:
                    scrubbed = scrubbed.replace(s, "***")
                if scrubbed != text:
                    event[k] = scrubbed
        return event


_redactor = _Redactor()


def configure_logging(level: str = "info", stream: TextIO | None = None, json: bool | None = None) -> None:
    """Configure structlog (idempotent; a later call re-targets stream/level)."""
    global _configured
    out: Any = stream or _CurrentStdout()
    tty = bool(hasattr(out, "isatty") and out.isatty())
    if json is None:
        json = not tty
    _redactor.refresh()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=tty)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _configured = True


def refresh_secrets() -> None:
    """Call after secrets change in the environment (tests, credential loading)."""
    _redactor.refresh()


def bind_run(run_id: str | int, mode: str, symbol: str) -> None:
    """Bind the fields every line of this process carries."""
    structlog.contextvars.bind_contextvars(run_id=str(run_id), mode=mode, symbol=symbol)


def get_logger(name: str | None = None) -> Any:
    if not _configured:
        configure_logging()
    log = structlog.get_logger()
    return log.bind(logger=name) if name else log
