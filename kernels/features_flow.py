"""Trade-flow feature kernels: trade signs, per-bucket taker flow, mid sampling, returns, rolling RV and OLS.

Each piece of logic is a plain-Python scalar core (no allocation, no ``cuda.*``),
registered once with :class:`gpuflow.backend.Twins` and compiled twice: into the
CUDA kernels ``*_cuda`` (one thread per work item, ``i = cuda.grid(1)``) and into
their njit CPU twins ``*_cpu`` (a loop over the same work items).  Public
wrappers live in :mod:`gpuflow.features.flow`; they validate input, compute row
ranges with ``xp.searchsorted`` and call ``Backend.launch``.

Work decomposition and cost
---------------------------
* :data:`TRADE_SIGN`: one thread per print, O(1) each (the tick test's previous
  different price is found beforehand with a scan over runs of equal prices).
* :data:`FLOW_BUCKETS`: one thread per clock bucket, looping over that bucket's
  prints (rows ``pos[k] .. pos[k+1]``): O(prints) in total, no atomics, so the
  integer sums are exact and identical on both twins.
* :data:`MID`, :data:`SAMPLE`, :data:`LOG_RETURN`: elementwise.
* :data:`ROLLING_RV`, :data:`ROLLING_OLS`: one thread per output row recomputes
  its own window (``w`` rows; the OLS core makes three passes for a centred,
  numerically stable fit): O(n * w) work, O(1) memory, no prefix sums (whose
  differences lose precision on long series).  With ``w`` up to a few thousand
  buckets this is far below a single read of the events.

Float results are computed in the same order by both twins; they differ only
where the device contracts ``a*b + c`` into a fused multiply-add or uses its own
``log``, a few ulp.
"""
from __future__ import annotations

import math

from gpuflow.backend import KernelPair, Twins, cuda
from gpuflow.schema import EMPTY_ASK_PRICE, EMPTY_BID_PRICE, FLAG_AUCTION, KIND_EXECUTE, KIND_TRADE

__all__ = ["FLOW_BUCKETS", "LOG_RETURN", "MID", "ROLLING_OLS", "ROLLING_RV", "SAMPLE", "TRADE_SIGN",
           "flow_bucket", "imbalance_of", "log_return_at", "mid_ticks_at", "ols_window", "rv_window",
           "trade_sign_at"]

# ---- scalar cores -------------------------------------------------------------------------------


def trade_sign_at(kind, side, flags, price, bid, ask, prev_price, has_prev):  # pragma: no cover - jitted
    """Aggressor sign of one print: +1 buyer-initiated, -1 seller-initiated, 0 unknown.

    ::

        auction / cross (FLAG_AUCTION)   -> 0            (no aggressor)
        KIND_TRADE                       -> sign(side)   (side = aggressor)
        KIND_EXECUTE                     -> -sign(side)  (side = resting order)
        side 0, Lee-Ready quote rule     -> sign(2 * price - (bid + ask))   if a quote exists
        tie at the mid or no quote: tick -> sign(price - prev_price)         if has_prev
        otherwise                        -> 0

    ``bid``, ``ask``: best prices (ticks) prevailing before the print, EMPTY_*_PRICE when
    unknown; comparing ``2 * price`` with ``bid + ask`` keeps the quote rule in exact
    integers.  ``prev_price``: price of the last earlier print at a different price.
    """
    if (flags & FLAG_AUCTION) != 0:
        return 0
    if kind == KIND_TRADE:
        s = side
    elif kind == KIND_EXECUTE:
        s = -side
    else:
        return 0
    if s > 0:
        return 1
    if s < 0:
        return -1
    if bid > EMPTY_BID_PRICE and ask < EMPTY_ASK_PRICE:
        twice = 2 * price
        mid2 = bid + ask
        if twice > mid2:
            return 1
        if twice < mid2:
            return -1
    if has_prev != 0:
        if price > prev_price:
            return 1
        if price < prev_price:
            return -1
    return 0


def imbalance_of(buy, sell):  # pragma: no cover - jitted
    """``(buy - sell) / (buy + sell)``; NaN when both are 0 (no signed volume)."""
    tot = buy + sell
    if tot == 0:
        return math.nan
    return (buy - sell) / tot


