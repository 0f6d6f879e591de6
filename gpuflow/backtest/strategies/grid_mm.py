"""Grid market making: ``levels`` post-only orders per side, ``step_ticks`` apart, around a moving anchor.

The anchor ``A2`` is a mid (half-ticks, ``best bid + best ask``); it is set at the first
decision and re-set to the current mid when the mid has moved more than
``recenter_ticks`` from it (``|S2 - A2| > 2 recenter_ticks``).  The grid is::

    bid_i = ceil(A2 / 2)  - i * step_ticks,   ask_i = floor(A2 / 2) + i * step_ticks,   i = 1..levels

(with a one-tick spread and ``step_ticks = 1`` the first level of each side is the touch).
At every decision the strategy (instrument 0):

1. cancels each live order that is not on the grid, or on a side that is switched off
   (no bids while ``position >= max_position_lots``, no asks while ``position <= -max_position_lots``);
2. places the missing grid orders (``order_lots`` each), nearest levels first, bid and ask
   alternately, skipping prices that would cross the current book (a post-only order
   there would be rejected) and stopping when the action table is full (the rest follow
   at the next decision); a side gets no new order while a cancel of ours on it is
   unconfirmed.

A filled level is therefore re-posted at the next decision: the classic grid, which
sells what it bought one step higher while the price oscillates inside the grid.
Capacity: 2 x ``levels`` live orders plus at most as many being cancelled must fit the
engine's ``MAX_ORDERS`` (16) slots, hence ``levels <= 4``.
"""
from __future__ import annotations

import numpy as np

from gpuflow.backtest.strategies._common import add_action, book_ok, count_cancelling, find_order_at, is_live
from gpuflow.kernels.backtest import A_CANCEL, O_INST, O_PRICE, O_SIDE, T_POST

__all__ = ["CORES", "NAME", "PARAMS", "STATE_SIZE", "step"]

NAME = "grid_mm"
PARAMS = {
    "levels": (3.0, (1.0, 4.0)),
    "step_ticks": (1.0, (1.0, 1e9)),
    "recenter_ticks": (2.0, (0.0, 1e12)),
    "order_lots": (1.0, (1.0, 1e12)),
    "max_position_lots": (10.0, (0.0, 1e15)),
}
_LEVELS, _STEP, _RECENTER, _LOTS, _MAXP = range(5)
_S_INIT, _S_ANCHOR = 0, 1
STATE_SIZE = 2


def _on_grid(off, step, levels):  # pragma: no cover - jitted
    """``off`` ticks from the anchor is one of the grid's levels 1..levels."""
    return off > 0 and off % step == 0 and off // step <= levels


CORES = (add_action, book_ok, count_cancelling, find_order_at, is_live, _on_grid)


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    r = cur[0]
    if not book_ok(bp, bq, ap, aq, r):
        return 0
    m2 = bp[r, 0] + ap[r, 0]
    levels = np.int64(params[_LEVELS])
    stp = np.int64(params[_STEP])
    rec2 = 2 * np.int64(params[_RECENTER])
    lots = np.int64(params[_LOTS])
    maxp = np.int64(params[_MAXP])
    drift = m2 - np.int64(state[_S_ANCHOR])
    if state[_S_INIT] == 0.0 or drift > rec2 or -drift > rec2:
        state[_S_ANCHOR] = np.float64(m2)
        state[_S_INIT] = 1.0
    a2 = np.int64(state[_S_ANCHOR])
    hi = (a2 + 1) // 2
    lo = a2 // 2
    pos = seen[0]
    bid_on = pos < maxp
    ask_on = pos > -maxp
    # cancels sent before this decision and not yet confirmed: no new order on that side
    bid_new = bid_on and count_cancelling(orders, 0, 1) == 0
    ask_new = ask_on and count_cancelling(orders, 0, -1) == 0
    n = 0
    for k in range(orders.shape[0]):
        if not is_live(orders, k) or orders[k, O_INST] != 0:
            continue
        if orders[k, O_SIDE] > 0:
            keep = bid_on and _on_grid(hi - orders[k, O_PRICE], stp, levels)
        else:
            keep = ask_on and _on_grid(orders[k, O_PRICE] - lo, stp, levels)
        if not keep:
            n = add_action(acts, n, A_CANCEL, 0, 0, 0, 0, k)
    for i in range(1, levels + 1):
        if bid_new:
            p = hi - i * stp
            if p < ap[r, 0] and find_order_at(orders, 0, 1, p) < 0:
                n = add_action(acts, n, T_POST, 0, 1, p, lots, 0)
        if ask_new:
            p = lo + i * stp
            if p > bp[r, 0] and find_order_at(orders, 0, -1, p) < 0:
                n = add_action(acts, n, T_POST, 0, -1, p, lots, 0)
    return n
