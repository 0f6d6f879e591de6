"""TWAP execution: a parent order cut into equal slices, one every ``interval_ns``.

Slice k (k = 0 .. N-1, ``N = ceil((end_ns - start_ns) / interval_ns)``) is due at the first decision
with ``t >= start_ns + k * interval_ns`` and brings the parent's fills up to::

    target_k = total_lots * (k + 1) // N        (integer division: sizes are whole lots)

so 7 lots in 3 slices are sent as 2, 2, 3.  Parameters, children and state: see
:mod:`gpuflow.backtest.strategies._parent` (mode 0 rests at our touch, mode 1 crosses with IOC).
"""
from __future__ import annotations

from gpuflow.backtest.strategies._parent import (
    PARENT_PARAMS,
    STATE_SIZE,
    parent_child,
    parent_slice,
    parent_stop,
    parent_twap_target,
)

__all__ = ["CORES", "NAME", "PARAMS", "STATE_SIZE", "step"]

NAME = "twap"
PARAMS = dict(PARENT_PARAMS)
CORES = (parent_slice, parent_twap_target, parent_child, parent_stop)


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    side = params[0]
    if side != 1.0 and side != -1.0:
        return -1
    k = parent_slice(params, state, t, seen)
    if k == -2:
        return parent_stop(params, acts)
    if k < 0:
        return 0
    return parent_child(params, state, parent_twap_target(params, k), cur, bp, bq, ap, aq, seen, acts)
