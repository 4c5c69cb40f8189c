"""Kill switch: a losing price path halts exactly once, cancels, flattens, and stays halted."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bot.clock import SimulatedClock
from bot.config import RiskSettings
from bot.logging import configure_logging
from bot.model import Fill, Liquidity, OrderRequest, RiskAction, RiskEvent, Side
from bot.risk.inventory import DAY_MS, Inventory
from bot.risk.killswitch import HaltState, KillSwitch
from bot.risk.limits import MarketState
from bot.risk.market_rules import MarketRules


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    """Other tests' CliRunner runs leave structlog writing to a closed stream; re-point it."""
    configure_logging()


D = Decimal
T0 = 1_723_111_200_000  # 2024-08-08 10:00:00 UTC
RULES = MarketRules.binance_spot("BTC/USDT")


def book(mid: float) -> MarketState:
    return MarketState(mid=mid, best_bid=mid - 0.01, best_ask=mid + 0.01, book_healthy=True, book_reason=None)


class FakeExchange:
    """Resting orders and immediate fills of marketable limits at the touch (a minimal venue)."""

    def __init__(self, inv: Inventory) -> None:
        self.inv = inv
        self.open: list[OrderRequest] = []
        self.market = book(60000.0)
        self.submitted: list[OrderRequest] = []
        self.cancel_calls = 0
        self.n = 0

    async def cancel_all(self) -> None:
        self.cancel_calls += 1
        self.open.clear()

    async def submit(self, req: OrderRequest) -> None:
        self.submitted.append(req)
        assert req.price is not None and self.market.best_bid is not None and self.market.best_ask is not None
        touch = D(repr(self.market.best_bid if req.side is Side.SELL else self.market.best_ask))
        marketable = req.price <= touch if req.side is Side.SELL else req.price >= touch
        if not marketable:
            self.open.append(req)
            return
        self.n += 1
        self.inv.apply_fill(Fill(
            trade_id=f"k{self.n}", client_id=f"k{self.n}", symbol=req.symbol, side=req.side, price=touch,
            amount=req.amount, fee=D(0), fee_currency="USDT", liquidity=Liquidity.TAKER, ts=T0,
        ))


def settings(**kw: Any) -> RiskSettings:
    base: dict[str, Any] = {"max_daily_loss": D("100"), "max_drawdown": D("1000"), "price_band_bps": 50.0}
    base.update(kw)
    return RiskSettings(**base)


async def run_losing_path(s: RiskSettings) -> tuple[KillSwitch, FakeExchange, Inventory, list[RiskEvent], SimulatedClock]:
    clock = SimulatedClock(T0)
    inv = Inventory("BTC/USDT")
    ex = FakeExchange(inv)
    inv.apply_fill(Fill("e1", "c1", "BTC/USDT", Side.BUY, D("60000"), D("0.04"), D("0"), "USDT",
                        Liquidity.TAKER, T0))
    ex.open.append(OrderRequest("BTC/USDT", Side.BUY, D("0.01"), D("59000")))  # a resting order
    ks = KillSwitch(s, clock)
    persisted: list[RiskEvent] = []
    for i, mid in enumerate(range(60000, 56900, -100)):  # down 3100: -124 USDT on 0.04 BTC
        clock.advance(T0 + (i + 1) * 1000)
        ex.market = book(float(mid))
        ev = ks.evaluate(inventory=inv, mark=D(mid), store_healthy=True, feed_up=True, rejections=0)
        if ev is not None:
            persisted.append(ev)
            await ks.trigger(ex, ev, ex.market, inv.position, RULES)
    return ks, ex, inv, persisted, clock


