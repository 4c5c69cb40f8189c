"""TOML configuration -> validated, typed settings.

Why so strict: a typo in a risk limit that is silently ignored is how a bot trades with a
default limit nobody chose. Unknown keys are errors, every problem is reported on one line
that names the key path, and secrets are read only from the environment and never echoed.

Errors are collected, not raised one at a time, so a user fixes a config in one pass.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    SecretStr,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema

EX_CONFIG = 78

ENV_API_KEY = "BOT_API_KEY"
ENV_API_SECRET = "BOT_API_SECRET"
ENV_DB_URL = "BOT_DB_URL"
ENV_LIVE_CONFIRM = "BOT_LIVE_CONFIRM"
ENV_STATUS_TOKEN = "BOT_STATUS_TOKEN"
ENV_EMULATOR_SECRET = "BOT_EMULATOR_API_SECRET"

_SECRET_KEYS = {"api_key", "apikey", "key", "secret", "api_secret", "password", "passphrase", "private_key"}


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# --------------------------------------------------------------------------- durations

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """'250ms' / '5s' / '1m' / '2h' / a bare number of seconds -> seconds (finite, > 0)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '5s' or '250ms' (got {_show(value)})")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f"expected a duration like '5s' or '250ms' (got {_show(value)})"[:200])
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration (got {_show(value)})")
    if seconds <= 0:
        raise ValueError(f"must be > 0 (got {_show(value)})")
    return seconds


def format_duration(seconds: float) -> str:
    """60 -> '1m', 0.001 -> '1ms', 86400 -> '1d', 2.5 -> '2.5s' (for messages)."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


# --------------------------------------------------------------------------- number ranges


def _show(v: object) -> str:
    """A value as the user wrote it in TOML (for messages): true/false, 'text', 5, 0.05, nan."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v[:60] + ("..." if len(v) > 60 else ""))
    if isinstance(v, int) and abs(v) >= 10**21:
        return f"{v:.3e}"
    text = str(v) if isinstance(v, int | float | Decimal) else repr(v)
    return text[:60] + ("..." if len(text) > 60 else "")


def _limit(x: float) -> str:
    """A range limit for messages: 65535, 0.5, 1e12."""
    if float(x).is_integer() and abs(x) < 10**8:
        return str(int(x))
    if float(x).is_integer():
        mantissa, exp = f"{x:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{x:g}"


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Range:
    """The type and range of one number key, declared once on the settings model.

    ``kind``: "int" (a TOML integer), "float" or "decimal" (a TOML integer or float; decimal keys
    hold money), or "duration" ("250ms", "5s", "1m", "2h", "1d" or a number of seconds). The
    value must lie in [lo, hi] (``lo_open``: lo itself excluded). Strict on purpose: a TOML
    bool is not a number, a quoted number is not a number (only a duration is a string), NaN
    and infinity are refused. Used as a pydantic before-validator; ``text()`` states the range.
    """

    kind: Literal["int", "float", "decimal", "duration"]
    lo: float
    hi: float
    lo_open: bool = False

    def _lower(self) -> str:
        if self.kind == "int" and self.lo == 1 and not self.lo_open:
            return "> 0"  # the same, as users read it
        return f"{'>' if self.lo_open else '>='} {_limit(self.lo)}"

    def text(self) -> str:
        if self.kind == "duration":
            return f"between {format_duration(self.lo)} and {format_duration(self.hi)}"
        return f"{self._lower()} and <= {_limit(self.hi)}"

    def _type_error(self, v: object) -> ValueError:
        what = "an integer" if self.kind == "int" else "a number"
        if isinstance(v, str) and _looks_numeric(v):
            return ValueError(f"must be {what}, not a quoted string: write it without quotes (got {_show(v)})")
        if isinstance(v, bool):
            return ValueError(f"must be {what}, not true/false (got {_show(v)})")
        return ValueError(f"must be {what} (got {_show(v)})")

    def __call__(self, v: Any) -> Any:
        if self.kind == "duration":
            seconds = parse_duration(v)
            if not self.lo <= seconds <= self.hi:
                raise ValueError(f"must be {self.text()} (got {_show(v)})")
            return seconds
        if isinstance(v, bool) or isinstance(v, str):
            raise self._type_error(v)
        if self.kind == "int":
            if not isinstance(v, int):
                raise self._type_error(v)
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise ValueError(f"must be a finite number (got {_show(v)})")
        elif isinstance(v, Decimal):
            if not v.is_finite():
                raise ValueError(f"must be a finite number (got {_show(v)})")
        elif not isinstance(v, int):
            raise self._type_error(v)
        below = v <= self.lo if self.lo_open else v < self.lo
        if below:
            raise ValueError(f"must be {self._lower()} (got {_show(v)})")
        if v > self.hi:
            raise ValueError(f"must be <= {_limit(self.hi)} (got {_show(v)})")
        if self.kind == "float":
            return float(v)
        if self.kind == "decimal":
            # TOML floats come in as binary floats; go through repr so 0.05 stays 0.05.
            return Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
        return v

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self, handler(source))


