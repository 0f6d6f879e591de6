"""Plain-Python helpers shared by the strategies (compiled with them: list them in a strategy's ``CORES``).

Every helper here is compiled twice, as an njit function for the exact engine and as a
CUDA device function for the sweep engine (:class:`gpuflow.backend.Twins`), and must give
bit-identical results on both.  Rules followed throughout:

* prices and sizes stay integers (ticks, lots); a float enters only where a ratio is needed;
* no float product ever feeds an addition or subtraction: the CUDA compiler contracts
  ``a * b + c`` into one fused multiply-add (one rounding instead of two), the CPU does
  not, and the two results can differ in the last bit.  Products are either exact
  (a power of two, or an integer product done in int64), or feed only ``/``, ``sqrt``,
  a comparison or a truncation to int64.  Division and ``sqrt`` are correctly rounded
  on both targets (IEEE 754), ``log``/``exp``/``pow`` are not (libm vs libdevice), so
  :func:`det_log1p` and :func:`det_exp` evaluate them with series under the same rule;
* no allocation, no exceptions: a helper that cannot answer returns a sentinel.

State layout helpers store int64 values in the float64 state vector exactly
(:func:`set_i64` / :func:`get_i64`: two slots, high and low 31 bits), since a
timestamp in ns (~1.7e18) does not fit a float64's 53-bit mantissa.
"""
from __future__ import annotations

import math

import numpy as np

from gpuflow.kernels.backtest import (
    AC_CODE,
    AC_INST,
    AC_PRICE,
    AC_QTY,
    AC_SIDE,
    AC_SLOT,
    O_CANCEL,
    O_INST,
    O_PRICE,
    O_SIDE,
    O_STATE,
    T_IOC,
    T_MARKET,
)

__all__ = [
    "COMMON_CORES",
    "FX_SCALE",
    "add_action",
    "add_taker",
    "book_ok",
    "ceil_i64",
    "count_cancelling",
    "count_live",
    "depth_of",
    "det_exp",
    "det_log1p",
    "ewma_update",
    "find_order",
    "find_order_at",
    "get_i64",
    "imbalance_of",
    "is_live",
    "micro_of",
    "mid2_of",
    "set_i64",
    "zscore_update",
]

#: Fixed-point scale of deviations in :func:`zscore_update` (1/1024 tick; a power of two, so exact).
FX_SCALE = 1024.0
_FX_CLAMP = np.int64(2147483647)  # |deviation| in 1/1024 ticks, so that its square fits int64
_INV_LN2 = 1.4426950408889634  # 1 / ln 2 (e * ln 2 is computed as e / _INV_LN2: a division, never fused)
_LOW31 = np.int64(2147483647)


# ----------------------------------------------------------------------------- book
def book_ok(bp, bq, ap, aq, r):  # pragma: no cover - jitted
    """True when book row ``r`` has both sides and is not crossed (mid-message rows can be)."""
    return r >= 0 and bq[r, 0] > 0 and aq[r, 0] > 0 and bp[r, 0] < ap[r, 0]


def mid2_of(bp, ap, r):  # pragma: no cover - jitted
    """Twice the mid, ``bp[r, 0] + ap[r, 0]`` (half-ticks, an exact integer); check :func:`book_ok` first."""
    return bp[r, 0] + ap[r, 0]


def micro_of(bp, bq, ap, aq, r):  # pragma: no cover - jitted
    """Microprice (ticks, float): ``(Pb * Qa + Pa * Qb) / (Qb + Qa)`` at the best level.

    The size-weighted mid of Stoikov's "The micro-price" (Quantitative Finance 18(12), 2018)
    in its first-order form; the numerator is an exact int64, then one division.
    """
    return (bp[r, 0] * aq[r, 0] + ap[r, 0] * bq[r, 0]) / (bq[r, 0] + aq[r, 0])


def depth_of(q, r, k, nlev):  # pragma: no cover - jitted
    """Size (lots) over the first ``min(k, nlev)`` levels of one side (``q`` = bid_qty or ask_qty)."""
    s = np.int64(0)
    m = min(nlev, k)
    for j in range(m):
        if q[r, j] > 0:
            s += q[r, j]
    return s


