"""Passive quoting at the touch on the side that depth imbalance favours; cancel when it flips.

Depth imbalance over the first ``depth_levels`` levels of the book (instrument 0)::

    I = (B - A) / (B + A),   B, A = bid / ask size summed over the first depth_levels levels

predicts the direction of the next mid move (a heavy bid side precedes up-moves).  A
resting bid is filled when sellers come down to it; when I is high that fill is
followed by a rising price more often than not, so the strategy joins the best bid
only when ``I > entry_imbalance`` and the best ask only when ``I < -entry_imbalance``,
with post-only orders of ``order_lots``.  An order is cancelled when the imbalance
flips past ``exit_imbalance`` (bid: ``I < exit_imbalance``; ask: ``I > -exit_imbalance``)
or the position limit is reached (no bid while ``position >= max_position_lots``, no
ask while ``position <= -max_position_lots``), and moved (``A_MODIFY``) to the new touch
when the best price on its side has moved away from it.  A side is left alone while a
cancel of ours on it is unconfirmed.

References
----------
Á. Cartea, R. Donnelly and S. Jaimungal, "Enhancing trading strategies with order book
signals", Applied Mathematical Finance 25(1), 2018 (volume imbalance as a predictor of
the next mid move and of adverse selection of limit orders); see also
:func:`gpuflow.features.book.depth_imbalance`.
"""
from __future__ import annotations

import numpy as np

from gpuflow.backtest.strategies._common import (
    add_action,
    book_ok,
    count_cancelling,
    depth_of,
    find_order,
    imbalance_of,
    is_live,
)
from gpuflow.kernels.backtest import A_CANCEL, A_MODIFY, O_PRICE, T_POST

__all__ = ["CORES", "NAME", "PARAMS", "STATE_SIZE", "step"]

NAME = "liquidity_provision"
PARAMS = {
    "depth_levels": (3.0, (1.0, 1000.0)),
    "entry_imbalance": (0.3, (0.0, 1.0)),
    "exit_imbalance": (0.0, (-1.0, 1.0)),
    "order_lots": (1.0, (1.0, 1e12)),
    "max_position_lots": (5.0, (0.0, 1e15)),
}
_DEPTH, _ENTRY, _EXIT, _LOTS, _MAXP = range(5)
STATE_SIZE = 1


def _quote(acts, n, orders, side, touch, want, keep, lots):  # pragma: no cover - jitted
    """Our one post-only order on ``side``: place it at ``touch`` (want), keep or re-peg it (keep), cancel."""
    if count_cancelling(orders, 0, side) > 0:
        return n  # wait for the cancel's report
    k = find_order(orders, 0, side)
    if k >= 0:
        if not keep:
            return add_action(acts, n, A_CANCEL, 0, 0, 0, 0, k)
        if orders[k, O_PRICE] != touch:
            return add_action(acts, n, A_MODIFY, 0, side, touch, lots, k)
        return n
    if want:
        return add_action(acts, n, T_POST, 0, side, touch, lots, 0)
    return n


CORES = (add_action, book_ok, count_cancelling, depth_of, find_order, imbalance_of, is_live, _quote)


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    r = cur[0]
    if not book_ok(bp, bq, ap, aq, r):
        return 0
    imb = imbalance_of(bq, aq, r, np.int64(params[_DEPTH]), nlev)
    pos = seen[0]
    maxp = np.int64(params[_MAXP])
    lots = np.int64(params[_LOTS])
    ent = params[_ENTRY]
    ex = params[_EXIT]
    n = _quote(acts, 0, orders, 1, bp[r, 0], imb > ent and pos < maxp, imb >= ex and pos < maxp, lots)
    n = _quote(acts, n, orders, -1, ap[r, 0], imb < -ent and pos > -maxp, imb <= -ex and pos > -maxp, lots)
    return n
