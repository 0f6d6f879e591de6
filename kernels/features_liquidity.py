"""Kernels of :mod:`gpuflow.features.liquidity`: hidden liquidity, icebergs, quote stuffing, latency, lead-lag.

Each piece of logic is written once as a plain-Python scalar core (no allocation, no ``cuda.*``) and
compiled twice by :class:`gpuflow.backend.Twins`: as numba njit functions for the CPU twins
(``*_cpu``) and as CUDA device functions for the kernels (``*_cuda``).  Every :class:`KernelPair`
below has one signature; the CPU twin is the reference and the parity tests
(``tests/features/test_liquidity.py``) run both on the same inputs.

Work decomposition (the launcher picks the geometry, one work item per thread):

==================  ==========================  ====================================================
pair                work item                   what it writes
==================  ==========================  ====================================================
HIDDEN_EVENTS       one event                   ``vals[:, i]``: hidden lots, hidden flag, traded lots,
                                                unresolved flag (L2)
QUOTE_EVENTS        one event                   ``vals[:, i]``: message end, row, cancel, trade
BUCKET_SUM          one clock bucket            ``out[r, b] = sum(vals[r, bounds[b]:bounds[b+1]])``
RATIO               one element                 ``a / b`` (NaN when ``b <= 0``)
BURSTS              one window                  trailing median of message counts, burst flag
LATENCY             one event                   ``ts_local - ts_exch`` and whether the row counts
GROUP_STATS         one group (sorted values)   count, min, max, mean
PERCENTILES         one (group, percentile)     numpy's ``linear`` percentile
GRID_RETURNS        one grid step               as-of sampled return on a clock grid
XCORR               one lag                     Pearson correlation of shifted returns, pair count
ORDER_PASS          one order id (L3)           emptied state, add size, cumulative executed lots
ICEBERG_L2          one (side, price) level     refill count, executed lots, chain id per refill event
ICEBERG_L3          one (side, price) level     same, from order adds and executions
==================  ==========================  ====================================================

The per-level and per-order kernels are sequential inside a group (the state machine of one price
level or one order) and parallel across groups: the caller sorts the relevant events stably by the
group key, so each thread walks its group's events in time order and writes results back at the
events' original row indices (no two threads write the same row: no races, no atomics).
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from gpuflow.backend import KernelPair, Twins, cuda
from gpuflow.schema import (
    FLAG_AUCTION,
    FLAG_EOM,
    FLAG_HIDDEN,
    FLAG_TS_EXCH_MISSING,
    KIND_ADD,
    KIND_CANCEL,
    KIND_DELETE,
    KIND_EXECUTE,
    KIND_MODIFY,
    KIND_SET,
    KIND_TRADE,
)

__all__ = [
    "BUCKET_SUM",
    "BURSTS",
    "EMPTIED_BY_CANCEL",
    "EMPTIED_BY_EXECUTION",
    "GRID_RETURNS",
    "GROUP_STATS",
    "HIDDEN_EVENTS",
    "ICEBERG_L2",
    "ICEBERG_L3",
    "LATENCY",
    "MAX_MEDIAN_WINDOWS",
    "MODE_L2",
    "MODE_L3",
    "ORDER_PASS",
    "PERCENTILES",
    "QUOTE_EVENTS",
    "RATIO",
    "XCORR",
    "asof_index",
    "bucket_sum_at",
    "burst_at",
    "displayed_through",
    "grid_return_at",
    "group_stats_at",
    "hidden_event_at",
    "iceberg_l2_group",
    "iceberg_l3_group",
    "latency_at",
    "median_of",
    "order_pass_group",
    "percentile_at",
    "quote_event_at",
    "ratio_at",
    "xcorr_at",
]

#: Events are L2 (level sets and trade prints).
MODE_L2 = 0
#: Events are L3 (order adds, cancels, deletes, executions).
MODE_L3 = 1
#: Longest trailing window of the rolling median (a CUDA local array needs a compile-time size).
MAX_MEDIAN_WINDOWS = 256
#: ORDER_PASS state: an execution left the order with no lots.
EMPTIED_BY_EXECUTION = 1
#: ORDER_PASS state: a cancel, delete or modify left the order with no lots.
EMPTIED_BY_CANCEL = 2

_NAN = math.nan


# ============================================================================ scalar cores
# Plain Python: compiled twice by Twins (njit for the CPU twins, CUDA device functions for the kernels).
def displayed_through(r, s, p, bp, bq, ap, aq):  # pragma: no cover - jitted
    """Displayed lots an aggressor of side ``s`` could take at prices at or better than ``p``, book row ``r``.

    ``avail = sum(ask_qty[r, m] for ask_price[r, m] <= p)`` for a buyer (``s > 0``),
    ``sum(bid_qty[r, m] for bid_price[r, m] >= p)`` for a seller.  Returns ``(avail, resolved)``;
    ``resolved`` is False when every one of the N levels of the row is at or better than ``p`` (a
    deeper level, not in the frame, could be too) and when the passive side is empty (a book not yet
    built, e.g. before the first snapshot).  Empty levels carry EMPTY_*_PRICE, beyond any p.
    """
    nlev = bp.shape[1]
    avail = np.int64(0)
    resolved = False
    if (s > 0 and aq[r, 0] <= 0) or (s < 0 and bq[r, 0] <= 0):
        return avail, resolved
    if s > 0:
        for m in range(nlev):
            if ap[r, m] <= p:
                avail += aq[r, m]
            else:
                resolved = True
                break
    else:
        for m in range(nlev):
            if bp[r, m] >= p:
                avail += bq[r, m]
            else:
                resolved = True
                break
    return avail, resolved


def hidden_event_at(i, mode, kind, side, price, qty, flags, bp, bq, ap, aq, vals):  # pragma: no cover - jitted
    """Classify event ``i`` for hidden liquidity; write ``vals[0..3, i]``.

    Rows of ``vals``: 0 hidden lots, 1 hidden flag (1 when row 0 > 0), 2 traded lots (the share's
    denominator), 3 unresolved flag.

    * L3 (``mode == MODE_L3``): a KIND_TRADE with FLAG_HIDDEN (and not FLAG_AUCTION) is hidden for all
      its lots; traded lots are those of KIND_EXECUTE rows plus hidden trades (other KIND_TRADE rows
      are prints of executions already counted, as Databento's ``T`` next to its ``F`` fills, or
      auction crosses).
    * L2: a KIND_TRADE (not FLAG_AUCTION) of aggressor side ``s`` and ``q`` lots at price ``p`` is
      compared with the book row ``i - 1`` (the book just before it):
      ``hidden = max(0, q - displayed_through(i - 1, s, p))``; unresolved when ``s == 0``, ``i == 0``,
      the passive side is empty or the frame's N levels do not reach past ``p``.
    """
    k = kind[i]
    f = flags[i]
    q = qty[i]
    hid = np.int64(0)
    trd = np.int64(0)
    unr = np.int64(0)
    if mode == MODE_L3:
        if k == KIND_EXECUTE:
            trd = q
        elif k == KIND_TRADE and (f & FLAG_HIDDEN) != 0 and (f & FLAG_AUCTION) == 0:
            trd = q
            hid = q
    elif k == KIND_TRADE and (f & FLAG_AUCTION) == 0:
        trd = q
        s = side[i]
        if s == 0 or i == 0:
            unr = np.int64(1)
        else:
            avail, resolved = displayed_through(i - 1, s, price[i], bp, bq, ap, aq)
            if resolved:
                if q > avail:
                    hid = q - avail
            else:
                unr = np.int64(1)
    vals[0, i] = hid
    vals[1, i] = 1 if hid > 0 else 0
    vals[2, i] = trd
    vals[3, i] = unr


def quote_event_at(i, mode, kind, qty, flags, vals):  # pragma: no cover - jitted
    """Classify event ``i`` for quote stuffing; write ``vals[0..3, i]``.

    Rows: 0 message end (FLAG_EOM), 1 row (always 1), 2 cancel, 3 trade.
    L3: cancel = KIND_CANCEL or KIND_DELETE; trade = KIND_EXECUTE or a hidden KIND_TRADE.
    L2: cancel = KIND_SET with qty 0 (a level removal; snapshot rows are not counted);
    trade = KIND_TRADE that is not an auction cross.
    """
    k = kind[i]
    f = flags[i]
    c = 0
    t = 0
    if mode == MODE_L3:
        if k == KIND_CANCEL or k == KIND_DELETE:
            c = 1
        elif k == KIND_EXECUTE or (k == KIND_TRADE and (f & FLAG_HIDDEN) != 0 and (f & FLAG_AUCTION) == 0):
            t = 1
    else:
        if k == KIND_SET and qty[i] == 0:
            c = 1
        elif k == KIND_TRADE and (f & FLAG_AUCTION) == 0:
            t = 1
    vals[0, i] = 1 if (f & FLAG_EOM) != 0 else 0
    vals[1, i] = 1
    vals[2, i] = c
    vals[3, i] = t


def bucket_sum_at(b, bounds, vals, out):  # pragma: no cover - jitted
    """``out[r, b] = sum(vals[r, bounds[b]:bounds[b + 1]])`` for every row r (int64, exact)."""
    lo = bounds[b]
    hi = bounds[b + 1]
    for r in range(vals.shape[0]):
        acc = np.int64(0)
        for i in range(lo, hi):
            acc += vals[r, i]
        out[r, b] = acc


def ratio_at(a, b):  # pragma: no cover - jitted
    """``a / b`` as float64, NaN when ``b <= 0`` (no denominator: undefined, not zero)."""
    if b > 0:
        return a / b
    return _NAN


def median_of(buf, m):  # pragma: no cover - jitted
    """Median of ``buf[:m]`` (m >= 1), sorting it in place (insertion sort: m is small)."""
    for a in range(1, m):
        v = buf[a]
        b = a - 1
        while b >= 0 and buf[b] > v:
            buf[b + 1] = buf[b]
            b -= 1
        buf[b + 1] = v
    h = m // 2
    if m % 2 == 1:
        return np.float64(buf[h])
    return 0.5 * (np.float64(buf[h - 1]) + np.float64(buf[h]))


def burst_at(w, counts, m, k, buf, med, burst):  # pragma: no cover - jitted
    """Trailing median and burst flag of window ``w``.

    ``med[w] = median(counts[w - m' : w])`` with ``m' = min(m, w)`` (the windows *before* w; NaN when
    ``w == 0``), ``burst[w] = counts[w] > k * max(med[w], 1)`` (and 0 when there is no baseline).
    ``buf`` is scratch space of at least ``m`` int64.
    """
    mm = min(w, m)
    if mm <= 0:
        med[w] = _NAN
        burst[w] = 0
        return
    for j in range(mm):
        buf[j] = counts[w - mm + j]
    md = median_of(buf, mm)
    med[w] = md
    base = max(1.0, md)
    burst[w] = 1 if counts[w] > k * base else 0


def latency_at(i, ts_local, ts_exch, flags, per_message, lat, sel):  # pragma: no cover - jitted
    """``lat[i] = ts_local[i] - ts_exch[i]`` (ns); ``sel[i] = 1`` when row i counts.

    A row counts when it has an exchange time (no FLAG_TS_EXCH_MISSING) and, with ``per_message``,
    when it starts a source message (row 0 or the previous row carries FLAG_EOM): one value per
    message, whatever its number of rows.
    """
    lat[i] = ts_local[i] - ts_exch[i]
    ok = (flags[i] & FLAG_TS_EXCH_MISSING) == 0
    if per_message and i > 0 and (flags[i - 1] & FLAG_EOM) == 0:
        ok = False
    sel[i] = 1 if ok else 0


def group_stats_at(g, offs, a, cnt, mn, mx, mean):  # pragma: no cover - jitted
    """Count, min, max and mean of the sorted values ``a[offs[g]:offs[g + 1]]``.

    The mean is ``min + sum(a - min) / n``: the int64 sum of offsets from the minimum cannot overflow
    where a plain sum of ~1e9 ns latencies over many rows could.
    """
    lo = offs[g]
    hi = offs[g + 1]
    n = hi - lo
    cnt[g] = n
    if n <= 0:
        mn[g] = 0
        mx[g] = 0
        mean[g] = _NAN
        return
    lo_v = a[lo]
    mn[g] = lo_v
    mx[g] = a[hi - 1]
    acc = np.int64(0)
    for j in range(lo, hi):
        acc += a[j] - lo_v
    mean[g] = np.float64(lo_v) + acc / n


def percentile_at(a, lo, n, q):  # pragma: no cover - jitted
    """Percentile ``q`` (0..100) of the sorted ``a[lo:lo + n]``, numpy's default ``linear`` method.

    ``h = (n - 1) * q / 100``, ``j = floor(h)``, ``t = h - j``:
    ``a[j] + (a[j+1] - a[j]) * t`` (``a[j+1] - (a[j+1] - a[j]) * (1 - t)`` when ``t >= 0.5``, as numpy).
    """
    if n <= 0:
        return _NAN
    h = (n - 1) * (q / 100.0)
    f = math.floor(h)
    j = np.int64(f)
    t = h - f
    if j >= n - 1:
        return np.float64(a[lo + n - 1])
    x = np.float64(a[lo + j])
    y = np.float64(a[lo + j + 1])
    d = y - x
    if t >= 0.5:
        return y - d * (1.0 - t)
    return x + d * t


def asof_index(ts, t):  # pragma: no cover - jitted
    """Index of the last ``ts[j] <= t`` in the sorted ``ts`` (binary search), -1 when there is none."""
    lo = np.int64(0)
    hi = np.int64(ts.size)
    while lo < hi:
        mid = (lo + hi) // 2
        if ts[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


def grid_return_at(j, t0, g, ts, x, use_log):  # pragma: no cover - jitted
    """Return over grid step j: ``f(x(t0 + (j+1) g)) - f(x(t0 + j g))``, ``x(t)`` the last value at or before t.

    ``f = log`` when ``use_log``, else the identity.  The caller starts the grid at or after the first
    observation, so both as-of indices exist.
    """
    ia = asof_index(ts, t0 + j * g)
    ib = asof_index(ts, t0 + (j + 1) * g)
    if ia == ib:
        return 0.0
    if use_log:
        return math.log(x[ib]) - math.log(x[ia])
    return np.float64(x[ib]) - np.float64(x[ia])


def xcorr_at(ra, rb, s):  # pragma: no cover - jitted
    """Pearson correlation of ``ra[j]`` and ``rb[j + s]`` over every j where both exist; ``(corr, pairs)``.

    Two passes (means, then centred sums) for accuracy; NaN with fewer than 2 pairs or a zero variance.
    """
    m = ra.size
    if s >= 0:
        j0 = np.int64(0)
        j1 = m - s
    else:
        j0 = -s
        j1 = np.int64(m)
    n = j1 - j0
    if n < 2:
        return _NAN, (max(0, n))
    sa = 0.0
    sb = 0.0
    for j in range(j0, j1):
        sa += ra[j]
        sb += rb[j + s]
    ma = sa / n
    mb = sb / n
    cab = 0.0
    caa = 0.0
    cbb = 0.0
    for j in range(j0, j1):
        da = ra[j] - ma
        db = rb[j + s] - mb
        cab += da * db
        caa += da * da
        cbb += db * db
    if caa <= 0.0 or cbb <= 0.0:
        return _NAN, n
    return cab / math.sqrt(caa * cbb), n


def order_pass_group(g, gstart, perm, kind, qty, o_state, o_size, o_exec):  # pragma: no cover - jitted
    """Replay one L3 order (the events ``perm[gstart[g]:gstart[g + 1]]`` of one order id, in time order).

    Per event i of the order: ``o_state[i]`` = EMPTIED_BY_EXECUTION when an execution leaves it with
    ``remaining <= 0``, EMPTIED_BY_CANCEL when a cancel, delete or modify to 0 does, else 0 (always 0 for
    an order whose add is not in the data: its size is unknown); ``o_size[i]`` = the lots of its add
    (0 unknown); ``o_exec[i]`` = lots executed from it up to and including i.
    """
    known = False
    rem = np.int64(0)
    size0 = np.int64(0)
    ex = np.int64(0)
    for jj in range(gstart[g], gstart[g + 1]):
        i = perm[jj]
        k = kind[i]
        q = qty[i]
        st = 0
        if k == KIND_ADD:
            known = True
            rem = q
            size0 = q
            ex = np.int64(0)
        elif k == KIND_EXECUTE:
            ex += q
            rem -= q
            if known and rem <= 0:
                st = EMPTIED_BY_EXECUTION
        elif k == KIND_CANCEL:
            rem -= q
            if known and rem <= 0:
                st = EMPTIED_BY_CANCEL
        elif k == KIND_DELETE:
            rem = np.int64(0)
            if known:
                st = EMPTIED_BY_CANCEL
        elif k == KIND_MODIFY:
            rem = q
            if known and q <= 0:
                st = EMPTIED_BY_CANCEL
        o_state[i] = st
        o_size[i] = size0 if known else 0
        o_exec[i] = ex


def iceberg_l2_group(g, gstart, perm, kind, ts, qty, epoch, dt, tol, kmin, det_count, det_vol,
                     det_chain):  # pragma: no cover - jitted
    """Refill state machine of one L2 price level (side q, price p); see :func:`gpuflow.features.liquidity.icebergs`.

    Events of the group, in time order: level sets at (q, p) (KIND_SET / KIND_SNAPSHOT, ``qty`` = the
    displayed lots) and trade prints at p whose passive side is q.  State: ``disp`` (last set),
    ``peak`` (largest set since the level was last empty or refilled), ``since_set`` (lots traded
    since the last set), ``seg`` (lots traded since the level was last empty or refilled).

    * a trade: ``seg += qty``, ``since_set += qty``; when not armed, ``disp > 0`` and
      ``since_set >= disp`` the level is *traded through*: armed at ``t_fill = ts`` (a new chain
      starts, id = this row, if none is active);
    * a set while armed: qty 0 keeps waiting (the emptied level); ``|qty - peak| <= tol * peak`` is a
      *refill*: ``refills += 1``, ``chain_vol += seg``, ``seg = 0``, ``peak = qty``, disarmed, and
      when ``refills >= kmin`` row i is a detection; any other size keeps waiting;
    * a set while not armed: qty 0 (the level vanished without being traded through) ends the chain;
      otherwise ``peak = max(peak, qty)``;
    * armed for longer than ``dt`` (checked at the group's next event) ends the chain; a change of
      ``epoch`` (a KIND_CLEAR of this side) empties the level and ends the chain.
    """
    disp = np.int64(0)
    peak = np.int64(0)
    since_set = np.int64(0)
    seg = np.int64(0)
    armed = False
    active = False
    t_fill = np.int64(0)
    refills = np.int64(0)
    chain_vol = np.int64(0)
    chain = np.int64(-1)
    ep = np.int64(-1)
    for jj in range(gstart[g], gstart[g + 1]):
        i = perm[jj]
        t = ts[i]
        q = qty[i]
        if epoch[i] != ep:
            ep = epoch[i]
            disp = np.int64(0)
            peak = np.int64(0)
            since_set = np.int64(0)
            seg = np.int64(0)
            armed = False
            active = False
        if armed and t - t_fill > dt:
            armed = False
            active = False
        if not active:
            refills = np.int64(0)
            chain_vol = np.int64(0)
        if kind[i] == KIND_TRADE:
            seg += q
            since_set += q
            if not armed and disp > 0 and since_set >= disp:
                armed = True
                t_fill = t
                if not active:
                    active = True
                    chain = np.int64(i)
        else:
            if armed:
                if q > 0 and abs(q - peak) <= tol * peak:
                    refills += 1
                    chain_vol += seg
                    seg = np.int64(0)
                    peak = q
                    armed = False
                    if refills >= kmin:
                        det_count[i] = refills
                        det_vol[i] = chain_vol
                        det_chain[i] = chain
            elif q == 0:
                active = False
                peak = np.int64(0)
                seg = np.int64(0)
            elif q > peak:
                peak = q
            disp = q
            since_set = np.int64(0)


def iceberg_l3_group(g, gstart, perm, kind, ts, qty, order_id, o_state, o_size, o_exec, epoch, dt, tol, kmin,
                     det_count, det_vol, det_chain):  # pragma: no cover - jitted
    """Refill state machine of one L3 price level (side, price); see :func:`gpuflow.features.liquidity.icebergs`.

    Events of the group, in time order: adds, executions, cancels and deletes at (side, price), with
    the per-order results of ORDER_PASS.  State: the chain's current *tip* order and its size.

    * an execution that empties an order (EMPTIED_BY_EXECUTION): with no active chain it starts one
      (tip = that order, ``chain_vol`` = its executed lots, id = this row) and arms at ``t_fill = ts``;
      with an active, unarmed chain whose tip it is, ``chain_vol +=`` its executed lots and arms;
    * an add while armed with ``|qty - tip_size| <= tol * tip_size`` is a *refill*: ``refills += 1``,
      the new order becomes the tip, disarmed; when ``refills >= kmin`` row i is a detection.  Adds of
      other sizes are ignored (other traders join the level);
    * the tip cancelled or deleted to zero (EMPTIED_BY_CANCEL) while unarmed ends the chain;
    * armed for longer than ``dt`` ends the chain; so does a change of ``epoch`` (KIND_CLEAR).
    """
    armed = False
    active = False
    t_fill = np.int64(0)
    refills = np.int64(0)
    chain_vol = np.int64(0)
    chain = np.int64(-1)
    tip = np.uint64(0)
    tip_size = np.int64(0)
    ep = np.int64(-1)
    for jj in range(gstart[g], gstart[g + 1]):
        i = perm[jj]
        t = ts[i]
        k = kind[i]
        oid = order_id[i]
        if epoch[i] != ep:
            ep = epoch[i]
            armed = False
            active = False
        if armed and t - t_fill > dt:
            armed = False
            active = False
        if k == KIND_EXECUTE:
            if o_state[i] == EMPTIED_BY_EXECUTION:
                if not active:
                    active = True
                    armed = True
                    t_fill = t
                    refills = np.int64(0)
                    chain_vol = o_exec[i]
                    chain = np.int64(i)
                    tip = oid
                    tip_size = o_size[i]
                elif not armed and oid == tip:
                    chain_vol += o_exec[i]
                    armed = True
                    t_fill = t
        elif k == KIND_ADD:
            q = qty[i]
            if armed and abs(q - tip_size) <= tol * tip_size:
                refills += 1
                armed = False
                tip = oid
                tip_size = q
                if refills >= kmin:
                    det_count[i] = refills
                    det_vol[i] = chain_vol
                    det_chain[i] = chain
        elif active and not armed and oid == tip and o_state[i] == EMPTIED_BY_CANCEL:
            active = False


# ============================================================================ CUDA kernels
# Bodies compiled with Twins.cuda (cuda.jit against the device cores).  One work item per thread.
def hidden_events_cuda(mode, kind, side, price, qty, flags, bp, bq, ap, aq, vals):  # pragma: no cover
    """One thread per event: :func:`hidden_event_at`.  Twin: :func:`hidden_events_cpu`."""
    i = cuda.grid(1)
    if i < kind.size:
        hidden_event_at(i, mode, kind, side, price, qty, flags, bp, bq, ap, aq, vals)


def quote_events_cuda(mode, kind, qty, flags, vals):  # pragma: no cover - device code
    """One thread per event: :func:`quote_event_at`.  Twin: :func:`quote_events_cpu`."""
    i = cuda.grid(1)
    if i < kind.size:
        quote_event_at(i, mode, kind, qty, flags, vals)


def bucket_sum_cuda(bounds, vals, out):  # pragma: no cover - device code
    """One thread per bucket: :func:`bucket_sum_at` (deterministic sums, no atomics).  Twin: cpu."""
    b = cuda.grid(1)
    if b < out.shape[1]:
        bucket_sum_at(b, bounds, vals, out)


def ratio_cuda(a, b, out):  # pragma: no cover - device code
    """One thread per element: ``out = ratio_at(a, b)``.  Twin: :func:`ratio_cpu`."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = ratio_at(a[i], b[i])


def bursts_cuda(counts, m, k, med, burst):  # pragma: no cover - device code
    """One thread per window: :func:`burst_at` with a local scratch of MAX_MEDIAN_WINDOWS.  Twin: cpu."""
    w = cuda.grid(1)
    if w < counts.size:
        buf = cuda.local.array(MAX_MEDIAN_WINDOWS, np.int64)
        burst_at(w, counts, m, k, buf, med, burst)


def latency_cuda(ts_local, ts_exch, flags, per_message, lat, sel):  # pragma: no cover - device code
    """One thread per event: :func:`latency_at`.  Twin: :func:`latency_cpu`."""
    i = cuda.grid(1)
    if i < lat.size:
        latency_at(i, ts_local, ts_exch, flags, per_message, lat, sel)


def group_stats_cuda(offs, a, cnt, mn, mx, mean):  # pragma: no cover - device code
    """One thread per group: :func:`group_stats_at`.  Twin: :func:`group_stats_cpu`."""
    g = cuda.grid(1)
    if g < cnt.size:
        group_stats_at(g, offs, a, cnt, mn, mx, mean)


def percentiles_cuda(offs, a, qs, out):  # pragma: no cover - device code
    """One thread per (group, percentile): :func:`percentile_at`.  Twin: :func:`percentiles_cpu`."""
    t = cuda.grid(1)
    n_q = qs.size
    if t < out.shape[0] * n_q:
        g = t // n_q
        j = t - g * n_q
        out[g, j] = percentile_at(a, offs[g], offs[g + 1] - offs[g], qs[j])


def grid_returns_cuda(t0, g, ts, x, use_log, out):  # pragma: no cover - device code
    """One thread per grid step: :func:`grid_return_at`.  Twin: :func:`grid_returns_cpu`."""
    j = cuda.grid(1)
    if j < out.size:
        out[j] = grid_return_at(j, t0, g, ts, x, use_log)


def xcorr_cuda(ra, rb, shifts, corr, pairs):  # pragma: no cover - device code
    """One thread per lag: :func:`xcorr_at`.  Twin: :func:`xcorr_cpu`."""
    j = cuda.grid(1)
    if j < shifts.size:
        c, n = xcorr_at(ra, rb, shifts[j])
        corr[j] = c
        pairs[j] = n


def order_pass_cuda(gstart, perm, kind, qty, o_state, o_size, o_exec):  # pragma: no cover - device code
    """One thread per order id: :func:`order_pass_group`.  Twin: :func:`order_pass_cpu`."""
    g = cuda.grid(1)
    if g < gstart.size - 1:
        order_pass_group(g, gstart, perm, kind, qty, o_state, o_size, o_exec)


def iceberg_l2_cuda(gstart, perm, kind, ts, qty, epoch, dt, tol, kmin, det_count, det_vol,
                    det_chain):  # pragma: no cover - device code
    """One thread per (side, price) level: :func:`iceberg_l2_group`.  Twin: :func:`iceberg_l2_cpu`."""
    g = cuda.grid(1)
    if g < gstart.size - 1:
        iceberg_l2_group(g, gstart, perm, kind, ts, qty, epoch, dt, tol, kmin, det_count, det_vol, det_chain)


def iceberg_l3_cuda(gstart, perm, kind, ts, qty, order_id, o_state, o_size, o_exec, epoch, dt, tol, kmin,
                    det_count, det_vol, det_chain):  # pragma: no cover - device code
    """One thread per (side, price) level: :func:`iceberg_l3_group`.  Twin: :func:`iceberg_l3_cpu`."""
    g = cuda.grid(1)
    if g < gstart.size - 1:
        iceberg_l3_group(g, gstart, perm, kind, ts, qty, order_id, o_state, o_size, o_exec, epoch, dt, tol,
                         kmin, det_count, det_vol, det_chain)


# ============================================================================ CPU twins
# Bodies compiled with Twins.cpu (njit against the CPU cores); prange where work items are independent.
def hidden_events_cpu(mode, kind, side, price, qty, flags, bp, bq, ap, aq, vals):  # pragma: no cover
    """CPU twin of :func:`hidden_events_cuda`."""
    for i in prange(kind.size):
        hidden_event_at(i, mode, kind, side, price, qty, flags, bp, bq, ap, aq, vals)


def quote_events_cpu(mode, kind, qty, flags, vals):  # pragma: no cover - jitted
    """CPU twin of :func:`quote_events_cuda`."""
    for i in prange(kind.size):
        quote_event_at(i, mode, kind, qty, flags, vals)


def bucket_sum_cpu(bounds, vals, out):  # pragma: no cover - jitted
    """CPU twin of :func:`bucket_sum_cuda`."""
    for b in prange(out.shape[1]):
        bucket_sum_at(b, bounds, vals, out)


def ratio_cpu(a, b, out):  # pragma: no cover - jitted
    """CPU twin of :func:`ratio_cuda`."""
    for i in range(out.size):
        out[i] = ratio_at(a[i], b[i])


def bursts_cpu(counts, m, k, med, burst):  # pragma: no cover - jitted
    """CPU twin of :func:`bursts_cuda` (one scratch buffer, sequential)."""
    buf = np.empty(MAX_MEDIAN_WINDOWS, np.int64)
    for w in range(counts.size):
        burst_at(w, counts, m, k, buf, med, burst)


def latency_cpu(ts_local, ts_exch, flags, per_message, lat, sel):  # pragma: no cover - jitted
    """CPU twin of :func:`latency_cuda`."""
    for i in prange(lat.size):
        latency_at(i, ts_local, ts_exch, flags, per_message, lat, sel)


def group_stats_cpu(offs, a, cnt, mn, mx, mean):  # pragma: no cover - jitted
    """CPU twin of :func:`group_stats_cuda`."""
    for g in range(cnt.size):
        group_stats_at(g, offs, a, cnt, mn, mx, mean)


def percentiles_cpu(offs, a, qs, out):  # pragma: no cover - jitted
    """CPU twin of :func:`percentiles_cuda`."""
    for g in range(out.shape[0]):
        for j in range(qs.size):
            out[g, j] = percentile_at(a, offs[g], offs[g + 1] - offs[g], qs[j])


def grid_returns_cpu(t0, g, ts, x, use_log, out):  # pragma: no cover - jitted
    """CPU twin of :func:`grid_returns_cuda`."""
    for j in prange(out.size):
        out[j] = grid_return_at(j, t0, g, ts, x, use_log)


def xcorr_cpu(ra, rb, shifts, corr, pairs):  # pragma: no cover - jitted
    """CPU twin of :func:`xcorr_cuda`."""
    for j in prange(shifts.size):
        c, n = xcorr_at(ra, rb, shifts[j])
        corr[j] = c
        pairs[j] = n


def order_pass_cpu(gstart, perm, kind, qty, o_state, o_size, o_exec):  # pragma: no cover - jitted
    """CPU twin of :func:`order_pass_cuda`."""
    for g in prange(gstart.size - 1):
        order_pass_group(g, gstart, perm, kind, qty, o_state, o_size, o_exec)


def iceberg_l2_cpu(gstart, perm, kind, ts, qty, epoch, dt, tol, kmin, det_count, det_vol,
                   det_chain):  # pragma: no cover - jitted
    """CPU twin of :func:`iceberg_l2_cuda`."""
    for g in prange(gstart.size - 1):
        iceberg_l2_group(g, gstart, perm, kind, ts, qty, epoch, dt, tol, kmin, det_count, det_vol, det_chain)


def iceberg_l3_cpu(gstart, perm, kind, ts, qty, order_id, o_state, o_size, o_exec, epoch, dt, tol, kmin,
                   det_count, det_vol, det_chain):  # pragma: no cover - jitted
    """CPU twin of :func:`iceberg_l3_cuda`."""
    for g in prange(gstart.size - 1):
        iceberg_l3_group(g, gstart, perm, kind, ts, qty, order_id, o_state, o_size, o_exec, epoch, dt, tol,
                         kmin, det_count, det_vol, det_chain)


# ============================================================================ registration
_TW = Twins(displayed_through, hidden_event_at, quote_event_at, bucket_sum_at, ratio_at, median_of, burst_at,
            latency_at, group_stats_at, percentile_at, asof_index, grid_return_at, xcorr_at, order_pass_group,
            iceberg_l2_group, iceberg_l3_group)
_PAR = {"parallel": True, "cache": True}
_SEQ = {"cache": True}

HIDDEN_EVENTS = KernelPair("liquidity.hidden_events", _TW.cuda(hidden_events_cuda),
                           _TW.cpu(hidden_events_cpu, **_PAR))
QUOTE_EVENTS = KernelPair("liquidity.quote_events", _TW.cuda(quote_events_cuda), _TW.cpu(quote_events_cpu, **_PAR))
BUCKET_SUM = KernelPair("liquidity.bucket_sum", _TW.cuda(bucket_sum_cuda), _TW.cpu(bucket_sum_cpu, **_PAR),
                        threads=128)
RATIO = KernelPair("liquidity.ratio", _TW.cuda(ratio_cuda), _TW.cpu(ratio_cpu, **_SEQ))
BURSTS = KernelPair("liquidity.bursts", _TW.cuda(bursts_cuda), _TW.cpu(bursts_cpu, **_SEQ), threads=128)
LATENCY = KernelPair("liquidity.latency", _TW.cuda(latency_cuda), _TW.cpu(latency_cpu, **_PAR))
GROUP_STATS = KernelPair("liquidity.group_stats", _TW.cuda(group_stats_cuda), _TW.cpu(group_stats_cpu, **_SEQ),
                         threads=32)
PERCENTILES = KernelPair("liquidity.percentiles", _TW.cuda(percentiles_cuda), _TW.cpu(percentiles_cpu, **_SEQ),
                         threads=32)
GRID_RETURNS = KernelPair("liquidity.grid_returns", _TW.cuda(grid_returns_cuda), _TW.cpu(grid_returns_cpu, **_PAR))
XCORR = KernelPair("liquidity.xcorr", _TW.cuda(xcorr_cuda), _TW.cpu(xcorr_cpu, **_PAR), threads=64)
ORDER_PASS = KernelPair("liquidity.order_pass", _TW.cuda(order_pass_cuda), _TW.cpu(order_pass_cpu, **_PAR),
                        threads=128)
ICEBERG_L2 = KernelPair("liquidity.iceberg_l2", _TW.cuda(iceberg_l2_cuda), _TW.cpu(iceberg_l2_cpu, **_PAR),
                        threads=128)
ICEBERG_L3 = KernelPair("liquidity.iceberg_l3", _TW.cuda(iceberg_l3_cuda), _TW.cpu(iceberg_l3_cpu, **_PAR),
                        threads=128)
