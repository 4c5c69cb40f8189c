"""The emulator's aiohttp server: Binance spot REST, market streams, the WebSocket API, admin.

Why an in-process server with real sockets: the bot's exchange path (ccxt, its rate
limiter, its websocket client, our retries and reconciliation) is only tested for real when
it runs unchanged against something that speaks the exchange's protocol. Paths served:

* REST under ``/api/v3`` (and ``/api/v1``): exactly the calls ccxt 4.5.90 makes for
  load_markets, time, depth, trades, account, orders and my trades;
* market streams at ``/stream/ws[/N]`` (and ``/ws``): ``SUBSCRIBE`` to ``<sym>@depth@100ms``,
  ``<sym>@depth``, ``<sym>@trade``, ``<sym>@aggTrade``;
* the WebSocket API at ``/ws-api/v3``: ``userDataStream.subscribe.signature`` then
  ``executionReport`` / ``outboundAccountPosition`` events;
* the admin API under ``/_emulator/``: orders, fills, balances, book, faults (with the hit
  count of every fault and the requests that ignored a ``Retry-After``), ``pressure`` (start
  a buy or sell pressure episode in the synthetic market now, so a test can make the bot trade
  while a fault is on) and ``fill`` (a counterparty trades a known quantity against one resting
  order now, e.g. while the bot is down).

Faults (see :mod:`bot.emulator.faults`) are applied in a middleware (REST), in the stream
broadcast (gap, malformed), in each connection's writer task (delay, freeze) and in the
order handlers (rejections, partial fills, answers that never come).

Retry-After: after a 429 or 418 answer with ``Retry-After: N`` every ``/api`` request that
arrives later than ``RETRY_GRACE_S`` and earlier than N seconds after it is counted (and
logged as ``emulator_retry_after_ignored``): what a client that honours the header never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from bot.emulator import errors
from bot.emulator.auth import Authenticator
from bot.emulator.faults import Faults
from bot.emulator.market import MarketSource, RecordingSource, SyntheticSource
from bot.emulator.matching import Account, EmuFill, EmuOrder, PublicTrade, SymbolEngine, fmt, spec_for
from bot.logging import get_logger
from bot.market.synthetic import Regime, RegimeSchedule
from bot.model import Level, MarketEvent

log = get_logger("bot.emulator")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HOLD_S = 600.0  # how long a "timed out" request is held (or until the emulator stops)
RETRY_GRACE_S = 0.5  # requests already on their way when a 429/418 went out are not counted


async def _admin_params(request: web.Request) -> dict[str, Any]:
    """An admin POST's parameters: the query string, overridden by a JSON body if there is one."""
    q: dict[str, Any] = dict(request.query)
    if request.can_read_body and request.content_type == "application/json":
        q |= dict(orjson.loads(await request.read()) or {})
    return q


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


class _Conn:
    """One websocket connection with its own writer task (delay/freeze apply there)."""

    def __init__(self, emu: Emulator, ws: web.WebSocketResponse, kind: str, peer: str) -> None:
        self.emu = emu
        self.ws = ws
        self.kind = kind  # "stream" | "api"
        self.peer = peer
        self.topics: set[str] = set()
        self.user_sub: int | None = None  # WebSocket API user data subscription id
        self.queue: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
        self.sent = 0
        self.writer = asyncio.get_running_loop().create_task(self._write())

    def send(self, payload: str) -> None:
        self.queue.put_nowait((time.monotonic(), payload))

    async def _write(self) -> None:
        emu = self.emu
        try:
            while True:
                queued, payload = await self.queue.get()
                if self.kind == "stream":
                    delay = emu.faults.duration("ws_delay")
                    if delay > 0:
                        wait = queued + delay - time.monotonic()
                        if wait > 0:
                            emu.faults.record("ws_delay")
                            await asyncio.sleep(wait)
                    frozen = emu.freeze_until - time.monotonic()
                    if frozen > 0:  # the freeze is set once per fault SPEC; one wait covers it
                        emu.faults.record("ws_freeze")
                        await asyncio.sleep(frozen)
                if self.ws.closed:
                    return
                await self.ws.send_str(payload)
                self.sent += 1
        except (ConnectionResetError, RuntimeError):
            return
        except asyncio.CancelledError:
            raise

    async def close(self) -> None:
        self.writer.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()


