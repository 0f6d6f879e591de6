"""POV (percentage of volume) execution: follow a participation rate of the market's traded volume.

At each slice (every ``interval_ns``; a small interval tracks the tape closely) the parent's fills
are brought up to::

    target = trunc(rate x (V(t) - V(start)))        capped at total_lots

where ``V`` is the signals column ``vol_col``: the market's cumulative traded lots through the
decision event (causal; :func:`gpuflow.backtest.execution.execution_signals`, column
``traded_lots``).  ``V(start)`` is the last value the strategy saw before ``start_ns`` (0 when it
saw none).  The market data does not contain our own fills (no impact model), so ``rate`` is our
volume over the *other* participants' volume; for a rate ``p`` of the total tape including us use
``rate = p / (1 - p)``.  Other parameters, children and state: see
:mod:`gpuflow.backtest.strategies._parent`.
"""
from __future__ import annotations

import numpy as np

from gpuflow.backtest.strategies._parent import (
    PARENT_PARAMS,
    STATE_SIZE,
    parent_child,
    parent_slice,
    parent_stop,
)

__all__ = ["CORES", "NAME", "PARAMS", "STATE_SIZE", "step"]

NAME = "pov"
PARAMS = dict(PARENT_PARAMS)
PARAMS["rate"] = (0.1, (0.0, 1e3))
PARAMS["vol_col"] = (0.0, (0.0, 1e6))
CORES = (parent_slice, parent_child, parent_stop)


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    side = params[0]
    if side != 1.0 and side != -1.0:
        return -1
    col = np.int64(params[9])
    if col >= sig.shape[1]:
        return -1
    v = sig[e, col]
    if v != v:  # NaN
        return -1
    if t < np.int64(params[2]):
        state[5] = v  # the volume before the start is not ours to follow
        return 0
    first = state[0] == 0
    k = parent_slice(params, state, t, seen)
    if k == -2:
        return parent_stop(params, acts)
    if first and state[0] != 0:
        state[4] = state[5]
    if k < 0:
        return 0
    target = np.int64(params[8] * (v - state[4]))
    return parent_child(params, state, target, cur, bp, bq, ap, aq, seen, acts)
