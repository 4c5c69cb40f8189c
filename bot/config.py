"""TOML configuration -> validated, typed settings.

Why so strict: a typo in a risk limit that is silently ignored is how a bot trades with a
default limit nobody chose. Unknown keys are errors, every problem is reported on one line
that names the key path, and secrets are read only from the environment and never echoed.

Errors are collected, not raised one at a time, so a user fixes a config in one pass.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

EX_CONFIG = 78

ENV_API_KEY = "BOT_API_KEY"
ENV_API_SECRET = "BOT_API_SECRET"
ENV_DB_URL = "BOT_DB_URL"
ENV_LIVE_CONFIRM = "BOT_LIVE_CONFIRM"

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
    """'250ms' / '5s' / '1m' / '2h' / a bare number of seconds -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '5s' or '250ms' (got {value!r})")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f"expected a duration like '5s' or '250ms' (got {value!r})")
    if seconds <= 0:
        raise ValueError(f"must be > 0 (got {value!r})")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _positive(v: Any) -> Any:
    if isinstance(v, int | float | Decimal) and not isinstance(v, bool) and v <= 0:
        raise ValueError(f"must be > 0 (got {v})")
    return v


def _non_negative(v: Any) -> Any:
    if isinstance(v, int | float | Decimal) and not isinstance(v, bool) and v < 0:
        raise ValueError(f"must be >= 0 (got {v})")
    return v


def _decimal(v: Any) -> Any:
    # TOML floats come in as binary floats; go through str so 0.05 stays 0.05.
    if isinstance(v, float):
        return Decimal(repr(v))
    return v


PosDecimal = Annotated[Decimal, BeforeValidator(_positive), BeforeValidator(_decimal)]
NonNegDecimal = Annotated[Decimal, BeforeValidator(_non_negative), BeforeValidator(_decimal)]
PosInt = Annotated[int, BeforeValidator(_positive)]
PosFloat = Annotated[float, BeforeValidator(_positive)]
NonNegFloat = Annotated[float, BeforeValidator(_non_negative)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- sections


class ExchangeSettings(_Section):
    id: str = "binance"
    sandbox: bool = True
    url: str = ""  # base URL override, e.g. http://127.0.0.1:8765 for the emulator
    account: str = "default"  # a name for this account; BOT_LIVE_CONFIRM must equal it in live mode
    timeout: Duration = 10.0
    recv_window: Duration = 5.0
    # Never from the file: filled from BOT_API_KEY / BOT_API_SECRET.
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"must be an http(s) base URL like http://127.0.0.1:8765 (got {v!r})")
        return v.rstrip("/")

    @property
    def has_keys(self) -> bool:
        return self.api_key is not None and self.api_secret is not None


class StoreSettings(_Section):
    url: str = "sqlite+aiosqlite:///bot.db"
    queue_size: PosInt = 10_000
    batch_ms: PosInt = 50
    max_buffered: PosInt = 100_000  # records kept in memory while the database is down

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("sqlite") or v.startswith("postgresql")):
            raise ValueError(f"must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL (got {v!r})")
        return v


class SignalSettings(_Section):
    levels: PosInt = 5
    window: Duration = 10.0
    halflife: Duration = 300.0  # EWMA half-life of the z-score normalisation
    sample_interval: Duration = 1.0  # sampled rows into the signals table
    warmup: Duration = 60.0  # no signal is emitted before this much event time has been seen


class StrategySettings(_Section):
    entry_z: PosFloat = 2.0
    exit_z: NonNegFloat = 0.5
    persistence: PosInt = 3
    aggressive_z: PosFloat = 3.0  # at or above this strength, cross the spread; below, join the touch
    max_hold: Duration = 120.0
    order_ttl: Duration = 5.0  # a resting order older than this is cancelled and re-worked
    min_edge_bps: NonNegFloat = 0.0  # margin over half-spread + fee required to enter
    cost_gate: bool = True  # enter only when the expected move pays half-spread + fee + min_edge_bps
    edge_bps_per_z: NonNegFloat = 0.0  # configured expected move per unit of z; 0 = the calibrated prior


class RiskSettings(_Section):
    max_position: PosDecimal = Decimal("0.05")
    max_order_notional: PosDecimal = Decimal("500")
    max_daily_loss: PosDecimal = Decimal("100")
    max_drawdown: PosDecimal = Decimal("200")
    max_orders_per_minute: PosInt = 30
    max_open_orders: PosInt = 4
    max_rejections: PosInt = 5  # consecutive exchange rejections -> halt
    price_band_bps: PosFloat = 50.0
    stale_after: Duration = 5.0
    flatten_on_halt: bool = True
    daily_loss_resume: Literal["manual", "next_day"] = "next_day"


class PaperSettings(_Section):
    taker_fee_bps: NonNegFloat = 10.0
    maker_fee_bps: NonNegFloat = 2.0
    latency_ms: NonNegFloat = 50.0
    balances: dict[str, NonNegDecimal] = Field(default_factory=lambda: {"USDT": Decimal(10000), "BTC": Decimal(0)})


class ExecutionSettings(_Section):
    cancel_unknown: bool = False  # cancel open orders on the exchange that this bot did not place
    # Client order ids are <prefix>-<run>-<seq>; an order is this bot's if its id has this prefix
    # (or it is in the bot's orders table). "" = derived from account, symbol and mode.
    client_id_prefix: str = ""

    @field_validator("client_id_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9]{1,8}", v):
            raise ValueError(f"must be 1-8 letters or digits, or empty to derive it (got {v!r})")
        return v
    reconcile_interval: Duration = 30.0
    max_retries: PosInt = 5
    cancel_on_stop: bool = True


class MetricsSettings(_Section):
    port: int = 0  # 0 = off; status + Prometheus on 127.0.0.1:port

    @field_validator("port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise ValueError(f"must be 0 (off) or a TCP port 1..65535 (got {v})")
        return v


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
    out = [env[k] for k in (ENV_API_KEY, ENV_API_SECRET) if env.get(k)]
    if settings is not None:
        for s in (settings.exchange.api_key, settings.exchange.api_secret):
            if s is not None:
                out.append(s.get_secret_value())
    return sorted({s for s in out if len(s) >= 4}, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Replace every known secret in ``text`` with ``***``."""
    for s in secrets if secrets is not None else secret_values():
        text = text.replace(s, "***")
    return text