async def test_losing_path_halts_once_cancels_flattens_and_survives_restart() -> None:
    ks, ex, inv, persisted, clock = await run_losing_path(settings())
    assert len(persisted) == 1
    halt = persisted[0]
    assert (halt.action, halt.kind) == (RiskAction.HALT, "max_daily_loss")
    # 0.04 BTC bought at 60000, mark 57500: loss 100
    assert halt.reason == "daily loss 100.00 USDT reached max_daily_loss 100 (equity -100.00, day start 0, mark 57500)"
    assert halt.details["daily_pnl"] == "-100.00"
    assert ex.cancel_calls == 1 and ex.open == []
    flatten = ex.submitted[0]
    # the far edge of the 50 bps band, rounded toward passive: 57500 * 0.995 = 57212.5
    assert (flatten.side, flatten.amount, flatten.price) == (Side.SELL, D("0.04"), D("57212.50"))
    assert inv.position == 0
    assert inv.realized == D("-100.0004")  # sold at the touch 57499.99
    assert ks.halted and ks.halt_reason == halt.reason

    # process restart, same UTC day: the persisted halt is read back and still holds
    clock.advance(clock.now_ms() + 3_600_000)
    again = KillSwitch(settings(), clock)
    assert again.restore(halt, clock.now_ms()) is halt
    assert again.halted and again.state == HaltState(True, "max_daily_loss", halt.reason, halt.ts)
    assert again.evaluate(inventory=inv, mark=D(57000), store_healthy=True, feed_up=True, rejections=0) is None


async def test_no_flatten_when_configured_off() -> None:
    _, ex, inv, persisted, _ = await run_losing_path(settings(flatten_on_halt=False))
    assert len(persisted) == 1 and ex.open == [] and ex.submitted == []
    assert inv.position == D("0.04")


def _halt(kind: str, ts: int = T0) -> RiskEvent:
    return RiskEvent(ts=ts, action=RiskAction.HALT, kind=kind, reason=f"{kind} breached")


@pytest.mark.parametrize(
    ("kind", "resume_rule", "days_later", "still_halted"),
    [
        ("max_daily_loss", "next_day", 0, True),
        ("max_daily_loss", "next_day", 1, False),
        ("max_daily_loss", "manual", 1, True),
        ("max_drawdown", "next_day", 1, True),  # the next-day rule is only for the daily loss
        ("store_unavailable", "next_day", 3, True),
    ],
)
def test_restore_rules(kind: str, resume_rule: str, days_later: int, still_halted: bool) -> None:
    now = T0 + days_later * DAY_MS
    ks = KillSwitch(settings(daily_loss_resume=resume_rule), SimulatedClock(now))
    out = ks.restore(_halt(kind), now)
    assert ks.halted is still_halted
    assert out is not None
    if still_halted:
        assert out.action is RiskAction.HALT
    else:
        assert (out.action, out.kind, out.ts) == (RiskAction.RESUME, kind, now)
        assert out.reason == f"resumed automatically on new UTC day 2024-08-09 after {kind} breached"


def test_restore_without_halt_or_after_resume() -> None:
    ks = KillSwitch(settings(), SimulatedClock(T0))
    assert ks.restore(None, T0) is None and not ks.halted
    resumed = RiskEvent(ts=T0, action=RiskAction.RESUME, kind="max_drawdown", reason="r")
    assert ks.restore(resumed, T0) is None and not ks.halted


def test_operator_resume() -> None:
    ks = KillSwitch(settings(), SimulatedClock(T0), HaltState.from_event(_halt("max_drawdown")))
    assert ks.halted
    ev = ks.resume(T0 + 5, who="operator")
    assert (ev.action, ev.kind, ev.reason) == (RiskAction.RESUME, "max_drawdown",
                                               "resumed by operator after max_drawdown breached")
    assert not ks.halted


@pytest.mark.parametrize(
    ("kwargs", "kind", "reason"),
    [
        ({"store_healthy": False}, "store_unavailable", "store unavailable: records kept in memory, no new positions"),
        ({"feed_up": False}, "feed_down", "market feed down: cannot price or protect the position"),
        ({"rejections": 5}, "max_rejections", "5 consecutive order rejections reached max_rejections 5"),
    ],
)
def test_other_guards(kwargs: dict[str, Any], kind: str, reason: str) -> None:
    ks = KillSwitch(settings(), SimulatedClock(T0))
    inv = Inventory("BTC/USDT")
    args: dict[str, Any] = {"store_healthy": True, "feed_up": True, "rejections": 0, **kwargs}
    ev = ks.evaluate(inventory=inv, mark=D(60000), **args)
    assert ev is not None and (ev.action, ev.kind, ev.reason) == (RiskAction.HALT, kind, reason)
    assert ks.evaluate(inventory=inv, mark=D(60000), **args) is None  # exactly once


