"""Order-flow imbalance kernels over book rows (per row, per clock bucket, normalised) and their njit twins.

Order-flow imbalance at level m between book rows i-1 and i (Cont, Kukanov and
Stoikov 2014, eq. 2; per level as in Xu, Gould and Howison 2019), exactly the
formula fused into the book replay (:mod:`gpuflow.kernels.book`)::

    e_m(i) = 1{Pb_m(i) >= Pb_m(i-1)} qb_m(i) - 1{Pb_m(i) <= Pb_m(i-1)} qb_m(i-1)
           - 1{Pa_m(i) <= Pa_m(i-1)} qa_m(i) + 1{Pa_m(i) >= Pa_m(i-1)} qa_m(i-1)

Prices in ticks, sizes in lots (int64); a missing level has price
EMPTY_BID/ASK_PRICE and size 0, so a level that appears or vanishes counts its
whole size.  Row -1 is the ``prev`` book passed in (arrays of length ``levels``).
The kernels:

* :data:`OFI`: ``out[i, m] = e_m(i)`` (int64), one thread per row.
* :data:`OFI_BUCKETED`: ``out[j, m] = sum_{bounds[j] <= i < bounds[j+1]} e_m(i)`` (int64),
  one thread per bucket (rows of a bucket are contiguous).
* :data:`VWOFI`: ``out[i] = sum_m w_m e_m(i) / Qbar(i)``, ``Qbar(i) = sum_m (qb_m(i) + qa_m(i)) / (2M)``
  (float64, NaN when ``Qbar == 0``), one thread per row; bit-identical twins for equal weights (an
  integer sum), FMA-level agreement for general weights (see :func:`vwofi_row`).
* :data:`SPREAD_ADJUSTED_OFI`: ``out[i, m] = e_m(i) / (Pa_1(i) - Pb_1(i))`` (float64, NaN when a side
  is empty or the spread is not positive), one thread per row.

Each thread reads rows i-1 and i only (or its bucket's rows and the row before),
and writes its own output row: no races.  The public wrappers are in
:mod:`gpuflow.features.ofi`.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from gpuflow.backend import KernelPair, Twins, cuda
from gpuflow.schema import EMPTY_ASK_PRICE, EMPTY_BID_PRICE

__all__ = ["OFI", "OFI_BUCKETED", "SPREAD_ADJUSTED_OFI", "VWOFI", "ofi_e", "ofi_row_level"]

_EMPTY_BID = np.int64(EMPTY_BID_PRICE)
_EMPTY_ASK = np.int64(EMPTY_ASK_PRICE)
_NAN = np.float64(np.nan)


# ----------------------------------------------------------------------------- scalar cores
# Plain Python, compiled twice by Twins (njit for the CPU twins, CUDA device functions for the kernels).
def ofi_e(bp, bq, ap, aq, pbp, pbq, pap, paq):  # pragma: no cover - jitted
    """``e`` of one level: current (bp, bq, ap, aq) against previous (pbp, pbq, pap, paq); int64 lots."""
    e = np.int64(0)
    if bp >= pbp:
        e += bq
    if bp <= pbp:
        e -= pbq
    if ap <= pap:
        e -= aq
    if ap >= pap:
        e += paq
    return e


def ofi_row_level(i, m, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap,
                  prev_aq):  # pragma: no cover - jitted
    """``e_m(i)``: row ``i`` against row ``i - 1``, or against the ``prev`` book for ``i == 0``."""
    if i == 0:
        return ofi_e(bid_price[0, m], bid_qty[0, m], ask_price[0, m], ask_qty[0, m],
                     prev_bp[m], prev_bq[m], prev_ap[m], prev_aq[m])
    return ofi_e(bid_price[i, m], bid_qty[i, m], ask_price[i, m], ask_qty[i, m],
                 bid_price[i - 1, m], bid_qty[i - 1, m], ask_price[i - 1, m], ask_qty[i - 1, m])


def ofi_row(i, levels, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
            out):  # pragma: no cover - jitted
    """Row ``i`` of :data:`OFI`."""
    for m in range(levels):
        out[i, m] = ofi_row_level(i, m, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap,
                                  prev_aq)


def ofi_bucket(j, levels, bounds, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
               out):  # pragma: no cover - jitted
    """Bucket ``j`` of :data:`OFI_BUCKETED`: the sum of ``e_m`` over rows ``bounds[j] .. bounds[j+1]-1``."""
    for m in range(levels):
        out[j, m] = 0
    for i in range(bounds[j], bounds[j + 1]):
        for m in range(levels):
            out[j, m] += ofi_row_level(i, m, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap,
                                       prev_aq)


def vwofi_row(i, levels, uniform, w, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap,
              prev_aq):  # pragma: no cover - jitted
    """``sum_m w_m e_m(i) / Qbar(i)`` with ``Qbar(i) = sum_m (qb_m + qa_m) / (2 M)``; NaN when ``Qbar == 0``.

    With ``uniform`` weights (``w_m = 1/M``) this is ``2 * sum_m e_m / depth``: an exact int64 sum and one
    correctly rounded division, so both twins give the same bits.  General weights accumulate
    ``w_m * e_m`` in float64, which the GPU compiler may contract into fused multiply-adds: the twins
    then agree to ~1e-16 of ``sum_m |w_m e_m| / Qbar`` (not of the result, which may cancel to ~0).
    """
    depth = np.int64(0)
    esum = np.int64(0)
    num = np.float64(0.0)
    for m in range(levels):
        depth += bid_qty[i, m] + ask_qty[i, m]
        e = ofi_row_level(i, m, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq)
        esum += e
        if not uniform:
            num += w[m] * np.float64(e)
    if depth == 0:
        return _NAN
    if uniform:
        return np.float64(2 * esum) / np.float64(depth)
    return num * np.float64(2 * levels) / np.float64(depth)


def spread_adjusted_row(i, levels, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
                        out):  # pragma: no cover - jitted
    """Row ``i`` of :data:`SPREAD_ADJUSTED_OFI`: ``e_m(i)`` over the level-1 spread of row ``i`` (ticks)."""
    bp = bid_price[i, 0]
    ap = ask_price[i, 0]
    s = np.int64(0)
    if bp != _EMPTY_BID and ap != _EMPTY_ASK:  # sentinels first: EMPTY_ASK - EMPTY_BID overflows int64
        s = ap - bp
    for m in range(levels):
        if s <= 0:
            out[i, m] = _NAN
        else:
            out[i, m] = np.float64(ofi_row_level(i, m, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq,
                                                 prev_ap, prev_aq)) / np.float64(s)


# ----------------------------------------------------------------------------- CUDA kernels
def ofi_cuda(levels, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
             out):  # pragma: no cover - device code
    """One thread per row: ``out[i, m] = e_m(i)`` (int64 (n, levels)).  Twin: :func:`ofi_cpu`."""
    i = cuda.grid(1)
    if i < out.shape[0]:
        ofi_row(i, levels, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq, out)


def ofi_bucketed_cuda(levels, bounds, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
                      out):  # pragma: no cover - device code
    """One thread per bucket (int64 (G, levels)); ``bounds`` int64 (G + 1,) row offsets.  Twin: :func:`ofi_bucketed_cpu`.

    A thread walks its bucket's rows: the work is uneven across buckets, but each row is read by one
    thread only (plus the row before the bucket), and no (n, levels) temporary is written.
    """
    j = cuda.grid(1)
    if j < out.shape[0]:
        ofi_bucket(j, levels, bounds, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
                   out)


def vwofi_cuda(levels, uniform, w, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
               out):  # pragma: no cover - device code
    """One thread per row: depth-normalised weighted OFI (float64 (n,)).  Twin: :func:`vwofi_cpu`."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = vwofi_row(i, levels, uniform, w, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq)