def field_ranges(model: type[BaseModel] | None = None, prefix: str = "") -> dict[str, Range]:
    """Every number key of the settings and its range: {"risk.max_position": Range(...), ...}.

    ``paper.balances`` is listed as ``paper.balances.*`` (each currency's amount)."""
    model = Settings if model is None else model
    out: dict[str, Range] = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(field_ranges(ann, f"{prefix}{name}."))
            continue
        for m in info.metadata:
            if isinstance(m, Range):
                out[f"{prefix}{name}"] = m
        for arg in typing.get_args(ann):  # dict[str, Annotated[Decimal, Range(...)]]: each value's range
            for m in getattr(arg, "__metadata__", ()):
                if isinstance(m, Range):
                    out[f"{prefix}{name}.*"] = m
    return out


@functools.cache
def ccxt_exchanges() -> frozenset[str]:
    """The exchange ids ccxt knows (``ccxt.exchanges``); empty when ccxt cannot be imported."""
    try:
        import ccxt
    except Exception:  # pragma: no cover - ccxt is a dependency
        return frozenset()
    return frozenset(ccxt.exchanges)


_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)([^@\s]+)@")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)([^&\s]*)", re.IGNORECASE)


def redact_url(text: str) -> str:
    """Every URL password in ``text`` as ``***``: ``postgresql://bot:***@db/bot``, ``?password=***``."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def url_password(url: str) -> str | None:
    """The password of a database URL, if it has one (for the log redactor)."""
    m = _URL_PASSWORD.search(url)
    if m:
        return m.group(2)
    q = _QUERY_PASSWORD.search(url)
    return q.group(2) if q and q.group(2) else None


# Ranges shared with the command line (``bot analyze --levels`` is the same depth as
# ``[signals] levels``).
MAX_LEVELS = 100
MAX_AMOUNT = 1e12  # base-currency amounts (bot.market.sanity.MAX_AMOUNT)
MAX_QUOTE = 1e12  # quote-currency amounts
MAX_BALANCE = 1e15
DAY = 86400.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- sections


# Every number key states its type and range here (``Range``); ``field_ranges()`` lists them.
Seconds = float  # a duration key: Annotated[Seconds, Range("duration", lo, hi)]


class ExchangeSettings(_Section):
    id: str = "binance"  # one of ccxt.exchanges
    sandbox: StrictBool = True
    url: str = ""  # base URL override, e.g. http://127.0.0.1:8765 for the emulator
    account: str = "default"  # a name for this account; BOT_LIVE_CONFIRM must equal it in live mode
    timeout: Annotated[Seconds, Range("duration", 0.1, 300.0)] = 10.0
    recv_window: Annotated[Seconds, Range("duration", 0.001, 60.0)] = 5.0
    # Never from the file: filled from BOT_API_KEY / BOT_API_SECRET.
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"must be an http(s) base URL like http://127.0.0.1:8765 (got {_show(v)})")
        return v.rstrip("/")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        known = ccxt_exchanges()
        if known and v not in known:
            hint = f"; did you mean {v.lower()!r}?" if v.lower() in known else ""
            raise ValueError(f"must be an exchange id ccxt knows, like 'binance' (got {_show(v)}){hint}")
        return v

    @field_validator("account")
    @classmethod
    def _account(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}", v):
            raise ValueError(f"must be 1-64 letters, digits or _.@:- (got {_show(v)})")
        return v

    @property
    def has_keys(self) -> bool:
        return self.api_key is not None and self.api_secret is not None


class StoreSettings(_Section):
    url: str = "sqlite+aiosqlite:///bot.db"
    queue_size: Annotated[int, Range("int", 1, 1_000_000)] = 10_000
    batch_ms: Annotated[int, Range("int", 1, 60_000)] = 50
    # records kept in memory while the database is down
    max_buffered: Annotated[int, Range("int", 1, 10_000_000)] = 100_000

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("sqlite") or v.startswith("postgresql")):
            raise ValueError(f"must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL (got {_show(redact_url(v))})")
        if any(c.isspace() or not c.isprintable() for c in v):
            raise ValueError(f"must not contain spaces or control characters (got {_show(redact_url(v))})")
        return v


class SignalSettings(_Section):
    levels: Annotated[int, Range("int", 1, MAX_LEVELS)] = 5
    window: Annotated[Seconds, Range("duration", 0.001, 3600.0)] = 10.0
    # EWMA half-life of the scale (RMS) each signal is divided by
    halflife: Annotated[Seconds, Range("duration", 0.001, DAY)] = 300.0
    sample_interval: Annotated[Seconds, Range("duration", 0.001, 3600.0)] = 1.0  # sampled rows into the signals table
    # no signal is emitted before this much event time has been seen
    warmup: Annotated[Seconds, Range("duration", 0.001, DAY)] = 60.0


class StrategySettings(_Section):
    # in units of the combined flow's RMS; docs/signals.md, "Detector"
    entry_z: Annotated[float, Range("float", 0, 100, lo_open=True)] = 2.5
    exit_z: Annotated[float, Range("float", 0, 100)] = 0.5
    persistence: Annotated[int, Range("int", 1, 1000)] = 3
    # at or above this strength, cross the spread; below, join the touch
    aggressive_z: Annotated[float, Range("float", 0, 100, lo_open=True)] = 3.0
    max_hold: Annotated[Seconds, Range("duration", 0.001, 7 * DAY)] = 120.0
    # a resting order older than this is cancelled and re-worked
    order_ttl: Annotated[Seconds, Range("duration", 0.001, DAY)] = 5.0
    # margin over half-spread + fee required to enter
    min_edge_bps: Annotated[float, Range("float", 0, 10_000)] = 0.0
    cost_gate: StrictBool = True  # enter only when the expected move pays half-spread + fee + min_edge_bps
    # configured expected move per unit of z; 0 = the calibrated prior
    edge_bps_per_z: Annotated[float, Range("float", 0, 10_000)] = 0.0


class RiskSettings(_Section):
    max_position: Annotated[Decimal, Range("decimal", 0, MAX_AMOUNT, lo_open=True)] = Decimal("0.05")
    max_order_notional: Annotated[Decimal, Range("decimal", 0, MAX_QUOTE, lo_open=True)] = Decimal("500")
    max_daily_loss: Annotated[Decimal, Range("decimal", 0, MAX_QUOTE, lo_open=True)] = Decimal("100")
    max_drawdown: Annotated[Decimal, Range("decimal", 0, MAX_QUOTE, lo_open=True)] = Decimal("200")
    max_orders_per_minute: Annotated[int, Range("int", 1, 10_000)] = 30
    max_open_orders: Annotated[int, Range("int", 1, 1000)] = 4
    max_rejections: Annotated[int, Range("int", 1, 1000)] = 5  # consecutive exchange rejections -> halt
    price_band_bps: Annotated[float, Range("float", 0, 10_000, lo_open=True)] = 50.0
    stale_after: Annotated[Seconds, Range("duration", 0.001, 3600.0)] = 5.0
    flatten_on_halt: StrictBool = True
    daily_loss_resume: Literal["manual", "next_day"] = "next_day"


class PaperSettings(_Section):
    taker_fee_bps: Annotated[float, Range("float", 0, 1000)] = 10.0
    maker_fee_bps: Annotated[float, Range("float", 0, 1000)] = 2.0
    latency_ms: Annotated[float, Range("float", 0, 60_000)] = 50.0
    balances: dict[str, Annotated[Decimal, Range("decimal", 0, MAX_BALANCE)]] = Field(
        default_factory=lambda: {"USDT": Decimal(10000), "BTC": Decimal(0)})

    @field_validator("balances", mode="before")
    @classmethod
    def _currencies(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for name in v:
                if not (isinstance(name, str) and re.fullmatch(r"[A-Z0-9]{1,15}", name)):
                    raise ValueError(f"currency names must be 1-15 capital letters or digits, like USDT (got {_show(name)})")
        return v


class ExecutionSettings(_Section):
    cancel_unknown: StrictBool = False  # cancel open orders on the exchange that this bot did not place
    # Client order ids are <prefix>-<run>-<seq>; an order is this bot's if its id has this prefix
    # (or it is in the bot's orders table). "" = derived from account, symbol and mode.
    client_id_prefix: str = ""

    @field_validator("client_id_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9]{1,8}", v):
            raise ValueError(f"must be 1-8 letters or digits, or empty to derive it (got {v!r})")
        return v
    reconcile_interval: Annotated[Seconds, Range("duration", 0.001, DAY)] = 30.0
    max_retries: Annotated[int, Range("int", 1, 100)] = 5
    cancel_on_stop: StrictBool = True


class MetricsSettings(_Section):
    port: Annotated[int, Range("int", 0, 65535)] = 0  # 0 = off; status + Prometheus on 127.0.0.1:port


class Settings(_Section):
    mode: Literal["paper", "testnet", "live"] = "paper"
    symbol: str = "BTC/USDT"
    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    signals: SignalSettings = Field(default_factory=SignalSettings)
    strategy: StrategySettings = Field(default_factory=StrategySettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    paper: PaperSettings = Field(default_factory=PaperSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z0-9]{2,15}/[A-Z0-9]{2,15}", v):
            raise ValueError(f"must look like BASE/QUOTE, e.g. BTC/USDT (got {v!r})")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        if self.strategy.exit_z >= self.strategy.entry_z:
            raise ValueError(
                f"strategy.exit_z: must be < strategy.entry_z "
                f"(got exit_z={self.strategy.exit_z}, entry_z={self.strategy.entry_z})"
            )
        if self.mode in ("live", "testnet") and not self.exchange.has_keys:
            raise ValueError(
                f"exchange: {self.mode} mode needs {ENV_API_KEY} and {ENV_API_SECRET} in the environment"
            )
        if self.mode == "live" and self.exchange.sandbox:
            raise ValueError("exchange.sandbox: must be false in live mode (live trades real money)")
        return self

    @property
    def client_id_prefix(self) -> str:
        """This instance's client-id prefix: ``[execution] client_id_prefix``, else ``ofi`` and
        four base-36 characters of a hash of (account, symbol, mode), so that two instances on
        one account never take each other's orders for their own (``bot.execution.ownership``)."""
        if self.execution.client_id_prefix:
            return self.execution.client_id_prefix
        digest = int(hashlib.sha256(f"{self.exchange.account}|{self.symbol}|{self.mode}".encode()).hexdigest(), 16)
        alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
        tag = ""
        for _ in range(4):
            digest, r = divmod(digest, 36)
            tag += alphabet[r]
        return f"ofi{tag}"

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]

    @property
    def venue(self) -> str:
        """Where orders go, as the store keys orders, fills, positions and halts by it.

        The exchange id, then ``@<url>`` when ``[exchange] url`` is set
        (``binance@http://127.0.0.1:8765``: an emulator or proxy), else ``:sandbox`` when
        ``sandbox`` is true (``binance:sandbox``: the exchange's testnet), else the bare id
        (``binance``: the real exchange). Together with ``mode`` it keeps a paper, testnet
        and live history on one account apart: a run never reads another venue's position
        or halt, and a trade id is unique per (venue, symbol) only.
        """
        ex = self.exchange
        if ex.url:
            return f"{ex.id}@{ex.url}"
        if ex.sandbox:
            return f"{ex.id}:sandbox"
        return ex.id

    def config_hash(self) -> str:
        """Stable hash of the effective config (secrets excluded), stored in ``runs``."""
        return hashlib.sha256(render_effective(self).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def _format_error(err: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg: str = err["msg"]
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if msg.startswith(f"{loc}:") or (not loc and ":" in msg.split(" ", 1)[0]):
        return msg
    if err["type"] in ("literal_error", "enum"):
        ctx = err.get("ctx") or {}
        return f"{loc}: must be one of {ctx.get('expected', '')} (got {err.get('input')!r})"
    if err["type"] in ("decimal_parsing", "decimal_type", "float_parsing", "float_type", "int_parsing", "int_type"):
        msg = "must be a number"
    elif err["type"] in ("bool_parsing", "bool_type"):
        msg = "must be true or false"
    elif err["type"] in ("string_type",):
        msg = "must be a string"
    shown = "" if "(got " in msg else f" (got {err.get('input')!r})"
    return f"{loc}: {msg}{shown}" if loc else f"{msg}"


def _reject_file_secrets(data: dict[str, Any]) -> list[str]:
    problems = []
    for section, body in data.items():
        keys = body.keys() if isinstance(body, dict) else [section]
        prefix = f"{section}." if isinstance(body, dict) else ""
        for k in keys:
            if k.lower() in _SECRET_KEYS:
                problems.append(
                    f"{prefix}{k}: secrets must not be in the config file; set {ENV_API_KEY} / "
                    f"{ENV_API_SECRET} in the environment (value not shown)"
                )
    return problems


def settings_from_dict(data: dict[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Validate a parsed TOML document plus the environment into ``Settings``."""
    env = os.environ if env is None else env
    problems = _reject_file_secrets(data)
    if problems:
        raise ConfigError(problems)
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    exchange = merged.setdefault("exchange", {})
    if isinstance(exchange, dict):
        if env.get(ENV_API_KEY):
            exchange["api_key"] = env[ENV_API_KEY]
        if env.get(ENV_API_SECRET):
            exchange["api_secret"] = env[ENV_API_SECRET]
    if env.get(ENV_DB_URL):
        store = merged.setdefault("store", {})
        if isinstance(store, dict):
            store["url"] = env[ENV_DB_URL]
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError([_format_error(e) for e in exc.errors(include_url=False)]) from None


def load_config(
    path: str | Path | None, env: Mapping[str, str] | None = None, db_url: str | None = None
) -> Settings:
    """Read and validate a TOML file (None: all defaults). ``db_url`` (``--db``) wins over all."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            raise ConfigError([f"{p}: file not found"]) from None
        except OSError as exc:
            raise ConfigError([f"{p}: cannot read ({exc.strerror})"]) from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError([f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{p}: invalid TOML: {exc}"]) from None
    if db_url:
        data = {**data, "store": {**data.get("store", {}), "url": db_url}}
        env = {k: v for k, v in (os.environ if env is None else env).items() if k != ENV_DB_URL}
    return settings_from_dict(data, env)


def render_effective(settings: Settings) -> str:
    """The effective config as TOML-ish text; secrets shown as ``***``."""
    lines: list[str] = []
    top = settings.model_dump()
    for key, value in top.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in top.items():
        if isinstance(value, dict):
            lines.append("")
            lines.append(f"[{key}]")
            for k, v in value.items():
                if k in ("api_key", "api_secret"):
                    lines.append(f'{k} = "{"***" if v is not None else "(not set)"}"')
                    continue
                if k == "url" and isinstance(v, str):
                    v = redact_url(v)  # a database or exchange URL may carry a password
                lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if v is None:
        return '""'
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) < 1e15 else repr(v)
    return str(v)


def secret_values(settings: Settings | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """Every secret string known to this process, for the log redactor."""
    env = os.environ if env is None else env
    out = [env[k] for k in (ENV_API_KEY, ENV_API_SECRET, ENV_STATUS_TOKEN, ENV_EMULATOR_SECRET) if env.get(k)]
    for url in (env.get(ENV_DB_URL), settings.store.url if settings is not None else None):
        password = url_password(url) if url else None
        if password:
            out.append(password)
    if settings is not None:
        for s in (settings.exchange.api_key, settings.exchange.api_secret):
            if s is not None:
                out.append(s.get_secret_value())
    return sorted({s for s in out if len(s) >= 4}, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Replace every known secret in ``text``, and every URL password, with ``***``."""
    for s in secrets if secrets is not None else secret_values():
        text = text.replace(s, "***")
    return redact_url(text)
