"""Trade-flow signals: trade-flow imbalance (TFI), volume buckets, CVD, intensity, absorption.

Why the tape as well as the book: OFI sees what is added to and removed from the queues, the
tape sees who crossed the spread. Aggressive (market-order) volume is the impatient side;
its imbalance over a window (TFI, Cont, Kukanov & Stoikov 2014 §5; Silantyev 2019 finds TFI
explains crypto price changes better than OFI) is the second pillar of the detector.

    TFI_window     = Σ buy-aggressor volume − Σ sell-aggressor volume, over a time window
    TFI_bucket     = (buy − sell) / V over the last completed bucket of V traded units
                     (volume clock, Easley, López de Prado & O'Hara 2012): imbalance measured
                     per unit of activity, not per second
    CVD            = Σ over the whole session of signed aggressor volume (running, never reset)
    intensity      = trades per second over the window (Hawkes-style activity measure)
    absorption     = heavy aggression in one direction while the mid does not move with it:
                     the passive side absorbs it (an iceberg, a large resting player)

The time-window sums live in the engine's slot accumulators (see ``normalize``); this module
holds the pieces that are not simple window sums.
"""

from __future__ import annotations

import math


class VolumeBuckets:
    """Trade-flow imbalance per bucket of ``bucket_volume`` traded units (a volume clock).

    A trade that overflows the open bucket is split: the part that fills it closes the bucket
    and the rest opens the next one, so every bucket holds exactly ``bucket_volume`` units.
    ``last`` is the imbalance (buy − sell)/V of the last completed bucket, in [-1, 1].
    """

    __slots__ = ("_buy", "_sell", "bucket_volume", "completed", "last")

    def __init__(self, bucket_volume: float) -> None:
        if bucket_volume <= 0:
            raise ValueError("bucket_volume must be > 0")
        self.bucket_volume = bucket_volume
        self._buy = 0.0
        self._sell = 0.0
        self.last = 0.0
        self.completed = 0

    def add(self, amount: float, is_buy: bool) -> None:
        v = self.bucket_volume
        room = v - self._buy - self._sell
        if amount > room + 2 * v:
            # A trade many buckets long (a big print on a quiet market's small bucket): close the open
            # bucket, then the whole buckets in one step (each all one side), not one loop turn each.
            self.add(room, is_buy)
            amount -= room
            whole = int(amount // v)
            amount -= whole * v
            if amount >= v * (1.0 - 1e-9):  # float residue of an exact multiple
                whole, amount = whole + 1, 0.0
            elif amount <= v * 1e-9:
                amount = 0.0
            if whole > 0:
                self.completed += whole
                self.last = 1.0 if is_buy else -1.0
        while amount > 0.0:
            room = v - self._buy - self._sell
            take = amount if amount < room else room
            if is_buy:
                self._buy += take
            else:
                self._sell += take
            amount -= take
            if self._buy + self._sell >= v * (1.0 - 1e-12):
                self.last = (self._buy - self._sell) / v
                self.completed += 1
                self._buy = 0.0
                self._sell = 0.0

    @property
    def open_imbalance(self) -> float:
        """Imbalance of the open (incomplete) bucket, relative to its volume so far."""
        tot = self._buy + self._sell
        return (self._buy - self._sell) / tot if tot > 0 else 0.0


def absorption_score(tfi_z: float, move_ticks: float, min_move_ticks: float = 1.0) -> float:
    """Absorption of the window: the flow z-score when the mid did not follow the flow, else 0.

    ``move_ticks`` is the mid change over the same window in ticks. Aggressive buying (tfi_z > 0)
    that moved the mid up by less than ``min_move_ticks`` was absorbed by resting sellers; the
    score is then ``tfi_z`` (positive = buying absorbed, a bearish sign; negative = selling
    absorbed, bullish). Scaled by how little the price moved: no move gives the full z, a move of
    ``min_move_ticks`` or more in the flow's direction gives 0.
    """
    if tfi_z == 0.0 or math.isnan(move_ticks):
        return 0.0
    along = move_ticks if tfi_z > 0 else -move_ticks  # price move in the flow's direction
    if along >= min_move_ticks:
        return 0.0
    frac = 1.0 if along <= 0.0 else 1.0 - along / min_move_ticks
    return tfi_z * frac