def spread_adjusted_ofi_cuda(levels, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
                             out):  # pragma: no cover - device code
    """One thread per row: ``e_m(i) / spread(i)`` (float64 (n, levels)).  Twin: :func:`spread_adjusted_ofi_cpu`."""
    i = cuda.grid(1)
    if i < out.shape[0]:
        spread_adjusted_row(i, levels, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
                            out)


# ----------------------------------------------------------------------------- CPU twins
def ofi_cpu(levels, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
            out):  # pragma: no cover - jitted
    """CPU twin of :func:`ofi_cuda`."""
    for i in prange(out.shape[0]):
        ofi_row(i, levels, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq, out)


def ofi_bucketed_cpu(levels, bounds, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
                     out):  # pragma: no cover - jitted
    """CPU twin of :func:`ofi_bucketed_cuda`."""
    for j in prange(out.shape[0]):
        ofi_bucket(j, levels, bounds, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
                   out)


def vwofi_cpu(levels, uniform, w, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
              out):  # pragma: no cover - jitted
    """CPU twin of :func:`vwofi_cuda`."""
    for i in prange(out.size):
        out[i] = vwofi_row(i, levels, uniform, w, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq)


def spread_adjusted_ofi_cpu(levels, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
                            out):  # pragma: no cover - jitted
    """CPU twin of :func:`spread_adjusted_ofi_cuda`."""
    for i in prange(out.shape[0]):
        spread_adjusted_row(i, levels, bid_price, bid_qty, ask_price, ask_qty, prev_bp, prev_bq, prev_ap, prev_aq,
                            out)


_TW = Twins(ofi_e, ofi_row_level, ofi_row, ofi_bucket, vwofi_row, spread_adjusted_row)
# rows (buckets) are independent: prange on the CPU, one thread each on the GPU
_PAR = {"parallel": True, "cache": True}

OFI = KernelPair("features.ofi", _TW.cuda(ofi_cuda), _TW.cpu(ofi_cpu, **_PAR))
OFI_BUCKETED = KernelPair("features.ofi_bucketed", _TW.cuda(ofi_bucketed_cuda), _TW.cpu(ofi_bucketed_cpu, **_PAR))
VWOFI = KernelPair("features.vwofi", _TW.cuda(vwofi_cuda), _TW.cpu(vwofi_cpu, **_PAR))
SPREAD_ADJUSTED_OFI = KernelPair("features.spread_adjusted_ofi", _TW.cuda(spread_adjusted_ofi_cuda),
                                 _TW.cpu(spread_adjusted_ofi_cpu, **_PAR))