def imbalance_of(bq, aq, r, k, nlev):  # pragma: no cover - jitted
    """Depth imbalance over the first ``k`` levels: ``(B - A) / (B + A)`` in [-1, 1]; 0 for an empty book."""
    b = depth_of(bq, r, k, nlev)
    a = depth_of(aq, r, k, nlev)
    if a + b <= 0:
        return 0.0
    return (b - a) / (b + a)


# ----------------------------------------------------------------------------- statistics
def ewma_update(prev, x, n):  # pragma: no cover - jitted
    """One EWMA step with weight ``1/n``: ``prev + (x - prev) / n`` (a division, so never fused)."""
    return prev + (x - prev) / n


def zscore_update(state, i, x, n):  # pragma: no cover - jitted
    """z-score of ``x`` against an EWMA mean and variance kept at ``state[i:i+3]``, then update them.

    ``state[i]`` = mean m, ``state[i+1]`` = variance v (units of ``(1/FX_SCALE)^2`` ticks^2),
    ``state[i+2]`` = samples seen.  With ``d = x - m`` (before the update)::

        z = d / sqrt(v)                     (0 while v == 0)
        m <- m + d / n
        v <- v + (D^2 - v) / n,   D = trunc(d * FX_SCALE)   (an exact int64 square)

    The first sample sets ``m = x``, ``v = 0``.  Returns z (float; the caller counts samples).
    """
    c = state[i + 2]
    if c == 0.0:
        state[i] = x
        state[i + 1] = 0.0
        state[i + 2] = 1.0
        return 0.0
    d = x - state[i]
    v = state[i + 1]
    z = 0.0
    if v > 0.0:
        z = (d * FX_SCALE) / math.sqrt(v)
    state[i] = state[i] + d / n
    dd = d * FX_SCALE
    if dd > 2147483647.0:
        di = _FX_CLAMP
    elif dd < -2147483647.0:
        di = -_FX_CLAMP
    else:
        di = np.int64(dd)
    state[i + 1] = v + (np.float64(di * di) - v) / n
    state[i + 2] = c + 1.0
    return z


def det_log1p(u):  # pragma: no cover - jitted
    """``ln(1 + u)`` for ``u > -1``, bit-identical on CPU and GPU (see the module docstring).

    ``w = 1 + u = f * 2^e`` with f in [0.75, 1.5) (exact halvings/doublings), then
    ``ln f = 2 atanh(y) = 2 sum_k y^(2k+1) / (2k+1)``, ``y = (f - 1) / (f + 1)``, |y| <= 0.2
    (16 terms: error below 1e-22), and ``ln w = ln f + e / (1 / ln 2)``.  Relative error ~1e-16.
    """
    w = 1.0 + u
    e = 0
    for _ in range(2100):
        if w < 1.5:
            break
        w = w / 2.0
        e += 1
    for _ in range(2100):
        if w >= 0.75:
            break
        w = w * 2.0
        e -= 1
    # unreduced: y from u itself (1 + u would lose u's low bits)
    y = u / (2.0 + u) if e == 0 else (w - 1.0) / (w + 1.0)
    y2 = y * y
    p = y
    s = 0.0
    for k in range(16):
        s = s + p / (2 * k + 1)
        p = p * y2
    return (s + s) + e / _INV_LN2


def det_exp(x):  # pragma: no cover - jitted
    """``exp(x)`` for |x| <= 700, bit-identical on CPU and GPU (see the module docstring).

    Halve x until |x| <= 0.5 (exact), sum the Taylor series to 22 terms (each term
    ``term * x / k``: the product feeds a division), then square back.  Relative error
    ~1e-15 for |x| up to ~20 (each squaring doubles the relative error).
    """
    m = 0
    for _ in range(64):
        if -0.5 <= x <= 0.5:
            break
        x = x / 2.0
        m += 1
    s = 1.0
    term = 1.0
    for k in range(1, 23):
        term = term * x / k
        s = s + term
    for _ in range(m):
        s = s * s
    return s


def ceil_i64(x):  # pragma: no cover - jitted
    """Smallest int64 >= x (|x| < 2^62; no float ``ceil`` whose lowering could differ)."""
    c = np.int64(x)
    if np.float64(c) < x:
        c += 1
    return c


