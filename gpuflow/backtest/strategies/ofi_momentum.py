"""Momentum on order-flow imbalance: follow a rolling OFI signal, hold for a time or until it reverses.

The signal is a column of the market's signals (``sig[e, signal_col]``, one value per merged
event, known at that event's ``ts_local``); :func:`ofi_signal` builds the usual one: the
best-level OFI ``e(i)`` of Cont, Kukanov and Stoikov (2014) (:func:`gpuflow.features.ofi.ofi`
on the book after every complete message) summed over the last ``window_ns``::

    s(e) = sum of e(i) over the complete messages i seen by event e with  ts(e) - window_ns < ts(i) <= ts(e)

(the first complete book counts as no flow).  Pass it to :func:`gpuflow.backtest.prepare_market`
as ``signals=``; a run configuration gets the same column from
``signals: [{name: ofi_1s, feature: ofi, levels: 1, window_ns: 1s}]``.  Rules (instrument 0):

* flat: ``s > threshold`` -> buy ``order_lots``; ``s < -threshold`` -> sell ``order_lots``;
* holding: flatten when ``hold_ns`` has passed since the entry order was sent, or when the
  signal reverses (``s < -threshold`` while long, ``s > threshold`` while short);

with taker orders (IOC ``aggress_ticks`` through the touch, or market orders), never
while one of our orders is live (until its final report).  A NaN signal is a counted
invalid decision.

References
----------
R. Cont, A. Kukanov and S. Stoikov, "The price impact of order book events", Journal of
Financial Econometrics 12(1), 2014 (OFI explains contemporaneous mid changes; this
strategy bets that the price impact of a burst of order flow continues).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from gpuflow.backtest.strategies._common import (
    add_action,
    add_taker,
    book_ok,
    count_live,
    get_i64,
    is_live,
    set_i64,
)

__all__ = ["CORES", "NAME", "PARAMS", "STATE_SIZE", "ofi_signal", "step"]

NAME = "ofi_momentum"
PARAMS = {
    "signal_col": (0.0, (0.0, 1e6)),
    "threshold": (10.0, (0.0, 1e18)),
    "hold_ns": (1_000_000_000.0, (0.0, 1e15)),
    "order_lots": (1.0, (1.0, 1e12)),
    "market_orders": (0.0, (0.0, 1.0)),
    "aggress_ticks": (0.0, (0.0, 1e9)),
}
_COL, _THR, _HOLD, _LOTS, _MKT, _AGG = range(6)
_S_ENTRY = 0  # entry time (2 slots)
STATE_SIZE = 2
CORES = (add_action, add_taker, book_ok, count_live, get_i64, is_live, set_i64)


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    col = np.int64(params[_COL])
    if col >= sig.shape[1]:
        return -1
    s = sig[e, col]
    if math.isnan(s):
        return -1
    r = cur[0]
    if not book_ok(bp, bq, ap, aq, r):
        return 0
    pos = seen[0]
    if count_live(orders, 0) > 0:
        return 0
    thr = params[_THR]
    mkt = params[_MKT]
    agg = np.int64(params[_AGG])
    n = 0
    if pos != 0:
        held = t - get_i64(state, _S_ENTRY)
        if held >= np.int64(params[_HOLD]) or (pos > 0 and s < -thr) or (pos < 0 and s > thr):
            if pos > 0:
                n = add_taker(acts, 0, 0, -1, pos, mkt, agg, bp, ap, r)
            else:
                n = add_taker(acts, 0, 0, 1, -pos, mkt, agg, bp, ap, r)
    elif s > thr or s < -thr:
        side = 1 if s > thr else -1
        n = add_taker(acts, 0, 0, side, np.int64(params[_LOTS]), mkt, agg, bp, ap, r)
        set_i64(state, _S_ENTRY, t)
    return n


def ofi_signal(events: pa.Table, window_ns: int, *, levels: int = 1, backend: Any = "cpu") -> np.ndarray:
    """Rolling best-level (or multi-level summed) OFI per event, aligned with :func:`prepare_market`.

    The same values as a config signal ``{feature: ofi, levels: L, window_ns: W}``
    (:func:`gpuflow.backtest.config.build_signals` on the complete books, which this calls).

    Parameters
    ----------
    events : pyarrow.Table
        Schema events of one instrument (the table given to ``prepare_market``; Binance diff
        streams are put in synced order, as ``prepare_market`` does).
    window_ns : int
        Rolling window (ns, ``ts_local`` clock).
    levels : int
        OFI levels summed (1: Cont-Kukanov-Stoikov best-level OFI).
    backend : {"cpu", "gpu"} or Backend

    Returns
    -------
    float64 array (n_events,), host
        ``s(e)`` (lots): OFI of the complete books (rows ending a message) seen up to event e, summed
        over those that became known in ``(ts(e) - window_ns, ts(e)]``.  The first complete book
        counts as no flow (not as the build-up from an empty book).

    Raises
    ------
    ConfigError
        ``window_ns`` is not a positive integer.

    Examples
    --------
    >>> from gpuflow.backtest import prepare_market                           # doctest: +SKIP
    >>> s = ofi_signal(events, 1_000_000_000)                                # doctest: +SKIP
    >>> market = prepare_market(events, signals=s, signal_names=["ofi_1s"])  # doctest: +SKIP
    """
    from gpuflow.backtest.config import SignalSpec, build_signals, complete_rows
    from gpuflow.backtest.engine import ConfigError, prepare_market

    if not isinstance(window_ns, (int, np.integer)) or isinstance(window_ns, bool) or window_ns <= 0:
        msg = f"ofi_signal: window_ns must be a positive integer of ns, got {window_ns!r}"
        raise ConfigError(msg)
    market = prepare_market(events, levels=levels, backend=backend)
    spec = SignalSpec(name=f"ofi_{levels}", feature="ofi", levels=levels, window_ns=int(window_ns))
    return np.ascontiguousarray(build_signals(market, [spec], complete=complete_rows([events]),
                                              backend=backend)[:, 0])