def flow_bucket(lo, hi, sign, qty, price, dollar_scale):  # pragma: no cover - jitted
    """Taker flow of the prints ``lo <= r < hi`` of one bucket.

    Returns ``(n, buy_lots, sell_lots, unsigned_lots, ssdv)`` with::

        buy_lots      = sum(qty[r]  where sign[r] > 0)
        sell_lots     = sum(qty[r]  where sign[r] < 0)
        unsigned_lots = sum(qty[r]  where sign[r] == 0)
        ssdv          = sum(sign[r] * sqrt(|price[r] * qty[r] * dollar_scale|))

    ``dollar_scale = tick_size * lot_size`` turns ticks * lots into quote currency, so
    ``ssdv`` is Hasbrouck's signed square-root dollar volume.
    """
    buy = 0
    sell = 0
    unsigned = 0
    ssdv = 0.0
    for r in range(lo, hi):
        s = sign[r]
        q = qty[r]
        if s > 0:
            buy += q
            ssdv += math.sqrt(abs(float(price[r]) * float(q) * dollar_scale))
        elif s < 0:
            sell += q
            ssdv -= math.sqrt(abs(float(price[r]) * float(q) * dollar_scale))
        else:
            unsigned += q
    return hi - lo, buy, sell, unsigned, ssdv


def mid_ticks_at(bid, ask):  # pragma: no cover - jitted
    """``(bid + ask) / 2`` in ticks (float64); NaN when either side is empty."""
    if bid <= EMPTY_BID_PRICE or ask >= EMPTY_ASK_PRICE:
        return math.nan
    return 0.5 * (float(bid) + float(ask))


def log_return_at(m0, m1):  # pragma: no cover - jitted
    """``log(m1 / m0)``; NaN when either is NaN or not positive."""
    if not (m0 > 0.0 and m1 > 0.0):  # also catches NaN
        return math.nan
    return math.log(m1 / m0)


def rv_window(r, end, w, scale):  # pragma: no cover - jitted
    """``sqrt(scale * sum(r[end-w+1 .. end] ** 2))``; NaN if the window is not full or holds a NaN."""
    if end + 1 < w:
        return math.nan
    acc = 0.0
    for i in range(end - w + 1, end + 1):
        v = r[i]
        if math.isnan(v):
            return math.nan
        acc += v * v
    return math.sqrt(acc * scale)


def ols_window(y, x, end, w):  # pragma: no cover - jitted
    """OLS of ``y`` on ``x`` with intercept over rows ``end-w+1 .. end``: (slope, intercept, t, r2).

    ::

        xm, ym = mean(x), mean(y)
        Sxx = sum((x - xm)^2), Sxy = sum((x - xm)(y - ym)), Syy = sum((y - ym)^2)
        slope = Sxy / Sxx,  intercept = ym - slope * xm
        SSR = sum(((y - ym) - slope * (x - xm))^2)
        t = slope / sqrt(SSR / (w - 2) / Sxx)        (+-inf for a perfect fit)
        r2 = Sxy^2 / (Sxx * Syy)

    All four are NaN when the window is not full, holds a NaN, or ``x`` is constant
    (``Sxx == 0``); ``t`` and ``r2`` are NaN when ``y`` is constant.
    """
    nan = math.nan
    if end + 1 < w:
        return nan, nan, nan, nan
    start = end - w + 1
    sx = 0.0
    sy = 0.0
    for i in range(start, end + 1):
        xi = x[i]
        yi = y[i]
        if math.isnan(xi) or math.isnan(yi):
            return nan, nan, nan, nan
        sx += xi
        sy += yi
    xm = sx / w
    ym = sy / w
    sxx = 0.0
    sxy = 0.0
    syy = 0.0
    for i in range(start, end + 1):
        dx = x[i] - xm
        dy = y[i] - ym
        sxx += dx * dx
        sxy += dx * dy
        syy += dy * dy
    if not sxx > 0.0:
        return nan, nan, nan, nan
    b = sxy / sxx
    a = ym - b * xm
    if not syy > 0.0:
        return b, a, nan, nan
    ssr = 0.0
    for i in range(start, end + 1):
        e = (y[i] - ym) - b * (x[i] - xm)
        ssr += e * e
    r2 = (sxy * sxy) / (sxx * syy)
    if ssr > 0.0:
        t = b / math.sqrt(ssr / (w - 2) / sxx)
    elif b > 0.0:
        t = math.inf
    elif b < 0.0:
        t = -math.inf
    else:
        t = nan
    return b, a, t, r2


