"""CcxtBroker: the Broker protocol over a ccxt (pro) exchange, built to never double-send.

Why it is shaped like this (the failure stories):

* **Ack lost, order live** -- a create that times out or fails with a network error may
  have reached the exchange. Before *any* retry we look the order up by its client id; if
  the exchange has it, we adopt that order instead of sending another. A "duplicate order"
  rejection is treated the same way. Only after ``max_retries`` ambiguous attempts is the
  order reported ``unknown`` (still open for risk); reconciliation settles it.
* **Cancelled locally, live on the exchange** -- a cancel is only reported ``cancelled``
  when the exchange says so; a cancel that keeps failing returns ``unknown``.
* **Endless polling of an order that never arrived** -- a lookup that says "not found" is
  definitive for an order the exchange once confirmed: a cancel reports ``expired`` with the
  reason, and the poller stops tracking the order. Between create attempts it means "re-send"
  (same client id).
* **Late arrival** -- after the last ambiguous create attempt, "not found" is *not* final: an
  exchange (Binance) can still process a request it timed out on. Such an order stays
  ``unknown``, open for risk; a cancel of it that finds nothing keeps it ``unknown``; the poller
  adopts it if it shows up, and ``Reconciler`` settles it (adopted if listed or filled, else
  closed ``expired`` once a lookup still finds nothing after the settle delay). Only an
  exchange's refusal (``InvalidOrder``, ``InsufficientFunds``, ...) makes a create ``rejected``.
* **Fills while the websocket is down** -- order and fill updates come from
  ``watch_orders``/``watch_my_trades``; while either stream is down (and once after it comes
  back) a REST poller fetches trades since the last one seen, and the status of every
  tracked open order. Duplicates are expected; the consumer deduplicates by trade id.

* **Clock drift** -- a signed request stamped outside the exchange's ``recvWindow`` fails
  with ``-1021`` (ccxt: ``InvalidNonce``). The broker measures the exchange's clock
  (``load_time_difference``) at start and again on every ``-1021``, so ccxt signs with the
  exchange's time from then on; the failed request is then retried like any network error
  (a create is looked up by client id first, so nothing is sent twice).

Every REST call goes through one ``RateLimiter`` (429 -> wait ``Retry-After``; 418 -> halt
for good). Network errors and timeouts are retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import ccxt.async_support as ccxt_async

from bot.clock import Clock
from bot.execution.broker import BrokerError, ExchangeHalted, Update
from bot.execution.throttle import RateLimiter
from bot.logging import get_logger
from bot.model import (
    ZERO,
    Balance,
    Fill,
    Liquidity,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
    Side,
)

log = get_logger("execution.ccxt")

S = OrderStatus
T = TypeVar("T")

_RAW_STATUS = {
    "NEW": S.ACKED,
    "PARTIALLY_FILLED": S.PARTIALLY_FILLED,
    "FILLED": S.FILLED,
    "CANCELED": S.CANCELLED,
    "CANCELLED": S.CANCELLED,
    "PENDING_CANCEL": S.ACKED,
    "REJECTED": S.REJECTED,
    "EXPIRED": S.EXPIRED,
    "EXPIRED_IN_MATCH": S.EXPIRED,
}
_UNIFIED_STATUS = {
    "open": S.ACKED,
    "closed": S.FILLED,
    "canceled": S.CANCELLED,
    "cancelled": S.CANCELLED,
    "expired": S.EXPIRED,
    "rejected": S.REJECTED,
}


def _dec(x: object) -> Decimal | None:
    if x is None or x == "":
        return None
    return Decimal(str(x))


def _short(exc: BaseException) -> str:
    """A one-line reason for logs and order rows (ccxt messages can carry whole bodies)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


