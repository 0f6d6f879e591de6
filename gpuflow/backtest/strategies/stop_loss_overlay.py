"""Order-book stop-loss: leave a position when the depth (or imbalance) on our side collapses.

A long position is sold into the bids, so what protects it is bid depth; when the bids
thin out suddenly the price is about to fall through them.  At every decision with a
two-sided book (instrument 0)::

    B, A = bid / ask size over the first depth_levels levels,   I = (B - A) / (B + A)
    Eb, Ea = EWMAs of B and A (weight 1 / depth_window; before this sample)
    long  and (B < collapse_frac * Eb  or   I < imbalance_stop)  -> sell the position
    short and (A < collapse_frac * Ea  or  -I < imbalance_stop)  -> buy it back

(``imbalance_stop = -1`` switches the imbalance rule off; the depth rule needs
``warmup`` samples first).  The exit is a taker order (market by default).

Entries are scripted, so that the overlay can be tested and combined with any signal:
``sig[e, signal_col] = +1`` buys ``order_lots``, ``-1`` sells them, when flat (0 or NaN
does nothing).  The strategy reads the row of the event it decides at, the last event of
a receive time: put each entry there, and use ``decision_interval_ns = 0`` so that it
decides after every message.
No order is sent while one of ours is live (until its final report).

References
----------
Depth as the liquidity buffer behind the touch: R. Cont, A. Kukanov and S. Stoikov,
"The price impact of order book events", J. Financial Econometrics 12(1), 2014 (price
impact of order flow is inversely proportional to depth); Á. Cartea, R. Donnelly and
S. Jaimungal, "Enhancing trading strategies with order book signals", Applied
Mathematical Finance 25(1), 2018 (imbalance predicts the next move).
"""
from __future__ import annotations

import numpy as np

from gpuflow.backtest.strategies._common import (
    add_action,
    add_taker,
    book_ok,
    count_live,
    depth_of,
    ewma_update,
    is_live,
)

__all__ = ["CORES", "NAME", "PARAMS", "STATE_SIZE", "step"]

NAME = "stop_loss_overlay"
PARAMS = {
    "signal_col": (0.0, (0.0, 1e6)),
    "order_lots": (1.0, (1.0, 1e12)),
    "depth_levels": (3.0, (1.0, 1000.0)),
    "depth_window": (50.0, (1.0, 1e12)),
    "collapse_frac": (0.3, (0.0, 1.0)),
    "imbalance_stop": (-1.0, (-1.0, 1.0)),
    "warmup": (10.0, (0.0, 1e15)),
    "market_orders": (1.0, (0.0, 1.0)),
    "aggress_ticks": (0.0, (0.0, 1e9)),
}
_COL, _LOTS, _DEPTH, _WIN, _FRAC, _IMB, _WARM, _MKT, _AGG = range(9)
_S_EB, _S_EA, _S_N = 0, 1, 2
STATE_SIZE = 3
CORES = (add_action, add_taker, book_ok, count_live, depth_of, ewma_update, is_live)


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    r = cur[0]
    if not book_ok(bp, bq, ap, aq, r):
        return 0
    k = np.int64(params[_DEPTH])
    b = depth_of(bq, r, k, nlev)
    a = depth_of(aq, r, k, nlev)
    eb = state[_S_EB]
    ea = state[_S_EA]
    warm = state[_S_N] >= params[_WARM] and state[_S_N] > 0.0
    if state[_S_N] == 0.0:
        state[_S_EB] = np.float64(b)
        state[_S_EA] = np.float64(a)
    else:
        state[_S_EB] = ewma_update(eb, np.float64(b), params[_WIN])
        state[_S_EA] = ewma_update(ea, np.float64(a), params[_WIN])
    state[_S_N] = state[_S_N] + 1.0
    pos = seen[0]
    if count_live(orders, 0) > 0:
        return 0
    imb = (b - a) / (b + a)  # b, a > 0: the book is two-sided
    frac = params[_FRAC]
    mkt = params[_MKT]
    agg = np.int64(params[_AGG])
    n = 0
    if pos > 0:
        if (warm and b < frac * eb) or imb < params[_IMB]:
            n = add_taker(acts, 0, 0, -1, pos, mkt, agg, bp, ap, r)
    elif pos < 0:
        if (warm and a < frac * ea) or -imb < params[_IMB]:
            n = add_taker(acts, 0, 0, 1, -pos, mkt, agg, bp, ap, r)
    else:
        col = np.int64(params[_COL])
        if col >= sig.shape[1]:
            return -1
        s = sig[e, col]
        if s == 1.0:
            n = add_taker(acts, 0, 0, 1, np.int64(params[_LOTS]), mkt, agg, bp, ap, r)
        elif s == -1.0:
            n = add_taker(acts, 0, 0, -1, np.int64(params[_LOTS]), mkt, agg, bp, ap, r)
    return n
