"""Order-book replay kernels: a chunked, parallel GPU rebuild and its sequential CPU twin.

The book is held as two dense rows of level sizes (lots), one per side, over a
price window ``[pmin, pmin + W)`` in ticks.  Every book event is reduced to a
*level op* on one level: ``SET q`` (L2 level set, snapshot level), ``ADD d`` (L3
add/cancel/execute: a signed change) or ``CLEAR`` (a whole side or both).  Each
op is an affine map of the level size ``x -> a*x + b`` with ``a`` in {0, 1}::

    SET q  : (a, b) = (0, q)        ADD d : (a, b) = (1, d)        CLEAR : (0, 0)
    (a2, b2) o (a1, b1) = (a2*a1, a2*b1 + b2)

Composition is associative, so the book can be rebuilt in parallel (the
chunked last-writer-wins scan of DESIGN.md, generalised to L3 deltas):

A. ``summarise``: each chunk of ops composes its ops into one map per level
   (dense ``C x W`` matrices ``sa`` (int8), ``sb`` (int64); identity = (1, 0)).
B. ``scan``: per level, an exclusive scan of the chunk maps over chunks, starting
   from the initial book, gives every chunk's starting book; done in groups of
   chunks (compose per group, scan groups, re-walk each group) so that it is
   parallel over (level, group).
C. ``best``: the best bid / ask index of every start book.
D. ``replay``: each chunk is replayed from its start book by one thread, which
   emits the top-N levels and multi-level order-flow imbalance.

Memory layout on the GPU.  Thread c replays chunk c, so neighbouring threads
walk neighbouring chunks in lock step.  The ops are therefore *interleaved*
(op j of chunk c at ``c + j * C``, :data:`INTERLEAVE`) and the start books are
stored level-major (level j of chunk c at ``rows[j, c]``, ``rt=True``): a
warp's loads of "its next op" and of "level j" touch consecutive addresses
(coalesced), instead of 32 addresses a chunk apart.  The CPU twin keeps the
plain layout (one chunk, ``rows[0, j]``).  When every op emits a row, the replay can
also write each row as one record at slot ``c + j * C`` (neighbouring threads write
neighbouring records) and :data:`GATHER_ROWS` puts the rows in order afterwards.

Per thread, the replay's top-N scratch lives in registers (the level count is a
compile-time constant of the kernel and every scratch access uses an unrolled loop
index), and the next op and its level's size are loaded before the current op is
applied (software pipelining), so a thread waits on memory as little as possible.

Chunk boundaries are moved back to just after an *observation* op (the last op
of a source message, where the book is consistent), so every chunk starts from
a consistent state and OFI at a chunk's first observation uses the right
previous state.  The CPU twin of the whole rebuild is the same replay core run
sequentially over one chunk (:data:`REPLAY`'s ``cpu``); every phase kernel also
has an njit twin so each can be checked on its own.

The warp path (``rebuild_book(replay="warp")``) keeps the same maps but not the many short chunks: one
warp per chunk, a few thousand long chunks (one wave of the device).  A'. ``summarise_warp``: the warp
composes its chunk 32 ops at a time (a batch of level sets at once, the last set per level found by a
match vote).  B'. one scan over the chunks gives every chunk's start book (no groups, no per-chunk walk).
C. ``best`` as above.  D'. ``replay_warp``: every op is applied by the whole warp, the top lists, OFI and
output rows held a level per lane (:func:`replay_warp_chunk`).

Order-flow imbalance at level m between consecutive observations (Cont, Kukanov
and Stoikov 2014, eq. 2; multi-level as in Xu, Gould and Howison 2019)::

    e_m = 1{Pb_m >= Pb_m'} qb_m - 1{Pb_m <= Pb_m'} qb_m'
        - 1{Pa_m <= Pa_m'} qa_m + 1{Pa_m >= Pa_m'} qa_m'

(primes: the previous observation; empty levels have price EMPTY_BID/ASK_PRICE
and size 0).  ``ofi`` output rows hold the sum of ``e_m`` over the observations
since the previous emitted row.

All sizes and prices are int64 ticks / lots, so the GPU and CPU outputs are
identical integers.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from gpuflow import config
from gpuflow.backend import KernelPair, Twins, cuda, simulator_enabled
from gpuflow.schema import EMPTY_ASK_PRICE, EMPTY_BID_PRICE, FLAG_EOM, FLAG_HIDDEN, KIND_EXECUTE

from .features_ofi import ofi_e

__all__ = [
    "OP_NONE", "OP_SET", "OP_ADD", "OP_CLEAR", "F_EMIT", "F_OBSERVE", "MAX_LEVELS",
    "PREPARE", "CHUNK_BOUNDS", "INTERLEAVE", "SUMMARISE", "GROUP_COMPOSE", "GROUP_SCAN", "GROUP_APPLY",
    "ROW_BEST", "GATHER_ROWS", "SUMMARISE_WARP", "replay_pair", "warp_replay_pair",
]

OP_NONE = 0
OP_SET = 1
OP_ADD = 2
OP_CLEAR = 3
#: op flag: write an output row after this op
F_EMIT = 1
#: op flag: the book is consistent after this op (end of a source message): OFI observes it
F_OBSERVE = 2
#: most levels a replay can emit (size of the per-thread scratch)
MAX_LEVELS = 20
#: per-thread scratch width of a compiled replay kernel (see :func:`replay_pair`)
NLEV_CAP = MAX_LEVELS

_EMPTY_BID = np.int64(EMPTY_BID_PRICE)
_EMPTY_ASK = np.int64(EMPTY_ASK_PRICE)
_KIND_EXECUTE = KIND_EXECUTE
_FLAG_HIDDEN = FLAG_HIDDEN
_FLAG_EOM = FLAG_EOM
_BIG = np.int64(1 << 62)


# ----------------------------------------------------------------------------- scalar cores
# Plain Python: compiled twice by Twins (njit for the CPU twins, CUDA device functions for the kernels).
def chunk_start_at(c, L, n_ops, flags):  # pragma: no cover - jitted
    """Start op of chunk ``c``: just after the last observation op before ``c * L``."""
    if c == 0:
        return 0
    s = c * L
    if s >= n_ops:
        return n_ops
    j = s - 1
    while j >= 0 and (flags[j] & F_OBSERVE) == 0:
        j -= 1
    return j + 1


def _op(c, j, bounds, C, inter):  # pragma: no cover - jitted
    """Index of op ``j`` of chunk ``c``: interleaved ``c + j * C`` or linear ``bounds[c] + j``."""
    return c + j * C if inter else bounds[c] + j


def _op_fields(c, j, bounds, C, inter, kind, side, price, qty):  # pragma: no cover - jitted
    """(kind, side, price, qty, linear-or-interleaved index) of op ``j`` of chunk ``c``."""
    i = _op(c, j, bounds, C, inter)
    return kind[i], side[i], price[i], qty[i], i


def _rg(rows, rt, c, j):  # pragma: no cover - jitted
    """Level ``j`` of chunk ``c``'s book: ``rows[j, c]`` (level-major, rt) or ``rows[c, j]``."""
    return rows[j, c] if rt else rows[c, j]


def _rs(rows, rt, c, j, v):  # pragma: no cover - jitted
    if rt:
        rows[j, c] = v
    else:
        rows[c, j] = v


def _level(s, p, wb, wa, pmin_b, pmin_a, comp, lut_b, lut_a):  # pragma: no cover - jitted
    """Row index of price ``p`` on side ``s`` (bids first, then asks), or -1 outside the window.

    Dense axis: ``p - pmin``.  Compressed axis (``comp``): the rank of ``p`` among the distinct prices
    of its side, ``lut[p - pmin] - 1`` (``lut`` is the running count of distinct prices).
    """
    if s > 0:
        l = p - pmin_b
        if comp:
            return lut_b[l] - 1 if 0 <= l < lut_b.size else -1
        return l if 0 <= l < wb else -1
    l = p - pmin_a
    if comp:
        return wb + lut_a[l] - 1 if 0 <= l < lut_a.size else -1
    return wb + l if 0 <= l < wa else -1


def prepare_at(i, kind, side, price, qty, flags, emit_mode, every, emit_arr, op_lut, sign_lut, o_kind, o_qty,
               o_flags):  # pragma: no cover - jitted
    """Event ``i`` -> level op: op kind, signed size and op flags (emit / observe); returns the op kind, the
    signed size and whether the op emits a row (the callers' tallies use these values, not the arrays just
    written: on a GPU a read-back of a store waits on memory).

    ``emit_mode``: 0 every event, 1 every ``every``-th event, 2 at message ends, 3 ``emit_arr[i] != 0``.
    Hidden executions (FLAG_HIDDEN) do not touch the book.
    """
    k = kind[i]
    op = op_lut[k]
    q = qty[i]
    sg = sign_lut[k]
    if sg != 0:
        q = sg * q
    f = flags[i]
    if op == OP_ADD and k == _KIND_EXECUTE and (f & _FLAG_HIDDEN) != 0:
        op = OP_NONE
    obs = (f & _FLAG_EOM) != 0
    if emit_mode == 0:
        e = True
    elif emit_mode == 1:
        e = (i % every) == every - 1
    elif emit_mode == 2:
        e = obs
    else:
        e = emit_arr[i] != 0
    o_kind[i] = op
    o_qty[i] = q
    o_flags[i] = (F_EMIT if e else 0) | (F_OBSERVE if obs else 0)
    return op, q, e


