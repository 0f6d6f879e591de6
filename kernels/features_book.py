"""Book-shape feature kernels (spread, mid, weighted mid, depth imbalance) and their njit twins.

Every kernel runs one thread per book row ``i`` (one row of a
:class:`gpuflow.book.BookFrame`) and reads only that row, so rows are independent
and there is no race.  Inputs are the frame's int64 columns of shape ``(n, N)``:
``bid_price``/``ask_price`` in ticks (a missing level holds
``EMPTY_BID_PRICE``/``EMPTY_ASK_PRICE``), ``bid_qty``/``ask_qty`` in lots (0 for a
missing level).  Outputs are float64 and NaN where the feature is undefined::

    spread_i     = Pa_1 - Pb_1                                  (ticks)
    mid_i        = (Pb_1 + Pa_1) / 2                            (ticks)
    microprice_i = (Pa_1 * qb_1 + Pb_1 * qa_1) / (qb_1 + qa_1)  (ticks)
                 = Pb_1 + (Pa_1 - Pb_1) * qb_1 / (qb_1 + qa_1)  (the form computed: no int64 products)
    imb_i(k)     = (sum_{m<=k} qb_m - sum_{m<=k} qa_m) / (sum_{m<=k} qb_m + sum_{m<=k} qa_m)

spread, mid and microprice are NaN when a side is empty (its level-1 price is the
sentinel); microprice is also NaN when ``qb_1 + qa_1 == 0``; ``imb(k)`` is NaN
when the first k levels of both sides hold no size (so +1 / -1 when only one side
has size).  The public wrappers are in :mod:`gpuflow.features.book`.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from gpuflow.backend import KernelPair, Twins, cuda
from gpuflow.schema import EMPTY_ASK_PRICE, EMPTY_BID_PRICE

__all__ = [
    "BOOK_FEATURES",
    "DEPTH_IMBALANCE",
    "MICROPRICE",
    "MID",
    "SPREAD",
    "depth_imbalance_at",
    "microprice_at",
    "mid_at",
    "spread_at",
]

_EMPTY_BID = np.int64(EMPTY_BID_PRICE)
_EMPTY_ASK = np.int64(EMPTY_ASK_PRICE)
_NAN = np.float64(np.nan)


# ----------------------------------------------------------------------------- scalar cores
# Plain Python, compiled twice by Twins (njit for the CPU twins, CUDA device functions for the kernels).
def spread_at(bp, ap):  # pragma: no cover - jitted
    """Level-1 spread in ticks (float64), NaN when a side is empty.

    The sentinels are checked before subtracting: ``EMPTY_ASK - EMPTY_BID`` overflows int64.
    """
    if bp == _EMPTY_BID or ap == _EMPTY_ASK:
        return _NAN
    return np.float64(ap - bp)


def mid_at(bp, ap):  # pragma: no cover - jitted
    """Mid price in ticks (float64), NaN when a side is empty; the int64 sum is exact, then one rounding."""
    if bp == _EMPTY_BID or ap == _EMPTY_ASK:
        return _NAN
    return np.float64(bp + ap) * 0.5


def microprice_at(bp, bq, ap, aq):  # pragma: no cover - jitted
    """Size-weighted mid ``Pb + (Pa - Pb) * qb / (qb + qa)`` in ticks; NaN for an empty side or no size.

    The last step is a multiply-add, which the GPU compiler may fuse: the twins agree to an ulp or so
    (no cancellation: the value lies between the two prices).
    """
    if bp == _EMPTY_BID or ap == _EMPTY_ASK:
        return _NAN
    tot = bq + aq
    if tot == 0:
        return _NAN
    return np.float64(bp) + np.float64(ap - bp) * (np.float64(bq) / np.float64(tot))


def depth_imbalance_at(i, k, bid_qty, ask_qty):  # pragma: no cover - jitted
    """Depth imbalance of row ``i`` over its first ``k`` levels; NaN when both sides hold no size."""
    b = np.int64(0)
    a = np.int64(0)
    for m in range(k):
        b += bid_qty[i, m]
        a += ask_qty[i, m]
    tot = b + a
    if tot == 0:
        return _NAN
    return np.float64(b - a) / np.float64(tot)


# ----------------------------------------------------------------------------- CUDA kernels
# One thread per row (rows are independent; 2-D columns are row-major, so a warp's level-1 loads
# are a stride of N apart: N <= 20, so a few cache lines per warp).
def spread_cuda(bid_price, ask_price, out):  # pragma: no cover - device code
    """``out[i] = spread_at(...)`` (float64 (n,)).  Twin: :func:`spread_cpu`."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = spread_at(bid_price[i, 0], ask_price[i, 0])