class CcxtBroker:
    """``Broker`` over a ccxt pro exchange instance (e.g. ``ccxt.pro.binance``)."""

    name = "ccxt"

    def __init__(
        self,
        exchange: Any,
        symbol: str,
        clock: Clock,
        *,
        limiter: RateLimiter | None = None,
        max_retries: int = 5,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        poll_interval: float = 1.0,
        use_websocket: bool = True,
    ) -> None:
        self.ex = exchange
        self.symbol = symbol
        self.clock = clock
        self.limiter = limiter or RateLimiter()
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.use_websocket = use_websocket and hasattr(exchange, "watch_orders")
        self._queue: deque[Update] = deque()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._cid_by_xid: dict[str, str] = {}
        self._unnamed: set[str] = set()
        self._owned: Callable[[str], bool] | None = None  # exchange order ids whose lookup named no client id
        self._tracked: dict[str, Order] = {}  # open orders the poller follows
        self._ws_ok = {"orders": False, "trades": False}
        self._catchup = True
        self._last_trade_ts: int | None = None
        self._last_status: int | None = None
        self._last_retry_after: float | None = None
        self.time_offset_ms: int | None = None  # our clock minus the exchange's, as ccxt signs with it
        self.stats: dict[str, int] = {"retries": 0, "lookups": 0, "adopted": 0, "ws_errors": 0, "polls": 0,
                                      "time_resyncs": 0}
        self._hook_responses()

    # ------------------------------------------------------------------ plumbing

    def _hook_responses(self) -> None:
        """Catch status and Retry-After of 418/429 responses (ccxt drops the headers).

        A 418 halts the limiter and a 429 pauses it right here, whichever request got it.
        """
        original = getattr(self.ex, "on_rest_response", None)
        if original is None:
            return

        def hook(
            code: int,
            reason: str,
            url: str,
            method: str,
            headers: dict[str, str],
            body: Any,
            req_headers: Any,
            req_body: Any,
        ) -> Any:
            if code in (418, 429):
                self._last_status = code
                ra = next((v for k, v in (headers or {}).items() if k.lower() == "retry-after"), None)
                try:
                    self._last_retry_after = float(ra) if ra is not None else None
                except ValueError:
                    self._last_retry_after = None
                # ccxt's own requests (listen keys, market loads) come through here too:
                # a ban or a rate limit seen anywhere stops every sender, not just that one.
                if code == 418:
                    self.limiter.halt(f"HTTP 418 from the exchange (IP ban) on {method} {url.split('?')[0]}",
                                      self._last_retry_after)
                else:
                    self.limiter.retry_after(
                        self._last_retry_after if self._last_retry_after is not None else 1.0
                    )
            return original(code, reason, url, method, headers, body, req_headers, req_body)

        self.ex.on_rest_response = hook

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff_max, self.backoff_base * (2 ** max(0, attempt - 1))))

    async def _rest(self, endpoint: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One REST request under the rate limiter; maps 418/429 and auth errors."""
        await self.limiter.acquire(endpoint)
        try:
            return await fn()
        except ccxt_async.DDoSProtection as exc:
            status = self._last_status or (418 if " 418 " in str(exc) else 429)
            retry_after = self._last_retry_after
            self._last_status = self._last_retry_after = None
            if status == 418:
                self.limiter.halt(f"HTTP 418 from the exchange: IP banned; {_short(exc)}", retry_after)
                raise ExchangeHalted(
                    f"HTTP 418 from the exchange (IP ban); retry_after={retry_after}"
                ) from exc
            self.limiter.retry_after(retry_after if retry_after is not None else 1.0)
            raise
        except ccxt_async.AuthenticationError as exc:
            raise BrokerError(f"the exchange refused our credentials: {_short(exc)}") from exc
        except ccxt_async.InvalidNonce as exc:
            if _is_clock_error(exc):
                await self.sync_time(f"{endpoint}: {_short(exc)}")
            raise

    async def sync_time(self, reason: str) -> int | None:
        """Measure the exchange clock; ccxt signs every later request with the offset.

        Returns the offset in ms (ours minus the exchange's), or None when the time request
        itself failed (the next ``-1021`` tries again).
        """
        if not hasattr(self.ex, "load_time_difference"):
            return None
        await self.limiter.acquire("time")
        try:
            offset = int(await self.ex.load_time_difference())
        except ccxt_async.BaseError as exc:
            log.warning("time_resync_failed", reason=reason, error=_short(exc))
            return None
        previous, self.time_offset_ms = self.time_offset_ms, offset
        self.stats["time_resyncs"] += 1
        (log.warning if previous is not None else log.info)(
            "time_resync", offset_ms=offset, previous_ms=previous, reason=reason
        )
        return offset

    async def _retrying(self, endpoint: str, fn: Callable[[], Awaitable[T]], what: str) -> T:
        """An idempotent request (lookups, listings), retried on network errors with backoff."""
        attempt = 0
        while True:
            try:
                return await self._rest(endpoint, fn)
            except ccxt_async.OperationFailed as exc:
                attempt += 1
                if attempt > self.max_retries:
                    raise
                self.stats["retries"] += 1
                log.warning("rest_retry", what=what, attempt=attempt, error=_short(exc))
                await asyncio.sleep(self._backoff(attempt))

    def _emit(self, update: Update) -> None:
        self._queue.append(update)
        self._wakeup.set()

    # ------------------------------------------------------------------ conversions

    def to_order(self, raw: dict[str, Any], template: Order | None = None) -> Order:
        info = raw.get("info") or {}
        # The order's own client id. A cancel answer's ``clientOrderId`` is the *cancel request's*
        # id (Binance: ``origClientOrderId`` is the order's; in an executionReport ``C``), so the
        # order asked about (``template``) and ``origClientOrderId`` come first: an order row is
        # never created from a cancel.
        cid = (
            (template.client_id if template else None)
            or info.get("origClientOrderId")
            or info.get("C")
            or raw.get("clientOrderId")
            or info.get("clientOrderId")
            or ""
        )
        xid = str(raw["id"]) if raw.get("id") is not None else (template.exchange_id if template else None)
        raw_status = info.get("status") or info.get("X")
        status = _RAW_STATUS.get(str(raw_status)) if raw_status else None
        if status is None:
            status = _UNIFIED_STATUS.get(str(raw.get("status")), S.ACKED)
        amount = (
            _dec(info.get("origQty")) or _dec(raw.get("amount")) or (template.amount if template else ZERO)
        )
        filled = _dec(info.get("executedQty")) or _dec(raw.get("filled")) or ZERO
        if status is S.ACKED and filled > 0:
            status = S.PARTIALLY_FILLED
        price = _dec(info.get("price")) or _dec(raw.get("price"))
        if price == 0:
            price = None
        typ = OrderType.MARKET if str(raw.get("type") or "").lower() == "market" else OrderType.LIMIT
        side = Side(str(raw.get("side") or (template.side if template else "buy")).lower())
        if xid and cid:
            self._cid_by_xid[xid] = cid
        return Order(
            client_id=str(cid),
            symbol=str(raw.get("symbol") or (template.symbol if template else self.symbol)),
            side=side,
            type=template.type if template else typ,
            amount=amount,
            price=template.price if template and template.price is not None else price,
            status=status,
            filled=filled,
            exchange_id=xid,
            post_only=template.post_only if template else bool(raw.get("postOnly")),
            reason=template.reason if template else "",
            created_ts=template.created_ts if template else int(raw.get("timestamp") or 0),
            signal_strength=template.signal_strength if template else None,
        )

    async def to_fill(self, raw: dict[str, Any]) -> Fill | None:
        info = raw.get("info") or {}
        xid = str(raw.get("order")) if raw.get("order") is not None else None
        cid = raw.get("clientOrderId") or info.get("c") or (self._cid_by_xid.get(xid) if xid else None)
        if cid is None and xid is not None and xid not in self._unnamed:
            # myTrades carries no client id: one lookup per exchange order, remembered (a person's
            # orders on the account are looked up once, not on every sweep)
            found = await self._fetch_raw_by_id(xid)
            cid = (found.get("clientOrderId") or (found.get("info") or {}).get("clientOrderId")) if found else None
            if cid:
                self._cid_by_xid[xid] = str(cid)
            elif found is not None:
                self._unnamed.add(xid)
        fee = raw.get("fee") or {}
        price = _dec(info.get("price") or info.get("L")) or _dec(raw.get("price"))
        amount = _dec(info.get("qty") or info.get("l")) or _dec(raw.get("amount"))
        if price is None or amount is None or raw.get("id") is None:
            return None
        ts = int(raw.get("timestamp") or self.clock.now_ms())
        if self._last_trade_ts is None or ts > self._last_trade_ts:
            self._last_trade_ts = ts
        return Fill(
            trade_id=str(raw["id"]),
            client_id=str(cid or f"unknown-{xid}"),
            symbol=str(raw.get("symbol") or self.symbol),
            side=Side(str(raw.get("side")).lower()),
            price=price,
            amount=amount,
            fee=_dec(info.get("commission") or info.get("n")) or _dec(fee.get("cost")) or ZERO,
            fee_currency=str(info.get("commissionAsset") or info.get("N") or fee.get("currency") or ""),
            liquidity=Liquidity.MAKER if raw.get("takerOrMaker") == "maker" else Liquidity.TAKER,
            ts=ts,
            exchange_order_id=xid,
        )

    async def _fetch_raw_by_id(self, xid: str) -> dict[str, Any] | None:
        try:
            raw: dict[str, Any] = await self._retrying(
                "order", lambda: self.ex.fetch_order(xid, self.symbol), f"fetch_order {xid}"
            )
        except ccxt_async.OrderNotFound:
            return None
        return raw

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load markets (one limited REST call) and start the update streams and the poller."""
        await self._retrying("balance", lambda: self.ex.load_markets(), "load_markets")
        await self.sync_time("startup")
        self._closed = False
        if self.use_websocket:
            self._tasks.append(asyncio.create_task(self._ws_loop("orders"), name="ws-orders"))
            self._tasks.append(asyncio.create_task(self._ws_loop("trades"), name="ws-trades"))
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="rest-poller"))

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The broker's own tasks (user streams, REST poller): the engine stops if one dies."""
        return list(self._tasks)

    async def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.ex.close()

    # ------------------------------------------------------------------ orders

    def bind_ownership(self, owned: Callable[[str], bool]) -> None:
        """The order manager's ownership rule: only the bot's own orders are followed."""
        self._owned = owned

    def track(self, order: Order) -> None:
        """Follow one of the bot's orders in the REST poller until it is terminal (adopted ones too)."""
        if self._owned is not None and not self._owned(order.client_id):
            return  # somebody else's order on the account: never followed, never cancelled
        if order.status.is_open:
            self._tracked[order.client_id] = order
        else:
            self._tracked.pop(order.client_id, None)
        if order.exchange_id:
            self._cid_by_xid[order.exchange_id] = order.client_id

    async def _lookup(self, client_id: str, symbol: str) -> Order | BaseException | None:
        """The order by client id, None if the exchange does not know it, or the error."""
        self.stats["lookups"] += 1
        try:
            found: Order | None = await self.fetch_order(client_id, symbol)
        except ccxt_async.OperationFailed as exc:
            err: BaseException = exc
            return err
        return found

    async def create_order(self, order: Order) -> Order:
        params: dict[str, Any] = {"newClientOrderId": order.client_id}
        if order.post_only:
            params["postOnly"] = True
        price = str(order.price) if order.price is not None else None
        attempt = 0
        while True:
            try:
                raw = await self._rest(
                    "create",
                    lambda: self.ex.create_order(
                        order.symbol, str(order.type), str(order.side), str(order.amount), price, params
                    ),
                )
                result = self.to_order(raw, order)
                await self._emit_trades_of(raw, result)
                self.track(result)
                return result
            except ExchangeHalted:
                raise
            except (ccxt_async.InsufficientFunds, ccxt_async.InvalidOrder, ccxt_async.BadRequest) as exc:
                if "duplicate" not in str(exc).lower():
                    log.warning("order_rejected", client_id=order.client_id, error=_short(exc))
                    return _with(order, S.REJECTED, _short(exc))
                error: BaseException = exc  # a duplicate client id: it is there already, adopt it
            except ccxt_async.OperationFailed as exc:  # network, timeout, "send status unknown"
                error = exc
            except ccxt_async.ExchangeError as exc:
                log.warning("order_rejected", client_id=order.client_id, error=_short(exc))
                return _with(order, S.REJECTED, _short(exc))
            # Ambiguous: the order may be on the exchange. Look before sending again.
            attempt += 1
            log.warning("create_ambiguous", client_id=order.client_id, attempt=attempt, error=_short(error))
            while True:
                found = await self._lookup(order.client_id, order.symbol)
                if not isinstance(found, BaseException):
                    break
                attempt += 1
                if attempt > self.max_retries:
                    unknown = _with(
                        order, S.UNKNOWN, f"lookup failed after {attempt - 1} retries: {_short(found)}"
                    )
                    self.track(unknown)
                    return unknown
                await asyncio.sleep(self._backoff(attempt))
            if found is not None:
                self.stats["adopted"] += 1
                log.info(
                    "create_adopted",
                    client_id=order.client_id,
                    exchange_id=found.exchange_id,
                    status=str(found.status),
                )
                adopted = _merge_template(found, order)
                self.track(adopted)
                return adopted
            if attempt > self.max_retries:
                # "Not found" now does not mean "never": the exchange may still process one of
                # the requests it timed out on. The order stays open (risk counts it) as UNKNOWN,
                # and the poller and the reconciler adopt it if it shows up, or close it once a
                # later lookup still finds nothing (``Reconciler``).
                unknown = _with(
                    order,
                    S.UNKNOWN,
                    f"fate unknown after {attempt} ambiguous attempts (not found yet; reconciliation "
                    f"settles it): {_short(error)}",
                )
                log.error("create_unresolved", client_id=order.client_id, attempts=attempt, error=_short(error))
                self.track(unknown)
                return unknown
            self.stats["retries"] += 1
            await asyncio.sleep(self._backoff(attempt))

    async def _emit_trades_of(self, raw: dict[str, Any], order: Order) -> None:
        for t in raw.get("trades") or []:
            t = dict(t)
            t["order"] = t.get("order") or order.exchange_id
            t["side"] = t.get("side") or str(order.side)
            t["symbol"] = t.get("symbol") or order.symbol
            t["clientOrderId"] = order.client_id
            fill = await self.to_fill(t)
            if fill is not None:
                self._emit(fill)

    async def cancel_order(self, order: Order) -> Order:
        """Cancelled only if the exchange says so; ``unknown`` if the answer never came."""
        attempt = 0
        while True:
            try:
                raw = await self._rest(
                    "cancel",
                    lambda: self.ex.cancel_order(
                        order.exchange_id or "", order.symbol, {"origClientOrderId": order.client_id}
                    ),
                )
                result = _merge_template(self.to_order(raw, order), order)
                self.track(result)
                return result
            except ExchangeHalted:
                raise
            except ccxt_async.OrderNotFound:
                # Not open: either finished (look it up) or never arrived.
                found = await self._lookup(order.client_id, order.symbol)
                if isinstance(found, BaseException):
                    error: BaseException = found
                elif found is None:
                    if _unconfirmed(order):
                        # Its create is unresolved: the exchange may still process it, so the
                        # order stays UNKNOWN (open for risk) until reconciliation settles it.
                        return _with(
                            order, S.UNKNOWN, "cancel: not on the exchange yet; reconciliation settles it"
                        )
                    self._tracked.pop(order.client_id, None)
                    return _with(order, S.EXPIRED, "not found on the exchange")
                else:
                    self.track(found)
                    return _merge_template(found, order)
            except ccxt_async.OperationFailed as exc:
                error = exc
            except ccxt_async.ExchangeError as exc:
                found = await self._lookup(order.client_id, order.symbol)
                if isinstance(found, Order):
                    self.track(found)
                    return _merge_template(found, order)
                error = exc
            attempt += 1
            if attempt > self.max_retries:
                log.error("cancel_unresolved", client_id=order.client_id, error=_short(error))
                return _with(order, S.UNKNOWN, f"cancel unresolved after {attempt} attempts: {_short(error)}")
            # one line per failed attempt: a cancel whose answer was lost (timeout, 5xx) is
            # retried after a lookup, never assumed done; the journal says which and why
            log.warning("cancel_retry", client_id=order.client_id, attempt=attempt, error=_short(error))
            self.stats["retries"] += 1
            await asyncio.sleep(self._backoff(attempt))

    async def cancel_all(self, symbol: str, owned: Callable[[str], bool] | None = None) -> list[Order]:
        """Every open order of ``symbol`` (listed or tracked) that ``owned`` accepts, cancelled
        concurrently. Not Binance's DELETE openOrders: that would cancel a person's orders too."""
        targets = {o.client_id: o for o in self._tracked.values() if o.symbol == symbol}
        try:
            targets.update({o.client_id: o for o in await self.fetch_open_orders(symbol)})
        except ccxt_async.OperationFailed as exc:
            log.warning("cancel_all_listing_failed", error=_short(exc))
        if owned is not None:
            targets = {cid: o for cid, o in targets.items() if owned(cid)}
        return list(await asyncio.gather(*(self.cancel_order(o) for o in targets.values())))

    async def fetch_order(self, client_id: str, symbol: str) -> Order | None:
        try:
            raw = await self._retrying(
                "order",
                lambda: self.ex.fetch_order("", symbol, {"origClientOrderId": client_id}),
                f"fetch_order {client_id}",
            )
        except ccxt_async.OrderNotFound:
            return None
        return self.to_order(raw)

    async def fetch_open_orders(self, symbol: str) -> list[Order]:
        raws = await self._retrying(
            "open_orders", lambda: self.ex.fetch_open_orders(symbol), "fetch_open_orders"
        )
        return [self.to_order(r) for r in raws]

    async def fetch_my_trades(self, symbol: str, since_ms: int | None = None) -> list[Fill]:
        """All our trades since ``since_ms`` (inclusive), paging through ``limit``-sized pages."""
        limit = 500
        out: list[Fill] = []
        seen: set[str] = set()
        since = since_ms
        while True:
            raws = await self._retrying(
                "my_trades", _bind(self.ex.fetch_my_trades, symbol, since, limit), "fetch_my_trades"
            )
            await self._name_orders_of(symbol, raws)
            new = 0
            for r in raws:
                f = await self.to_fill(r)
                if f is not None and f.trade_id not in seen:
                    seen.add(f.trade_id)
                    out.append(f)
                    new += 1
            if len(raws) < limit or new == 0:
                return out
            since = max(int(r.get("timestamp") or 0) for r in raws)

    async def _name_orders_of(self, symbol: str, raws: list[dict[str, Any]]) -> None:
        """Learn the client ids of the orders behind a page of trades with one ``allOrders`` call.

        myTrades carries no client id; looking each unnamed order up (``GET order``, weight 4)
        made a start-up on a busy account take a minute. One listing of the orders created since
        the oldest such trade names them all (a person's orders too, so ownership can say "not
        ours" without a lookup); an order created before that (a resting order that filled
        later) is still looked up one by one in ``to_fill``.
        """
        unnamed = [
            r for r in raws
            if r.get("order") is not None and not (r.get("clientOrderId") or (r.get("info") or {}).get("c"))
            and str(r["order"]) not in self._cid_by_xid and str(r["order"]) not in self._unnamed
        ]
        if not unnamed:
            return
        since = min(int(r.get("timestamp") or 0) for r in unnamed)
        try:
            orders = await self._retrying(
                "all_orders", _bind(self.ex.fetch_orders, symbol, since, 1000), "fetch_orders"
            )
        except ccxt_async.OperationFailed as exc:
            log.warning("order_listing_failed", error=_short(exc), then="trades' orders are looked up one by one")
            return
        for o in orders:
            info = o.get("info") or {}
            cid = info.get("clientOrderId") or o.get("clientOrderId")
            if o.get("id") is not None and cid:
                self._cid_by_xid[str(o["id"])] = str(cid)

    async def fetch_balance(self) -> dict[str, Balance]:
        raw = await self._retrying("balance", lambda: self.ex.fetch_balance(), "fetch_balance")
        ts = self.clock.now_ms()
        out: dict[str, Balance] = {}
        for b in (raw.get("info") or {}).get("balances") or []:
            out[b["asset"]] = Balance(b["asset"], Decimal(b["free"]), Decimal(b["locked"]), ts)
        if not out:
            for ccy, v in raw.items():
                if isinstance(v, dict) and "free" in v and ccy not in ("info", "free", "used", "total"):
                    out[ccy] = Balance(ccy, _dec(v.get("free")) or ZERO, _dec(v.get("used")) or ZERO, ts)
        return out

    # ------------------------------------------------------------------ updates

    def drain_updates(self) -> list[Update]:
        out = list(self._queue)
        self._queue.clear()
        return out

    async def updates(self) -> AsyncIterator[Update]:
        while not self._closed:
            while self._queue:
                yield self._queue.popleft()
            self._wakeup.clear()
            if not self._queue and not self._closed:
                await self._wakeup.wait()

    @property
    def banned(self) -> str | None:
        """The reason of a 418 ban while it lasts (the engine halts trading on it)."""
        return self.limiter.halted if self.limiter.banned_for > 0 else None

    async def wait_unbanned(self) -> None:
        """Return once a 418 ban has run out (at once when there is none)."""
        while True:  # re-checked: a later 418 extends the ban
            left = self.limiter.banned_for
            if left <= 0:
                return
            await asyncio.sleep(left + 0.05)

    @property
    def websocket_up(self) -> bool:
        return self.use_websocket and all(self._ws_ok.values())

    async def _ws_loop(self, kind: str) -> None:
        attempt = 0
        while not self._closed:
            fut = asyncio.ensure_future(
                self.ex.watch_orders(self.symbol) if kind == "orders" else self.ex.watch_my_trades(self.symbol)
            )
            try:
                # Up = subscribed, not "has delivered": a quiet stream (no fill yet) whose watch has
                # been pending WS_QUIET_UP_S without an error counts as up, or the REST poller ran
                # every second until the first fill, and orders queued behind its calls in ccxt's
                # rate limiter (tick-to-order p99 ~250 ms, bench/latency_wire.py).
                done, _ = await asyncio.wait({fut}, timeout=WS_QUIET_UP_S)
                if not done:
                    self._ws_ok[kind] = True
                raws = await fut
                self._ws_ok[kind] = True
                attempt = 0
                for r in raws:
                    if kind == "orders":
                        o = self.to_order(r)
                        if o.client_id:
                            self.track(o)
                            self._emit(
                                OrderEvent(
                                    o.client_id, o.status, self.clock.now_ms(), o.filled, o.exchange_id
                                )
                            )
                    else:
                        f = await self.to_fill(r)
                        if f is not None:
                            self._emit(f)
            except asyncio.CancelledError:
                fut.cancel()
                raise
            except Exception as exc:  # any failure means: down, poll REST, reconnect
                self._ws_ok[kind] = False
                self._catchup = True
                self.stats["ws_errors"] += 1
                attempt += 1
                log.warning("ws_down", stream=kind, error=_short(exc), attempt=attempt)
                await asyncio.sleep(self._backoff(attempt))

    async def poll_once(self) -> None:
        """REST catch-up: trades since the last seen one, and every tracked open order."""
        self.stats["polls"] += 1
        since = None if self._last_trade_ts is None else self._last_trade_ts - 1_000
        for f in await self.fetch_my_trades(self.symbol, since):
            self._emit(f)
        open_now = {o.client_id: o for o in await self.fetch_open_orders(self.symbol)}
        for cid, mine in list(self._tracked.items()):
            o = open_now.get(cid)
            if o is None:
                found = await self.fetch_order(cid, mine.symbol)
                if found is None and mine.status is S.UNKNOWN:
                    continue  # its create is unresolved: the reconciler settles it, not one lookup
                if found is None:
                    self._tracked.pop(cid, None)  # never arrived: stop polling it
                    status = S.REJECTED if mine.status in (S.SUBMITTED, S.UNKNOWN, S.NEW) else S.EXPIRED
                    self._emit(
                        OrderEvent(cid, status, self.clock.now_ms(), reason="not found on the exchange")
                    )
                    continue
                o = found
            self.track(o)
            self._emit(OrderEvent(cid, o.status, self.clock.now_ms(), o.filled, o.exchange_id))

    async def _poll_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.poll_interval)
            if self.websocket_up and not self._catchup:
                continue
            was_up = self.websocket_up
            try:
                await self.poll_once()
                if was_up:
                    self._catchup = False
            except asyncio.CancelledError:
                raise
            except ExchangeHalted:
                # Banned: wait it out, then catch up on every trade since the last one seen.
                await asyncio.sleep(max(self.limiter.banned_for, self.poll_interval))
                self._catchup = True
            except Exception as exc:
                log.warning("poll_failed", error=_short(exc))


WS_QUIET_UP_S = 2.0  # a user stream pending this long without an error is subscribed


def _is_clock_error(exc: BaseException) -> bool:
    """Binance's -1021: the request's timestamp is outside recvWindow (or ahead of the server)."""
    text = str(exc)
    return "-1021" in text or "recvWindow" in text or "ahead of the server" in text


def _bind(fn: Callable[..., Awaitable[Any]], *args: Any) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        return await fn(*args)

    return call


def _unconfirmed(order: Order) -> bool:
    """An order the exchange never confirmed: its create is in flight or ended ambiguously."""
    return order.exchange_id is None and order.status in (S.SUBMITTED, S.UNKNOWN)


def _with(order: Order, status: OrderStatus, reason: str) -> Order:
    from dataclasses import replace

    return replace(order, status=status, reason=reason)


def _merge_template(found: Order, template: Order) -> Order:
    """The exchange's state with our request's details (reason, signal) kept."""
    from dataclasses import replace

    return replace(
        found,
        type=template.type,
        price=template.price if template.price is not None else found.price,
        post_only=template.post_only,
        reason=template.reason,
        created_ts=template.created_ts,
        signal_strength=template.signal_strength,
    )