def interleave_at(t, bounds, C, side, price, kind, qty, flags, i_side, i_price, i_kind, i_qty,
                  i_flags):  # pragma: no cover - jitted
    """Fill interleaved slot ``t = c + j * C``: op ``j`` of chunk ``c`` (linear op ``bounds[c] + j``), or a
    padding slot (OP_NONE, no flags) past the chunk's end.  Every slot is written, so the outputs need no
    zero fill.  (The CPU twin's work item; the CUDA kernel moves tiles through shared memory.)"""
    c = t % C
    i = bounds[c] + t // C
    if i < bounds[c + 1]:
        i_side[t] = side[i]
        i_price[t] = price[i]
        i_kind[t] = kind[i]
        i_qty[t] = qty[i]
        i_flags[t] = flags[i]
    else:
        i_side[t] = 0
        i_price[t] = 0
        i_kind[t] = OP_NONE
        i_qty[t] = 0
        i_flags[t] = 0


def summarise_chunk(c, bounds, C, inter, side, price, kind, qty, sa, sb, wb, wa, pmin_b, pmin_a, comp, lut_b,
                    lut_a):  # pragma: no cover
    """Compose chunk ``c``'s ops into per-level maps in rows ``sa[c]``/``sb[c]``.

    ``sa``/``sb`` have shape (C, wb + wa): bid levels first, then ask levels, and
    arrive filled with the identity map (1, 0) (a coalesced fill by the caller is
    far cheaper than each thread clearing its own row).  Ops outside the price
    window are skipped.
    """
    w = wb + wa
    n_ch = bounds[c + 1] - bounds[c]
    # software pipeline as in replay_chunk: the next op's fields are loaded before the current op is applied
    k_n = OP_NONE
    s_n = 0
    p_n = np.int64(0)
    q_n = np.int64(0)
    for jj in range(-1, n_ch):  # jj == -1 only loads op 0
        k = k_n
        s = s_n
        p = p_n
        q = q_n
        if jj + 1 < n_ch:
            k_n, s_n, p_n, q_n, _ = _op_fields(c, jj + 1, bounds, C, inter, kind, side, price, qty)
        if jj < 0:
            continue
        if k == OP_SET or k == OP_ADD:
            j = _level(s, p, wb, wa, pmin_b, pmin_a, comp, lut_b, lut_a)
            if j < 0:
                continue
            if k == OP_SET:
                sa[c, j] = 0
                sb[c, j] = q
            else:
                sb[c, j] += q
        elif k == OP_CLEAR:
            lo = 0 if s >= 0 else wb
            hi = w if s <= 0 else wb
            for j in range(lo, hi):
                sa[c, j] = 0
                sb[c, j] = 0


def group_compose_at(g, j, G, C, sa, sb, ga, gb):  # pragma: no cover - jitted
    """Compose the maps of the chunks of group ``g`` at level ``j`` into ``ga[g, j]``/``gb[g, j]``."""
    per = (C + G - 1) // G
    a = np.int64(1)
    b = np.int64(0)
    for c in range(g * per, min(C, (g + 1) * per)):
        ac = sa[c, j]
        if ac == 0:
            a = np.int64(0)
            b = sb[c, j]
        else:
            b += sb[c, j]
    ga[g, j] = a
    gb[g, j] = b


def group_scan_at(j, G, init, ga, gb, gstart, final):  # pragma: no cover - jitted
    """Exclusive scan over groups at level ``j``: ``gstart[g, j]`` = level size before group g."""
    x = init[j]
    for g in range(G):
        gstart[g, j] = x
        x = ga[g, j] * x + gb[g, j]
    final[j] = x


def group_apply_at(g, j, G, C, sa, sb, gstart, rows, rt):  # pragma: no cover - jitted
    """Walk group ``g`` at level ``j``: the size of level j at each chunk c's start goes to ``rows``."""
    per = (C + G - 1) // G
    x = gstart[g, j]
    for c in range(g * per, min(C, (g + 1) * per)):
        _rs(rows, rt, c, j, x)
        x = sa[c, j] * x + sb[c, j]


def row_best_scan(c, rows, rt, wb, wa, best):  # pragma: no cover - jitted
    """Best bid / ask index of chunk ``c``'s start book (-1 / ``wa`` when a side is empty) and the number
    of non-empty levels per side: ``best[c] = (bid index, ask index, bid levels, ask levels)``."""
    bb = -1
    nb = 0
    for j in range(wb - 1, -1, -1):
        if _rg(rows, rt, c, j) > 0:
            if bb < 0:
                bb = j
            nb += 1
    ba = wa
    na = 0
    for j in range(wa):
        if _rg(rows, rt, c, wb + j) > 0:
            if ba == wa:
                ba = j
            na += 1
    best[c, 0] = bb
    best[c, 1] = ba
    best[c, 2] = nb
    best[c, 3] = na


def _next_bid(rows, rt, c, j):  # pragma: no cover - jitted
    """Index of the first non-empty bid level at or below ``j`` (-1 when none)."""
    while j >= 0 and _rg(rows, rt, c, j) <= 0:
        j -= 1
    return j


def _next_ask(rows, rt, c, wb, wa, j):  # pragma: no cover - jitted
    """Index (within the ask side) of the first non-empty ask level at or above ``j`` (``wa`` when none)."""
    while j < wa and _rg(rows, rt, c, wb + j) <= 0:
        j += 1
    return j


# The top-N list lives in the scratch ``st`` (rows 4 and 5: bid and ask sizes; rows 7-8: their level
# indices, -1 / ``wa`` when empty; prices follow from the indices and are only formed when a row is
# written: fewer registers per thread).  Every access to ``st`` below uses a loop counter over
# ``range(nlev)`` as its column (no searched position indexes it): the CUDA kernel passes ``nlev`` as a
# compile-time constant, the loops unroll, and the whole scratch lives in registers instead of
# thread-local memory (which is what bounded the replay on the GPU).
def _bid_px(j, pmin_b, comp, ub):  # pragma: no cover - jitted
    """Price of bid level index ``j`` (EMPTY_BID_PRICE for -1, an empty slot of the top list)."""
    if j < 0:
        return _EMPTY_BID
    return ub[j] if comp else pmin_b + j


def _ask_px(j, wa, pmin_a, comp, ua):  # pragma: no cover - jitted
    """Price of ask level index ``j`` (EMPTY_ASK_PRICE for ``wa``, an empty slot of the top list)."""
    if j >= wa:
        return _EMPTY_ASK
    return ua[j] if comp else pmin_a + j


def _top(rows, rt, c, wb, wa, bb, ba, nb, na, nlev, st, si):  # pragma: no cover
    """Fill the current top ``nlev`` levels by scanning from the best levels ``bb`` / ``ba``.

    The scans stop after the side's ``nb`` / ``na`` non-empty levels: a thin book never walks the
    whole price window.  Used at a chunk's start and after a clear; every other op updates the top
    levels incrementally (:func:`_bid_top_update`).
    """
    # one scan per side; the slot written is selected by an unrolled compare (no searched index)
    cnt = 0
    j = bb
    while cnt < nlev and cnt < nb and j >= 0:
        q = _rg(rows, rt, c, j)
        if q > 0:
            for m in range(nlev):
                st[4, m] = q if m == cnt else st[4, m]
                si[7, m] = j if m == cnt else si[7, m]
            cnt += 1
        j -= 1
    for m in range(nlev):
        st[4, m] = 0 if m >= cnt else st[4, m]
        si[7, m] = -1 if m >= cnt else si[7, m]
    cnt = 0
    j = ba
    while cnt < nlev and cnt < na and j < wa:
        q = _rg(rows, rt, c, wb + j)
        if q > 0:
            for m in range(nlev):
                st[5, m] = q if m == cnt else st[5, m]
                si[8, m] = j if m == cnt else si[8, m]
            cnt += 1
        j += 1
    for m in range(nlev):
        st[5, m] = 0 if m >= cnt else st[5, m]
        si[8, m] = wa if m >= cnt else si[8, m]


def _list_remove(st, si, rq, ri, pos, nlev):  # pragma: no cover - jitted
    """Drop entry ``pos`` of the top list held in scratch rows ``rq``/``ri`` (size, level index): the
    entries behind it move up one place (unrolled selects: the scratch stays in registers)."""
    for m in range(nlev - 1):
        st[rq, m] = st[rq, m + 1] if m >= pos else st[rq, m]
        si[ri, m] = si[ri, m + 1] if m >= pos else si[ri, m]


def _list_insert(st, si, rq, ri, pos, nlev, v, j):  # pragma: no cover - jitted
    """Insert (``v``, ``j``) at place ``pos`` of the top list; the last entry falls off."""
    for m in range(nlev - 1, 0, -1):
        st[rq, m] = st[rq, m - 1] if m > pos else st[rq, m]
        si[ri, m] = si[ri, m - 1] if m > pos else si[ri, m]
    for m in range(nlev):
        st[rq, m] = v if m == pos else st[rq, m]
        si[ri, m] = j if m == pos else si[ri, m]


def _bid_top_update(rows, rt, c, nb, nlev, st, si, j, v):  # pragma: no cover - jitted
    """Bid level ``j`` now holds ``v`` (``nb`` non-empty bid levels): update the top list in place.

    The list (rows 4, 7 of ``st``: sizes, level indices) is sorted by index, best first.  A level deeper than a full
    list changes nothing; a removed top level shifts the list up and the freed last slot is filled
    by scanning below the new last entry (the only row reads).
    """
    pos = 0  # entries better than j (empty entries have index -1 < j)
    hit = False
    for m in range(nlev):
        if si[7, m] > j:
            pos += 1
        if si[7, m] == j:
            hit = True
    if hit:
        if v > 0:
            for m in range(nlev):
                st[4, m] = v if si[7, m] == j else st[4, m]
            return
        _list_remove(st, si, 4, 7, pos, nlev)
        valid = 0
        for m in range(nlev - 1):
            if si[7, m] >= 0:
                valid += 1
        jj = -1
        if valid == nlev - 1 and valid < nb:  # deeper levels exist: find the next one
            jj = _next_bid(rows, rt, c, (si[7, nlev - 2] if nlev >= 2 else j) - 1)
        if jj >= 0:
            st[4, nlev - 1] = _rg(rows, rt, c, jj)
            si[7, nlev - 1] = jj
        else:
            st[4, nlev - 1] = 0
            si[7, nlev - 1] = -1
    elif v > 0 and pos < nlev:
        _list_insert(st, si, 4, 7, pos, nlev, v, j)


