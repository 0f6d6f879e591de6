"""Statistical arbitrage of two instruments on the z-score of their basis (e.g. spot vs perpetual).

Prices are integers in each instrument's own ticks, so the basis is taken in instrument
0's ticks with ``tick_ratio = tick_size_1 / tick_size_0`` (:func:`tick_ratio` reads it
from a market), held in fixed point to stay exact::

    R     = trunc(tick_ratio * 2^20)
    basis = (S2_1 * R - S2_0 * 2^20) / 2^21          (ticks of instrument 0)

(``S2_m`` = best bid + best ask of instrument m).  For Binance BTCUSDT spot (tick 0.01) as
instrument 0 and USD-M (tick 0.1) as instrument 1, ``tick_ratio = 10``.  Its z-score
against an EWMA mean and variance (``window`` samples, one per decision with both books
valid; :func:`gpuflow.backtest.strategies._common.zscore_update`) drives, after
``warmup`` samples:

* flat and ``z > entry_z`` (instrument 1 rich): sell ``order_lots_1`` of instrument 1 and
  buy ``order_lots_0`` of instrument 0; ``z < -entry_z``: the reverse.  The two legs'
  sizes are in each instrument's own lots: choose them for equal notionals (spot lot
  1e-8 BTC, USD-M lot 0.001 BTC: 100000 and 1 for 0.001 BTC each);
* holding and ``|z| < exit_z``: flatten both legs;
* one leg filled and the other not (a broken hedge): flatten the filled leg.

Orders are takers (IOC ``aggress_ticks`` through each instrument's touch, in its own
ticks, or market orders), one per instrument (action column ``AC_INST``); nothing is
sent while an order of ours is live on either instrument (until its final report).

References
----------
E. Gatev, W. N. Goetzmann and K. G. Rouwenhorst, "Pairs trading: performance of a
relative-value arbitrage rule", Review of Financial Studies 19(3), 2006 (the
divergence / convergence rule, here on an EWMA z-score of the spot-perpetual basis).
"""
from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np

from gpuflow.backtest.strategies._common import (
    add_action,
    add_taker,
    book_ok,
    count_live,
    is_live,
    zscore_update,
)

__all__ = ["CORES", "NAME", "PARAMS", "STATE_SIZE", "step", "tick_ratio"]

NAME = "stat_arb"
PARAMS = {
    "tick_ratio": (1.0, (1e-6, 1e6)),
    "window": (1000.0, (1.0, 1e12)),
    "entry_z": (2.0, (0.0, 1e6)),
    "exit_z": (0.5, (0.0, 1e6)),
    "warmup": (100.0, (0.0, 1e15)),
    "order_lots_0": (1.0, (1.0, 1e12)),
    "order_lots_1": (1.0, (1.0, 1e12)),
    "market_orders": (0.0, (0.0, 1.0)),
    "aggress_ticks": (0.0, (0.0, 1e9)),
}
_RATIO, _WIN, _ENTRY, _EXIT, _WARM, _LOTS0, _LOTS1, _MKT, _AGG = range(9)
_S_Z = 0  # mean, variance, samples
STATE_SIZE = 3
_FX = 1048576.0  # 2^20
CORES = (add_action, add_taker, book_ok, count_live, is_live, zscore_update)


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    r0 = cur[0]
    r1 = cur[1]
    if not (book_ok(bp, bq, ap, aq, r0) and book_ok(bp, bq, ap, aq, r1)):
        return 0
    ratio = np.int64(params[_RATIO] * _FX)
    b_fx = (bp[r1, 0] + ap[r1, 0]) * ratio - (bp[r0, 0] + ap[r0, 0]) * np.int64(_FX)
    basis = np.float64(b_fx) / (2.0 * _FX)
    z = zscore_update(state, _S_Z, basis, params[_WIN])
    if state[_S_Z + 2] <= params[_WARM]:
        return 0
    if math.isnan(z):
        return -1
    p0 = seen[0]
    p1 = seen[1]
    if count_live(orders, -1) > 0:
        return 0
    mkt = params[_MKT]
    agg = np.int64(params[_AGG])
    n = 0
    if p0 == 0 and p1 == 0:
        l0 = np.int64(params[_LOTS0])
        l1 = np.int64(params[_LOTS1])
        if z > params[_ENTRY]:
            n = add_taker(acts, n, 1, -1, l1, mkt, agg, bp, ap, r1)
            n = add_taker(acts, n, 0, 1, l0, mkt, agg, bp, ap, r0)
        elif z < -params[_ENTRY]:
            n = add_taker(acts, n, 1, 1, l1, mkt, agg, bp, ap, r1)
            n = add_taker(acts, n, 0, -1, l0, mkt, agg, bp, ap, r0)
    elif (p0 == 0) != (p1 == 0) or -params[_EXIT] < z < params[_EXIT]:
        if p1 != 0:
            n = add_taker(acts, n, 1, -1 if p1 > 0 else 1, p1 if p1 > 0 else -p1, mkt, agg, bp, ap, r1)
        if p0 != 0:
            n = add_taker(acts, n, 0, -1 if p0 > 0 else 1, p0 if p0 > 0 else -p0, mkt, agg, bp, ap, r0)
    return n


def tick_ratio(market: Any) -> float:
    """``tick_size_1 / tick_size_0`` of a two-instrument :class:`~gpuflow.backtest.MarketData` (exact).

    Raises
    ------
    ConfigError
        The market does not hold exactly two instruments.
    """
    from gpuflow.backtest.engine import ConfigError

    ins = market.instruments
    if len(ins) != 2:
        msg = f"tick_ratio: stat_arb needs a market of 2 instruments, got {len(ins)}"
        raise ConfigError(msg)
    return float(Decimal(ins[1].tick_size) / Decimal(ins[0].tick_size))
