"""VWAP execution: a parent order sliced every ``interval_ns`` along an expected volume profile.

Slice k brings the parent's fills up to ``target_k = total_lots x F(end of slice k)``, where F is the
expected cumulative fraction of the window's traded volume:

* ``profile_col < 0``: F from the integer bucket weights ``w0 .. w7`` (8 equal time buckets of
  [start_ns, end_ns), volume spread evenly inside a bucket; see
  :func:`gpuflow.backtest.strategies._parent.parent_profile_target`); all weights 1 is TWAP;
* ``profile_col >= 0``: F read from that signals column at the decision event, which must hold the
  expected cumulative fraction due by the end of the current slice (the ``volume_frac`` column of
  :func:`gpuflow.backtest.execution.execution_signals` built for the same parent);
  ``target = trunc(total_lots * F)``.

The profile must be known before the parent starts (e.g. from earlier sessions); one built from the
same session's volume is look-ahead.  Other parameters, children and state: see
:mod:`gpuflow.backtest.strategies._parent`.
"""
from __future__ import annotations

import numpy as np

from gpuflow.backtest.strategies._parent import (
    PARENT_PARAMS,
    STATE_SIZE,
    parent_child,
    parent_profile_target,
    parent_slice,
    parent_stop,
)

__all__ = ["CORES", "NAME", "PARAMS", "STATE_SIZE", "step"]

NAME = "vwap"
PARAMS = dict(PARENT_PARAMS)
PARAMS["profile_col"] = (-1.0, (-1.0, 1e6))
for _j in range(8):
    PARAMS[f"w{_j}"] = (1.0, (0.0, 1e6))
CORES = (parent_slice, parent_profile_target, parent_child, parent_stop)
_W0 = 9  # index of w0 in the params row


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    side = params[0]
    if side != 1.0 and side != -1.0:
        return -1
    col = np.int64(params[8])
    f = 0.0
    if col >= 0:
        if col >= sig.shape[1]:
            return -1
        f = sig[e, col]
        if f != f:  # NaN
            return -1
    k = parent_slice(params, state, t, seen)
    if k == -2:
        return parent_stop(params, acts)
    if k < 0:
        return 0
    if col >= 0:
        if f < 0.0:
            f = 0.0
        if f > 1.0:
            f = 1.0
        target = np.int64(params[1] * f)
    else:
        target = parent_profile_target(params, k, _W0)
        if target < 0:
            return -1  # all weights zero
    return parent_child(params, state, target, cur, bp, bq, ap, aq, seen, acts)