def _ask_top_update(rows, rt, c, wb, wa, na, nlev, st, si, j, v):  # pragma: no cover - jitted
    """Ask twin of :func:`_bid_top_update` (rows 5, 8; ``j`` within the ask side; empty = ``wa``)."""
    pos = 0  # entries better than j (empty entries have index wa > j)
    hit = False
    for m in range(nlev):
        if si[8, m] < j:
            pos += 1
        if si[8, m] == j:
            hit = True
    if hit:
        if v > 0:
            for m in range(nlev):
                st[5, m] = v if si[8, m] == j else st[5, m]
            return
        _list_remove(st, si, 5, 8, pos, nlev)
        valid = 0
        for m in range(nlev - 1):
            if si[8, m] < wa:
                valid += 1
        jj = wa
        if valid == nlev - 1 and valid < na:
            jj = _next_ask(rows, rt, c, wb, wa, (si[8, nlev - 2] if nlev >= 2 else j) + 1)
        if jj < wa:
            st[5, nlev - 1] = _rg(rows, rt, c, wb + jj)
            si[8, nlev - 1] = jj
        else:
            st[5, nlev - 1] = 0
            si[8, nlev - 1] = wa
    elif v > 0 and pos < nlev:
        _list_insert(st, si, 5, 8, pos, nlev, v, j)


#: most int64 values per lane and output array in a staged replay's shared buffer (mode 2 of replay_chunk) for
#: rows of up to this many levels: :func:`stage_values`
STAGE_VALUES = 10


