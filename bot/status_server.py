"""The bot's small read-only HTTP server on 127.0.0.1: ``/status``, ``/metrics``, ``/healthz``.

Why one tiny server for both: ``[metrics] port`` already opens a loopback port for
Prometheus, and the monitor wants the same facts as JSON, so both are views of one status
dict (``Engine.status()``, see the status schema). The engine hands over a provider
callable and needs nothing else: ``prometheus_text`` derives every metric from that dict.

Why loopback only: the endpoint shows positions, PnL and open orders. Binding any other
address is refused with ``ValueError``; to watch a bot on another host, use an SSH tunnel.
A loopback port is still reachable from a web page in the operator's browser through DNS
rebinding (``evil.example`` re-resolved to 127.0.0.1), so every request must name a loopback
host in its ``Host`` header (``127.0.0.1``, ``localhost`` or ``[::1]``, optionally with this
port): any other Host gets 421. With ``BOT_STATUS_TOKEN`` set in the environment, every
route but ``/healthz`` also wants ``Authorization: Bearer <token>`` (401 without it, 403 with
a wrong one); ``bot monitor`` sends it from the same variable.

Why it is cheap: the handler runs on the trading loop, so it does one ``provider()`` call and
one ``orjson.dumps`` (microseconds for a status dict) and no logging per request.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import os
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

import orjson
from aiohttp import web

from bot.config import ENV_STATUS_TOKEN
from bot.logging import get_logger

log = get_logger(__name__)

_JSON = "application/json"
LOOPBACK_HOST_NAMES = ("127.0.0.1", "localhost", "[::1]")
_PROM = "text/plain; version=0.0.4; charset=utf-8"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the name ``localhost``; nothing else is safe to bind."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str | None, port: int) -> bool:
    """True when a request's ``Host`` names a loopback host: 127.0.0.1, localhost or [::1],
    bare or with ``port`` (DNS rebinding sends the attacker's own name, refused)."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    return any(host in (name, f"{name}:{port}") for name in LOOPBACK_HOST_NAMES)


def status_token(env: Mapping[str, str] | None = None) -> str | None:
    """The bearer token the status server wants (``BOT_STATUS_TOKEN``; None when unset or empty)."""
    token = (os.environ if env is None else env).get(ENV_STATUS_TOKEN, "").strip()
    return token or None


def _default(obj: Any) -> Any:
    """orjson fallback: Decimal as an exact string (money), enums by value, sets as lists."""
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps_status(status: Mapping[str, Any]) -> bytes:
    """The status dict as JSON bytes (Decimal -> string, numpy scalars as numbers)."""
    return orjson.dumps(status, default=_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


class StatusServer:
    """Serves a status provider over HTTP on a loopback address.

    ``provider`` is called once per ``/status`` or ``/metrics`` request on the event loop,
    so it must be quick and must not block. ``metrics`` overrides the Prometheus text
    (default: ``prometheus_text(provider())``).
    """

    def __init__(
        self,
        provider: Callable[[], dict[str, Any]],
        port: int,
        host: str = "127.0.0.1",
        metrics: Callable[[], str] | None = None,
        token: str | None = None,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(
                f"status server: refusing to bind {host!r}; only a loopback address (127.0.0.1, ::1) "
                "is allowed, because the endpoint is unauthenticated (use an SSH tunnel to watch remotely)"
            )
        if not 0 <= port <= 65535:
            raise ValueError(f"status server: port must be 0..65535 (got {port})")
        self.provider = provider
        self.port = port
        self.host = host
        self.metrics = metrics
        # BOT_STATUS_TOKEN unless given; "" = no token
        self.token = (token if token is not None else status_token()) or None
        self.requests = 0
        self.refused = 0
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        """Start listening; returns the actual port (``port=0`` picks a free one)."""
        if self._runner is not None:
            return self.port
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", self._index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info("status_server_started", url=self.url)
        return self.port

    async def stop(self) -> None:
        """Stop listening and close open connections (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> StatusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ handlers

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Host check (DNS rebinding), then the optional bearer token; before any handler."""
        if not host_allowed(request.headers.get("Host"), self.port):
            self.refused += 1
            return web.Response(status=421, text="misdirected request: use Host 127.0.0.1, localhost or [::1]\n")
        if self.token is not None and request.path != "/healthz":
            auth = request.headers.get("Authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                self.refused += 1
                return web.Response(status=401, text=f"bearer token required ({ENV_STATUS_TOKEN})\n",
                                    headers={"WWW-Authenticate": "Bearer"})
            if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
                self.refused += 1
                return web.Response(status=403, text="wrong bearer token\n")
        response: web.StreamResponse = await handler(request)
        return response

    def _snapshot(self) -> dict[str, Any]:
        self.requests += 1
        return self.provider()

    async def _status(self, request: web.Request) -> web.Response:
        try:
            body = dumps_status(self._snapshot())
        except Exception as exc:  # a broken provider must not take the endpoint down
            log.warning("status_provider_failed", error=f"{type(exc).__name__}: {exc}")
            body = orjson.dumps({"error": f"status unavailable: {type(exc).__name__}: {exc}"})
            return web.Response(body=body, status=500, content_type=_JSON)
        return web.Response(body=body, content_type=_JSON, headers={"Cache-Control": "no-store"})

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            text = self.metrics() if self.metrics is not None else prometheus_text(self._snapshot())
        except Exception as exc:
            log.warning("metrics_provider_failed", error=f"{type(exc).__name__}: {exc}")
            return web.Response(text=f"# metrics unavailable: {type(exc).__name__}\n", status=500)
        return web.Response(body=text.encode(), headers={"Content-Type": _PROM})

    async def _healthz(self, request: web.Request) -> web.Response:
        # liveness of the process (the loop answers); trading health is in /status and /metrics
        return web.Response(text="ok\n")

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="bot status server: GET /status (JSON), /metrics (Prometheus), /healthz\n")


# --------------------------------------------------------------------------- Prometheus


def _num(v: Any) -> float | None:
    """A status value as a float sample, or None when missing/unparseable (sample left out)."""
    if isinstance(v, bool):
        return float(v)
    if v is None or isinstance(v, dict | list):
        return None
    try:
        f = float(Decimal(v)) if isinstance(v, str) else float(v)
    except (InvalidOperation, ValueError, TypeError):
        return None
    return f if not math.isnan(f) else None


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}"


class _Families:
    """Collects samples per metric family so HELP/TYPE appear once, before the samples."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._order: list[str] = []
        self._meta: dict[str, tuple[str, str]] = {}
        self._samples: dict[str, list[str]] = {}

    def add(self, name: str, kind: str, help_: str, value: Any, /, **labels: Any) -> None:
        v = _num(value)
        if v is None:
            return
        full = self.prefix + name
        if full not in self._meta:
            self._order.append(full)
            self._meta[full] = (kind, help_)
            self._samples[full] = []
        self._samples[full].append(f"{full}{_labels(labels)} {_fmt(v)}")

    def text(self) -> str:
        out: list[str] = []
        for name in self._order:
            kind, help_ = self._meta[name]
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(self._samples[name])
        return "\n".join(out) + "\n" if out else ""


def _section(status: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = status.get(key)
    return v if isinstance(v, Mapping) else {}


def _items(v: Any) -> Iterable[tuple[str, Any]]:
    return v.items() if isinstance(v, Mapping) else ()


def prometheus_text(status: Mapping[str, Any], prefix: str = "bot_") -> str:
    """Render a status dict in the Prometheus text exposition format (version 0.0.4).

    Every value comes from the status dict, so the engine only has to keep ``status()``
    up to date. Missing values are left out (no sample) rather than exported as 0, so a
    dashboard shows a gap while the bot starts instead of a false reading.
    """
    f = _Families(prefix)
    f.add("info", "gauge", "Constant 1; labels name the run.", 1, run_id=status.get("run_id", ""),
          mode=status.get("mode", ""), symbol=status.get("symbol", ""), account=status.get("account", ""),
          state=status.get("state", ""))
    book = _section(status, "book")
    if "healthy" in book:
        f.add("book_healthy", "gauge", "1 when the order book is consistent and fresh.", bool(book["healthy"]))
    f.add("book_mid", "gauge", "Mid price.", book.get("mid"))
    f.add("book_spread", "gauge", "Best ask minus best bid.", book.get("spread"))
    f.add("book_microprice", "gauge", "Size-weighted microprice.", book.get("microprice"))
    f.add("book_updates_total", "counter", "Book updates applied.", book.get("updates"))
    for name, value in _items(status.get("signals")):
        f.add("signal", "gauge", "Raw signal value.", value, name=name)
    for name, value in _items(status.get("zscores")):
        f.add("signal_zscore", "gauge", "Normalised signal (z-score).", value, name=name)
    det = _section(status, "detector")
    if isinstance(det.get("state"), str):
        for st in ("flat", "long", "short"):
            f.add("detector_state", "gauge", "1 for the detector's current state.", det["state"] == st, state=st)
    pos = _section(status, "position")
    f.add("position_amount", "gauge", "Position in base currency (signed).", pos.get("amount"))
    f.add("position_avg_price", "gauge", "Average entry price of the position.", pos.get("avg_price"))
    f.add("pnl_realized", "gauge", "Realised PnL in quote currency.", pos.get("realized_pnl"))
    f.add("pnl_unrealized", "gauge", "Unrealised PnL in quote currency.", pos.get("unrealized_pnl"))
    f.add("fees", "gauge", "Fees paid in quote currency.", pos.get("fees"))
    f.add("equity", "gauge", "Account equity in quote currency.", pos.get("equity"))
    orders = status.get("open_orders")
    if isinstance(orders, list):
        by_status: dict[str, int] = {}
        for o in orders:
            st = str(o.get("status", "unknown")) if isinstance(o, Mapping) else "unknown"
            by_status[st] = by_status.get(st, 0) + 1
        f.add("open_orders", "gauge", "Open orders by status.", len(orders), status="all")
        for st, n in sorted(by_status.items()):
            f.add("open_orders", "gauge", "Open orders by status.", n, status=st)
    risk = _section(status, "risk")
    if "halted" in risk:
        f.add("halted", "gauge", "1 when the risk engine has halted trading.", bool(risk["halted"]),
              kind=risk.get("halt_kind") or "")
    for name, value in _items(risk.get("limits")):
        f.add("risk_limit_used_percent", "gauge", "Share of a risk limit in use, in percent.", value,
              limit=str(name).removesuffix("_pct"))
    health = _section(status, "health")
    if isinstance(health.get("feed"), str):
        for st in ("up", "down", "resyncing"):
            f.add("feed_state", "gauge", "1 for the market feed's current state.", health["feed"] == st, state=st)
    if isinstance(health.get("store"), str):
        f.add("store_ok", "gauge", "1 when the database is writable.", health["store"] == "ok")
    lag = _num(health.get("loop_lag_ms"))
    if lag is not None:
        f.add("loop_lag_seconds", "gauge", "Event-loop lag.", lag / 1000.0)
    counts = _section(status, "counts")
    f.add("skipped_for_cost_total", "counter", "Entry signals the cost gate refused (expected move below the costs).",
          counts.get("skipped_for_cost"))
    for kind in ("orders", "fills"):
        f.add("foreign_total", "counter", "Orders and fills on the account that are not the bot's (left alone).",
              counts.get(f"foreign_{kind}"), kind=kind)
    return f.text()
