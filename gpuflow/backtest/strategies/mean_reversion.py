"""Mean reversion of the microprice (or mid) against its EWMA mean, on a z-score.

At every decision with a two-sided book (instrument 0), ``x`` is the microprice
``(Pb Qa + Pa Qb) / (Qb + Qa)`` (``use_micro = 1``) or the mid (ticks), and::

    z = (x - m) / sqrt(v)                 m, v: EWMA mean / variance before this sample
    m <- m + (x - m) / N,   v <- v + ((x - m_prev)^2 - v) / N      N = window

(:func:`gpuflow.backtest.strategies._common.zscore_update`; the square is taken in fixed
point at 1/1024 tick so that both engines agree to the bit).  After ``warmup`` samples
the target position is::

    z >  entry_z          -> -max_position_lots     (price rich: sell)
    z < -entry_z          -> +max_position_lots     (price cheap: buy)
    |z| < exit_z          -> 0                      (reverted: flatten)
    otherwise             -> unchanged

and the strategy sends one taker order of ``min(order_lots, |target - position|)``
toward it: an IOC limited ``aggress_ticks`` through the touch, or a market order
(``market_orders = 1``).  It sends nothing while one of its orders is live (until the
order's final report has reached it, so its fills are in the position it sees).

References
----------
A classic statistical mean-reversion rule on an exponentially weighted z-score (e.g.
E. Chan, "Algorithmic Trading: Winning Strategies and Their Rationale", Wiley 2013,
ch. 2-3); microprice: S. Stoikov, "The micro-price", Quantitative Finance 18(12), 2018.
"""
from __future__ import annotations

import math

import numpy as np

from gpuflow.backtest.strategies._common import (
    add_action,
    add_taker,
    book_ok,
    count_live,
    is_live,
    micro_of,
    zscore_update,
)

__all__ = ["CORES", "NAME", "PARAMS", "STATE_SIZE", "step"]

NAME = "mean_reversion"
PARAMS = {
    "window": (200.0, (1.0, 1e12)),
    "entry_z": (2.0, (0.0, 1e6)),
    "exit_z": (0.5, (0.0, 1e6)),
    "warmup": (50.0, (0.0, 1e15)),
    "order_lots": (1.0, (1.0, 1e12)),
    "max_position_lots": (1.0, (0.0, 1e15)),
    "use_micro": (1.0, (0.0, 1.0)),
    "market_orders": (0.0, (0.0, 1.0)),
    "aggress_ticks": (0.0, (0.0, 1e9)),
}
_WIN, _ENTRY, _EXIT, _WARM, _LOTS, _MAXP, _MICRO, _MKT, _AGG = range(9)
_S_Z = 0  # mean, variance, samples
STATE_SIZE = 3
CORES = (add_action, add_taker, book_ok, count_live, is_live, micro_of, zscore_update)


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    r = cur[0]
    if not book_ok(bp, bq, ap, aq, r):
        return 0
    if params[_MICRO] != 0.0:
        x = micro_of(bp, bq, ap, aq, r)
    else:
        x = (bp[r, 0] + ap[r, 0]) / 2.0
    z = zscore_update(state, _S_Z, x, params[_WIN])
    if state[_S_Z + 2] <= params[_WARM]:
        return 0
    if math.isnan(z):
        return -1
    pos = seen[0]
    if count_live(orders, 0) > 0:
        return 0
    maxp = np.int64(params[_MAXP])
    if z > params[_ENTRY]:
        target = -maxp
    elif z < -params[_ENTRY]:
        target = maxp
    elif -params[_EXIT] < z < params[_EXIT]:
        target = np.int64(0)
    else:
        return 0
    diff = target - pos
    if diff == 0:
        return 0
    side = 1 if diff > 0 else -1
    qty = diff if diff > 0 else -diff
    lots = np.int64(params[_LOTS])
    qty = min(qty, lots)
    return add_taker(acts, 0, 0, side, qty, params[_MKT], np.int64(params[_AGG]), bp, ap, r)
