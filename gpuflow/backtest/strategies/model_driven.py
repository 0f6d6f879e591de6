"""Trade on model predictions supplied as a signals column.

``sig[e, signal_col]`` is a prediction known at event e: a predicted mid move in ticks
(``center = 0``), or a probability of an up-move (``center = 0.5``).  With
``x = prediction - center``, the target position (instrument 0) is::

    |x| >  threshold:  sizing = 0 (fixed):        sign(x) * order_lots
                       sizing = 1 (proportional): trunc(x * lots_per_unit)
    |x| <= threshold:  0 if flat_inside = 1, else the current position (hold)

clipped to ``[-max_position_lots, max_position_lots]``.  When the target differs from the
position the strategy has been told of, it sends one taker order for the difference (IOC
``aggress_ticks`` through the touch, or a market order), not while one of its orders is
live (until its final report).  A NaN prediction is a counted invalid decision
(``N_NAN_ACTIONS``).

Predictions must be causal: made with data up to the event's ``ts_local`` (a label with a
horizon, e.g. from :mod:`gpuflow.research`, is a target, never a signal).
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
)

__all__ = ["CORES", "NAME", "PARAMS", "STATE_SIZE", "step"]

NAME = "model_driven"
PARAMS = {
    "signal_col": (0.0, (0.0, 1e6)),
    "center": (0.0, (-1e12, 1e12)),
    "threshold": (0.5, (0.0, 1e12)),
    "sizing": (0.0, (0.0, 1.0)),
    "order_lots": (1.0, (1.0, 1e12)),
    "lots_per_unit": (1.0, (0.0, 1e12)),
    "max_position_lots": (1.0, (0.0, 1e15)),
    "flat_inside": (0.0, (0.0, 1.0)),
    "market_orders": (0.0, (0.0, 1.0)),
    "aggress_ticks": (0.0, (0.0, 1e9)),
}
_COL, _CENTER, _THR, _SIZING, _LOTS, _LPU, _MAXP, _FLAT, _MKT, _AGG = range(10)
STATE_SIZE = 1
CORES = (add_action, add_taker, book_ok, count_live, is_live)


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    col = np.int64(params[_COL])
    if col >= sig.shape[1]:
        return -1
    x = sig[e, col] - params[_CENTER]
    if math.isnan(x):
        return -1
    r = cur[0]
    if not book_ok(bp, bq, ap, aq, r):
        return 0
    pos = seen[0]
    maxp = np.int64(params[_MAXP])
    thr = params[_THR]
    if x > thr or x < -thr:
        if params[_SIZING] != 0.0:
            y = x * params[_LPU]
            if y > 1e15:
                target = maxp
            elif y < -1e15:
                target = -maxp
            else:
                target = np.int64(y)
        else:
            target = np.int64(params[_LOTS]) if x > 0 else -np.int64(params[_LOTS])
    elif params[_FLAT] != 0.0:
        target = np.int64(0)
    else:
        target = pos
    target = min(target, maxp)
    target = max(target, -maxp)
    diff = target - pos
    if diff == 0:
        return 0
    if count_live(orders, 0) > 0:
        return 0
    return add_taker(acts, 0, 0, 1 if diff > 0 else -1, diff if diff > 0 else -diff, params[_MKT],
                     np.int64(params[_AGG]), bp, ap, r)
