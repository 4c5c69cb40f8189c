"""Request authentication exactly as Binance spot does it.

Why: the bot's key handling, clock and recvWindow settings must fail against the emulator
where they would fail against the exchange, with the same code and hence the same ccxt
exception (``-2014``/``-2015``/``-1022`` -> ``AuthenticationError``, ``-1021`` ->
``InvalidNonce``). REST: ``X-MBX-APIKEY`` header, HMAC-SHA256 hex of the raw query string
followed by the raw body (``signature`` being the last parameter). WebSocket API: the
``apiKey`` and ``signature`` params, signed over the other params sorted by key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl

from bot.emulator import errors

DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60000
MAX_AHEAD_MS = 1000


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class Authenticator:
    """Checks one key pair; ``server_ms`` is the emulator's (possibly skewed) clock."""

    def __init__(self, api_key: str, api_secret: str) -> None:
        self.api_key = api_key
        self.api_secret = api_secret

    def check_key(self, key: str | None) -> None:
        if not key:
            raise errors.bad_key_format()
        if not hmac.compare_digest(key, self.api_key):
            raise errors.bad_key()

    def check_time(self, params: Mapping[str, str], server_ms: int) -> None:
        ts_raw = params.get("timestamp")
        if ts_raw is None:
            raise errors.mandatory("timestamp")
        try:
            ts = int(ts_raw)
            window = int(params.get("recvWindow", DEFAULT_RECV_WINDOW_MS))
        except ValueError:
            raise errors.bad_param("Illegal characters found in parameter 'timestamp'.") from None
        if window > MAX_RECV_WINDOW_MS or window <= 0:
            raise errors.ApiError(400, -1131, "recvWindow must be less than 60000")
        if ts > server_ms + MAX_AHEAD_MS:
            raise errors.ahead_of_server(MAX_AHEAD_MS)
        if server_ms - ts > window:
            raise errors.outside_recv_window()

    def check_rest(self, key: str | None, raw_query: str, raw_body: str, server_ms: int) -> dict[str, str]:
        """Verify a signed REST request; returns all its parameters (query and body)."""
        self.check_key(key)
        total = raw_query + raw_body
        head, sep, sig = total.rpartition("&signature=")
        if not sep:
            if total.startswith("signature="):
                head, sig = "", total[len("signature=") :]
            else:
                raise errors.mandatory("signature")
        if "&" in sig:  # signature must be the last parameter
            raise errors.bad_signature()
        if not hmac.compare_digest(sign(self.api_secret, head), sig.lower()):
            raise errors.bad_signature()
        params = dict(parse_qsl(head, keep_blank_values=True))
        self.check_time(params, server_ms)
        return params

    def check_ws(self, params: Mapping[str, object], server_ms: int) -> None:
        """Verify a signed WebSocket API request (``apiKey``, ``timestamp``, ``signature`` params)."""
        key = params.get("apiKey")
        self.check_key(str(key) if key is not None else None)
        sig = params.get("signature")
        if not sig:
            raise errors.mandatory("signature")
        rest = {k: v for k, v in params.items() if k != "signature"}
        payload = "&".join(f"{k}={_ws_value(rest[k])}" for k in sorted(rest))
        if not hmac.compare_digest(sign(self.api_secret, payload), str(sig).lower()):
            raise errors.bad_signature()
        self.check_time({k: str(v) for k, v in rest.items()}, server_ms)


def _ws_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
