"""Scripted actions: the signals row of an event holds the action to take there.

``sig[e] = (code, side, price_ticks, qty_lots, slot[, instrument])``; code 0 does nothing (codes as in
:mod:`gpuflow.kernels.backtest`: 1 GTC, 2 IOC, 3 FOK, 4 post-only, 5 market, 6 cancel slot, 7 cancel
all, 8 modify slot).  For tests with hand-worked fills and for replaying a decision log.
"""
from __future__ import annotations

import numpy as np

NAME = "scripted"
PARAMS = {"scale_qty": (1.0, (0.0, 1e15))}
STATE_SIZE = 1
CORES = ()


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    code = sig[e, 0]
    if code != code:  # NaN
        return -1
    if code == 0:
        return 0
    acts[0, 0] = np.int64(code)
    acts[0, 2] = np.int64(sig[e, 1])
    acts[0, 3] = np.int64(sig[e, 2])
    acts[0, 4] = np.int64(sig[e, 3] * params[0])
    acts[0, 5] = np.int64(sig[e, 4])
    acts[0, 1] = np.int64(sig[e, 5]) if sig.shape[1] > 5 else 0
    return 1
