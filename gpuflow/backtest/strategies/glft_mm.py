r"""Market making with the Guéant-Lehalle-Fernandez-Tapia closed-form quotes and an online volatility.

The GLFT model (Guéant, Lehalle and Fernandez-Tapia 2013, the asymptotic "closed-form"
approximation of their eq. for the optimal quotes; the form used by hftbacktest's GLFT
example) quotes, for an inventory of ``q`` order units::

    delta_b(q) = c1 + (2q + 1)/2 * c2 * sigma        (bid = S - delta_b)
    delta_a(q) = c1 - (2q - 1)/2 * c2 * sigma        (ask = S + delta_a)
    c1 = ln(1 + gamma/kappa) / gamma
    c2 = sqrt( gamma / (2 kappa A) * (1 + gamma/kappa)^(1 + kappa/gamma) )

i.e. a half-spread ``c1 + c2 sigma / 2`` around the reservation price ``r = S - q c2 sigma``
(compare Avellaneda-Stoikov 2008: ``r = S - q gamma sigma^2 (T - t)``; GLFT is its
stationary, infinite-horizon counterpart with an inventory cap).  Units: S and the
quotes in ticks, sigma in ticks / sqrt(s), A in orders / s (arrival intensity at the
touch, ``lambda(delta) = A exp(-kappa delta)``), kappa in 1 / tick, gamma in 1 / tick
(risk aversion per order unit), ``q = position_lots / order_lots`` (the position the
strategy has been told of).

sigma is estimated online from the mid changes between decisions (EWMA with weight 1/N,
``N = vol_window``; ratio estimator, so decisions at irregular times weigh by elapsed time)::

    sigma^2 = EWMA[(dmid2)^2] / EWMA[dt]  * 1e9 / 4       (dmid2 in half-ticks, dt in ns)

``sigma0`` is used until the first elapsed time has been seen, and always with ``vol_window = 0``
(a fixed sigma, e.g. to sweep it).

Quotes in integers (S2 = best bid + best ask, half-ticks)::

    h2  = ceil(2 c1 + c2 sigma)                 (2 * half-spread, half-ticks, rounded up)
    k2  = trunc(2 q c2 sigma)                   (2 * skew, half-ticks, toward zero)
    bid = floor((S2 - h2 - k2) / 2),  ask = ceil((S2 + h2 - k2) / 2)

then clipped so a post-only quote does not cross (bid <= best ask - 1, ask >= best bid + 1).
No bid while ``position >= max_position_lots``, no ask while ``position <= -max_position_lots``.
Each side holds one post-only order; it is moved (``A_MODIFY``) only when the wanted price
differs from its price by at least ``requote_ticks`` (queue priority is kept otherwise), and
a side is left alone while a cancel of ours on it is unconfirmed (the old order may still
fill; at most two order slots per side).

c1 and c2^2 are computed once per parameter set with :func:`det_log1p` / :func:`det_exp`
so that the exact (CPU) and sweep (GPU) engines agree to the bit.

References
----------
O. Guéant, C.-A. Lehalle and J. Fernandez-Tapia, "Dealing with the inventory risk: a
solution to the market making problem", Mathematics and Financial Economics 7(4), 2013
(arXiv:1105.3115), section 4 (closed-form approximations).
M. Avellaneda and S. Stoikov, "High-frequency trading in a limit order book",
Quantitative Finance 8(3), 2008.
"""
from __future__ import annotations

import math

import numpy as np

from gpuflow.backtest.strategies._common import (
    add_action,
    book_ok,
    ceil_i64,
    count_cancelling,
    det_exp,
    det_log1p,
    ewma_update,
    find_order,
    get_i64,
    is_live,
    set_i64,
)
from gpuflow.kernels.backtest import A_CANCEL, A_MODIFY, O_INST, O_PRICE, O_SIDE, T_POST

__all__ = ["CORES", "NAME", "PARAMS", "STATE_SIZE", "step"]

