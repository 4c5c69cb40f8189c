"""The cost model of a round trip, and the cost gate that enters only when the move pays for it.

Why: a signal that is right more often than not can still lose money if the move it predicts
is smaller than what a position costs to open AND to close. One model, used by the gate, by
``bot analyze`` (the signal edge's break-even) and by the report, prices a round trip in bps of
the mid (:func:`round_trip_cost`):

* entry leg: crossing the spread (``aggressive``) pays the half-spread and the taker fee; a
  passive entry (joining the touch) earns the half-spread, pays the maker fee, and pays the
  adverse selection of passive fills: how far the mid moved against our passive fills after
  them (measured from their markouts, ``observe_passive_fill``; 0 until measured);
* exit leg: exits always cross (``bot.strategy``: getting out is never passive), so the
  half-spread (the one at the decision; the exit's is not known yet) and the taker fee;
* latency: not a separate term. The expected move is calibrated on the mid move from
  *signal + latency* to the horizon (``bot.engine``), so the part of the move that happens
  before our order can arrive is never counted as ours;
* ``min_edge_bps``: the operator's margin on top.

The gate compares ``expected_move_bps(strength) > round_trip_cost``; every refusal increments
``skipped_for_cost`` and returns a reason with the numbers, for the signal row and the log.

Expected move. A prior ``f(|strength|)`` in bps, times a calibrated factor ``c``:

    expected_move_bps(s) = c * f(|s|)

* ``f`` is ``mapping`` when given: a callable, or ``(strength, bps)`` points interpolated
  linearly (flat beyond the ends); the default is the linear prior ``f(s) = DEFAULT_SLOPE_BPS * s``.
  ``DEFAULT_SLOPE_BPS`` is conservative: 0.1 bps per unit of z, below what the detector's
  entries showed on the real BTC/USDT and ETH/USDT recordings at 10 s (docs/signals.md,
  "Signal edge"), which are few (3-4 entries each) and too noisy to trust as they stand.
* With ``calibrate=True``, :meth:`observe` feeds realised moves (the signed mid move after a
  signal, or a fill's markout, in bps) into a rolling window of the last ``window``
  observations, and ``c`` is the ridge estimate shrunk toward 1 (the prior):

      c = (Σ f_i·m_i + λ) / (Σ f_i² + λ),   λ = prior_weight · f(entry strength)²

  i.e. the prior counts as ``prior_weight`` observations at a typical entry strength. With no
  data ``c = 1``; with many, ``c`` is the least-squares fit of the realised moves on the prior.
  If the signals stop paying, ``c`` falls (it may go negative) and the gate closes. Feed it the
  moves after every entry SIGNAL, not only after fills, so it keeps learning while it refuses.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_SLOPE_BPS = 0.1  # bps of expected mid move per unit of |combined z| (conservative prior)
Mapping = Callable[[float], float] | Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class RoundTripCost:
    """What a round trip (entry and exit) costs, in bps of the mid, leg by leg."""

    entry_spread_bps: float  # + half-spread paid crossing, - half-spread earned joining
    entry_fee_bps: float
    adverse_bps: float  # passive entries only: the mid's move against passive fills
    exit_spread_bps: float
    exit_fee_bps: float
    min_edge_bps: float = 0.0

    @property
    def total_bps(self) -> float:
        return (self.entry_spread_bps + self.entry_fee_bps + self.adverse_bps + self.exit_spread_bps
                + self.exit_fee_bps + self.min_edge_bps)

    @property
    def spread_bps(self) -> float:
        """The part that is not fees: spreads and adverse selection (what a zero-fee run still pays)."""
        return self.entry_spread_bps + self.adverse_bps + self.exit_spread_bps

    def text(self) -> str:
        return (f"entry spread {self.entry_spread_bps:+.3f} + entry fee {self.entry_fee_bps:.3f}"
                f" + adverse {self.adverse_bps:.3f} + exit spread {self.exit_spread_bps:+.3f}"
                f" + exit fee {self.exit_fee_bps:.3f} + min_edge {self.min_edge_bps:.3f}")


def round_trip_cost(*, half_spread_bps: float, entry_aggressive: bool, taker_fee_bps: float, maker_fee_bps: float,
                    exit_aggressive: bool = True, passive_adverse_bps: float = 0.0,
                    min_edge_bps: float = 0.0) -> RoundTripCost:
    """The one cost model (module docstring): both legs, each priced by its liquidity."""
    hs = float(half_spread_bps)
    return RoundTripCost(
        entry_spread_bps=hs if entry_aggressive else -hs,
        entry_fee_bps=taker_fee_bps if entry_aggressive else maker_fee_bps,
        adverse_bps=0.0 if entry_aggressive else max(0.0, passive_adverse_bps),
        exit_spread_bps=hs if exit_aggressive else -hs,
        exit_fee_bps=taker_fee_bps if exit_aggressive else maker_fee_bps,
        min_edge_bps=min_edge_bps,
    )


class CostGate:
    """Decides whether an entry's expected move covers its costs; see the module docstring."""

    def __init__(
        self,
        *,
        taker_fee_bps: float,
        maker_fee_bps: float,
        min_edge_bps: float,
        mapping: Mapping | None = None,
        calibrate: bool = True,
        window: int = 500,
        prior_weight: float = 20.0,
        typical_strength: float = 2.0,
    ) -> None:
        for name, v in (("taker_fee_bps", taker_fee_bps), ("maker_fee_bps", maker_fee_bps),
                        ("min_edge_bps", min_edge_bps)):
            if not math.isfinite(v):
                raise ValueError(f"{name}: must be a finite number (got {v!r})")
        self.taker_fee_bps = float(taker_fee_bps)
        self.maker_fee_bps = float(maker_fee_bps)
        self.min_edge_bps = float(min_edge_bps)
        self.calibrate = calibrate
        self._prior = self._make_prior(mapping)
        self._obs: deque[tuple[float, float]] = deque(maxlen=window)  # (f(|s|), realised bps)
        self._sfm = 0.0
        self._sff = 0.0
        self._lambda = prior_weight * self._prior(abs(typical_strength)) ** 2
        self.skipped_for_cost = 0
        self.allowed = 0
        self._passive: deque[float] = deque(maxlen=window)  # mid move in our favour after passive fills

    @staticmethod
    def _make_prior(mapping: Mapping | None) -> Callable[[float], float]:
        if mapping is None:
            return lambda s: DEFAULT_SLOPE_BPS * s
        if callable(mapping):
            return mapping
        pts = sorted((float(s), float(b)) for s, b in mapping)
        if not pts:
            raise ValueError("mapping: give at least one (strength, bps) point")
        xs = np.array([p[0] for p in pts])
        ys = np.array([p[1] for p in pts])
        return lambda s: float(np.interp(s, xs, ys))

    # ------------------------------------------------------------------ calibration

    @property
    def factor(self) -> float:
        """The calibrated factor ``c`` on the prior (1.0 without data or calibration)."""
        if not self.calibrate or not self._obs:
            return 1.0
        den = self._sff + self._lambda
        return (self._sfm + self._lambda) / den if den > 0 else 1.0

    @property
    def observations(self) -> int:
        return len(self._obs)

    def observe(self, strength: float, realised_move_bps: float) -> None:
        """A realised move (signed in the signal's direction, bps) after a signal of ``strength``."""
        if not self.calibrate or not (math.isfinite(strength) and math.isfinite(realised_move_bps)):
            return
        f = self._prior(abs(strength))
        if len(self._obs) == self._obs.maxlen:
            of, om = self._obs[0]
            self._sfm -= of * om
            self._sff -= of * of
        self._obs.append((f, realised_move_bps))
        if len(self._obs) % 1000 == 0:  # re-sum now and then: no drift from the running add/subtract
            self._sfm = sum(a * b for a, b in self._obs)
            self._sff = sum(a * a for a, _ in self._obs)
        else:
            self._sfm += f * realised_move_bps
            self._sff += f * f

    # ------------------------------------------------------------------ decisions

    def expected_move_bps(self, strength: float) -> float:
        """Expected mid move in the signal's direction, bps, for a signal of ``strength``."""
        return self.factor * self._prior(abs(strength))

    def observe_passive_fill(self, mid_move_bps: float) -> None:
        """The mid's move in the fill's direction, from a passive (maker) fill to the horizon, bps."""
        if math.isfinite(mid_move_bps):
            self._passive.append(mid_move_bps)

    @property
    def passive_adverse_bps(self) -> float:
        """How far the mid moved against passive fills on average (>= 0; 0 until measured)."""
        return max(0.0, -sum(self._passive) / len(self._passive)) if self._passive else 0.0

    def round_trip(self, half_spread_bps: float, aggressive: bool) -> RoundTripCost:
        return round_trip_cost(half_spread_bps=half_spread_bps, entry_aggressive=aggressive,
                               taker_fee_bps=self.taker_fee_bps, maker_fee_bps=self.maker_fee_bps,
                               passive_adverse_bps=self.passive_adverse_bps, min_edge_bps=self.min_edge_bps)

    def cost_bps(self, half_spread_bps: float, aggressive: bool) -> float:
        return self.round_trip(half_spread_bps, aggressive).total_bps

    def allow(self, strength: float, half_spread_bps: float, aggressive: bool) -> tuple[bool, str]:
        """(enter?, reason with the numbers). A refusal counts in ``skipped_for_cost``."""
        exp = self.expected_move_bps(strength)
        cost = self.round_trip(half_spread_bps, aggressive)
        need = cost.total_bps
        ok = math.isfinite(exp) and math.isfinite(need) and exp > need
        rel = ">" if ok else "<="
        reason = (
            f"expected move {exp:.3f} bps at strength {strength:.2f} {rel} round-trip cost {need:.3f} bps "
            f"({cost.text()})"
        )
        if ok:
            self.allowed += 1
        else:
            self.skipped_for_cost += 1
        return ok, reason