_TW = Twins(trade_sign_at, imbalance_of, flow_bucket, mid_ticks_at, log_return_at, rv_window, ols_window)

# ---- trade signs --------------------------------------------------------------------------------


def trade_sign_cuda(kind, side, flags, price, quote_row,
                    bid, ask, prev_price, has_prev, out):  # pragma: no cover - device code
    """GPU twin of :func:`trade_sign_cpu`: one thread per print (``out.size`` prints)."""
    j = cuda.grid(1)
    if j < out.size:
        q = quote_row[j]
        b = EMPTY_BID_PRICE
        a = EMPTY_ASK_PRICE
        if q >= 0:
            b = bid[q]
            a = ask[q]
        out[j] = trade_sign_at(kind[j], side[j], flags[j], price[j], b, a, prev_price[j], has_prev[j])


def trade_sign_cpu(kind, side, flags, price, quote_row,
                   bid, ask, prev_price, has_prev, out):  # pragma: no cover - jitted
    """CPU twin: ``out[j] = trade_sign_at(...)`` for every print j.

    Per-print arrays (length T): ``kind`` uint8, ``side`` int8, ``flags`` uint16,
    ``price`` int64 ticks, ``quote_row`` int64 (row of ``bid``/``ask`` prevailing
    before the print, -1 none), ``prev_price`` int64, ``has_prev`` uint8; ``bid``,
    ``ask``: int64 best prices per book row; ``out``: int8 (T,).
    """
    for j in range(out.size):
        q = quote_row[j]
        b = EMPTY_BID_PRICE
        a = EMPTY_ASK_PRICE
        if q >= 0:
            b = bid[q]
            a = ask[q]
        out[j] = trade_sign_at(kind[j], side[j], flags[j], price[j], b, a, prev_price[j], has_prev[j])


# ---- taker flow per bucket ----------------------------------------------------------------------


def flow_buckets_cuda(pos, sign, qty, price, dollar_scale,
                      n_out, buy, sell, unsigned, ssdv, imb):  # pragma: no cover - device code
    """GPU twin of :func:`flow_buckets_cpu`: one thread per bucket (``n_out.size`` buckets)."""
    k = cuda.grid(1)
    if k < n_out.size:
        n, b, s, u, d = flow_bucket(pos[k], pos[k + 1], sign, qty, price, dollar_scale)
        n_out[k] = n
        buy[k] = b
        sell[k] = s
        unsigned[k] = u
        ssdv[k] = d
        imb[k] = imbalance_of(b, s)


def flow_buckets_cpu(pos, sign, qty, price, dollar_scale,
                     n_out, buy, sell, unsigned, ssdv, imb):  # pragma: no cover - jitted
    """CPU twin: bucket k holds prints ``pos[k] <= r < pos[k+1]`` (see :func:`flow_bucket`).

    ``pos``: int64 (m+1,); ``sign`` int8, ``qty`` int64 lots, ``price`` int64 ticks per
    print; ``dollar_scale`` float64 (tick_size * lot_size); outputs (m,): ``n_out``,
    ``buy``, ``sell``, ``unsigned`` int64, ``ssdv``, ``imb`` float64.
    """
    for k in range(n_out.size):
        n, b, s, u, d = flow_bucket(pos[k], pos[k + 1], sign, qty, price, dollar_scale)
        n_out[k] = n
        buy[k] = b
        sell[k] = s
        unsigned[k] = u
        ssdv[k] = d
        imb[k] = imbalance_of(b, s)


# ---- mid, sampling, log returns -----------------------------------------------------------------


