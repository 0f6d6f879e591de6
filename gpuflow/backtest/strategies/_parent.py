"""Shared cores of the execution-algorithm strategies (TWAP, VWAP, POV): one parent order, sliced.

The first parameters of every execution strategy describe the parent order, in this order::

    side          +1 buy, -1 sell
    total_lots    parent size (lots)
    start_ns      the parent starts at the first decision with t >= start_ns (ts_local clock)
    end_ns        at the first decision with t >= end_ns whatever rests is cancelled; the parent stops
    interval_ns   slice length: slice k covers [start + k * interval, start + (k + 1) * interval)
    mode          0: child = GTC limit at our own touch (best bid for a buy) minus offset_ticks, the
                  previous child cancelled at each slice (cancel / replace);
                  1: child = IOC crossing at the opposite touch (best ask for a buy) plus offset_ticks
                  (offset > 0 walks deeper levels), its unfilled rest expires
    offset_ticks  see mode
    inst          instrument index (0 or 1)

Times are float64 parameters: they are honoured exactly when representable (whole seconds since the
epoch are; :class:`gpuflow.backtest.execution.ParentOrder` checks this), and are turned into int64
once per decision, so the exact and sweep engines agree.

State (float64): ``[started, position at start, next slice index, done, volume at start, last
volume seen before start]``.  At slice k the strategy wants ``target_k`` lots filled in total
(cumulative, by the end of the slice) and sends one child of ``target_k - filled`` lots, where
``filled`` is its position change since the start *as it has been told* (``seen``: fills reach it
after the response latency).  A child filled within the round trip (entry + response latency)
before a slice boundary can therefore be sent again: choose ``interval_ns`` well above the round
trip (the overfill is bounded by one child).  Children never exceed ``total_lots - filled``.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "PARENT_PARAMS",
    "STATE_SIZE",
    "parent_child",
    "parent_profile_target",
    "parent_slice",
    "parent_stop",
    "parent_twap_target",
]

#: the parent-order parameters every execution strategy starts with (name: (default, (lo, hi)))
PARENT_PARAMS = {
    "side": (1.0, (-1.0, 1.0)),
    "total_lots": (1.0, (1.0, 1e12)),
    "start_ns": (0.0, (0.0, 9e18)),
    "end_ns": (9e18, (0.0, 9e18)),
    "interval_ns": (1e9, (1.0, 9e18)),
    "mode": (1.0, (0.0, 1.0)),
    "offset_ticks": (0.0, (-1e9, 1e9)),
    "inst": (0.0, (0.0, 1.0)),
}
STATE_SIZE = 6
_MAXI = np.int64(1) << 62


def parent_slice(params, state, t, seen):  # pragma: no cover - jitted
    """Slice index k to act on now (>= 0), -1 for nothing to do, -2 when the window has just ended."""
    start = np.int64(params[2])
    end = np.int64(params[3])
    interval = np.int64(params[4])
    m = np.int64(params[7])
    if state[3] != 0 or t < start:
        return np.int64(-1)
    if t >= end:
        state[3] = 1.0
        return np.int64(-2)
    if state[0] == 0:
        state[0] = 1.0
        state[1] = seen[m]
    k = (t - start) // interval
    if k < np.int64(state[2]):
        return np.int64(-1)
    state[2] = k + 1
    return k


def parent_twap_target(params, k):  # pragma: no cover - jitted
    """Cumulative lots due by the end of slice k of an equal-slice schedule: ``total * (k + 1) // N``."""
    total = np.int64(params[1])
    span = np.int64(params[3]) - np.int64(params[2])
    interval = np.int64(params[4])
    n = (span + interval - 1) // interval
    if n <= 0:
        return total
    if total <= _MAXI // n:
        return total * (k + 1) // n
    return np.int64(np.float64(total) * (np.float64(k + 1) / np.float64(n)))  # huge sizes: float


def parent_profile_target(params, k, w0):  # pragma: no cover - jitted
    """Cumulative lots due by the end of slice k under the integer bucket weights ``params[w0:w0+8]``.

    The window [start, end) is cut into 8 buckets with integer edges ``x_b = b * span // 8``; bucket b
    holds ``w_b / W`` of the volume, spread evenly in time, so the due fraction is piecewise linear::

        due(x) = (total * W_{<b} + trunc(total * w_b * ((x - x_b) / (x_{b+1} - x_b)))) // W

    with ``x`` the end of slice k (offset from start).  Integer sums and one float multiply and one
    division, no float addition: nothing the GPU could fuse into an FMA, so both engines agree.
    """
    total = np.int64(params[1])
    start = np.int64(params[2])
    span = np.int64(params[3]) - start
    interval = np.int64(params[4])
    x = (k + 1) * interval
    if x >= span:
        return total
    wsum = np.int64(0)
    for j in range(8):
        wsum += np.int64(params[w0 + j])
    if wsum <= 0:
        return np.int64(-1)
    b = x * 8 // span
    xb = b * span // 8
    xb1 = (b + 1) * span // 8
    before = np.int64(0)
    for j in range(b):
        before += np.int64(params[w0 + j])
    part = np.int64(np.float64(total * np.int64(params[w0 + b])) * (np.float64(x - xb) / np.float64(xb1 - xb)))
    return (total * before + part) // wsum


def parent_child(params, state, target, cur, bp, bq, ap, aq, seen, acts):  # pragma: no cover - jitted
    """Write the actions of one slice (cancel / replace in mode 0, one IOC in mode 1); returns their number."""
    side = np.int64(params[0])
    total = np.int64(params[1])
    mode = np.int64(params[5])
    off = np.int64(params[6])
    m = np.int64(params[7])
    n = 0
    if mode == 0:
        acts[0, 0] = 7  # cancel what rests of the previous child
        acts[0, 1] = m
        n = 1
    if target > total:
        target = total
    filled = side * (seen[m] - np.int64(state[1]))
    want = target - filled
    if want <= 0:
        return n
    r = cur[m]
    if r < 0:
        return n
    if (mode == 0) == (side > 0):  # passive buy or aggressive sell: price off the bid
        if bq[r, 0] <= 0:
            return n
        px = bp[r, 0] - off
    else:
        if aq[r, 0] <= 0:
            return n
        px = ap[r, 0] + off
    acts[n, 0] = 1 if mode == 0 else 2  # GTC at the touch / IOC crossing
    acts[n, 1] = m
    acts[n, 2] = side
    acts[n, 3] = px
    acts[n, 4] = want
    acts[n, 5] = 0
    return n + 1


def parent_stop(params, acts):  # pragma: no cover - jitted
    """The window is over: cancel what rests on the parent's instrument."""
    acts[0, 0] = 7
    acts[0, 1] = np.int64(params[7])
    return 1