def mid_cuda(bid_price, ask_price, out):  # pragma: no cover - device code
    """``out[i] = mid_at(...)`` (float64 (n,)).  Twin: :func:`mid_cpu`."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = mid_at(bid_price[i, 0], ask_price[i, 0])


def microprice_cuda(bid_price, bid_qty, ask_price, ask_qty, out):  # pragma: no cover - device code
    """``out[i] = microprice_at(...)`` (float64 (n,)).  Twin: :func:`microprice_cpu`."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = microprice_at(bid_price[i, 0], bid_qty[i, 0], ask_price[i, 0], ask_qty[i, 0])


def depth_imbalance_cuda(k, bid_qty, ask_qty, out):  # pragma: no cover - device code
    """``out[i] = depth_imbalance_at(i, k, ...)`` (float64 (n,)).  Twin: :func:`depth_imbalance_cpu`."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = depth_imbalance_at(i, k, bid_qty, ask_qty)


def book_features_at(i, bid_price, bid_qty, ask_price, ask_qty, ks, spread, mid, micro,
                     imb):  # pragma: no cover - jitted
    """All book features of row ``i``: the body shared by :data:`BOOK_FEATURES`' twins."""
    bp = bid_price[i, 0]
    ap = ask_price[i, 0]
    spread[i] = spread_at(bp, ap)
    mid[i] = mid_at(bp, ap)
    micro[i] = microprice_at(bp, bid_qty[i, 0], ap, ask_qty[i, 0])
    for j in range(ks.size):
        imb[i, j] = depth_imbalance_at(i, ks[j], bid_qty, ask_qty)


def book_features_cuda(bid_price, bid_qty, ask_price, ask_qty, ks, spread, mid, micro,
                       imb):  # pragma: no cover - device code
    """Every book feature of row ``i`` in one launch; ``imb[i, j]`` is the imbalance over ``ks[j]`` levels.

    Twin: :func:`book_features_cpu`.
    """
    i = cuda.grid(1)
    if i < spread.size:
        book_features_at(i, bid_price, bid_qty, ask_price, ask_qty, ks, spread, mid, micro, imb)


# ----------------------------------------------------------------------------- CPU twins
def spread_cpu(bid_price, ask_price, out):  # pragma: no cover - jitted
    """CPU twin of :func:`spread_cuda`."""
    for i in prange(out.size):
        out[i] = spread_at(bid_price[i, 0], ask_price[i, 0])


def mid_cpu(bid_price, ask_price, out):  # pragma: no cover - jitted
    """CPU twin of :func:`mid_cuda`."""
    for i in prange(out.size):
        out[i] = mid_at(bid_price[i, 0], ask_price[i, 0])


def microprice_cpu(bid_price, bid_qty, ask_price, ask_qty, out):  # pragma: no cover - jitted
    """CPU twin of :func:`microprice_cuda`."""
    for i in prange(out.size):
        out[i] = microprice_at(bid_price[i, 0], bid_qty[i, 0], ask_price[i, 0], ask_qty[i, 0])


def depth_imbalance_cpu(k, bid_qty, ask_qty, out):  # pragma: no cover - jitted
    """CPU twin of :func:`depth_imbalance_cuda`."""
    for i in prange(out.size):
        out[i] = depth_imbalance_at(i, k, bid_qty, ask_qty)


def book_features_cpu(bid_price, bid_qty, ask_price, ask_qty, ks, spread, mid, micro,
                      imb):  # pragma: no cover - jitted
    """CPU twin of :func:`book_features_cuda`."""
    for i in prange(spread.size):
        book_features_at(i, bid_price, bid_qty, ask_price, ask_qty, ks, spread, mid, micro, imb)


_TW = Twins(spread_at, mid_at, microprice_at, depth_imbalance_at, book_features_at)
# rows are independent: prange on the CPU, as one thread per row on the GPU
_PAR = {"parallel": True, "cache": True}

SPREAD = KernelPair("features.spread", _TW.cuda(spread_cuda), _TW.cpu(spread_cpu, **_PAR))
MID = KernelPair("features.mid", _TW.cuda(mid_cuda), _TW.cpu(mid_cpu, **_PAR))
MICROPRICE = KernelPair("features.microprice", _TW.cuda(microprice_cuda), _TW.cpu(microprice_cpu, **_PAR))
DEPTH_IMBALANCE = KernelPair("features.depth_imbalance", _TW.cuda(depth_imbalance_cuda),
                             _TW.cpu(depth_imbalance_cpu, **_PAR))
BOOK_FEATURES = KernelPair("features.book_features", _TW.cuda(book_features_cuda),
                           _TW.cpu(book_features_cpu, **_PAR))
