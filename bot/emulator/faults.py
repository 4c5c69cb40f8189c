"""Fault injection for the emulator: the SPEC grammar, its parser and the live fault state.

Why: the bot's failure rules (resync on a gap, retry with the same client id, honour
Retry-After, halt on 418, look an order up before re-placing it) can only be trusted if
they are exercised against an exchange that misbehaves on purpose, repeatably, from a test.

SPEC grammar (``--faults SPEC`` at start, ``POST /_emulator/faults`` with the SPEC as the
body at run time; a POST *replaces* the whole fault set, an empty SPEC clears it)::

    SPEC   := "" | item ("," item)*
    item   := key "=" value
    value  := COUNT | PROB | DURATION
    COUNT  := integer >= 1          the next COUNT occurrences are hit (then the fault is spent)
    PROB   := decimal in (0, 1)     each occurrence is hit with this probability (seeded RNG)
    DURATION := number ["ms" | "s" | "m"]   a bare number is seconds

Keys (``COUNT|PROB`` = either form):

==========================  ==========  =====================================================
key                         value       effect
==========================  ==========  =====================================================
``ws_drop``                 COUNT       close every websocket connection now (COUNT ignored)
``ws_drop_every``           DURATION    close every websocket connection every DURATION
``ws_delay``                DURATION    hold every market-stream message this long
``ws_freeze``               DURATION    send nothing on market streams for DURATION, then
                                        deliver what was held (stale stream)
``ws_gap``                  COUNT       withhold the next COUNT depth diffs of every symbol
                                        (the client sees ``U != previous u + 1``)
``ws_malformed``            COUNT|PROB  replace market-stream messages by invalid JSON
``ws_malformed_depth``      COUNT|PROB  the same for depth diffs only (trades pass intact)
``rest_429``                COUNT|PROB  answer 429 with ``Retry-After`` (also on ws-api
                                        requests: status 429, code -1003)
``retry_after``             DURATION    the Retry-After value (default 1 s, whole seconds)
``rest_418``                COUNT|PROB  answer 418 (IP ban) with ``Retry-After``
``rest_5xx``                COUNT|PROB  answer 500, 502 or 503 in turn
``rest_500|502|503|504``    COUNT|PROB  answer that status
``rest_timeout``            COUNT|PROB  hold the request without answering (the client times out)
``accept_then_timeout``     COUNT|PROB  order placement: the order is accepted and executed,
                                        the answer is never sent (alias ``accept_timeout``)
``cancel_accept_then_timeout`` COUNT|PROB  the same for cancels (alias ``cancel_timeout``)
``reject_orders``           COUNT|PROB  reject new orders with -2010 "New order rejected."
``reject_insufficient``     COUNT|PROB  reject new orders with -2010 "Account has insufficient
                                        balance for requested action." (ccxt:
                                        ``InsufficientFunds``)
``reject_notional``         COUNT|PROB  reject new orders with -1013 "Filter failure: NOTIONAL"
                                        (ccxt: ``BadRequest``)
``partial_fill``            COUNT|PROB  a new limit order that rests with at least two lot
                                        steps left gets half of it (rounded down to the lot
                                        step) filled at once at its own price, as a maker
                                        (printed on the tape); it stays PARTIALLY_FILLED
``clock_skew``              DURATION    server time offset, may be negative (``-1500ms``);
                                        moves ``/api/v3/time``, event times and the
                                        recvWindow check
``seed``                    integer     seed of the fault RNG (default 7)
==========================  ==========  =====================================================

REST faults hit the exchange API (``/api``), never the admin API (``/_emulator``).

Hits: every time a fault actually changes what the emulator does (a request answered with
a fault status, a diff withheld, a message held or broken, a connection dropped, an order
rejected or partially filled, a signed request refused with -1021 because of
``clock_skew``) the fault's key is counted in ``Faults.hits``. The counts are cumulative since
the emulator started: a new SPEC replaces the faults but keeps the counts, so a test can
switch a fault off and then check it fired (``GET /_emulator/faults`` -> ``"hits"``).
Example: ``ws_drop_every=5s,rest_5xx=0.1,accept_then_timeout=1``.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field

COUNTED = (
    "ws_gap",
    "ws_malformed",
    "ws_malformed_depth",
    "rest_429",
    "rest_418",
    "rest_5xx",
    "rest_500",
    "rest_502",
    "rest_503",
    "rest_504",
    "rest_timeout",
    "accept_then_timeout",
    "cancel_accept_then_timeout",
    "reject_orders",
    "reject_insufficient",
    "reject_notional",
    "partial_fill",
)
DURATIONS = ("ws_drop_every", "ws_delay", "ws_freeze", "retry_after", "clock_skew")
ALIASES = {"accept_timeout": "accept_then_timeout", "cancel_timeout": "cancel_accept_then_timeout"}
ONE_SHOT = ("ws_drop",)

_DURATION = re.compile(r"^([+-]?\d+(?:\.\d+)?)(ms|s|m)?$")


class FaultSpecError(ValueError):
    """A SPEC that does not parse; the message names the item."""


def parse_duration(text: str) -> float:
    """``"5s"``/``"5"`` -> 5.0, ``"200ms"`` -> 0.2, ``"1m"`` -> 60.0 (seconds, may be negative)."""
    m = _DURATION.match(text.strip())
    if not m:
        raise FaultSpecError(f"not a duration: {text!r} (use e.g. 5s, 200ms, 1m)")
    value = float(m.group(1))
    unit = m.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


@dataclass
class Rate:
    """A counted or probabilistic fault: ``count`` next hits, or probability ``prob``."""

    count: int = 0
    prob: float = 0.0

    @classmethod
    def parse(cls, key: str, text: str) -> Rate:
        try:
            v = float(text)
        except ValueError:
            raise FaultSpecError(f"{key}: not a number: {text!r}") from None
        if v <= 0:
            return cls()
        if v < 1:
            return cls(prob=v)
        if v != int(v):
            raise FaultSpecError(f"{key}: a count must be a whole number, a probability below 1: {text!r}")
        return cls(count=int(v))

    @property
    def active(self) -> bool:
        return self.count > 0 or self.prob > 0


@dataclass
class Faults:
    """The parsed fault set; ``hit(key)`` consumes one counted occurrence and counts the hit."""

    rates: dict[str, Rate] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    drop_now: bool = False
    seed: int = 7
    spec: str = ""
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    hits: Counter[str] = field(default_factory=Counter)  # key -> times the fault fired
    _rr: int = 0  # round robin over 500/502/503

    @classmethod
    def parse(cls, spec: str) -> Faults:
        f = cls(spec=spec.strip())
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            if "=" not in item:
                raise FaultSpecError(f"fault item {item!r} is not key=value")
            key, _, value = (s.strip() for s in item.partition("="))
            key = ALIASES.get(key, key)
            if key in COUNTED:
                f.rates[key] = Rate.parse(key, value)
            elif key in DURATIONS:
                f.durations[key] = parse_duration(value)
            elif key in ONE_SHOT:
                f.drop_now = Rate.parse(key, value).active
            elif key == "seed":
                try:
                    f.seed = int(value)
                except ValueError:
                    raise FaultSpecError(f"seed: not an integer: {value!r}") from None
            else:
                known = ", ".join(sorted((*COUNTED, *DURATIONS, *ONE_SHOT, *ALIASES, "seed")))
                raise FaultSpecError(f"unknown fault {key!r} (known: {known})")
        f.rng = random.Random(f.seed)
        return f

    def hit(self, key: str) -> bool:
        """True when this occurrence of ``key`` is to fail (a counted fault is spent by it)."""
        r = self.rates.get(key)
        if r is None:
            return False
        if r.count > 0:
            r.count -= 1
            self.hits[key] += 1
            return True
        if r.prob > 0 and self.rng.random() < r.prob:
            self.hits[key] += 1
            return True
        return False

    def record(self, key: str, n: int = 1) -> None:
        """Count ``n`` hits of a fault that is not drawn with :meth:`hit` (durations, ws_gap)."""
        self.hits[key] += n

    def carry_hits(self, previous: Faults) -> Faults:
        """Keep ``previous``'s hit counts (a POST replaces the faults, not the history)."""
        self.hits = previous.hits
        return self

    def duration(self, key: str, default: float = 0.0) -> float:
        return self.durations.get(key, default)

    def rest_status(self) -> int | None:
        """The HTTP status a REST request is to be answered with instead, if any."""
        if self.hit("rest_418"):
            return 418
        if self.hit("rest_429"):
            return 429
        for code in (500, 502, 503, 504):
            if self.hit(f"rest_{code}"):
                return code
        if self.hit("rest_5xx"):
            self._rr += 1
            return (500, 502, 503)[self._rr % 3]
        return None

    def describe(self) -> dict[str, object]:
        """JSON-able view for the admin API."""
        return {
            "spec": self.spec,
            "rates": {k: {"count": r.count, "prob": r.prob} for k, r in self.rates.items() if r.active},
            "durations": dict(self.durations),
            "hits": dict(sorted(self.hits.items())),
        }