class Emulator:
    """A Binance-spot-compatible exchange on 127.0.0.1; see the module docstring.

    In-process use (tests, ``bot demo``)::

        emu = Emulator(seed=7)
        port = await emu.start()          # port 0 = any free port
        ex = make_ccxt_client(emu.base_url, "emulator-key", "emulator-secret")
        ...
        await emu.stop()

    ``speed`` scales market time (0 pauses the market; tests then drive it with
    :meth:`inject`). ``balances`` is the starting account (default 100000 USDT, 1 BTC, 10 ETH).
    ``schedule`` paces the synthetic market's pressure episodes (``bot demo`` makes them early).
    """

    def __init__(
        self,
        *,
        market: str = "synthetic",
        seed: int = 7,
        faults: str = "",
        api_key: str = "emulator-key",
        api_secret: str = "emulator-secret",
        symbols: tuple[str, ...] | list[str] = ("BTC/USDT", "ETH/USDT"),
        speed: float = 1.0,
        balances: dict[str, Any] | None = None,
        maker_fee: Decimal | str = "0.001",
        taker_fee: Decimal | str = "0.001",
        step_ms: int = 100,
        schedule: RegimeSchedule | None = None,
    ) -> None:
        self.seed = seed
        self.speed = float(speed)
        self.auth = Authenticator(api_key, api_secret)
        self.faults = Faults.parse(faults)
        self.account = Account(balances)
        self.market_name = market
        syms = list(symbols)
        rec_symbol: str | None = None
        if market != "synthetic":
            rec_symbol = RecordingSource.header_symbol(market)
            if rec_symbol not in syms:
                syms.insert(0, rec_symbol)
        self.symbols = syms
        self.engines: dict[str, SymbolEngine] = {}
        self.by_id: dict[str, SymbolEngine] = {}
        self.sources: dict[str, MarketSource] = {}
        for sym in syms:
            spec = spec_for(sym)
            eng = SymbolEngine(
                spec,
                self.account,
                self.now_ms,
                maker_fee=Decimal(str(maker_fee)),
                taker_fee=Decimal(str(taker_fee)),
            )
            self.engines[sym] = eng
            self.by_id[spec.id] = eng
            src: MarketSource = (
                RecordingSource(Path(market), sym)
                if sym == rec_symbol
                else SyntheticSource(spec, seed, step_ms, schedule)
            )
            self.sources[sym] = src
            eng.on_market(src.initial())
            eng.outbox.clear()
        self.conns: set[_Conn] = set()
        self.freeze_until = 0.0
        self._gap_left: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._next_sub = 0
        self.host = "127.0.0.1"
        self.port = 0
        self.updates_published = 0
        self.book_log: dict[str, dict[int, tuple[list[Level], list[Level]]]] = {}
        self._quiet_from = self._quiet_until = 0.0  # the Retry-After window of the last 429/418
        self.retry_after_ignored = 0
        self._apply_fault_side_effects()

    # ------------------------------------------------------------------ truth accessors

    def now_ms(self) -> int:
        return int(time.time() * 1000 + self.faults.duration("clock_skew") * 1000)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def engine(self, symbol: str) -> SymbolEngine:
        return self.engines[symbol]

    def orders(self, symbol: str | None = None) -> list[EmuOrder]:
        engines = [self.engines[symbol]] if symbol else list(self.engines.values())
        return sorted((o for e in engines for o in e.orders.values()), key=lambda o: o.order_id)

    def fills(self, symbol: str | None = None) -> list[EmuFill]:
        engines = [self.engines[symbol]] if symbol else list(self.engines.values())
        return sorted((f for e in engines for f in e.fills), key=lambda f: (f.time, f.trade_id))

    def balances(self) -> dict[str, dict[str, Decimal]]:
        a = self.account
        return {k: {"free": a.free[k], "locked": a.locked[k]} for k in sorted(a.free)}

    def book(self, symbol: str) -> tuple[list[Level], list[Level]]:
        """The published book of ``symbol`` (bids, asks; best first)."""
        return self.engines[symbol].book()

    def set_faults(self, spec: str) -> None:
        """Replace the fault set (empty clears it); raises FaultSpecError on a bad SPEC.

        The hit counts carry over: they count since the emulator started.
        """
        self.faults = Faults.parse(spec).carry_hits(self.faults)
        self._apply_fault_side_effects()
        log.info("emulator_faults", spec=spec)

    def _apply_fault_side_effects(self) -> None:
        f = self.faults
        freeze = f.duration("ws_freeze")
        self.freeze_until = time.monotonic() + freeze if freeze > 0 else 0.0
        gap = f.rates.get("ws_gap")
        self._gap_left = {s: gap.count for s in self.engines} if gap and gap.count else {}
        if f.drop_now and self._runner is not None:
            f.drop_now = False
            f.record("ws_drop")
            asyncio.get_running_loop().create_task(self.drop_connections())

    def record_books(self, symbol: str) -> dict[int, tuple[list[Level], list[Level]]]:
        """From now on keep the published book after every depth update, keyed by its ``u``.

        For tests that check a client's book against the exchange's at every update id.
        """
        return self.book_log.setdefault(symbol, {})

    def pressure(self, symbol: str, direction: int, seconds: float) -> Regime:
        """Start a pressure episode in ``symbol``'s synthetic market now, for ``seconds``.

        ``direction`` +1 is buy pressure, -1 sell pressure. The episode replaces whatever the
        market's own schedule had planned for that span. ValueError for a recorded market.
        """
        src = self.sources.get(symbol)
        if not isinstance(src, SyntheticSource):
            raise ValueError(f"{symbol}: pressure needs the synthetic market, not a recording")
        if direction not in (1, -1) or not 0 < seconds <= 600:
            raise ValueError("direction must be 1 or -1 and seconds in (0, 600]")
        regime = src.m.start_regime(direction, seconds)
        log.info("emulator_pressure", symbol=symbol, direction=direction, seconds=seconds)
        return regime

    def inject(self, symbol: str, ev: MarketEvent) -> None:
        """Apply one market event now (tests drive a paused market with this)."""
        eng = self.engines[symbol]
        eng.on_market(ev)
        self._drain(eng)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        app = web.Application(middlewares=[self._middleware])
        self._routes(app)
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self.host = host
        loop = asyncio.get_running_loop()
        for sym in self.symbols:
            self._tasks.append(loop.create_task(self._drive(sym)))
        self._tasks.append(loop.create_task(self._drop_loop()))
        if self.faults.drop_now:
            self.faults.drop_now = False
        log.info(
            "emulator_started",
            url=self.base_url,
            symbols=self.symbols,
            market=self.market_name,
            faults=self.faults.spec,
        )
        return self.port

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.gather(*(c.close() for c in list(self.conns)), return_exceptions=True)
        self.conns.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("emulator_stopped")

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def drop_connections(self) -> None:
        """Close every websocket connection (the ``ws_drop`` fault)."""
        conns = list(self.conns)
        self.conns.clear()
        log.info("emulator_ws_drop", connections=len(conns))
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    async def _drop_loop(self) -> None:
        while True:
            every = self.faults.duration("ws_drop_every")
            if every <= 0:
                await asyncio.sleep(0.2)
                continue
            await asyncio.sleep(every)
            if self.faults.duration("ws_drop_every") > 0:
                self.faults.record("ws_drop_every")
                await self.drop_connections()

    async def _drive(self, sym: str) -> None:
        """Feed the symbol's market source into its engine at ``speed`` x market time."""
        eng = self.engines[sym]
        it = self.sources[sym].stream()
        loop = asyncio.get_running_loop()
        due, ev = next(it)
        market_ms = 0.0
        last = loop.time()
        while True:
            now = loop.time()
            market_ms += (now - last) * 1000.0 * self.speed
            last = now
            n = 0
            while due <= market_ms and n < 500:
                eng.on_market(ev)
                self._drain(eng)
                due, ev = next(it)
                n += 1
            if n >= 500:
                await asyncio.sleep(0)
                continue
            if self.speed <= 0:
                await asyncio.sleep(0.05)
                continue
            wait = (due - market_ms) / self.speed / 1000.0
            await asyncio.sleep(min(max(wait, 0.0005), 0.05))

    # ------------------------------------------------------------------ broadcasting

    def _drain(self, eng: SymbolEngine) -> None:
        out = eng.outbox
        if not out:
            return
        eng.outbox = []
        sid = eng.spec.id
        low = sid.lower()
        touched_balance = False
        for item in out:
            kind = item[0]
            if kind == "depth":
                self.updates_published += 1
                if self.book_log and eng.spec.symbol in self.book_log:
                    self.book_log[eng.spec.symbol][item[2]] = eng.book()
                left = self._gap_left.get(eng.spec.symbol, 0)
                if left > 0:
                    self._gap_left[eng.spec.symbol] = left - 1
                    self.faults.record("ws_gap")
                    continue
                _, first, last, e_ms, bids, asks = item
                payload = orjson.dumps(
                    {"e": "depthUpdate", "E": e_ms, "s": sid, "U": first, "u": last, "b": bids, "a": asks}
                ).decode()
                self._publish((f"{low}@depth@100ms", f"{low}@depth"), payload, depth=True)
            elif kind == "trade":
                t: PublicTrade = item[1]
                p, q = fmt(t.price), fmt(t.qty)
                self._publish(
                    (f"{low}@trade",),
                    orjson.dumps(
                        {
                            "e": "trade",
                            "E": t.time,
                            "s": sid,
                            "t": t.trade_id,
                            "p": p,
                            "q": q,
                            "T": t.time,
                            "m": t.buyer_maker,
                            "M": True,
                        }
                    ).decode(),
                )
                self._publish(
                    (f"{low}@aggTrade",),
                    orjson.dumps(
                        {
                            "e": "aggTrade",
                            "E": t.time,
                            "s": sid,
                            "a": t.trade_id,
                            "p": p,
                            "q": q,
                            "f": t.trade_id,
                            "l": t.trade_id,
                            "T": t.time,
                            "m": t.buyer_maker,
                            "M": True,
                        }
                    ).decode(),
                )
            elif kind == "exec":
                self._publish_user(item[1])
                touched_balance = True
        if touched_balance:
            a = self.account
            spec = eng.spec
            self._publish_user(
                {
                    "e": "outboundAccountPosition",
                    "E": self.now_ms(),
                    "u": a.update_ms or self.now_ms(),
                    "B": [
                        {"a": x, "f": fmt(a.free.get(x, Decimal(0))), "l": fmt(a.locked.get(x, Decimal(0)))}
                        for x in (spec.base, spec.quote)
                    ],
                }
            )

    def _publish(self, topics: tuple[str, ...], payload: str, *, depth: bool = False) -> None:
        for c in self.conns:
            if c.kind == "stream" and not c.topics.isdisjoint(topics):
                if self.faults.rates and (
                    self.faults.hit("ws_malformed") or (depth and self.faults.hit("ws_malformed_depth"))
                ):
                    c.send(payload[: len(payload) // 2])
                else:
                    c.send(payload)

    def _publish_user(self, event: dict[str, Any]) -> None:
        for c in self.conns:
            if c.kind == "api" and c.user_sub is not None:
                c.send(orjson.dumps({"subscriptionId": c.user_sub, "event": event}).decode())

    # ------------------------------------------------------------------ HTTP plumbing

    def _routes(self, app: web.Application) -> None:
        r = app.router
        for prefix in ("/api/v3", "/api/v1"):
            r.add_get(f"{prefix}/ping", self.h_ping)
            r.add_get(f"{prefix}/time", self.h_time)
            r.add_get(f"{prefix}/exchangeInfo", self.h_exchange_info)
            r.add_get(f"{prefix}/depth", self.h_depth)
            r.add_get(f"{prefix}/trades", self.h_trades)
            r.add_get(f"{prefix}/aggTrades", self.h_agg_trades)
            r.add_get(f"{prefix}/ticker/bookTicker", self.h_book_ticker)
            r.add_get(f"{prefix}/ticker/price", self.h_ticker_price)
            r.add_get(f"{prefix}/avgPrice", self.h_avg_price)
        r.add_get("/api/v3/account", self.h_account)
        r.add_post("/api/v3/order", self.h_new_order)
        r.add_post("/api/v3/order/test", self.h_test_order)
        r.add_get("/api/v3/order", self.h_get_order)
        r.add_delete("/api/v3/order", self.h_cancel_order)
        r.add_get("/api/v3/openOrders", self.h_open_orders)
        r.add_delete("/api/v3/openOrders", self.h_cancel_all)
        r.add_get("/api/v3/allOrders", self.h_all_orders)
        r.add_get("/api/v3/myTrades", self.h_my_trades)
        for path in ("/stream/ws", "/stream/ws/{n}", "/ws", "/ws/{n}", "/stream"):
            r.add_get(path, self.h_stream)
        r.add_get("/ws-api/v3", self.h_ws_api)
        r.add_get("/_emulator/orders", self.h_admin_orders)
        r.add_get("/_emulator/fills", self.h_admin_fills)
        r.add_get("/_emulator/balances", self.h_admin_balances)
        r.add_get("/_emulator/book", self.h_admin_book)
        r.add_get("/_emulator/faults", self.h_admin_get_faults)
        r.add_post("/_emulator/faults", self.h_admin_faults)
        r.add_post("/_emulator/pressure", self.h_admin_pressure)
        r.add_post("/_emulator/fill", self.h_admin_fill)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            now = time.monotonic()
            if self._quiet_from <= now < self._quiet_until:
                self.retry_after_ignored += 1
                log.warning(
                    "emulator_retry_after_ignored",
                    path=request.path,
                    early_s=round(self._quiet_until - now, 3),
                )
            status = self.faults.rest_status() if self.faults.rates else None
            if status is not None:
                log.info("emulator_fault", status=status, method=request.method, path=request.path)
                return self._fault_response(status)
            if self.faults.rates and self.faults.hit("rest_timeout"):
                log.info("emulator_fault", status="timeout", method=request.method, path=request.path)
                await self._hold()
                return web.Response(status=504, text="Gateway Timeout")
        try:
            return await handler(request)
        except errors.ApiError as e:
            return _json(e.body(), status=e.status)

    def _fault_response(self, status: int) -> web.Response:
        retry = str(max(1, round(self.faults.duration("retry_after", 1.0))))
        if status in (418, 429):
            now = time.monotonic()
            self._quiet_from = now + RETRY_GRACE_S
            self._quiet_until = max(self._quiet_until, now + int(retry))
        if status == 429:
            return _json(errors.too_many_requests().body(), 429, {"Retry-After": retry})
        if status == 418:
            until = self.now_ms() + int(retry) * 1000
            return _json(
                {
                    "code": -1003,
                    "msg": f"Way too much request weight used; IP banned until {until}. "
                    "Please use WebSocket Streams for live updates to avoid bans.",
                },
                418,
                {"Retry-After": retry},
            )
        reasons = {
            500: "Internal Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
            504: "Gateway Timeout",
        }
        return web.Response(
            status=status,
            text=f"<html><body><h1>{status} {reasons.get(status, '')}</h1></body></html>",
            content_type="text/html",
        )

    async def _hold(self) -> None:
        assert self._stopping is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), HOLD_S)

    async def _signed(self, request: web.Request) -> dict[str, str]:
        body = await request.text() if request.can_read_body else ""
        try:
            return self.auth.check_rest(
                request.headers.get("X-MBX-APIKEY"), request.rel_url.raw_query_string, body, self.now_ms()
            )
        except errors.ApiError as e:
            self._count_skew(e)
            raise

    def _count_skew(self, e: errors.ApiError) -> None:
        if e.code == -1021 and self.faults.duration("clock_skew") != 0:
            self.faults.record("clock_skew")

    def _engine_of(self, params: dict[str, str], required: bool = True) -> SymbolEngine | None:
        sid = params.get("symbol")
        if not sid:
            if required:
                raise errors.mandatory("symbol")
            return None
        eng = self.by_id.get(sid.upper())
        if eng is None:
            raise errors.bad_symbol()
        return eng

    @staticmethod
    def _dec(params: dict[str, str], key: str) -> Decimal | None:
        raw = params.get(key)
        if raw is None or raw == "":
            return None
        try:
            return Decimal(raw)
        except InvalidOperation:
            raise errors.bad_param(
                f"Illegal characters found in parameter '{key}'; legal range is "
                "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'."
            ) from None

    @staticmethod
    def _int(params: dict[str, str] | Any, key: str, default: int | None = None) -> int | None:
        raw = params.get(key)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise errors.bad_param(f"Illegal characters found in parameter '{key}'.") from None

    # ------------------------------------------------------------------ public REST

    async def h_ping(self, request: web.Request) -> web.Response:
        return _json({})

    async def h_time(self, request: web.Request) -> web.Response:
        return _json({"serverTime": self.now_ms()})

    async def h_exchange_info(self, request: web.Request) -> web.Response:
        return _json(
            {
                "timezone": "UTC",
                "serverTime": self.now_ms(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 6000,
                    },
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
                ],
                "exchangeFilters": [],
                "symbols": [self._symbol_info(e) for e in self.engines.values()],
            }
        )

    @staticmethod
    def _symbol_info(eng: SymbolEngine) -> dict[str, Any]:
        s = eng.spec
        return {
            "symbol": s.id,
            "status": "TRADING",
            "baseAsset": s.base,
            "baseAssetPrecision": 8,
            "quoteAsset": s.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": [
                "LIMIT",
                "LIMIT_MAKER",
                "MARKET",
                "STOP_LOSS",
                "STOP_LOSS_LIMIT",
                "TAKE_PROFIT",
                "TAKE_PROFIT_LIMIT",
            ],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "amendAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": fmt(s.min_price),
                    "maxPrice": fmt(s.max_price),
                    "tickSize": fmt(s.tick),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": fmt(s.min_qty),
                    "maxQty": fmt(s.max_qty),
                    "stepSize": fmt(s.step),
                },
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": "0.00000000",
                    "maxQty": fmt(s.max_qty),
                    "stepSize": "0.00000000",
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": fmt(s.min_notional),
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    async def h_depth(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        eng = self._engine_of(q)
        assert eng is not None
        limit = min(self._int(q, "limit", 100) or 100, 5000)
        return _json(eng.depth_json(limit))

    async def h_trades(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        eng = self._engine_of(q)
        assert eng is not None
        limit = min(self._int(q, "limit", 500) or 500, 1000)
        tape = list(eng.tape)[-limit:]
        return _json(
            [
                {
                    "id": t.trade_id,
                    "price": fmt(t.price),
                    "qty": fmt(t.qty),
                    "quoteQty": fmt(Decimal(repr(t.price)) * Decimal(repr(t.qty))),
                    "time": t.time,
                    "isBuyerMaker": t.buyer_maker,
                    "isBestMatch": True,
                }
                for t in tape
            ]
        )

    async def h_agg_trades(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        eng = self._engine_of(q)
        assert eng is not None
        limit = min(self._int(q, "limit", 500) or 500, 1000)
        start, end, from_id = self._int(q, "startTime"), self._int(q, "endTime"), self._int(q, "fromId")
        tape = [
            t
            for t in eng.tape
            if (start is None or t.time >= start)
            and (end is None or t.time <= end)
            and (from_id is None or t.trade_id >= from_id)
        ]
        tape = tape[:limit] if (from_id is not None or start is not None) else tape[-limit:]
        return _json(
            [
                {
                    "a": t.trade_id,
                    "p": fmt(t.price),
                    "q": fmt(t.qty),
                    "f": t.trade_id,
                    "l": t.trade_id,
                    "T": t.time,
                    "m": t.buyer_maker,
                    "M": True,
                }
                for t in tape
            ]
        )

    async def h_book_ticker(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        eng = self._engine_of(q)
        assert eng is not None
        bids, asks = eng.book()
        bb, ba = (bids[0] if bids else (0.0, 0.0)), (asks[0] if asks else (0.0, 0.0))
        return _json(
            {
                "symbol": eng.spec.id,
                "bidPrice": fmt(bb[0]),
                "bidQty": fmt(bb[1]),
                "askPrice": fmt(ba[0]),
                "askQty": fmt(ba[1]),
            }
        )

    async def h_ticker_price(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        eng = self._engine_of(q)
        assert eng is not None
        return _json({"symbol": eng.spec.id, "price": fmt(eng.last_price or eng.mid() or 0.0)})

    async def h_avg_price(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        eng = self._engine_of(q)
        assert eng is not None
        return _json({"mins": 5, "price": fmt(eng.mid() or 0.0), "closeTime": self.now_ms()})

    # ------------------------------------------------------------------ private REST

    async def h_account(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        a = self.account
        omit_zero = params.get("omitZeroBalances") == "true"
        bal = [
            {"asset": k, "free": fmt(a.free[k]), "locked": fmt(a.locked[k])}
            for k in sorted(a.free)
            if not (omit_zero and a.free[k] == 0 and a.locked[k] == 0)
        ]
        return _json(
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "commissionRates": {
                    "maker": "0.00100000",
                    "taker": "0.00100000",
                    "buyer": "0.00000000",
                    "seller": "0.00000000",
                },
                "canTrade": True,
                "canWithdraw": True,
                "canDeposit": True,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": a.update_ms,
                "accountType": "SPOT",
                "balances": bal,
                "permissions": ["SPOT"],
                "uid": 1,
            }
        )

    def _new_order(self, params: dict[str, str]) -> tuple[EmuOrder, SymbolEngine]:
        eng = self._engine_of(params)
        assert eng is not None
        for key in ("side", "type"):
            if not params.get(key):
                raise errors.mandatory(key)
        type_ = params["type"].upper()
        qty = self._dec(params, "quantity")
        price = self._dec(params, "price")
        if qty is None:
            quote_qty = self._dec(params, "quoteOrderQty")
            if type_ == "MARKET" and quote_qty is not None:
                mid = eng.mid() or 0.0
                qty = (
                    (quote_qty / Decimal(repr(mid))).quantize(eng.spec.step, rounding="ROUND_DOWN")
                    if mid
                    else Decimal(0)
                )
            else:
                raise errors.mandatory("quantity")
        if type_ == "LIMIT" and not params.get("timeInForce"):
            raise errors.mandatory("timeInForce")
        if self.faults.rates:
            if self.faults.hit("reject_orders"):
                raise errors.rejected()
            if self.faults.hit("reject_insufficient"):
                raise errors.insufficient_balance()
            if self.faults.hit("reject_notional"):
                raise errors.filter_failure("NOTIONAL")
        cid = params.get("newClientOrderId") or f"emu-{eng.update_id}-{len(eng.orders) + 1}"
        o = eng.place(
            side=params["side"].upper(),
            type_=type_,
            qty=qty,
            price=price,
            client_id=cid,
            tif=params.get("timeInForce", "GTC").upper(),
        )
        if (
            self.faults.rates
            and eng.can_fill_partially(o)
            and self.faults.hit("partial_fill")
        ):
            f = eng.fill_resting(o)
            log.info("emulator_partial_fill", client_id=o.client_id, order_id=o.order_id, qty=str(f.qty))
        self._drain(eng)
        log.info(
            "emulator_order",
            symbol=o.symbol,
            order_id=o.order_id,
            client_id=o.client_id,
            side=o.side,
            type=o.type,
            price=str(o.price),
            qty=str(o.qty),
            status=o.status,
            filled=str(o.executed),
        )
        return o, eng

    async def h_new_order(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        try:
            o, _ = self._new_order(params)
        except errors.ApiError as e:
            log.info(
                "emulator_order_rejected",
                symbol=params.get("symbol"),
                client_id=params.get("newClientOrderId"),
                code=e.code,
                msg=e.msg,
            )
            raise
        if self.faults.rates and self.faults.hit("accept_then_timeout"):
            log.info("emulator_accept_then_timeout", client_id=o.client_id, order_id=o.order_id)
            await self._hold()
            return web.Response(status=504, text="Gateway Timeout")
        resp: dict[str, Any] = {
            "symbol": o.symbol.replace("/", ""),
            "orderId": o.order_id,
            "orderListId": -1,
            "clientOrderId": o.client_id,
            "transactTime": o.time,
        }
        kind = params.get("newOrderRespType", "FULL" if o.type in ("MARKET", "LIMIT") else "RESULT").upper()
        if kind in ("RESULT", "FULL"):
            full = o.rest_json()
            for k in ("stopPrice", "icebergQty", "time", "updateTime", "isWorking"):
                full.pop(k, None)
            resp = resp | full | {"transactTime": o.time}
        if kind == "FULL":
            resp["fills"] = [
                {
                    "price": fmt(f.price),
                    "qty": fmt(f.qty),
                    "commission": fmt(f.commission),
                    "commissionAsset": f.commission_asset,
                    "tradeId": f.trade_id,
                }
                for f in o.fills
                if not f.maker
            ]
        return _json(resp)

    async def h_test_order(self, request: web.Request) -> web.Response:
        await self._signed(request)
        return _json({})

    def _lookup(self, eng: SymbolEngine, params: dict[str, str]) -> EmuOrder | None:
        oid = self._int(params, "orderId")
        cid = params.get("origClientOrderId")
        if oid is None and not cid:
            raise errors.ApiError(
                400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        return eng.find(oid, cid)

    async def h_get_order(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        eng = self._engine_of(params)
        assert eng is not None
        o = self._lookup(eng, params)
        if o is None:
            raise errors.order_missing()
        return _json(o.rest_json())

    def _cancel_json(self, o: EmuOrder) -> dict[str, Any]:
        d = o.rest_json()
        for k in (
            "stopPrice",
            "icebergQty",
            "time",
            "updateTime",
            "isWorking",
            "workingTime",
            "origQuoteOrderQty",
        ):
            d.pop(k, None)
        return d | {
            "origClientOrderId": o.client_id,
            "clientOrderId": o.cancel_id,
            "transactTime": o.update_time,
        }

    async def h_cancel_order(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        eng = self._engine_of(params)
        assert eng is not None
        o = self._lookup(eng, params)
        if o is None:
            raise errors.unknown_order()
        eng.cancel(o, params.get("newClientOrderId", ""))
        self._drain(eng)
        log.info("emulator_cancel", symbol=o.symbol, order_id=o.order_id, client_id=o.client_id)
        if self.faults.rates and self.faults.hit("cancel_accept_then_timeout"):
            log.info("emulator_cancel_accept_then_timeout", client_id=o.client_id, order_id=o.order_id)
            await self._hold()
            return web.Response(status=504, text="Gateway Timeout")
        return _json(self._cancel_json(o))

    async def h_open_orders(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        eng = self._engine_of(params, required=False)
        engines = [eng] if eng else list(self.engines.values())
        return _json([o.rest_json() for e in engines for o in e.open_orders()])

    async def h_cancel_all(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        eng = self._engine_of(params)
        assert eng is not None
        open_ = eng.open_orders()
        if not open_:
            raise errors.unknown_order()
        out = []
        for o in open_:
            eng.cancel(o)
            out.append(self._cancel_json(o))
        self._drain(eng)
        log.info("emulator_cancel_all", symbol=eng.spec.symbol, cancelled=len(out))
        return _json(out)

    async def h_all_orders(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        eng = self._engine_of(params)
        assert eng is not None
        limit = min(self._int(params, "limit", 500) or 500, 1000)
        start, end = self._int(params, "startTime"), self._int(params, "endTime")
        rows = [
            o
            for o in eng.orders.values()
            if (start is None or o.time >= start) and (end is None or o.time <= end)
        ]
        return _json([o.rest_json() for o in rows[-limit:]])

    async def h_my_trades(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        eng = self._engine_of(params)
        assert eng is not None
        limit = min(self._int(params, "limit", 500) or 500, 1000)
        start, end = self._int(params, "startTime"), self._int(params, "endTime")
        from_id, order_id = self._int(params, "fromId"), self._int(params, "orderId")
        rows = [
            f
            for f in eng.fills
            if (start is None or f.time >= start)
            and (end is None or f.time <= end)
            and (from_id is None or f.trade_id >= from_id)
            and (order_id is None or f.order_id == order_id)
        ]
        rows = rows[:limit] if from_id is not None else rows[-limit:]
        return _json([f.rest_json() for f in rows])

    # ------------------------------------------------------------------ websockets

    async def _accept(self, request: web.Request, kind: str) -> tuple[web.WebSocketResponse, _Conn]:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=1 << 22)
        await ws.prepare(request)
        conn = _Conn(self, ws, kind, str(request.remote))
        self.conns.add(conn)
        log.info("emulator_ws_open", kind=kind, path=request.path, peer=conn.peer)
        return ws, conn

    async def _finish(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        conn.writer.cancel()
        log.info("emulator_ws_close", kind=conn.kind, peer=conn.peer, sent=conn.sent)

    async def h_stream(self, request: web.Request) -> web.WebSocketResponse:
        ws, conn = await self._accept(request, "stream")
        streams = request.query.get("streams")
        if streams:
            conn.topics.update(s.lower() for s in streams.split("/"))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    req = orjson.loads(msg.data)
                    method = str(req.get("method", "")).upper()
                    rid = req.get("id")
                    params = [str(p).lower() for p in (req.get("params") or [])]
                except (orjson.JSONDecodeError, AttributeError):
                    conn.send(
                        orjson.dumps({"error": {"code": 3, "msg": "Invalid JSON: expected value"}}).decode()
                    )
                    continue
                if method == "SUBSCRIBE":
                    conn.topics.update(params)
                    conn.send(orjson.dumps({"result": None, "id": rid}).decode())
                elif method == "UNSUBSCRIBE":
                    conn.topics.difference_update(params)
                    conn.send(orjson.dumps({"result": None, "id": rid}).decode())
                elif method == "LIST_SUBSCRIPTIONS":
                    conn.send(orjson.dumps({"result": sorted(conn.topics), "id": rid}).decode())
                else:
                    conn.send(
                        orjson.dumps(
                            {
                                "error": {"code": 2, "msg": f"Invalid request: unknown method {method}"},
                                "id": rid,
                            }
                        ).decode()
                    )
        finally:
            await self._finish(conn)
        return ws

    async def h_ws_api(self, request: web.Request) -> web.WebSocketResponse:
        ws, conn = await self._accept(request, "api")
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    req = orjson.loads(msg.data)
                    rid, method = req.get("id"), str(req.get("method", ""))
                    params = req.get("params") or {}
                except (orjson.JSONDecodeError, AttributeError):
                    conn.send(
                        orjson.dumps(
                            {"id": None, "status": 400, "error": {"code": -1000, "msg": "Invalid JSON."}}
                        ).decode()
                    )
                    continue
                conn.send(orjson.dumps(self._ws_api_call(conn, rid, method, params)).decode())
        finally:
            await self._finish(conn)
        return ws

    def _ws_api_call(self, conn: _Conn, rid: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
        limits: list[Any] = []
        try:
            if self.faults.rates and self.faults.hit("rest_429"):
                raise errors.too_many_requests()
            if method == "ping":
                return {"id": rid, "status": 200, "result": {}, "rateLimits": limits}
            if method == "time":
                return {
                    "id": rid,
                    "status": 200,
                    "result": {"serverTime": self.now_ms()},
                    "rateLimits": limits,
                }
            if method == "userDataStream.subscribe.signature":
                try:
                    self.auth.check_ws(params, self.now_ms())
                except errors.ApiError as e:
                    self._count_skew(e)
                    raise
                self._next_sub += 1
                conn.user_sub = self._next_sub
                log.info("emulator_user_stream", peer=conn.peer, subscription=conn.user_sub)
                return {
                    "id": rid,
                    "status": 200,
                    "result": {"subscriptionId": conn.user_sub},
                    "rateLimits": limits,
                }
            if method == "userDataStream.unsubscribe":
                conn.user_sub = None
                return {"id": rid, "status": 200, "result": {}, "rateLimits": limits}
            raise errors.ApiError(400, -1100, f"Unknown method '{method}'.")
        except errors.ApiError as e:
            return {"id": rid, "status": e.status, "error": e.body(), "rateLimits": limits}

    # ------------------------------------------------------------------ admin

    async def h_admin_orders(self, request: web.Request) -> web.Response:
        sym = request.query.get("symbol")
        return _json([o.admin_json() for o in self.orders(sym)])

    async def h_admin_fills(self, request: web.Request) -> web.Response:
        sym = request.query.get("symbol")
        return _json([f.admin_json() for f in self.fills(sym)])

    async def h_admin_balances(self, request: web.Request) -> web.Response:
        return _json(self.account.as_dict())

    async def h_admin_book(self, request: web.Request) -> web.Response:
        sym = request.query.get("symbol", self.symbols[0])
        eng = self.engines.get(sym) or self.by_id.get(sym.upper())
        if eng is None:
            return _json({"error": f"unknown symbol {sym}"}, 404)
        return _json(eng.depth_json(5000) | {"symbol": eng.spec.symbol})

    def faults_view(self) -> dict[str, Any]:
        """The admin view of the faults: spec, what is armed, hits, ignored Retry-Afters."""
        return self.faults.describe() | {"retry_after_ignored": self.retry_after_ignored}

    async def h_admin_get_faults(self, request: web.Request) -> web.Response:
        return _json(self.faults_view())

    def fill(self, symbol: str, *, order_id: int | None = None, client_id: str | None = None,
             qty: Decimal | None = None) -> EmuFill:
        """Trade ``qty`` (default half the remainder) against one resting order, at its price."""
        eng = self.engines.get(symbol) or self.by_id.get(symbol.replace("/", "").upper())
        if eng is None:
            raise ValueError(f"unknown symbol {symbol}")
        o = eng.find(order_id, client_id)
        if o is None:
            raise ValueError(f"no order {order_id or client_id} on {symbol}")
        f = eng.fill_resting(o, qty)
        self._drain(eng)
        log.info("emulator_admin_fill", symbol=eng.spec.symbol, client_id=o.client_id, order_id=o.order_id,
                 qty=str(f.qty), status=o.status)
        return f

    async def h_admin_fill(self, request: web.Request) -> web.Response:
        """``POST /_emulator/fill`` with ``symbol``, ``orderId`` or ``clientOrderId``, optional ``qty``."""
        q = await _admin_params(request)
        try:
            oid = q.get("orderId")
            raw_qty = q.get("qty")
            f = self.fill(str(q.get("symbol", self.symbols[0])), order_id=int(oid) if oid is not None else None,
                          client_id=q.get("clientOrderId"), qty=Decimal(str(raw_qty)) if raw_qty else None)
        except (ValueError, TypeError, InvalidOperation) as e:
            return _json({"error": str(e)}, 400)
        return _json(f.admin_json())

    async def h_admin_pressure(self, request: web.Request) -> web.Response:
        q = await _admin_params(request)
        try:
            sym = str(q.get("symbol", self.symbols[0]))
            regime = self.pressure(sym, int(q.get("direction", 1)), float(q.get("seconds", 10)))
        except (ValueError, TypeError) as e:
            return _json({"error": str(e)}, 400)
        return _json({"symbol": sym, "start_ms": regime.start_ms, "end_ms": regime.end_ms,
                      "direction": regime.direction})

    async def h_admin_faults(self, request: web.Request) -> web.Response:
        spec = (await request.text()).strip()
        if request.content_type == "application/json" and spec.startswith("{"):
            spec = str(orjson.loads(spec).get("spec", ""))
        try:
            self.set_faults(spec)
        except ValueError as e:
            return _json({"error": str(e)}, 400)
        return _json(self.faults_view())