NAME = "glft_mm"
PARAMS = {
    "gamma": (0.05, (1e-6, 1e3)),
    "kappa": (0.5, (1e-6, 1e3)),
    "arrival_a": (10.0, (1e-9, 1e9)),
    "order_lots": (1.0, (1.0, 1e12)),
    "max_position_lots": (10.0, (0.0, 1e15)),
    "requote_ticks": (1.0, (1.0, 1e9)),
    "vol_window": (100.0, (0.0, 1e12)),
    "sigma0": (1.0, (0.0, 1e9)),
}
_GAMMA, _KAPPA, _A, _LOTS, _MAXP, _REQ, _VOLN, _SIG0 = range(8)
# state: init flag, 2*c1 (half-ticks), c2^2, last mid2, last t (2 slots), EWMA dmid2^2, EWMA dt, samples
_S_INIT, _S_C1X2, _S_C2SQ, _S_M2, _S_T, _S_D2, _S_DT, _S_N = 0, 1, 2, 3, 4, 6, 7, 8
STATE_SIZE = 9


def _side(acts, n, orders, side, want, allowed, lots, requote):  # pragma: no cover - jitted
    """Keep, move, place or cancel our one order on ``side`` (instrument 0)."""
    if count_cancelling(orders, 0, side) > 0:
        return n  # wait for the cancel's report
    k = find_order(orders, 0, side)
    if k >= 0:
        # a second live order on this side (should not happen): cancel it
        for j in range(k + 1, orders.shape[0]):
            if is_live(orders, j) and orders[j, O_INST] == 0 and orders[j, O_SIDE] == side:
                n = add_action(acts, n, A_CANCEL, 0, 0, 0, 0, j)
    if not allowed:
        if k >= 0:
            n = add_action(acts, n, A_CANCEL, 0, 0, 0, 0, k)
        return n
    if k < 0:
        return add_action(acts, n, T_POST, 0, side, want, lots, 0)
    dp = orders[k, O_PRICE] - want
    if dp >= requote or -dp >= requote:
        n = add_action(acts, n, A_MODIFY, 0, side, want, lots, k)
    return n


CORES = (book_ok, ceil_i64, count_cancelling, det_log1p, det_exp, ewma_update, set_i64, get_i64, is_live,
         find_order, add_action, _side)


def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    r = cur[0]
    if not book_ok(bp, bq, ap, aq, r):
        return 0
    m2 = bp[r, 0] + ap[r, 0]
    if state[_S_INIT] == 0.0:
        g = params[_GAMMA]
        kap = params[_KAPPA]
        l1 = det_log1p(g / kap)
        state[_S_C1X2] = (l1 + l1) / g
        state[_S_C2SQ] = g / (2.0 * kap * params[_A]) * det_exp((1.0 + kap / g) * l1)
        state[_S_INIT] = 1.0
    elif params[_VOLN] > 0.0:
        d = m2 - np.int64(state[_S_M2])
        dt = t - get_i64(state, _S_T)
        if state[_S_N] == 0.0:
            state[_S_D2] = np.float64(d * d)
            state[_S_DT] = np.float64(dt)
        else:
            state[_S_D2] = ewma_update(state[_S_D2], np.float64(d * d), params[_VOLN])
            state[_S_DT] = ewma_update(state[_S_DT], np.float64(dt), params[_VOLN])
        state[_S_N] = state[_S_N] + 1.0
    state[_S_M2] = np.float64(m2)
    set_i64(state, _S_T, t)
    if state[_S_DT] > 0.0 and params[_VOLN] > 0.0:
        s2 = state[_S_D2] / state[_S_DT] * 2.5e8  # half-tick^2 / ns -> tick^2 / s
    else:
        s2 = params[_SIG0] * params[_SIG0]
    c2s = math.sqrt(state[_S_C2SQ] * s2)  # c2 * sigma, ticks
    lots = np.int64(params[_LOTS])
    q = seen[0] / params[_LOTS]
    h2f = state[_S_C1X2] + c2s
    k2f = 2.0 * q * c2s
    if not (h2f < 1e12 and -1e12 < k2f < 1e12):
        return -1  # NaN or absurd quotes: count, do nothing
    h2 = ceil_i64(h2f)
    k2 = np.int64(k2f)
    bid = (m2 - h2 - k2) // 2
    ask = -((k2 - m2 - h2) // 2)
    bid = min(bid, ap[r, 0] - 1)
    ask = max(ask, bp[r, 0] + 1)
    maxp = np.int64(params[_MAXP])
    req = np.int64(params[_REQ])
    n = _side(acts, 0, orders, 1, bid, seen[0] < maxp, lots, req)
    n = _side(acts, n, orders, -1, ask, seen[0] > -maxp, lots, req)
    return n