def stage_values(nlev: int) -> int:
    """int64 values per lane and output array in the staged replay's shared buffer for rows of ``nlev`` levels:
    whole rows, as many as fit in :data:`STAGE_VALUES` (one row when a row is longer).

    The buffer is 32 lanes x 5 arrays x this many values (1,280 B per value): 10 values (two rows of 5 levels)
    are 12.8 KB per one-warp block, so an H100/H200 SM (228 KB of shared memory) holds 16 blocks, as many warps
    as the replay's 128 registers allow; 16 values (three rows, until 2026-11-27) were 20.5 KB: 10 blocks."""
    return int(nlev) * max(1, STAGE_VALUES // int(nlev))


def _stage_rows(nlev, values):  # pragma: no cover - jitted
    """Rows a lane stages before the warp writes them out: as many as ``values`` (the buffer's last axis) holds."""
    return max(1, values // nlev)


def _stage_flush_cpu(stg, sk, sn, lane, nlev, do_ofi, out_bp, out_bq, out_ap, out_aq,
                     out_ofi):  # pragma: no cover - jitted
    """CPU version of :func:`_stage_flush`: nothing to do (the CPU twin never stages)."""
    return


def _stage_flush_cuda(stg, sk, sn, lane, nlev, do_ofi, out_bp, out_bq, out_ap, out_aq,
                      out_ofi):  # pragma: no cover - device code
    """Write the rows the warp's 32 lanes have staged and empty the stage (a one-warp block).

    Lane ``i``'s ``sn[i]`` rows start at output row ``sk[i]`` and are contiguous, so each output array
    receives one run of ``sn[i] * nlev`` consecutive int64 values per lane.  A group of ``V`` lanes (``V``
    the buffer's values per lane, :func:`stage_values`) writes one lane's run, the warp's ``32 // V`` groups
    as many runs at a time: every store instruction writes whole sectors next to each other instead of 32
    rows far apart.
    """
    cuda.syncthreads()
    V = stg.shape[2]
    G = 32 // V  # lane groups of V lanes (the lanes past the last group idle)
    h = lane // V  # this lane's group
    lv = lane % V
    if h < G:
        for i in range(h, 32, G):  # this group's lanes' runs
            n = sn[i] * nlev
            if lv < n:
                r = sk[i] + lv // nlev
                m = lv % nlev
                out_bp[r, m] = stg[i, 0, lv]
                out_bq[r, m] = stg[i, 1, lv]
                out_ap[r, m] = stg[i, 2, lv]
                out_aq[r, m] = stg[i, 3, lv]
                if do_ofi:
                    out_ofi[r, m] = stg[i, 4, lv]
    cuda.syncthreads()
    sn[lane] = 0


def replay_chunk(c, bounds, C, inter, side, price, kind, qty, flags, rows, rt, wb, wa, pmin_b, pmin_a, comp,
                 lut_b, lut_a, ub, ua, best, out_base, nlev, do_ofi, out_bp, out_bq, out_ap, out_aq, out_ofi,
                 tail, diag, st, si, so, mode, rec, Lp, stg, sk, sn, lane, active):  # pragma: no cover
    """Replay chunk ``c`` on its start book (modified in place) and emit rows.

    The scratch is three arrays of shape (9, >= nlev), each using some of its rows: ``si`` (int32)
    level indices: rows 0 and 2 the previous observation's top bid / ask levels, 7 and 8 the current
    ones (kept up to date op by op); ``st`` (the level sizes' dtype: int32 where the sizes provably fit,
    see gpuflow.book) sizes: rows 1 and 3 the previous observation's, 4 and 5 the current ones; ``so``
    (int64) row 6, the OFI accumulator.  Narrow indices and sizes make the top list's compares and
    selects single instructions on a GPU and save registers (ptxas sm_90, 5 levels, int32 sizes: 128
    instead of 155-168).  The CPU twin passes one int64 array in all three roles (their rows are disjoint).
    Level indices order like prices (an empty bid slot is -1, an empty ask slot ``wa``), so OFI compares
    indices; prices are formed only for output rows (:func:`_bid_px`).
    ``best[c]`` holds (best bid index, best ask index, bid levels, ask levels) at
    the chunk's start on entry and at its end on exit; ``tail[c]`` receives the
    OFI observed after the chunk's last emitted row; ``diag[c]`` (zeroed by the
    caller) counts ops that drove a level below zero and complete messages after
    which the book was crossed or locked, each with the linear op index of the
    first one: (negative count, first, crossed count, first).

    ``mode`` says where rows go (modes 1 and 2 only when every op emits a row): 0 straight
    to the output arrays; 1 to ``rec`` in slot order (see :func:`gather_rows_at`); 2 staged
    in the block's shared memory ``stg`` (``sk``/``sn``: each lane's first row and row
    count; this thread is ``lane`` of a one-warp block) and written out every
    ``_stage_rows(nlev, stg.shape[2])`` ops by the whole warp, each lane's rows being contiguous in the
    outputs (:func:`_stage_flush`).  In mode 2 every thread of the block runs ``Lp`` steps
    (the longest chunk) so that the flushes line up; a thread past the last chunk takes part with
    ``active`` False (no ops, no rows, nothing written; ``c`` is then any valid chunk, only read).
    """
    nb = best[c, 2]
    na = best[c, 3]
    _top(rows, rt, c, wb, wa, best[c, 0], best[c, 1], nb, na, nlev, st, si)
    for m in range(nlev):
        si[0, m] = si[7, m]
        st[1, m] = st[4, m]
        si[2, m] = si[8, m]
        st[3, m] = st[5, m]
        so[6, m] = 0
    k = out_base[c]
    n_ch = bounds[c + 1] - bounds[c] if active else 0
    n_loop = Lp if mode == 2 else n_ch
    S = _stage_rows(nlev, stg.shape[2])
    # software pipeline: the next op and the size of its level are loaded before the current op is applied,
    # so their memory latency overlaps the current op's work; the prefetched size is patched when the
    # current op writes that same level or clears its side (the only writes to ``rows`` here)
    kd_n = OP_NONE
    s_n = 0
    q_n = np.int64(0)
    f_n = 0
    # level indices in 32 bits (a price window is far below 2**31 levels): on a GPU the top list's compares and
    # selects are then single instructions (64-bit ones are pairs), and it takes fewer registers.  (Not a core
    # bound per target: under the CUDA simulator every core call takes locks, and two more per op made the
    # simulated replay about 100x slower)
    j_n = np.int32(-1)
    wbi = np.int32(wb)
    wai = np.int32(wa)
    r_n = np.int64(0)
    for jj in range(-1, n_loop):  # jj == -1 only loads op 0; past the chunk's end (mode 2): no-op steps
        kd = kd_n
        s = s_n
        q = q_n
        f = f_n
        j = j_n
        r = r_n
        j_n = np.int32(-1)
        if jj + 1 < n_ch:
            kd_n, s_n, p_n, q_n, i = _op_fields(c, jj + 1, bounds, C, inter, kind, side, price, qty)
            f_n = flags[i]
            if kd_n == OP_SET or kd_n == OP_ADD:
                j_n = np.int32(_level(s_n, p_n, wb, wa, pmin_b, pmin_a, comp, lut_b, lut_a))
            r_n = _rg(rows, rt, c, j_n) if j_n >= 0 else np.int64(0)
        else:
            kd_n = OP_NONE
            f_n = 0
        if jj < 0:
            continue
        if kd == OP_SET or kd == OP_ADD:
            if j >= 0:
                was = r > 0
                v = q if kd == OP_SET else r + q
                _rs(rows, rt, c, j, v)
                if j_n == j:
                    r_n = v
                if v < 0:
                    # more size removed than the level held: liquidity that rested before the data
                    # started (L3 without an initial book) or a bad stream; counted, shown as empty
                    if diag[c, 0] == 0:
                        diag[c, 1] = bounds[c] + jj
                    diag[c, 0] += 1
                d = (1 if v > 0 else 0) - (1 if was else 0)
                # fast path: an op deeper than the last of a full top list changes nothing visible
                if j < wbi:
                    nb += d
                    if j >= si[7, nlev - 1]:
                        _bid_top_update(rows, rt, c, nb, nlev, st, si, j, v)
                else:
                    na += d
                    ja = np.int32(j - wbi)
                    if ja <= si[8, nlev - 1]:
                        _ask_top_update(rows, rt, c, wbi, wai, na, nlev, st, si, ja, v)
        elif kd == OP_CLEAR:
            if s >= 0:
                for jc in range(wb):
                    _rs(rows, rt, c, jc, 0)
                nb = 0
                if 0 <= j_n < wb:
                    r_n = np.int64(0)
            if s <= 0:
                for jc in range(wa):
                    _rs(rows, rt, c, wb + jc, 0)
                na = 0
                if j_n >= wb:
                    r_n = np.int64(0)
            _top(rows, rt, c, wb, wa, si[7, 0], si[8, 0], nb, na, nlev, st, si)
        emit = (f & F_EMIT) != 0
        obs = do_ofi and (f & F_OBSERVE) != 0
        if (f & F_OBSERVE) != 0 and si[7, 0] >= 0 and si[8, 0] < wai:
            if _bid_px(si[7, 0], pmin_b, comp, ub) >= _ask_px(si[8, 0], wa, pmin_a, comp, ua):  # crossed/locked
                if diag[c, 2] == 0:
                    diag[c, 3] = bounds[c] + jj
                diag[c, 2] += 1
        if obs:
            for m in range(nlev):  # prices compared through their level indices (same order)
                bp = si[7, m]
                pbp = si[0, m]
                ap = si[8, m]
                pap = si[2, m]
                e = np.int64(0)
                if bp >= pbp:
                    e += st[4, m]
                if bp <= pbp:
                    e -= st[1, m]
                if ap <= pap:
                    e -= st[5, m]
                if ap >= pap:
                    e += st[3, m]
                so[6, m] += e
                si[0, m] = bp
                st[1, m] = st[4, m]
                si[2, m] = ap
                st[3, m] = st[5, m]
        if emit and mode == 2:
            n_st = sn[lane]
            if n_st == 0:
                sk[lane] = k
            for m in range(nlev):
                stg[lane, 0, n_st * nlev + m] = _bid_px(si[7, m], pmin_b, comp, ub)
                stg[lane, 1, n_st * nlev + m] = st[4, m]
                stg[lane, 2, n_st * nlev + m] = _ask_px(si[8, m], wa, pmin_a, comp, ua)
                stg[lane, 3, n_st * nlev + m] = st[5, m]
                if do_ofi:
                    stg[lane, 4, n_st * nlev + m] = so[6, m]
                    so[6, m] = 0
            sn[lane] = n_st + 1
            k += 1
        elif emit and mode == 1:
            # slot records (every op emits): row of op jj at slot c + jj * C, one contiguous record of
            # bid px, bid qty, ask px, ask qty, ofi per row; a warp's records are adjacent (coalesced)
            slot = c + jj * C
            for m in range(nlev):
                rec[slot, m] = _bid_px(si[7, m], pmin_b, comp, ub)
                rec[slot, nlev + m] = st[4, m]
                rec[slot, 2 * nlev + m] = _ask_px(si[8, m], wa, pmin_a, comp, ua)
                rec[slot, 3 * nlev + m] = st[5, m]
                if do_ofi:
                    rec[slot, 4 * nlev + m] = so[6, m]
                    so[6, m] = 0
            k += 1
        elif emit:
            for m in range(nlev):
                out_bp[k, m] = _bid_px(si[7, m], pmin_b, comp, ub)
                out_bq[k, m] = st[4, m]
                out_ap[k, m] = _ask_px(si[8, m], wa, pmin_a, comp, ua)
                out_aq[k, m] = st[5, m]
                if do_ofi:
                    out_ofi[k, m] = so[6, m]
                    so[6, m] = 0
            k += 1
        if mode == 2 and (jj % S == S - 1 or jj == n_loop - 1):
            # bound by Twins: _stage_flush_cpu / _stage_flush_cuda
            _stage_flush(stg, sk, sn, lane, nlev, do_ofi, out_bp, out_bq, out_ap, out_aq, out_ofi)  # noqa: F821
    if active:
        best[c, 0] = si[7, 0]
        best[c, 1] = si[8, 0]
        best[c, 2] = nb
        best[c, 3] = na
        for m in range(nlev):
            tail[c, m] = so[6, m]  # OFI observed after the chunk's last emitted row (carried by the caller)


def gather_rows_at(k, bounds, C, nlev, do_ofi, rec, out_bp, out_bq, out_ap, out_aq,
                   out_ofi):  # pragma: no cover - jitted
    """Output row ``k`` (op ``k``; every op emits) from its slot record ``rec[c + (k - bounds[c]) * C]``,
    ``c`` the chunk holding op ``k`` (binary search over the chunk bounds).  One work item per row:
    neighbouring rows are written side by side (coalesced), each record is read whole."""
    lo = 0
    hi = C  # largest c with bounds[c] <= k (empty chunks resolve to the last one, which holds k)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if bounds[mid] <= k:
            lo = mid
        else:
            hi = mid
    r = lo + (k - bounds[lo]) * C
    for m in range(nlev):
        out_bp[k, m] = rec[r, m]
        out_bq[k, m] = rec[r, nlev + m]
        out_ap[k, m] = rec[r, 2 * nlev + m]
        out_aq[k, m] = rec[r, 3 * nlev + m]
        if do_ofi:
            out_ofi[k, m] = rec[r, 4 * nlev + m]


# ----------------------------------------------------------------------------- warp replay
# One warp replays one chunk (a few thousand long chunks, one per warp; see gpuflow.book): it loads 32 consecutive
# ops at a time (one coalesced load per field), then applies them one after the other, every lane taking
# part in each.  Lane m < nlev holds the m-th entry of the bid and of the ask top list (level index and
# size), the previous observation's entry and its OFI accumulator, so the top-list upkeep, OFI and the
# output rows are lane-parallel (selects and shuffles, no per-thread scratch), and a search for the next
# non-empty level reads 32 levels per step.  Every branch below depends only on values all lanes share
# (the op being applied, shuffled from its lane), so the warp never diverges around a shuffle.
#
# The warp primitives are cores with two device bodies: the hardware shuffles and votes, and, under the
# CUDA simulator (which has none), the same exchange through a small array ``xch`` between block barriers
# (a warp replay block is one warp).  ``xch`` is a kernel argument, not a shared array: the simulator creates
# a shared array on its first use without a lock, so two lanes starting together can each get their own
# (the tests failed now and then under load); its blocks run one after another, so one global array serves
# them all.  On a GPU ``xch`` is not used.  The CPU twin is the sequential replay (same rows).
_FULL = 0xFFFFFFFF


def _w_init_sim(xch, lane):  # pragma: no cover - simulator device code
    """Start a block's exchange: this lane's row toggle (see :func:`_w_put`)."""
    xch[2, lane] = 0


def _w_init_cuda(xch, lane):  # pragma: no cover - device code
    return


def _w_sync_sim(xch):  # pragma: no cover - simulator device code
    cuda.syncthreads()


def _w_sync_cuda(xch):  # pragma: no cover - device code
    cuda.syncwarp(_FULL)


def _w_put(xch, lane, v):  # pragma: no cover - simulator device code
    """Publish this lane's ``v`` to the warp (simulator): one of two slot rows, alternating per call, then a
    barrier.  Every lane calls the primitives in the same order, so a row is written again only after
    the next call's barrier, when every lane has read it: one barrier per exchange."""
    b = xch[2, lane]
    xch[2, lane] = 1 - b
    xch[b, lane] = v
    cuda.syncthreads()
    return b


def _w_shfl_sim(xch, lane, v, src):  # pragma: no cover - simulator device code
    """Lane ``src``'s ``v`` (int64)."""
    return xch[_w_put(xch, lane, v), src]


def _w_shfl_cuda(xch, lane, v, src):  # pragma: no cover - device code
    return cuda.shfl_sync(_FULL, v, src)


def _w_up_sim(xch, lane, v):  # pragma: no cover - simulator device code
    """Lane ``lane - 1``'s ``v`` (lane 0: its own)."""
    b = _w_put(xch, lane, v)
    return xch[b, lane - 1] if lane > 0 else v


def _w_up_cuda(xch, lane, v):  # pragma: no cover - device code
    return cuda.shfl_up_sync(_FULL, v, 1)


def _w_down_sim(xch, lane, v):  # pragma: no cover - simulator device code
    """Lane ``lane + 1``'s ``v`` (lane 31: its own)."""
    b = _w_put(xch, lane, v)
    return xch[b, lane + 1] if lane < 31 else v


def _w_down_cuda(xch, lane, v):  # pragma: no cover - device code
    return cuda.shfl_down_sync(_FULL, v, 1)


def _u32(m):  # pragma: no cover - jitted
    """A lane mask as the hardware returns it (numba-cuda types ``ballot_sync`` and ``match_any_sync`` as
    signed int32: lane 31's bit is the sign) made a non-negative int64 with bits 0-31.  Widened as it is, a
    mask with lane 31 set is negative, with bits 32-63 set too: a popcount counts 32 more lanes, a shift
    right never reaches 0, and clearing its low bits one by one never ends at 0.  (That was the warp
    replay's wrong rows on an H200, 2026-11-27: the simulator built its masks non-negative.)"""
    return np.int64(m) & np.int64(0xFFFFFFFF)


def _hw_i32(m):  # pragma: no cover - simulator device code
    """The signed int32 a hardware vote or match returns for mask ``m`` (0 <= m < 2**32)."""
    return m - (1 << 32) if m >= (1 << 31) else m


def _w_ballot_sim(xch, lane, pred):  # pragma: no cover - simulator device code
    """Bit i set when lane i's ``pred`` holds (int64, bits 0-31)."""
    b = _w_put(xch, lane, 1 if pred else 0)
    m = 0
    for i in range(32):
        if xch[b, i] != 0:
            m |= 1 << i
    return _u32(_hw_i32(m))  # the hardware's signed result, converted as on a GPU


def _w_ballot_cuda(xch, lane, pred):  # pragma: no cover - device code
    return _u32(cuda.ballot_sync(_FULL, pred))


def _w_match_sim(xch, lane, v):  # pragma: no cover - simulator device code
    """Bit i set when lane i's ``v`` equals this lane's (int64, bits 0-31)."""
    b = _w_put(xch, lane, v)
    m = 0
    for i in range(32):
        if xch[b, i] == v:
            m |= 1 << i
    return _u32(_hw_i32(m))  # the hardware's signed result, converted as on a GPU


def _w_match_cuda(xch, lane, v):  # pragma: no cover - device code
    return _u32(cuda.match_any_sync(_FULL, v))


# the names the cores below call: Twins binds each to the hardware or the simulator body per kernel (these
# module-level bindings only name them for readers and linters)
_w_init, _w_sync, _w_shfl, _w_up, _w_down, _w_ballot, _w_match = (_w_init_cuda, _w_sync_cuda, _w_shfl_cuda,
                                                                   _w_up_cuda, _w_down_cuda, _w_ballot_cuda,
                                                                   _w_match_cuda)


def _low_lane(m):  # pragma: no cover - jitted
    """Index of the lowest set bit of ``m`` (> 0)."""
    return cuda.popc((m & -m) - 1)


def _w_next_bid(c, lane, xch, rows, j0):  # pragma: no cover - device code
    """(index, size) of the first non-empty bid level at or below ``j0`` (-1, 0 when none): 32 levels a step."""
    _w_sync(xch)  # the level sizes stored so far by any lane are visible
    jb = j0
    while jb >= 0:
        jl = jb - lane
        q = rows[c, jl] if jl >= 0 else 0
        m = _w_ballot(xch, lane, q > 0)
        if m != 0:
            src = _low_lane(m)
            return jb - src, _w_shfl(xch, lane, np.int64(q), src)
        jb -= 32
    return -1, np.int64(0)


def _w_next_ask(c, lane, xch, rows, wb, wa, j0):  # pragma: no cover - device code
    """Ask twin of :func:`_w_next_bid` (index within the ask side; ``wa``, 0 when none)."""
    _w_sync(xch)
    ja = j0
    while ja < wa:
        jl = ja + lane
        q = rows[c, wb + jl] if jl < wa else 0
        m = _w_ballot(xch, lane, q > 0)
        if m != 0:
            src = _low_lane(m)
            return ja + src, _w_shfl(xch, lane, np.int64(q), src)
        ja += 32
    return wa, np.int64(0)


def _w_top(c, lane, xch, rows, wb, wa, bid, j0, n, nlev):  # pragma: no cover - device code
    """This lane's entry (index, size) of a side's top list, scanned from ``j0`` (the best level) over at
    most ``n`` non-empty levels (the side's count), as :func:`_top` does for one side."""
    _w_sync(xch)
    ix = np.int32(-1 if bid else wa)  # level indices travel as int32 (fewer registers and shuffles)
    sz = np.int64(0)
    cnt = 0
    lim = min(nlev, n)
    jb = j0
    while cnt < lim and (jb >= 0 if bid else jb < wa):
        jl = jb - lane if bid else jb + lane
        ok = jl >= 0 if bid else jl < wa
        q = (rows[c, jl] if bid else rows[c, wb + jl]) if ok else 0
        m = _w_ballot(xch, lane, q > 0)
        while m != 0 and cnt < lim:
            src = _low_lane(m)
            v = _w_shfl(xch, lane, np.int64(q), src)
            if lane == cnt:
                ix = np.int32(jb - src if bid else jb + src)
                sz = v
            cnt += 1
            m &= m - 1
        jb = jb - 32 if bid else jb + 32
    return ix, sz


def _w_side_update(c, lane, xch, rows, wb, wa, bid, n, nlev, ix, sz, j, v):  # pragma: no cover - device code
    """Level ``j`` of a side (within the side) now holds ``v``, ``n`` non-empty levels: this lane's new
    top-list entry, as :func:`_bid_top_update` / :func:`_ask_top_update` update the whole list."""
    act = lane < nlev
    # entries better than j: bids above it (empty -1 never), asks below it (empty wa never)
    pos = cuda.popc(_w_ballot(xch, lane, act and (ix > j if bid else ix < j)))
    hit = _w_ballot(xch, lane, act and ix == j) != 0
    if hit:
        if v > 0:
            if ix == j:
                sz = v
            return ix, sz
        # remove entry pos: the entries behind it move up one place; the last is refilled below
        nix = _w_down(xch, lane, ix)
        nsz = _w_down(xch, lane, sz)
        if act and lane >= pos and lane < nlev - 1:
            ix = nix
            sz = nsz
        e = -1 if bid else wa
        valid = cuda.popc(_w_ballot(xch, lane, lane < nlev - 1 and ix != e))
        jj = e
        qq = np.int64(0)
        if valid == nlev - 1 and valid < n:  # deeper levels exist: find the next one
            prev = _w_shfl(xch, lane, ix, nlev - 2) if nlev >= 2 else j
            if bid:
                jj, qq = _w_next_bid(c, lane, xch, rows, prev - 1)
            else:
                jj, qq = _w_next_ask(c, lane, xch, rows, wb, wa, prev + 1)
        if lane == nlev - 1:
            ix = np.int32(jj)
            sz = qq
    elif v > 0 and pos < nlev:
        pix = _w_up(xch, lane, ix)
        psz = _w_up(xch, lane, sz)
        if act and lane > pos:
            ix = pix
            sz = psz
        elif lane == pos:
            ix = np.int32(j)
            sz = v
    return ix, sz


def _w_clear(c, lane, rows, lo, hi):  # pragma: no cover - device code
    """Zero levels ``lo..hi-1`` of row ``c`` (a book or a chunk summary), a level per lane.  (A while loop: the unrolled
    ``range`` loop that NVVM makes of a for loop here took the kernel from 98 to 126 registers.)"""
    jc = lo + lane
    while jc < hi:
        rows[c, jc] = 0
        jc += 32


def summarise_warp_chunk(c, lane, xch, bounds, side, price, kind, qty, sa, sb, wb, wa, pmin_b, pmin_a, comp, lut_b,
                         lut_a):  # pragma: no cover - device code
    """Lane ``lane`` of the warp composing chunk ``c``'s ops into per-level maps ``sa[c]``/``sb[c]`` (as
    :func:`summarise_chunk`: the rows arrive as identity maps), 32 ops at a time.  A batch of level sets
    only (L2) is written at once: per level, the last set of the batch (the lane with no later lane on the
    same level, found by a match vote).  A batch holding a size change (L3) or a clear is applied op by
    op, one lane at a time (clears by the whole warp)."""
    b1 = bounds[c + 1]
    for base in range(bounds[c], b1, 32):
        _w_sync(xch)  # the previous batch's writes come first
        i = base + lane
        kd = OP_NONE
        s = 0
        q = np.int64(0)
        j = np.int32(-1)
        if i < b1:
            kd = kind[i]
            s = side[i]
            q = qty[i]
            if kd == OP_SET or kd == OP_ADD:
                j = np.int32(_level(s, price[i], wb, wa, pmin_b, pmin_a, comp, lut_b, lut_a))
        if _w_ballot(xch, lane, kd == OP_ADD or kd == OP_CLEAR) == 0:
            m = _w_match(xch, lane, j)
            if j >= 0 and (m >> (lane + 1)) == 0:
                sa[c, j] = 0
                sb[c, j] = q
        else:
            pk_l = np.int64(kd) | (np.int64(s + 1) << 8)  # kind and side travel in one shuffle
            for t in range(32):
                pk = _w_shfl(xch, lane, pk_l, t)
                if (pk & 255) == OP_CLEAR:
                    sc = (pk >> 8) - 1
                    lo = 0 if sc >= 0 else wb
                    hi = wb + wa if sc <= 0 else wb
                    _w_clear(c, lane, sa, lo, hi)  # a clear is the map (0, 0)
                    _w_clear(c, lane, sb, lo, hi)
                elif lane == t and j >= 0:
                    if kd == OP_SET:
                        sa[c, j] = 0
                        sb[c, j] = q
                    else:
                        sb[c, j] += q
                _w_sync(xch)


def replay_warp_chunk(c, lane, xch, bounds, side, price, kind, qty, flags, rows, wb, wa, pmin_b, pmin_a, comp,
                      lut_b, lut_a, ub, ua, best, out_base, nlev, do_ofi, outs, tail,
                      diag):  # pragma: no cover - device code
    """Lane ``lane`` of the warp replaying chunk ``c`` (ops ``bounds[c]:bounds[c + 1]``, linear) from its
    start book ``rows[c]`` (row-major, modified in place); same outputs as :func:`replay_chunk` in mode 0,
    the rows in the planes of ``outs`` (bid prices, bid sizes, ask prices, ask sizes[, OFI])."""
    nb = best[c, 2]
    na = best[c, 3]
    bi, bq = _w_top(c, lane, xch, rows, wb, wa, True, best[c, 0], nb, nlev)
    ai, aq = _w_top(c, lane, xch, rows, wb, wa, False, best[c, 1], na, nlev)
    pbi = bi
    pbq = bq
    pai = ai
    paq = aq
    # the last entries of the lists, known to every lane: an op deeper than a full list's last entry
    # changes nothing visible (no vote needed)
    lb = _w_shfl(xch, lane, bi, nlev - 1)
    la = _w_shfl(xch, lane, ai, nlev - 1)
    acc = np.int64(0)
    k = out_base[c]
    b1 = bounds[c + 1]
    for base in range(bounds[c], b1, 32):
        _w_sync(xch)  # level sizes stored by the previous batch are visible to this batch's loads
        i = base + lane
        kd_l = OP_NONE
        s_l = 0
        f_l = 0
        q_l = np.int64(0)
        j_l = np.int32(-1)
        r_l = np.int64(0)
        if i < b1:
            kd_l = kind[i]
            s_l = side[i]
            f_l = flags[i]
            q_l = qty[i]
            if kd_l == OP_SET or kd_l == OP_ADD:
                j_l = np.int32(_level(s_l, price[i], wb, wa, pmin_b, pmin_a, comp, lut_b, lut_a))
            if j_l >= 0:
                r_l = rows[c, j_l]  # the size before this batch; ops earlier in the batch patch it below
        # kind, side and flags travel in one shuffle
        pk = np.int32(np.int64(kd_l) | (np.int64(s_l + 1) << 8) | (np.int64(f_l) << 16))
        for t in range(min(32, b1 - base)):
            pkt = _w_shfl(xch, lane, pk, t)
            kd = pkt & 255
            s = ((pkt >> 8) & 255) - 1
            f = pkt >> 16
            j = _w_shfl(xch, lane, j_l, t)
            if (kd == OP_SET or kd == OP_ADD) and j >= 0:
                q = _w_shfl(xch, lane, q_l, t)
                r = _w_shfl(xch, lane, r_l, t)
                was = r > 0
                v = q if kd == OP_SET else r + q
                if lane == 0:
                    rows[c, j] = v
                if lane > t and j_l == j:
                    r_l = v  # a later op of the batch on the same level starts from this size
                if v < 0 and lane == 0:
                    # more size removed than the level held (see replay_chunk): counted, shown as empty
                    if diag[c, 0] == 0:
                        diag[c, 1] = base + t
                    diag[c, 0] += 1
                d = (1 if v > 0 else 0) - (1 if was else 0)
                # fast path: an op deeper than the last of a full top list changes nothing visible
                if j < wb:
                    nb += d
                    if j >= lb:
                        bi, bq = _w_side_update(c, lane, xch, rows, wb, wa, True, nb, nlev, bi, bq, j, v)
                        lb = _w_shfl(xch, lane, bi, nlev - 1)
                else:
                    na += d
                    if j - wb <= la:
                        ai, aq = _w_side_update(c, lane, xch, rows, wb, wa, False, na, nlev, ai, aq, j - wb, v)
                        la = _w_shfl(xch, lane, ai, nlev - 1)
            elif kd == OP_CLEAR:
                lo = 0 if s >= 0 else wb
                hi = wb + wa if s <= 0 else wb
                _w_clear(c, lane, rows, lo, hi)
                if s >= 0:
                    nb = 0
                    bi = np.int32(-1)
                    bq = np.int64(0)
                    lb = np.int32(-1)
                if s <= 0:
                    na = 0
                    ai = np.int32(wa)
                    aq = np.int64(0)
                    la = np.int32(wa)
                if lane > t and lo <= j_l < hi:
                    r_l = np.int64(0)  # a later op of the batch on a cleared level starts from empty
            if (f & F_OBSERVE) != 0:
                # lane 0 holds the best levels
                if (lane == 0 and bi >= 0 and ai < wa
                        and _bid_px(bi, pmin_b, comp, ub) >= _ask_px(ai, wa, pmin_a, comp, ua)):  # crossed/locked
                    if diag[c, 2] == 0:
                        diag[c, 3] = base + t
                    diag[c, 2] += 1
                if do_ofi:  # level indices order like prices
                    acc += ofi_e(bi, bq, ai, aq, pbi, pbq, pai, paq)
                    pbi = bi
                    pbq = bq
                    pai = ai
                    paq = aq
            if (f & F_EMIT) != 0:
                if lane < nlev:  # one output array of planes: one base address held, not five
                    outs[0, k, lane] = _bid_px(bi, pmin_b, comp, ub)
                    outs[1, k, lane] = bq
                    outs[2, k, lane] = _ask_px(ai, wa, pmin_a, comp, ua)
                    outs[3, k, lane] = aq
                    if do_ofi:
                        outs[4, k, lane] = acc
                acc = np.int64(0)
                k += 1
    if lane == 0:
        best[c, 0] = bi
        best[c, 1] = ai
        best[c, 2] = nb
        best[c, 3] = na
    if lane < nlev:
        tail[c, lane] = acc  # OFI observed after the chunk's last emitted row (carried by the caller)


# ----------------------------------------------------------------------------- CUDA kernels
# Bodies compiled with Twins.cuda (cuda.jit against the device cores).
def prepare_cuda(kind, side, price, qty, flags, emit_mode, every, emit_arr, op_lut, sign_lut, o_kind, o_qty,
                 o_flags, mm):  # pragma: no cover - device code
    """Grid-stride over events: level ops, op flags, and per-side price min/max and the emit count.

    ``mm`` (int64[7]): bid min, bid max, ask min, ask max of book-op prices, rows to emit, ADD ops, and
    the largest absolute size of a SET or ADD op; the caller initialises it to (+BIG, -BIG, +BIG, -BIG,
    0, 0, 0).  One atomic per thread and value, not per event.
    Twin: :func:`prepare_cpu`.
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    bmin = _BIG
    bmax = -_BIG
    amin = _BIG
    amax = -_BIG
    ne = np.int64(0)
    na = np.int64(0)
    qmax = np.int64(0)
    for i in range(start, kind.size, stride):
        op, q, e = prepare_at(i, kind, side, price, qty, flags, emit_mode, every, emit_arr, op_lut, sign_lut, o_kind,
                              o_qty, o_flags)
        if e:
            ne += 1
        if op == OP_ADD:
            na += 1
        if op == OP_SET or op == OP_ADD:
            qmax = max(qmax, abs(q))
            p = price[i]
            if side[i] > 0:
                bmin = min(bmin, p)
                bmax = max(bmax, p)
            else:
                amin = min(amin, p)
                amax = max(amax, p)
    cuda.atomic.min(mm, 0, bmin)
    cuda.atomic.max(mm, 1, bmax)
    cuda.atomic.min(mm, 2, amin)
    cuda.atomic.max(mm, 3, amax)
    cuda.atomic.add(mm, 4, ne)
    if na != 0:
        cuda.atomic.add(mm, 5, na)
    cuda.atomic.max(mm, 6, qmax)


def chunk_bounds_cuda(L, n_ops, flags, bounds):  # pragma: no cover - device code
    """``bounds[c]`` = chunk_start_at(c); ``bounds[C]`` = n_ops.  Twin: :func:`chunk_bounds_cpu`."""
    c = cuda.grid(1)
    C = bounds.size - 1
    if c < C:
        bounds[c] = chunk_start_at(c, L, n_ops, flags)
    if c == C:
        bounds[c] = n_ops


#: ops per side of an interleave tile (a block moves TILE chunks x TILE ops through shared memory)
TILE = 32
_TILE_PAD = TILE + 1  # shared tiles are TILE x (TILE + 1): the column reads hit different banks


def interleave_cuda(bounds, C, n_ct, side, price, kind, qty, flags, i_side, i_price, i_kind, i_qty,
                    i_flags):  # pragma: no cover - device code
    """One block per tile of TILE chunks x TILE ops (block ``ct + jt * n_ct``), transposed through shared
    memory: the loads run along each chunk's ops (consecutive addresses) and the stores along chunks
    (slot ``c + j * C``: consecutive addresses), so both sides are coalesced.  (One thread per slot reads
    32 ops a chunk apart per warp load: a sector per op and field.)  Any block size works.
    Twin: :func:`interleave_cpu`."""
    b = cuda.blockIdx.x
    c0 = (b % n_ct) * TILE
    j0 = (b // n_ct) * TILE
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    Lp = i_kind.size // C
    t_px = cuda.shared.array((TILE, _TILE_PAD), dtype=np.int64)
    t_q = cuda.shared.array((TILE, _TILE_PAD), dtype=np.int64)
    t_s = cuda.shared.array((TILE, _TILE_PAD), dtype=np.int32)
    t_k = cuda.shared.array((TILE, _TILE_PAD), dtype=np.int32)
    t_f = cuda.shared.array((TILE, _TILE_PAD), dtype=np.int32)
    for it in range(tid, TILE * TILE, nt):  # tile row r = chunk c0 + r, column x = op j0 + x
        r = it // TILE
        x = it % TILE
        c = c0 + r
        j = j0 + x
        if c < C and j < Lp:
            i = bounds[c] + j
            if i < bounds[c + 1]:
                t_px[r, x] = price[i]
                t_q[r, x] = qty[i]
                t_s[r, x] = side[i]
                t_k[r, x] = kind[i]
                t_f[r, x] = flags[i]
            else:  # padding past the chunk's end
                t_px[r, x] = 0
                t_q[r, x] = 0
                t_s[r, x] = 0
                t_k[r, x] = OP_NONE
                t_f[r, x] = 0
    cuda.syncthreads()
    for it in range(tid, TILE * TILE, nt):  # neighbouring threads: neighbouring chunks, one op
        x = it // TILE
        r = it % TILE
        c = c0 + r
        j = j0 + x
        if c < C and j < Lp:
            t = c + j * C
            i_side[t] = t_s[r, x]
            i_price[t] = t_px[r, x]
            i_kind[t] = t_k[r, x]
            i_qty[t] = t_q[r, x]
            i_flags[t] = t_f[r, x]


def summarise_cuda(bounds, C, inter, side, price, kind, qty, sa, sb, wb, wa, pmin_b, pmin_a, comp, lut_b,
                   lut_a):  # pragma: no cover - device code
    """One thread per chunk.  Twin: :func:`summarise_cpu`."""
    c = cuda.grid(1)
    if c < bounds.size - 1:
        summarise_chunk(c, bounds, C, inter, side, price, kind, qty, sa, sb, wb, wa, pmin_b, pmin_a, comp, lut_b,
                        lut_a)


def group_compose_cuda(G, C, sa, sb, ga, gb):  # pragma: no cover - device code
    """One thread per (group, level); adjacent threads take adjacent levels (coalesced).  Twin: cpu."""
    t = cuda.grid(1)
    w = sa.shape[1]
    if t < G * w:
        group_compose_at(t // w, t % w, G, C, sa, sb, ga, gb)


def group_scan_cuda(G, init, ga, gb, gstart, final):  # pragma: no cover - device code
    """One thread per level.  Twin: :func:`group_scan_cpu`."""
    j = cuda.grid(1)
    if j < init.size:
        group_scan_at(j, G, init, ga, gb, gstart, final)


def group_apply_cuda(G, C, sa, sb, gstart, rows, rt):  # pragma: no cover - device code
    """One thread per (group, level).  Twin: :func:`group_apply_cpu`."""
    t = cuda.grid(1)
    w = sa.shape[1]
    if t < G * w:
        group_apply_at(t // w, t % w, G, C, sa, sb, gstart, rows, rt)


def row_best_cuda(rows, rt, wb, wa, best):  # pragma: no cover - device code
    """One thread per chunk; with level-major rows a warp scans 32 chunks' level j together.  Twin: cpu."""
    c = cuda.grid(1)
    if c < best.shape[0]:
        row_best_scan(c, rows, rt, wb, wa, best)


def replay_cuda(bounds, C, inter, side, price, kind, qty, flags, rows, rt, wb, wa, pmin_b, pmin_a, comp, lut_b,
                lut_a, ub, ua, best, out_base, nlev, do_ofi, out_bp, out_bq, out_ap, out_aq,
                out_ofi, tail, diag, mode, rec, Lp):  # pragma: no cover - device code
    """One thread per chunk replays it from its start book (modes 0 and 1).  Twin: :func:`replay_cpu`."""
    c = cuda.grid(1)
    if c < bounds.size - 1:
        st = cuda.local.array((9, NLEV_CAP), dtype=rows.dtype)
        si = cuda.local.array((9, NLEV_CAP), dtype=np.int32)
        so = cuda.local.array((9, NLEV_CAP), dtype=np.int64)
        stg = cuda.local.array((1, 1, 1), dtype=np.int64)  # no stage in these modes
        sk = cuda.local.array(1, dtype=np.int64)
        md = 0 if mode == 2 else mode  # (mode 2 needs the staged kernel: rows go straight out here)
        # nlev == NLEV_CAP (replay_pair compiles one kernel per level count): passing the constant
        # lets every scratch loop unroll, so the scratch is held in registers
        replay_chunk(c, bounds, C, inter, side, price, kind, qty, flags, rows, rt, wb, wa, pmin_b, pmin_a, comp,
                     lut_b, lut_a, ub, ua, best, out_base, NLEV_CAP, do_ofi, out_bp, out_bq, out_ap, out_aq,
                     out_ofi, tail, diag, st, si, so, md, rec, Lp, stg, sk, sk, 0, True)


def replay_staged_cuda(bounds, C, inter, side, price, kind, qty, flags, rows, rt, wb, wa, pmin_b, pmin_a, comp,
                       lut_b, lut_a, ub, ua, best, out_base, nlev, do_ofi, out_bp, out_bq, out_ap, out_aq,
                       out_ofi, tail, diag, mode, rec, Lp):  # pragma: no cover - device code
    """Mode 2 (every op emits a row): one-warp blocks, rows staged in shared memory and written out by
    the warp (see :func:`replay_chunk`).  Threads past the last chunk take part in every write-out.
    Twin: :func:`replay_cpu`."""
    c = cuda.grid(1)
    lane = cuda.threadIdx.x
    stg = cuda.shared.array((32, 5, STAGE), dtype=np.int64)  # noqa: F821 - STAGE bound by replay_pair
    sk = cuda.shared.array(32, dtype=np.int64)
    sn = cuda.shared.array(32, dtype=np.int64)
    sn[lane] = 0
    cuda.syncthreads()
    st = cuda.local.array((9, NLEV_CAP), dtype=rows.dtype)
    si = cuda.local.array((9, NLEV_CAP), dtype=np.int32)
    so = cuda.local.array((9, NLEV_CAP), dtype=np.int64)
    # every thread runs the same loop and reaches the same block barriers (threads past the last chunk
    # inactive), so no barrier sits in divergent code
    active = c < C
    ca = c if active else C - 1
    replay_chunk(ca, bounds, C, inter, side, price, kind, qty, flags, rows, rt, wb, wa, pmin_b,
                 pmin_a, comp, lut_b, lut_a, ub, ua, best, out_base, NLEV_CAP, do_ofi, out_bp, out_bq, out_ap,
                 out_aq, out_ofi, tail, diag, st, si, so, 2, rec, Lp, stg, sk, sn, lane, active)


def summarise_warp_cuda(xch, bounds, side, price, kind, qty, sa, sb, wb, wa, pmin_b, pmin_a, comp, lut_b,
                        lut_a):  # pragma: no cover - device code
    """One warp (a one-warp block) per chunk: :func:`summarise_warp_chunk`.  ``xch``: (3, 32) int64, the
    simulator's exchange (unused on a GPU).  Twin: :func:`summarise_warp_cpu`."""
    c = cuda.blockIdx.x
    lane = cuda.threadIdx.x
    _w_init(xch, lane)
    if c < bounds.size - 1:
        summarise_warp_chunk(c, lane, xch, bounds, side, price, kind, qty, sa, sb, wb, wa, pmin_b, pmin_a, comp,
                             lut_b, lut_a)


def replay_warp_cuda(xch, bounds, side, price, kind, qty, flags, rows, wb, wa, pmin_b, pmin_a, comp, lut_b, lut_a,
                     ub, ua, best, out_base, nlev, do_ofi, outs, tail, diag):  # pragma: no cover - device code
    """One warp (a one-warp block) per chunk: :func:`replay_warp_chunk` (``xch`` as in
    :func:`summarise_warp_cuda`).  Twin: :func:`replay_warp_cpu`."""
    c = cuda.blockIdx.x
    lane = cuda.threadIdx.x
    _w_init(xch, lane)
    if c < bounds.size - 1:  # the whole block (warp) takes the same branch
        replay_warp_chunk(c, lane, xch, bounds, side, price, kind, qty, flags, rows, wb, wa, pmin_b, pmin_a, comp,
                          lut_b, lut_a, ub, ua, best, out_base, NLEV_CAP, do_ofi, outs, tail, diag)


# ----------------------------------------------------------------------------- CPU twins
# Bodies compiled with Twins.cpu (njit against the CPU cores).
def prepare_cpu(kind, side, price, qty, flags, emit_mode, every, emit_arr, op_lut, sign_lut, o_kind, o_qty,
                o_flags, mm):  # pragma: no cover - jitted
    """CPU twin of :func:`prepare_cuda` (one pass, same outputs)."""
    for i in range(kind.size):
        op, q, e = prepare_at(i, kind, side, price, qty, flags, emit_mode, every, emit_arr, op_lut, sign_lut, o_kind,
                              o_qty, o_flags)
        if e:
            mm[4] += 1
        if op == OP_ADD:
            mm[5] += 1
        if op == OP_SET or op == OP_ADD:
            mm[6] = max(mm[6], abs(q))
            p = price[i]
            if side[i] > 0:
                mm[0] = min(mm[0], p)
                mm[1] = max(mm[1], p)
            else:
                mm[2] = min(mm[2], p)
                mm[3] = max(mm[3], p)


def chunk_bounds_cpu(L, n_ops, flags, bounds):  # pragma: no cover - jitted
    C = bounds.size - 1
    for c in prange(C):
        bounds[c] = chunk_start_at(c, L, n_ops, flags)
    bounds[C] = n_ops


def interleave_cpu(bounds, C, n_ct, side, price, kind, qty, flags, i_side, i_price, i_kind, i_qty,
                   i_flags):  # pragma: no cover - jitted
    for t in prange(i_kind.size):
        interleave_at(t, bounds, C, side, price, kind, qty, flags, i_side, i_price, i_kind, i_qty, i_flags)


def summarise_cpu(bounds, C, inter, side, price, kind, qty, sa, sb, wb, wa, pmin_b, pmin_a, comp, lut_b,
                  lut_a):  # pragma: no cover - jitted
    for c in prange(bounds.size - 1):
        summarise_chunk(c, bounds, C, inter, side, price, kind, qty, sa, sb, wb, wa, pmin_b, pmin_a, comp, lut_b,
                        lut_a)


def group_compose_cpu(G, C, sa, sb, ga, gb):  # pragma: no cover - jitted
    w = sa.shape[1]
    for t in prange(G * w):
        group_compose_at(t // w, t % w, G, C, sa, sb, ga, gb)


def group_scan_cpu(G, init, ga, gb, gstart, final):  # pragma: no cover - jitted
    for j in prange(init.size):
        group_scan_at(j, G, init, ga, gb, gstart, final)


def group_apply_cpu(G, C, sa, sb, gstart, rows, rt):  # pragma: no cover - jitted
    w = sa.shape[1]
    for t in prange(G * w):
        group_apply_at(t // w, t % w, G, C, sa, sb, gstart, rows, rt)


def row_best_cpu(rows, rt, wb, wa, best):  # pragma: no cover - jitted
    for c in range(best.shape[0]):
        row_best_scan(c, rows, rt, wb, wa, best)


def replay_cpu(bounds, C, inter, side, price, kind, qty, flags, rows, rt, wb, wa, pmin_b, pmin_a, comp, lut_b,
               lut_a, ub, ua, best, out_base, nlev, do_ofi, out_bp, out_bq, out_ap, out_aq,
               out_ofi, tail, diag, mode, rec, Lp):  # pragma: no cover - jitted
    """Sequential twin: replays every chunk in order on one core (one chunk: the plain replay).  Rows
    staged on the GPU (mode 2) go straight to the outputs here: the same rows."""
    st = np.empty((9, max(nlev, 1)), dtype=np.int64)  # one int64 array in all three scratch roles (replay_chunk)
    si = st
    so = st
    stg = np.zeros((1, 1, 1), dtype=np.int64)
    sk = np.zeros(1, dtype=np.int64)
    m = 0 if mode == 2 else mode
    for c in range(bounds.size - 1):
        replay_chunk(c, bounds, C, inter, side, price, kind, qty, flags, rows, rt, wb, wa, pmin_b, pmin_a, comp,
                     lut_b, lut_a, ub, ua, best, out_base, nlev, do_ofi, out_bp, out_bq, out_ap, out_aq, out_ofi,
                     tail, diag, st, si, so, m, rec, Lp, stg, sk, sk, 0, True)


def summarise_warp_cpu(xch, bounds, side, price, kind, qty, sa, sb, wb, wa, pmin_b, pmin_a, comp, lut_b,
                       lut_a):  # pragma: no cover - jitted
    """CPU twin of :func:`summarise_warp_cuda`: each chunk composed op by op (:func:`summarise_chunk`)."""
    for c in prange(bounds.size - 1):
        summarise_chunk(c, bounds, 1, False, side, price, kind, qty, sa, sb, wb, wa, pmin_b, pmin_a, comp, lut_b,
                        lut_a)


def replay_warp_cpu(xch, bounds, side, price, kind, qty, flags, rows, wb, wa, pmin_b, pmin_a, comp, lut_b, lut_a,
                    ub, ua, best, out_base, nlev, do_ofi, outs, tail, diag):  # pragma: no cover - jitted
    """CPU twin of :func:`replay_warp_cuda`: the sequential replay of every chunk (same rows, same state)."""
    out_bp = outs[0]
    out_bq = outs[1]
    out_ap = outs[2]
    out_aq = outs[3]
    out_ofi = outs[4] if do_ofi else outs[0, :1]
    st = np.empty((9, max(nlev, 1)), dtype=np.int64)  # one int64 array in all three scratch roles (replay_chunk)
    si = st
    so = st
    rec = np.zeros((1, 1), dtype=np.int64)
    stg = np.zeros((1, 1, 1), dtype=np.int64)
    sk = np.zeros(1, dtype=np.int64)
    for c in range(bounds.size - 1):
        replay_chunk(c, bounds, 1, False, side, price, kind, qty, flags, rows, False, wb, wa, pmin_b, pmin_a, comp,
                     lut_b, lut_a, ub, ua, best, out_base, nlev, do_ofi, out_bp, out_bq, out_ap, out_aq, out_ofi,
                     tail, diag, st, si, so, 0, rec, 0, stg, sk, sk, 0, True)


def gather_rows_cuda(bounds, C, nlev, do_ofi, rec, out_bp, out_bq, out_ap, out_aq,
                     out_ofi):  # pragma: no cover - device code
    """One thread per output row.  Twin: :func:`gather_rows_cpu`."""
    k = cuda.grid(1)
    if k < out_bp.shape[0]:
        gather_rows_at(k, bounds, C, nlev, do_ofi, rec, out_bp, out_bq, out_ap, out_aq, out_ofi)


def gather_rows_cpu(bounds, C, nlev, do_ofi, rec, out_bp, out_bq, out_ap, out_aq, out_ofi):  # pragma: no cover
    for k in prange(out_bp.shape[0]):
        gather_rows_at(k, bounds, C, nlev, do_ofi, rec, out_bp, out_bq, out_ap, out_aq, out_ofi)


# the warp primitives: the simulator's exchange body (also the CPU one; no CPU code calls them) and, on a GPU,
# the hardware's
_WARP_PRIMITIVES = [(name, sim, sim if simulator_enabled() else dev) for name, sim, dev in (
    ("_w_init", _w_init_sim, _w_init_cuda), ("_w_sync", _w_sync_sim, _w_sync_cuda),
    ("_w_shfl", _w_shfl_sim, _w_shfl_cuda), ("_w_up", _w_up_sim, _w_up_cuda), ("_w_down", _w_down_sim, _w_down_cuda),
    ("_w_ballot", _w_ballot_sim, _w_ballot_cuda), ("_w_match", _w_match_sim, _w_match_cuda))]
_TW = Twins(chunk_start_at, _op, _op_fields, _rg, _rs, _level, prepare_at, interleave_at, summarise_chunk, group_compose_at,
            group_scan_at, group_apply_at, row_best_scan, _next_bid, _next_ask, _list_remove, _list_insert, _bid_top_update,
            _ask_top_update, _bid_px, _ask_px, _top, _stage_rows, ("_stage_flush", _stage_flush_cpu, _stage_flush_cuda),
            replay_chunk, gather_rows_at, ofi_e, _low_lane, _u32, _hw_i32, _w_put, _w_next_bid, _w_next_ask, _w_top,
            _w_side_update, _w_clear, summarise_warp_chunk, replay_warp_chunk, *_WARP_PRIMITIVES,
            nrt=False)  # the cores never allocate: no reference counting per call
_PAR = {"parallel": True, "cache": True}

PREPARE = KernelPair("book.prepare", _TW.cuda(prepare_cuda), _TW.cpu(prepare_cpu, cache=True))
CHUNK_BOUNDS = KernelPair("book.chunk_bounds", _TW.cuda(chunk_bounds_cuda), _TW.cpu(chunk_bounds_cpu, **_PAR))
INTERLEAVE = KernelPair("book.interleave", _TW.cuda(interleave_cuda), _TW.cpu(interleave_cpu, **_PAR), threads=256,
                        per_block=True)
SUMMARISE = KernelPair("book.summarise", _TW.cuda(summarise_cuda), _TW.cpu(summarise_cpu, **_PAR), threads=64)
GROUP_COMPOSE = KernelPair("book.group_compose", _TW.cuda(group_compose_cuda), _TW.cpu(group_compose_cpu, **_PAR))
GROUP_SCAN = KernelPair("book.group_scan", _TW.cuda(group_scan_cuda), _TW.cpu(group_scan_cpu, **_PAR))
GROUP_APPLY = KernelPair("book.group_apply", _TW.cuda(group_apply_cuda), _TW.cpu(group_apply_cpu, **_PAR))
# the CPU path replays one chunk: a thread pool would cost more than the scan
GATHER_ROWS = KernelPair("book.gather_rows", _TW.cuda(gather_rows_cuda), _TW.cpu(gather_rows_cpu, **_PAR))
ROW_BEST = KernelPair("book.row_best", _TW.cuda(row_best_cuda), _TW.cpu(row_best_cpu, cache=True), threads=128)
# not cached on disk: measured on the CPU box (2026-11-26, bench_book_cpu.py), the replay loaded
# from numba's cache ran 30 ms on the USD-M recording against 17 ms compiled in the process (same code);
# compiling it costs about 5 s once per process
_REPLAY_CPU = _TW.cpu(replay_cpu)
_REPLAY: dict[tuple[int, bool, int], KernelPair] = {}


def replay_pair(levels: int, staged: bool = False, registers: int | None = None) -> KernelPair:
    """The replay kernel pair for ``levels`` levels: the CUDA kernel's per-thread scratch is sized at
    compile time to exactly ``levels`` columns (local memory per thread is the replay's main cost).
    ``staged``: the mode-2 kernel (rows staged in shared memory; one-warp blocks, 32 threads).
    ``registers``: the CUDA kernel's register cap (0: none; default: the ``book_replay_max_registers``
    option)."""
    cap = min(max(int(levels), 1), MAX_LEVELS)
    regs = int(config.get_option("book_replay_max_registers") if registers is None else registers)
    key = (cap, bool(staged), regs)
    if key not in _REPLAY:
        label = f"[{cap}]" + (f"[regs {regs}]" if regs else "")
        if staged:
            _REPLAY[key] = KernelPair(f"book.replay_staged{label}", _TW.cuda(replay_staged_cuda, NLEV_CAP=cap,
                                                                             STAGE=stage_values(cap),
                                                                             max_registers=regs),
                                      _REPLAY_CPU, threads=32)
        else:
            _REPLAY[key] = KernelPair(f"book.replay{label}", _TW.cuda(replay_cuda, NLEV_CAP=cap, max_registers=regs),
                                      _REPLAY_CPU, threads=64)
    return _REPLAY[key]


#: register cap of the warp replay kernel: ptxas (CUDA 13.0, sm_90, experiments/tools/ptx_report.py) gives it 61
#: registers at 5 levels without a cap; capped, its footprint and so the warps an SM holds are known before it
#: is compiled (32 one-warp blocks per SM at 64, the most an SM takes: :func:`gpuflow.backend.blocks_per_sm`)
WARP_REPLAY_REGISTERS = 64
_WARP_REPLAY_CPU = _TW.cpu(replay_warp_cpu)
SUMMARISE_WARP = KernelPair("book.summarise_warp", _TW.cuda(summarise_warp_cuda), _TW.cpu(summarise_warp_cpu, **_PAR),
                            threads=32, per_block=True)
_WARP: dict[int, KernelPair] = {}


def warp_replay_pair(levels: int) -> KernelPair:
    """The warp replay's kernel pair for ``levels`` levels (one warp per chunk; launched with one block of
    32 threads per chunk, ``per_block``).  The level count is a compile-time constant of the kernel."""
    cap = min(max(int(levels), 1), MAX_LEVELS)
    if cap not in _WARP:
        _WARP[cap] = KernelPair(f"book.replay_warp[{cap}]",
                                _TW.cuda(replay_warp_cuda, max_registers=WARP_REPLAY_REGISTERS, NLEV_CAP=cap),
                                _WARP_REPLAY_CPU, threads=32, per_block=True)
    return _WARP[cap]
