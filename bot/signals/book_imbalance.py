"""Book (queue) imbalance and the microprice.

Why: the size resting at the touch predicts the direction of the next price move (Cartea,
Jaimungal & Penalva 2015; Gould & Bonart 2016 "Queue imbalance as a one-tick-ahead price
predictor"): a thin ask queue is eaten first. Deeper levels add information (the depth
imbalance over the top N levels). The microprice (Stoikov 2018) turns the touch imbalance
into a fair-price estimate between bid and ask.

    I1 = (qb − qa) / (qb + qa)                                   level-1 queue imbalance
    IN = (Σ_{m≤N} qb_m − Σ_{m≤N} qa_m) / (Σ qb_m + Σ qa_m)       depth imbalance, top N levels
    microprice = Pa · qb/(qb+qa) + Pb · qa/(qb+qa)                Stoikov's imbalance-weighted mid

All three are in [-1, 1] (imbalances) or inside [Pb, Pa] (microprice); an empty side gives 0
(no information) rather than an error, because a transiently empty side is a book state the
health check, not the signal, has to deal with.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def queue_imbalance(bid_size: float, ask_size: float) -> float:
    """(qb − qa)/(qb + qa) at the touch; 0 when both are empty."""
    tot = bid_size + ask_size
    return (bid_size - ask_size) / tot if tot > 0.0 else 0.0


def depth_imbalance(bids: list[tuple[float, float]], asks: list[tuple[float, float]], levels: int) -> float:
    """Imbalance of the summed sizes of the best ``levels`` levels of each side."""
    b = 0.0
    for _, q in bids[:levels]:
        b += q
    a = 0.0
    for _, q in asks[:levels]:
        a += q
    return queue_imbalance(b, a)


def microprice(bid: float, bid_size: float, ask: float, ask_size: float) -> float:
    """Stoikov's imbalance-weighted microprice: leans toward the side with the thinner queue."""
    tot = bid_size + ask_size
    if tot <= 0.0:
        return (bid + ask) / 2.0
    w = bid_size / tot
    return ask * w + bid * (1.0 - w)


def microprice_array(bid: FloatArray, bid_size: FloatArray, ask: FloatArray, ask_size: FloatArray) -> FloatArray:
    """Vectorised :func:`microprice`."""
    tot = bid_size + ask_size
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(tot > 0, bid_size / np.where(tot > 0, tot, 1.0), 0.5)
    return ask * w + bid * (1.0 - w)


def queue_imbalance_array(bid_size: FloatArray, ask_size: FloatArray) -> FloatArray:
    """Vectorised :func:`queue_imbalance`."""
    tot = bid_size + ask_size
    safe = np.where(tot > 0, tot, 1.0)
    return np.where(tot > 0, (bid_size - ask_size) / safe, 0.0)
