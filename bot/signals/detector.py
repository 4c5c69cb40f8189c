"""The imbalance detector: combined score -> entry/exit ``ImbalanceSignal`` with persistence and hysteresis.

Why persistence and hysteresis: a single threshold crossing is mostly noise (one big market
order). Requiring ``persistence`` consecutive evaluation steps beyond ``entry_z`` filters
one-off spikes, and leaving only when the score falls under ``exit_z`` (< ``entry_z``) keeps the
detector from flapping around the threshold and churning orders (and fees).

The detector does not compute signals: it pulls the latest component scores from a
``source(ts)`` callable (the ``SignalEngine``), which returns a mapping with at least
``"combined"`` when a new evaluation step has closed, and ``None`` otherwise. That keeps the
decision logic testable on hand-written sequences.

Every entry/exit is returned AND handed to ``sink``; a sampled row (kind ``"sample"``) goes to
``sink`` every ``sample_interval`` of event time, so the store's ``signals`` table shows what
the bot saw between decisions too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bot.config import Settings
from bot.model import Direction, ImbalanceSignal

Source = Callable[[int], Mapping[str, float] | None]
Sink = Callable[[ImbalanceSignal], None]


class Detector:
    """Threshold + persistence + hysteresis on the ``combined`` score (signed like the flow; see normalize)."""

    def __init__(
        self,
        source: Source,
        *,
        entry_z: float = 2.0,
        exit_z: float = 0.5,
        persistence: int = 3,
        sample_interval_ms: int = 1000,
        sink: Sink | None = None,
    ) -> None:
        if not 0.0 <= exit_z < entry_z:
            raise ValueError(f"need 0 <= exit_z < entry_z (got exit_z={exit_z}, entry_z={entry_z})")
        if persistence < 1:
            raise ValueError("persistence must be >= 1")
        self.source = source
        self.entry_z = entry_z
        self.exit_z = exit_z
        self.persistence = persistence
        self.sample_interval_ms = sample_interval_ms
        self.sink = sink
        self.state = Direction.FLAT
        self.streak = 0  # consecutive steps beyond entry_z in the direction of ``_streak_dir``
        self._streak_dir = Direction.FLAT
        self.last: dict[str, float] = {}
        self._next_sample = -1
        self.entries = 0
        self.exits = 0

    @classmethod
    def from_settings(cls, settings: Settings, source: Source, sink: Sink | None = None) -> Detector:
        st = settings.strategy
        return cls(
            source,
            entry_z=st.entry_z,
            exit_z=st.exit_z,
            persistence=st.persistence,
            sample_interval_ms=round(settings.signals.sample_interval * 1000),
            sink=sink,
        )

    def update(self, ts: int) -> ImbalanceSignal | None:
        """Evaluate at event time ``ts``: an entry or exit signal, or None."""
        comps = self.source(ts)
        if comps is None and ts < self._next_sample:
            return None  # the per-event fast path: no new step, no sample due
        out: ImbalanceSignal | None = None
        if comps is not None:
            self.last = dict(comps)
            out = self._decide(ts, comps["combined"])
            if out is not None and self.sink is not None:
                self.sink(out)
        if ts >= self._next_sample:
            self._next_sample = ts - ts % self.sample_interval_ms + self.sample_interval_ms
            if self.sink is None or not self.last:
                return out
            self.sink(
                ImbalanceSignal(
                    ts=ts,
                    direction=self.state,
                    strength=self.last["combined"],
                    components=dict(self.last),
                    kind="sample",
                )
            )
        return out

    def _decide(self, ts: int, z: float) -> ImbalanceSignal | None:
        if self.state is Direction.FLAT:
            d = Direction.LONG if z >= self.entry_z else Direction.SHORT if z <= -self.entry_z else Direction.FLAT
            if d is Direction.FLAT:
                self.streak = 0
                self._streak_dir = d
                return None
            self.streak = self.streak + 1 if d is self._streak_dir else 1
            self._streak_dir = d
            if self.streak < self.persistence:
                return None
            self.state = d
            self.streak = 0
            self.entries += 1
            return ImbalanceSignal(ts=ts, direction=d, strength=z, components=dict(self.last), kind="entry")
        # in a position: leave when the score falls back under exit_z (on our side)
        if z * int(self.state) < self.exit_z:
            self.state = Direction.FLAT
            self.streak = 0
            self._streak_dir = Direction.FLAT
            self.exits += 1
            return ImbalanceSignal(ts=ts, direction=Direction.FLAT, strength=z, components=dict(self.last), kind="exit")
        return None
