"""How every ccxt connection of the bot is made, and how it is pointed at the emulator.

Why one function: the bot, the tests, `bot demo` and the drills must all talk to the
emulator exactly as they would talk to Binance, so the only thing that differs is the
URLs. ``make_ccxt_client`` builds the normal client (spot only, no currency/margin
discovery calls that the emulator and testnet do not serve) and, when a base URL is given,
rewrites the REST URLs to ``base_url + original path`` and the websocket URLs to the
emulator's paths. ccxt 4.5.90 recognises a spot market stream by ``/stream`` in its URL,
so the market stream URL keeps that word (``ws://HOST:PORT/stream/ws``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse


def _rest(base: str, url: str) -> str:
    """``https://testnet.binance.vision/api/v3`` -> ``http://HOST:PORT/api/v3``."""
    return base + urlparse(url).path


def _point_urls(urls: dict[str, Any], base: str) -> dict[str, Any]:
    """Return a copy of one ccxt ``urls`` block (``api`` or ``test``) aimed at ``base``."""
    ws_base = "ws" + base[len("http") :] if base.startswith("http") else base
    out: dict[str, Any] = {}
    for key, value in urls.items():
        if key == "ws" and isinstance(value, dict):
            ws = dict(value)
            for kind in ("spot", "margin"):
                ws[kind] = f"{ws_base}/stream/ws"
            api = dict(ws.get("ws-api") or {})
            api["spot"] = f"{ws_base}/ws-api/v3"
            ws["ws-api"] = api
            out[key] = ws
        elif isinstance(value, str) and value.startswith("http"):
            out[key] = _rest(base, value)
        else:
            out[key] = value
    return out


def make_ccxt_client(
    base_url: str | None,
    api_key: str | None,
    api_secret: str | None,
    *,
    pro: bool = True,
    sandbox: bool = True,
    timeout_ms: int = 10000,
    exchange_id: str = "binance",
) -> Any:
    """A ccxt (pro by default) exchange for spot trading; aimed at ``base_url`` when given.

    With ``base_url`` None it is a normal client (sandbox mode if ``sandbox``). With a base
    URL (the emulator, e.g. ``http://127.0.0.1:8765``) sandbox mode is switched on first,
    so that the URL table ccxt uses is the testnet one, and then every URL in it is
    rewritten; the emulator serves Binance's paths unchanged.
    """
    if pro:
        import ccxt.pro as ccxt_mod
    else:
        import ccxt.async_support as ccxt_mod  # type: ignore[no-redef]

    cls = getattr(ccxt_mod, exchange_id)
    config: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": int(timeout_ms),
        "options": {
            "defaultType": "spot",
            "fetchMarkets": {"types": ["spot"]},
            "fetchCurrencies": False,
            "fetchMargins": False,
        },
    }
    if api_key:
        config["apiKey"] = api_key
    if api_secret:
        config["secret"] = api_secret
    ex = cls(config)
    if sandbox or base_url:
        ex.set_sandbox_mode(True)
    if base_url:
        base = base_url.rstrip("/")
        ex.urls["api"] = _point_urls(ex.urls["api"], base)
        if isinstance(ex.urls.get("test"), dict):
            ex.urls["test"] = _point_urls(ex.urls["test"], base)
    return ex