# ----------------------------------------------------------------------------- state
def set_i64(state, i, v):  # pragma: no cover - jitted
    """Store int64 ``v`` exactly in ``state[i]`` (high part, ``v >> 31``) and ``state[i+1]`` (low 31 bits)."""
    state[i] = np.float64(v >> 31)
    state[i + 1] = np.float64(v & _LOW31)


def get_i64(state, i):  # pragma: no cover - jitted
    """The int64 stored by :func:`set_i64` at ``state[i:i+2]``."""
    return (np.int64(state[i]) << 31) + np.int64(state[i + 1])


# ----------------------------------------------------------------------------- orders and actions
def is_live(orders, k):  # pragma: no cover - jitted
    """Order slot ``k`` is live as far as the strategy knows (no final report yet) and not being cancelled.

    ``orders`` is the strategy's view of its orders (see :func:`gpuflow.kernels.backtest.engine_pair`):
    an order stays live until its last fill / cancel / reject report has reached the strategy.
    """
    return orders[k, O_STATE] != 0 and orders[k, O_CANCEL] < 0


def find_order(orders, inst, side):  # pragma: no cover - jitted
    """First live order slot of ``inst`` on ``side``; -1 if none."""
    for k in range(orders.shape[0]):
        if is_live(orders, k) and orders[k, O_INST] == inst and orders[k, O_SIDE] == side:
            return k
    return -1


def find_order_at(orders, inst, side, price):  # pragma: no cover - jitted
    """First live order slot of ``inst`` on ``side`` at ``price``; -1 if none."""
    for k in range(orders.shape[0]):
        if (is_live(orders, k) and orders[k, O_INST] == inst and orders[k, O_SIDE] == side
                and orders[k, O_PRICE] == price):
            return k
    return -1


def count_cancelling(orders, inst, side):  # pragma: no cover - jitted
    """Orders of ``inst`` on ``side`` (0: both) whose cancel is sent but not yet confirmed.

    Market makers wait for these before quoting that side again: the old order can still
    fill until the cancel reaches the exchange, and its slot stays taken until the report.
    """
    c = 0
    for k in range(orders.shape[0]):
        if (orders[k, O_STATE] != 0 and orders[k, O_CANCEL] >= 0 and orders[k, O_INST] == inst
                and (side == 0 or orders[k, O_SIDE] == side)):
            c += 1
    return c


def count_live(orders, inst):  # pragma: no cover - jitted
    """Live orders of ``inst`` (every instrument when ``inst < 0``)."""
    c = 0
    for k in range(orders.shape[0]):
        if is_live(orders, k) and (inst < 0 or orders[k, O_INST] == inst):
            c += 1
    return c


def add_action(acts, n, code, inst, side, price, qty, slot):  # pragma: no cover - jitted
    """Write action row ``n`` (code, instrument, side, price ticks, qty lots, slot); returns the new count.

    When ``acts`` is full the action is dropped (the count is returned unchanged).
    """
    if n >= acts.shape[0]:
        return n
    acts[n, AC_CODE] = code
    acts[n, AC_INST] = inst
    acts[n, AC_SIDE] = side
    acts[n, AC_PRICE] = price
    acts[n, AC_QTY] = qty
    acts[n, AC_SLOT] = slot
    return n + 1


def add_taker(acts, n, inst, side, qty, market, aggress, bp, ap, r):  # pragma: no cover - jitted
    """A liquidity-taking order: market (``market != 0``) or IOC limited ``aggress`` ticks through the touch.

    The IOC's limit is ``best ask + aggress`` for a buy, ``best bid - aggress`` for a sell (book row ``r``).
    """
    if market != 0:
        return add_action(acts, n, T_MARKET, inst, side, 0, qty, 0)
    px = ap[r, 0] + aggress if side > 0 else bp[r, 0] - aggress
    return add_action(acts, n, T_IOC, inst, side, px, qty, 0)


#: Every helper above, in dependency order (a strategy may list just the ones it calls, with their callees).
COMMON_CORES = (book_ok, mid2_of, micro_of, depth_of, imbalance_of, ewma_update, zscore_update, det_log1p,
                det_exp, ceil_i64, set_i64, get_i64, is_live, find_order, find_order_at, count_cancelling,
                count_live, add_action, add_taker)