def test_drawdown_from_run_peak() -> None:
    clock = SimulatedClock(T0)
    ks = KillSwitch(settings(max_daily_loss=D("10000"), max_drawdown=D("50")), clock)
    inv = Inventory("BTC/USDT")
    inv.apply_fill(Fill("a", "a", "BTC/USDT", Side.BUY, D("60000"), D("0.01"), D(0), "USDT", Liquidity.MAKER, T0))
    assert ks.evaluate(inventory=inv, mark=D(70000), store_healthy=True, feed_up=True, rejections=0) is None
    ev = ks.evaluate(inventory=inv, mark=D(65000), store_healthy=True, feed_up=True, rejections=0)
    assert ev is not None and ev.kind == "max_drawdown"
    assert ev.reason == "drawdown 50.00 USDT from run peak 100.00 reached max_drawdown 50 (equity 50.00, mark 65000)"


def test_flatten_short_buys_at_upper_band_edge() -> None:
    ks = KillSwitch(settings(price_band_bps=50.0), SimulatedClock(T0))
    req = ks.flatten_order(D("-0.0123"), book(60000.005), RULES)
    # 60000.005 * 1.005 = 60300.005025 -> buy rounds down to 60300.00, inside the band
    assert req is not None and (req.side, req.amount, req.price) == (Side.BUY, D("0.0123"), D("60300.00"))
    assert ks.flatten_order(D("0.00001"), book(60000.0), RULES) is None  # dust below min notional


# --------------------------------------------------------------------------- `bot resume` (store stubbed)


@pytest.fixture
def _restore_logging() -> Any:
    """The CLI points structlog at CliRunner's stream, closed after invoke; point it back."""
    from bot.logging import configure_logging

    yield
    configure_logging()


@pytest.mark.usefixtures("_restore_logging")
def test_cli_resume_prints_what_was_lifted(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import bot.risk.killswitch as kmod
    from bot.cli import app

    halt = _halt("max_drawdown")
    calls: list[tuple[str, str, str, str, str]] = []

    async def fake(url: str, account: str, symbol: str, now_ms: int, who: str = "operator", *, mode: str,
                   venue: str) -> Any:
        calls.append((url, account, symbol, mode, venue))
        ks = KillSwitch(settings(), SimulatedClock(now_ms), HaltState.from_event(halt))
        return halt, ks.resume(now_ms, who)

    monkeypatch.setattr(kmod, "resume_persisted", fake)
    out = CliRunner().invoke(app, ["resume", "--db", "sqlite+aiosqlite:///x.db"])
    assert out.exit_code == 0, out.output
    assert [ln for ln in out.output.splitlines() if not ln.startswith("{")] == [  # minus the JSON log line
        "lifted max_drawdown halt of 2024-08-08 10:00:00 UTC for default BTC/USDT: max_drawdown breached",
        "resumed by operator after max_drawdown breached",
    ]
    # the halt of the config's own mode and venue (defaults: paper, the sandbox)
    assert calls == [("sqlite+aiosqlite:///x.db", "default", "BTC/USDT", "paper", "binance:sandbox")]


@pytest.mark.usefixtures("_restore_logging")
def test_cli_resume_not_halted(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import bot.risk.killswitch as kmod
    from bot.cli import app

    async def fake(*_a: Any, **_k: Any) -> Any:
        return None, None

    monkeypatch.setattr(kmod, "resume_persisted", fake)
    out = CliRunner().invoke(app, ["resume", "--db", "sqlite+aiosqlite:///x.db"])
    assert (out.exit_code, out.output) == (0, "not halted\n")
