"""Symmetric market making with inventory skew (the strategy of ANCHORS.md's hftbacktest run).

At every decision: cancel all open orders, then post one post-only bid and one post-only ask
``half_spread_ticks`` from the mid, shifted against inventory (an Avellaneda-Stoikov-style
reservation price, linear in the position)::

    r     = mid - skew_ticks_per_lot * position                 (ticks)
    bid   = floor(r) - half_spread_ticks,   ask = ceil(r) + half_spread_ticks

No bid while ``position >= max_position_lots``, no ask while ``position <= -max_position_lots``.
``position`` is what the strategy has been told (fills arrive after the response latency).
"""
from __future__ import annotations

import numpy as np

NAME = "market_making"
PARAMS = {
    "half_spread_ticks": (2.0, (0.0, 1e9)),
    "order_lots": (1.0, (1.0, 1e15)),
    "max_position_lots": (10.0, (0.0, 1e15)),
    "skew_ticks_per_lot": (0.0, (-1e9, 1e9)),
}
STATE_SIZE = 1
CORES = ()
#: action rows a decision writes at most (cancel all, a bid, an ask): the engine zeroes only these
ACTION_ROWS = 3


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    r = cur[0]
    if r < 0 or bq[r, 0] <= 0 or aq[r, 0] <= 0:
        return 0
    hs = np.int64(params[0])
    lots = np.int64(params[1])
    maxp = np.int64(params[2])
    pos = seen[0]
    mid2 = bp[r, 0] + ap[r, 0]  # twice the mid, in ticks
    shift2 = np.int64(2.0 * params[3] * pos)  # twice the skew shift, truncated toward zero
    res2 = mid2 - shift2
    bid = res2 // 2 - hs
    ask = (res2 + 1) // 2 + hs
    acts[0, 0] = 7  # cancel all
    acts[0, 1] = 0
    n = 1
    if pos < maxp:
        acts[n, 0] = 4  # post-only
        acts[n, 1] = 0
        acts[n, 2] = 1
        acts[n, 3] = bid
        acts[n, 4] = lots
        n += 1
    if pos > -maxp:
        acts[n, 0] = 4
        acts[n, 1] = 0
        acts[n, 2] = -1
        acts[n, 3] = ask
        acts[n, 4] = lots
        n += 1
    return n