def mid_cuda(bid, ask, out):  # pragma: no cover - device code
    """GPU twin of :func:`mid_cpu`."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = mid_ticks_at(bid[i], ask[i])


def mid_cpu(bid, ask, out):  # pragma: no cover - jitted
    """CPU twin: ``out[i] = mid_ticks_at(bid[i], ask[i])`` (int64 ticks in, float64 ticks out)."""
    for i in range(out.size):
        out[i] = mid_ticks_at(bid[i], ask[i])


def sample_cuda(values, row, out):  # pragma: no cover - device code
    """GPU twin of :func:`sample_cpu`."""
    i = cuda.grid(1)
    if i < out.size:
        r = row[i]
        out[i] = values[r] if r >= 0 else math.nan


def sample_cpu(values, row, out):  # pragma: no cover - jitted
    """CPU twin: ``out[i] = values[row[i]]``, NaN where ``row[i] < 0`` (no value yet)."""
    for i in range(out.size):
        r = row[i]
        out[i] = values[r] if r >= 0 else math.nan


def log_return_cuda(mid, out):  # pragma: no cover - device code
    """GPU twin of :func:`log_return_cpu`."""
    k = cuda.grid(1)
    if k < out.size:
        out[k] = log_return_at(mid[k], mid[k + 1])


def log_return_cpu(mid, out):  # pragma: no cover - jitted
    """CPU twin: ``out[k] = log(mid[k+1] / mid[k])`` for the m buckets between m+1 samples."""
    for k in range(out.size):
        out[k] = log_return_at(mid[k], mid[k + 1])


# ---- rolling windows ----------------------------------------------------------------------------


def rolling_rv_cuda(r, w, scale, out):  # pragma: no cover - device code
    """GPU twin of :func:`rolling_rv_cpu`: one thread per output row, O(w) each."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = rv_window(r, i, w, scale)


def rolling_rv_cpu(r, w, scale, out):  # pragma: no cover - jitted
    """CPU twin: ``out[i] = rv_window(r, i, w, scale)`` (float64 returns in and out)."""
    for i in range(out.size):
        out[i] = rv_window(r, i, w, scale)


def rolling_ols_cuda(y, x, w, slope, intercept, tstat, r2):  # pragma: no cover - device code
    """GPU twin of :func:`rolling_ols_cpu`: one thread per output row, O(w) each."""
    i = cuda.grid(1)
    if i < slope.size:
        b, a, t, q = ols_window(y, x, i, w)
        slope[i] = b
        intercept[i] = a
        tstat[i] = t
        r2[i] = q


def rolling_ols_cpu(y, x, w, slope, intercept, tstat, r2):  # pragma: no cover - jitted
    """CPU twin: the OLS of ``y`` on ``x`` over rows ``i-w+1 .. i`` for every row i (:func:`ols_window`)."""
    for i in range(slope.size):
        b, a, t, q = ols_window(y, x, i, w)
        slope[i] = b
        intercept[i] = a
        tstat[i] = t
        r2[i] = q


TRADE_SIGN = KernelPair("trade_sign", _TW.cuda(trade_sign_cuda), _TW.cpu(trade_sign_cpu, cache=True))
FLOW_BUCKETS = KernelPair("flow_buckets", _TW.cuda(flow_buckets_cuda), _TW.cpu(flow_buckets_cpu, cache=True),
                          threads=128)
MID = KernelPair("mid", _TW.cuda(mid_cuda), _TW.cpu(mid_cpu, cache=True))
SAMPLE = KernelPair("sample", _TW.cuda(sample_cuda), _TW.cpu(sample_cpu, cache=True))
LOG_RETURN = KernelPair("log_return", _TW.cuda(log_return_cuda), _TW.cpu(log_return_cpu, cache=True))
ROLLING_RV = KernelPair("rolling_rv", _TW.cuda(rolling_rv_cuda), _TW.cpu(rolling_rv_cpu, cache=True),
                        threads=128)
ROLLING_OLS = KernelPair("rolling_ols", _TW.cuda(rolling_ols_cuda), _TW.cpu(rolling_ols_cpu, cache=True),
                         threads=128)
