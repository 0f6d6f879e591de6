"""Backtest engine core: one parameter set replays the event stream against a fill model.

The same core runs as the exact engine (CPU twin: numba njit, one parameter set
after another, ``prange`` over sets) and as the sweep engine (CUDA: one thread per
parameter set; all threads walk the same events, so a warp's reads of event e
are one broadcast).  A strategy is a plain-Python ``step`` function compiled into
the engine (see :func:`engine_pair`); every integer result is identical on both.

Time and latency (all in the ``ts_local`` clock, ns).  Event e happened at the
exchange at ``tx[e]``: ``ts_local[e] - feed_latency`` for a constant feed latency, or
each event's own latency taken from the data (``ts_local - ts_exch``, less its minimum,
which removes the offset between the two clocks, as hftbacktest does).  An order sent at local time t
reaches the exchange at ``t + entry_latency`` and takes part in every exchange
event with ``tx >= t + entry_latency``; a cancel likewise.  The report of a fill
at exchange time tx reaches the strategy at ``tx + response_latency``: the
position the strategy sees (``seen``) lags the account by that much.

Fill model (the market data is not changed by our orders: no impact):

* An order arriving at the exchange is checked against the book at that moment
  (the book after the last event before it): a marketable limit / IOC / FOK /
  market order takes liquidity level by level from the visible top-N levels up to
  its limit (taker, the level's price); FOK fills only if all of it is available;
  a post-only order that would take is rejected; the rest of a GTC order rests.
* A resting order's queue position starts at the size shown at its price (0 for a
  new level; unknown, and set when the level comes into view, if deeper than the
  N levels known).  A trade at our price advances the queue by its size; the size
  traded beyond our queue position fills us (partially, or fully with
  ``partial_fills=0``).  A trade at a worse price than ours, or the opposite best
  quote crossing our price, fills the whole order at our price (maker).
* Queue models for size leaving the level without a trade: ``risk-averse``
  (conservative: the queue ahead only shrinks to the level's size) and
  ``probabilistic`` (a decrease d removes ``d * front // (front + back)`` from the
  size ahead of us: cancels are spread over the queue in proportion).
* Fees: maker / taker rates in parts per million of notional (negative = rebate).

Accounting is integer: position (lots), cash (ticks x lots), fees (ticks x lots, with
the fraction kept exactly in millionths), equity samples per instrument
``2 * cash + pos * (best bid + best ask)`` and the whole fees paid so far
(half-tick x lots, at every ``sample`` ns from ``t0``; the last sample is the end
state); metrics convert to prices at the end with each instrument's steps.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from gpuflow import config
from gpuflow.backend import KernelPair, Twins, blocks_per_sm, cuda, simulator_enabled
from gpuflow.schema import KIND_ADD, KIND_CANCEL, KIND_DELETE, KIND_EXECUTE, KIND_SET, KIND_TRADE

__all__ = [
    "O_STATE", "O_SIDE", "O_PRICE", "O_QTY", "O_TYPE", "O_ARRIVE", "O_QUEUE", "O_ID", "O_CANCEL", "O_INST", "O_ORIG",
    "O_LEVEL", "O_QENTRY", "NCOL", "T_GTC", "T_IOC", "T_FOK", "T_POST", "T_MARKET", "A_CANCEL", "A_CANCEL_ALL",
    "A_MODIFY", "C_ENTRY", "C_RESP", "C_FEED", "C_MAKER", "C_TAKER", "C_QMODEL", "C_PARTIAL", "C_INTERVAL",
    "C_SAMPLE", "C_T0", "C_GRID", "C_SKIP", "C_SKIP_LEVELS", "C_BOFF1", "C_BOFF2", "NCFG", "N_ORDERS", "N_CANCELS",
    "N_FILLS", "N_MAKER", "N_TAKER", "MAKER_LOTS", "TAKER_LOTS", "N_REJECTS", "N_FILLS_DROPPED", "N_UNFILLED_MARKET",
    "N_BAD_ACTIONS", "N_NAN_ACTIONS", "N_DECISIONS", "N_NOTICES_DROPPED", "ORDERED_LOTS", "NCNT", "ACC_POS",
    "ACC_CASH", "ACC_FEE", "ACC_LOTS", "ACC_NOTIONAL", "ACC_FEE_REM", "NACC", "EQ_2", "EQ_FEE", "EQ_FEE_REM", "NEQ",
    "F_EVENT", "F_TS", "F_INST", "F_SIDE", "F_PRICE", "F_QTY", "F_LIQ", "F_QUEUE", "F_ORDER", "NFILL", "MAX_ORDERS",
    "MAX_ACTIONS", "MAX_PENDING", "SKIP_BLOCK", "MAX_SKIP_LEVELS", "SKIP_FANOUT_SHIFT", "NBLK", "event_blocks",
    "skip_offsets", "NEV", "NVS", "event_view", "engine_pair", "action_rows", "compiled_registers",
]

# order table columns
(O_STATE, O_SIDE, O_PRICE, O_QTY, O_TYPE, O_ARRIVE, O_QUEUE, O_ID, O_CANCEL, O_INST, O_ORIG, O_LEVEL, O_QENTRY,
 O_OUT) = range(14)
NCOL = 14
#: order states
S_FREE, S_PENDING, S_RESTING = 0, 1, 2
#: order types (= action codes 1..5)
T_GTC, T_IOC, T_FOK, T_POST, T_MARKET = 1, 2, 3, 4, 5
#: other action codes
A_CANCEL, A_CANCEL_ALL, A_MODIFY = 6, 7, 8
#: action columns: code, instrument, side, price (ticks), qty (lots), slot
AC_CODE, AC_INST, AC_SIDE, AC_PRICE, AC_QTY, AC_SLOT = range(6)
# config vector
# (C_SKIP: log2 of the event-block size of the skip summaries, 0: no skipping; C_SKIP_LEVELS: levels of
# summaries, each 2 ** SKIP_FANOUT_SHIFT times the blocks of the one before; C_BOFF1 / C_BOFF2: the first
# summary row of levels 1 and 2 in the summaries array; all four set by the engine, not the config; the kernels
# take the levels as a compile-time constant (engine_pair), C_SKIP_LEVELS records them for tools)
(C_ENTRY, C_RESP, C_FEED, C_MAKER, C_TAKER, C_QMODEL, C_PARTIAL, C_INTERVAL, C_SAMPLE, C_T0, C_GRID, C_SKIP,
 C_SKIP_LEVELS, C_BOFF1, C_BOFF2) = range(15)
NCFG = 15
# counters (N_SLOTS: the most order slots in use at once; a slot is taken only when every one before it is in
# use, so the slots from N_SLOTS on were never used and the engine's scans of the order table stop there)
(N_ORDERS, N_CANCELS, N_FILLS, N_MAKER, N_TAKER, MAKER_LOTS, TAKER_LOTS, N_REJECTS, N_FILLS_DROPPED,
 N_UNFILLED_MARKET, N_BAD_ACTIONS, N_NAN_ACTIONS, N_DECISIONS, MAX_ABS_POS, N_ORDER_ID, N_NOTICES_DROPPED,
 ORDERED_LOTS, N_SLOTS) = range(18)
NCNT = 20
#: account columns per instrument: position (lots), cash (ticks x lots), fees (whole ticks x lots, plus
#: the remainder in millionths in ACC_FEE_REM, 0..999,999), traded lots, traded notional (ticks x lots)
ACC_POS, ACC_CASH, ACC_FEE, ACC_LOTS, ACC_NOTIONAL, ACC_FEE_REM = range(6)
NACC = 6
_MILLION = np.int64(1_000_000)
#: equity sample values (:func:`record_sample`; the engine's samples array is (sample, value, instrument, set)):
#: 2 x equity in ticks x lots (``2 * cash + pos * (bid + ask)``), fees in whole ticks x lots, their remainder in
#: millionths
EQ_2, EQ_FEE, EQ_FEE_REM = range(3)
NEQ = 3
# fill record columns
F_EVENT, F_TS, F_INST, F_SIDE, F_PRICE, F_QTY, F_LIQ, F_QUEUE, F_ORDER = range(9)
NFILL = 9
#: event blocks (:func:`block_quiet`): events per block on the CPU by default (a power of two; the engine's
#: ``backtest_skip_block`` option; on a GPU a warp passes a block over only when all its threads can,
#: :func:`warp_all_cuda`) and the block summary's columns: the
#: last receive time and the largest exchange time; the lowest price of a trade whose passive side is the bid
#: and the highest one on the ask side; then over the events that change their instrument's book row: any that
#: changes more than one level (or has no side), the highest bid-side and lowest ask-side price and their
#: prices' bits modulo 64, the lowest N-th bid and best ask, the highest N-th ask and best bid (the event
#: view's values)
SKIP_BLOCK = 16
#: levels of block summaries at most (``backtest_skip_levels``), and the factor between one level's blocks and
#: the next's (a power of two: ``SKIP_FANOUT_SHIFT`` is its log2).  A set at an event that starts a block of the
#: coarsest level asks that block first and passes it over when it is quiet; else the next level's block there,
#: down to the finest, whose events it then walks (:func:`simulate`).  A coarse block is quiet only when each of
#: its finer blocks is (its summary is theirs combined), so the events walked are those of the finest level alone,
#: with fewer checks: a run of quiet fine blocks costs one check per coarse block
MAX_SKIP_LEVELS = 3
SKIP_FANOUT_SHIFT = 2
(B_TS, B_TX, B_PB, B_PA, B_MULTI, B_BIDMAX, B_BIDBITS, B_ASKMIN, B_ASKBITS, B_BDMIN, B_A0MIN, B_ADMAX,
 B_B0MAX) = range(13)
NBLK = 13
#: the event view (:func:`event_view`), computed once per market and read by every parameter set: rows of a
#: (NEV, n) array: per event a flags word and the best / N-th prices of the book row the event makes current
#: (-BIG / BIG: empty level; only for events flagged EV_ROW) ...
V_FLAGS, V_B0, V_A0, V_BD, V_AD = range(5)
NEV = 5
#: ... flags: the event changes its instrument's current book row; it is a trade or execution with an
#: aggressor side; it is the last event of its receive time (the strategy may decide after it); its
#: instrument is 1; then its kind (bits 8-15) and side + 1 (bits 16-17)
EV_ROW, EV_TRADE, EV_LAST, EV_INST1 = 1, 2, 4, 8
EV_INST_SHIFT = 3  # EV_INST1's bit: (flags >> EV_INST_SHIFT) & 1 is the instrument
EV_KIND_SHIFT, EV_SIDE_SHIFT = 8, 16
#: ... and the view's state after each event (row e + 1; row 0: before the first event): each instrument's
#: current book row (-1: none yet) and its last two-sided mid x 2 (0: none yet)
VS_ROW0, VS_ROW1, VS_MID0, VS_MID1 = range(4)
NVS = 4
#: per-set capacities (local arrays on the GPU)
MAX_ORDERS = 16
MAX_ACTIONS = 8
MAX_PENDING = 64
#: the row of the pending-notice table (``pend``: MAX_PENDING rows of notices and this one more) whose first
#: value counts the rows in use: every row from there on is free, so the scans of the table (at every notice,
#: every delivery) stop there instead of reading all MAX_PENDING rows (thread-local memory on the GPU, where a
#: warp's scan of 64 rows read 16 KB); a few rows are in flight at a time
PEND_N = MAX_PENDING
PEND_ROWS = MAX_PENDING + 1
MAX_INSTRUMENTS = 2
_UNKNOWN = np.int64(1) << 60
_BIG = np.int64(1) << 62
_KIND_TRADE = KIND_TRADE
_KIND_EXECUTE = KIND_EXECUTE
_KIND_SET = KIND_SET
_KIND_ADD = KIND_ADD
_KIND_CANCEL = KIND_CANCEL
_KIND_DELETE = KIND_DELETE


# ----------------------------------------------------------------------------- scalar cores
def level_qty(bp, bq, ap, aq, row, nlev, side, price):  # pragma: no cover - jitted
    """Displayed size at ``price`` on ``side`` in book row ``row``; -1 when it lies beyond the known levels."""
    if row < 0:
        return np.int64(-1)
    if side > 0:
        for m in range(nlev):
            q = bq[row, m]
            if q <= 0:
                return np.int64(0)  # fewer levels than N: everything beyond is empty
            p = bp[row, m]
            if p == price:
                return q
            if p < price:
                return np.int64(0)
        return np.int64(-1)
    for m in range(nlev):
        q = aq[row, m]
        if q <= 0:
            return np.int64(0)
        p = ap[row, m]
        if p == price:
            return q
        if p > price:
            return np.int64(0)
    return np.int64(-1)


def add_fee(acct, inst, notional, ppm):  # pragma: no cover - jitted
    """Add ``notional * ppm / 1e6`` ticks x lots to the fees exactly (whole part and millionths kept
    apart, so the running sum does not overflow int64 where ``notional * ppm`` would)."""
    q = notional // _MILLION
    r = notional - q * _MILLION
    part = r * ppm  # |r| < 1e6 and |ppm| <= 1e6 (a 100 % fee)
    pq = part // _MILLION
    acct[inst, ACC_FEE] += q * ppm + pq
    acct[inst, ACC_FEE_REM] += part - pq * _MILLION
    if acct[inst, ACC_FEE_REM] >= _MILLION:
        acct[inst, ACC_FEE] += 1
        acct[inst, ACC_FEE_REM] -= _MILLION


def notice(pend, cnt, ts, inst, dq, k, done):  # pragma: no cover - jitted
    """Queue a report to the strategy, delivered at local time ``ts``: ``dq`` signed lots filled on order
    slot ``k``; ``done``: the order is over (filled, cancelled, rejected or expired).  It takes the first free
    row of ``pend`` (rows at and past ``pend[PEND_N, 0]`` are all free: :data:`PEND_N`)."""
    n = pend[PEND_N, 0]
    j = n
    for i in range(n):
        if pend[i, 0] < 0:
            j = i
            break
    if j >= PEND_N:
        cnt[N_NOTICES_DROPPED] += 1
        return
    pend[j, 0] = ts
    pend[j, 1] = inst
    pend[j, 2] = dq
    pend[j, 3] = k
    pend[j, 4] = done
    if j == n:
        pend[PEND_N, 0] = n + 1


def record_fill(p, e, t_x, ordv, k, qty, price, liq, cfg, acct, pend, cnt, fills):  # pragma: no cover - jitted
    """Book a fill of ``qty`` lots of order slot ``k`` at ``price``: account, fee, notice, counters, record."""
    side = ordv[k, O_SIDE]
    inst = ordv[k, O_INST]
    notional = price * qty
    acct[inst, ACC_POS] += side * qty
    acct[inst, ACC_CASH] -= side * notional
    add_fee(acct, inst, notional, cfg[C_MAKER] if liq == 1 else cfg[C_TAKER])
    acct[inst, ACC_LOTS] += qty
    acct[inst, ACC_NOTIONAL] += notional
    ap = acct[inst, 0] if acct[inst, 0] >= 0 else -acct[inst, 0]
    if ap > cnt[MAX_ABS_POS]:
        cnt[MAX_ABS_POS] = ap
    # the strategy learns of the fill after the response latency
    notice(pend, cnt, t_x + cfg[C_RESP], inst, side * qty, k, 1 if ordv[k, O_QTY] - qty <= 0 else 0)
    ordv[k, O_QTY] -= qty
    cnt[N_FILLS] += 1
    if liq == 1:
        cnt[N_MAKER] += 1
        cnt[MAKER_LOTS] += qty
    else:
        cnt[N_TAKER] += 1
        cnt[TAKER_LOTS] += qty
    nf = cnt[N_FILLS] - 1
    if nf < fills.shape[1]:
        fills[p, nf, F_EVENT] = e
        fills[p, nf, F_TS] = t_x
        fills[p, nf, F_INST] = inst
        fills[p, nf, F_SIDE] = side
        fills[p, nf, F_PRICE] = price
        fills[p, nf, F_QTY] = qty
        fills[p, nf, F_LIQ] = liq
        fills[p, nf, F_QUEUE] = ordv[k, O_QENTRY]
        fills[p, nf, F_ORDER] = ordv[k, O_ID]
    else:
        cnt[N_FILLS_DROPPED] += 1
    if ordv[k, O_QTY] <= 0:
        ordv[k, O_STATE] = S_FREE


def take(p, e, t_x, ordv, k, row, bp, bq, ap, aq, nlev, cfg, acct, pend, cnt, fills, dry):  # pragma: no cover
    """Walk the opposite side of book row ``row`` for order slot ``k`` up to its limit price.

    Returns the lots available (``dry``) or filled (taker fills at each level's price).
    """
    side = ordv[k, O_SIDE]
    limit = ordv[k, O_PRICE]
    market = ordv[k, O_TYPE] == T_MARKET
    want = ordv[k, O_QTY]
    got = np.int64(0)
    if row < 0:
        return got
    for m in range(nlev):
        if side > 0:
            q = aq[row, m]
            px = ap[row, m]
            if q <= 0 or (not market and px > limit):
                break
        else:
            q = bq[row, m]
            px = bp[row, m]
            if q <= 0 or (not market and px < limit):
                break
        x = want - got
        if q < x:
            x = q
        if x <= 0:
            break
        if not dry:
            record_fill(p, e, t_x, ordv, k, x, px, 2, cfg, acct, pend, cnt, fills)
        got += x
    return got


def arrive(p, e, t_x, ordv, k, row, bp, bq, ap, aq, nlev, cfg, acct, pend, cnt, fills):  # pragma: no cover
    """Order slot ``k`` reaches the exchange; the book there is row ``row`` (-1: none yet)."""
    typ = ordv[k, O_TYPE]
    side = ordv[k, O_SIDE]
    price = ordv[k, O_PRICE]
    marketable = False
    if row >= 0:
        if side > 0:
            marketable = aq[row, 0] > 0 and (typ == T_MARKET or ap[row, 0] <= price)
        else:
            marketable = bq[row, 0] > 0 and (typ == T_MARKET or bp[row, 0] >= price)
    inst = ordv[k, O_INST]
    if typ == T_POST and marketable:
        cnt[N_REJECTS] += 1
        ordv[k, O_STATE] = S_FREE
        notice(pend, cnt, t_x + cfg[C_RESP], inst, 0, k, 1)
        return
    if typ == T_FOK:
        if take(p, e, t_x, ordv, k, row, bp, bq, ap, aq, nlev, cfg, acct, pend, cnt, fills, True) < ordv[k, O_QTY]:
            cnt[N_REJECTS] += 1
            ordv[k, O_STATE] = S_FREE
            notice(pend, cnt, t_x + cfg[C_RESP], inst, 0, k, 1)
            return
    if marketable or typ == T_MARKET:
        take(p, e, t_x, ordv, k, row, bp, bq, ap, aq, nlev, cfg, acct, pend, cnt, fills, False)
        if ordv[k, O_STATE] == S_FREE:
            return
        if typ != T_GTC:
            if typ == T_MARKET:
                cnt[N_UNFILLED_MARKET] += 1
            ordv[k, O_STATE] = S_FREE  # IOC / FOK / market: the rest is cancelled
            notice(pend, cnt, t_x + cfg[C_RESP], inst, 0, k, 1)
            return
    elif typ == T_IOC or typ == T_MARKET:
        ordv[k, O_STATE] = S_FREE
        notice(pend, cnt, t_x + cfg[C_RESP], inst, 0, k, 1)
        return
    ordv[k, O_STATE] = S_RESTING
    lq = level_qty(bp, bq, ap, aq, row, nlev, side, price)
    ordv[k, O_OUT] = 1 if lq < 0 else 0
    ordv[k, O_LEVEL] = lq
    ordv[k, O_QUEUE] = _UNKNOWN if lq < 0 else lq
    ordv[k, O_QENTRY] = lq


def on_trade(p, e, t_x, inst, agg_side, tprice, tqty, ordv, rmask, cfg, acct, pend, cnt,
             fills):  # pragma: no cover
    """A trade at the exchange: fill our resting orders (slots in ``rmask``) on the passive side it reaches."""
    for k in range(cnt[N_SLOTS]):
        if (rmask >> k) & 1 == 0:
            continue
        if ordv[k, O_STATE] != S_RESTING or ordv[k, O_INST] != inst or ordv[k, O_SIDE] != -agg_side:
            continue
        side = ordv[k, O_SIDE]
        price = ordv[k, O_PRICE]
        through = (side > 0 and tprice < price) or (side < 0 and tprice > price)
        if through:
            record_fill(p, e, t_x, ordv, k, ordv[k, O_QTY], price, 1, cfg, acct, pend, cnt, fills)
        elif tprice == price and ordv[k, O_QUEUE] != _UNKNOWN:
            q = ordv[k, O_QUEUE] - tqty
            if q < 0:
                x = -q
                if cfg[C_PARTIAL] == 0 or x > ordv[k, O_QTY]:
                    x = ordv[k, O_QTY]
                ordv[k, O_QUEUE] = 0
                record_fill(p, e, t_x, ordv, k, x, price, 1, cfg, acct, pend, cnt, fills)
            else:
                ordv[k, O_QUEUE] = q


def single_level(ekind):  # pragma: no cover - jitted
    """True for event kinds that change one price level (set, add, cancel, delete, execute)."""
    return ekind == _KIND_SET or ekind == _KIND_ADD or ekind == _KIND_CANCEL or ekind == _KIND_DELETE \
        or ekind == _KIND_EXECUTE


def on_book(p, e, t_x, inst, row, bp, bq, ap, aq, nlev, ordv, rmask, cfg, acct, pend, cnt, fills, ekind, eside,
            eprice):  # pragma: no cover
    """The book of ``inst`` changed (row ``row``) by an event of kind ``ekind`` at (``eside``, ``eprice``):
    queue positions and crossing fills of resting orders.

    Returns True when an order's view changed (its level left or entered the known levels, or its queue
    became known): the inputs of :func:`order_schedule`'s summary other than fills (which the caller
    sees in the fill counter); queue positions alone leave the summary as it was."""
    single = single_level(ekind)
    changed = False
    for k in range(cnt[N_SLOTS]):
        if (rmask >> k) & 1 == 0:
            continue
        if ordv[k, O_STATE] != S_RESTING or ordv[k, O_INST] != inst:
            continue
        side = ordv[k, O_SIDE]
        price = ordv[k, O_PRICE]
        # a change of one level elsewhere can neither change our level, nor cross us, nor (when our
        # level is in view) change what we know of it: skip the checks (most events of a thick book)
        if single and ordv[k, O_QUEUE] != _UNKNOWN and ordv[k, O_OUT] == 0:
            if eside == side:
                if eprice != price:
                    continue
            elif (side > 0 and eprice > price) or (side < 0 and eprice < price):
                continue
        if side > 0:
            crossed = aq[row, 0] > 0 and ap[row, 0] <= price
        else:
            crossed = bq[row, 0] > 0 and bp[row, 0] >= price
        if crossed:
            record_fill(p, e, t_x, ordv, k, ordv[k, O_QTY], price, 1, cfg, acct, pend, cnt, fills)
            continue
        lq = level_qty(bp, bq, ap, aq, row, nlev, side, price)
        if lq < 0:
            if ordv[k, O_OUT] == 0:
                ordv[k, O_OUT] = 1
                changed = True
            continue  # beyond the known levels: nothing to learn
        if ordv[k, O_OUT] != 0:
            ordv[k, O_OUT] = 0
            changed = True
        q = ordv[k, O_QUEUE]
        if q == _UNKNOWN:
            ordv[k, O_QUEUE] = lq  # the level comes into view: join behind what is shown
            ordv[k, O_QENTRY] = lq
            changed = True
        else:
            prev = ordv[k, O_LEVEL]
            if cfg[C_QMODEL] == 1 and prev > lq and prev > 0:
                d = prev - lq
                back = prev - q
                if back < 0:
                    back = 0
                q -= (d * q) // (q + back) if q + back > 0 else 0
            if q > lq:
                q = lq
            if q < 0:
                q = 0
            ordv[k, O_QUEUE] = q
        ordv[k, O_LEVEL] = lq
    return changed


def send_cancel(k, t, ordv, lv, cfg, cnt):  # pragma: no cover - jitted
    """The strategy cancels slot ``k`` (as it knows it); the exchange acts on it after the entry latency."""
    if lv[k, O_STATE] == 0 or lv[k, O_CANCEL] >= 0:
        return False
    lv[k, O_CANCEL] = t + cfg[C_ENTRY]
    cnt[N_CANCELS] += 1
    if ordv[k, O_STATE] != S_FREE and ordv[k, O_CANCEL] < 0:
        ordv[k, O_CANCEL] = t + cfg[C_ENTRY]  # else: already over at the exchange, its report is on its way
    return True


def apply_actions(p, n_act, acts, t, ordv, lv, cfg, cnt, n_inst):  # pragma: no cover - jitted
    """Turn a strategy's actions into orders in flight and pending cancels.

    ``lv`` is the strategy's view of its orders (same columns as ``ordv``): O_STATE 1 while the order is
    live as far as the strategy has been told, O_QTY the size not yet reported filled, O_CANCEL the
    time its cancel reaches the exchange (-1: none sent).  A slot is reused only when both the exchange
    and the strategy's view are done with it.
    """
    for a in range(n_act):
        code = acts[a, AC_CODE]
        inst = acts[a, AC_INST]
        if code >= T_GTC and code <= T_MARKET or code == A_MODIFY:
            if code == A_MODIFY:
                k0 = acts[a, AC_SLOT]
                if not (0 <= k0 < ordv.shape[0]) or lv[k0, O_STATE] == 0:
                    cnt[N_BAD_ACTIONS] += 1
                    continue
                send_cancel(k0, t, ordv, lv, cfg, cnt)
                inst = lv[k0, O_INST]
                code = lv[k0, O_TYPE]
            qty = acts[a, AC_QTY]
            side = acts[a, AC_SIDE]
            if qty <= 0 or (side != 1 and side != -1) or inst < 0 or inst >= n_inst:
                cnt[N_BAD_ACTIONS] += 1
                continue
            # the first free slot (slots from cnt[N_SLOTS] on were never used)
            ns = cnt[N_SLOTS]
            k = ns
            for j in range(ns):
                if ordv[j, O_STATE] == S_FREE and lv[j, O_STATE] == 0:
                    k = j
                    break
            if k >= ordv.shape[0]:
                cnt[N_REJECTS] += 1  # too many open orders
                continue
            if k == ns:
                cnt[N_SLOTS] = ns + 1
            ordv[k, O_STATE] = S_PENDING
            ordv[k, O_SIDE] = side
            ordv[k, O_PRICE] = acts[a, AC_PRICE]
            ordv[k, O_QTY] = qty
            ordv[k, O_ORIG] = qty
            ordv[k, O_TYPE] = code
            ordv[k, O_ARRIVE] = t + cfg[C_ENTRY]
            ordv[k, O_CANCEL] = -1
            ordv[k, O_INST] = inst
            ordv[k, O_QUEUE] = _UNKNOWN
            ordv[k, O_LEVEL] = -1
            ordv[k, O_QENTRY] = -1
            ordv[k, O_ID] = cnt[N_ORDER_ID]
            for c in range(NCOL):
                lv[k, c] = ordv[k, c]
            lv[k, O_STATE] = 1
            lv[k, O_QUEUE] = -1  # the strategy does not see its queue position
            cnt[N_ORDER_ID] += 1
            cnt[N_ORDERS] += 1
            cnt[ORDERED_LOTS] += qty
        elif code == A_CANCEL:
            k = acts[a, AC_SLOT]
            if not (0 <= k < ordv.shape[0]) or not send_cancel(k, t, ordv, lv, cfg, cnt):
                cnt[N_BAD_ACTIONS] += 1
        elif code == A_CANCEL_ALL:
            for k in range(cnt[N_SLOTS]):
                if lv[k, O_STATE] != 0 and (inst < 0 or lv[k, O_INST] == inst):
                    send_cancel(k, t, ordv, lv, cfg, cnt)
        elif code != 0:
            cnt[N_BAD_ACTIONS] += 1


def exchange_until(p, e, limit, ordv, cur, bp, bq, ap, aq, nlev, cfg, acct, pend, cnt, fills):  # pragma: no cover
    """Process every order arrival and cancel at the exchange up to time ``limit`` (ts_local clock);
    the book there is each instrument's current row (no market event happens in between)."""
    for k in range(cnt[N_SLOTS]):
        st = ordv[k, O_STATE]
        if st == S_FREE:
            continue
        c = ordv[k, O_CANCEL]
        if c >= 0 and c <= limit:
            if st == S_PENDING and ordv[k, O_ARRIVE] <= c:
                arrive(p, e, ordv[k, O_ARRIVE], ordv, k, cur[ordv[k, O_INST]], bp, bq, ap, aq, nlev, cfg, acct,
                       pend, cnt, fills)
            if ordv[k, O_STATE] != S_FREE:
                ordv[k, O_STATE] = S_FREE
                notice(pend, cnt, c + cfg[C_RESP], ordv[k, O_INST], 0, k, 1)
            continue
        if st == S_PENDING and ordv[k, O_ARRIVE] <= limit:
            arrive(p, e, ordv[k, O_ARRIVE], ordv, k, cur[ordv[k, O_INST]], bp, bq, ap, aq, nlev, cfg, acct, pend,
                   cnt, fills)


def order_schedule(ordv, n_slots):  # pragma: no cover - jitted
    """One pass over the order slots: (bit mask of the slots resting at the exchange, earliest pending
    arrival or cancel time there (BIG when none), then a summary of the resting orders for
    :func:`book_event_skips`: of those whose level is in view with a known queue, the highest bid
    price, the lowest ask price and bit sets of bid / ask prices modulo 64; of the others (queue
    unknown or level beyond the N known), the highest bid and the lowest ask price).

    The trade and book checks visit only the masked slots and skip book events the summary rules out:
    register tests instead of reads of every slot (thread-local memory on the GPU) at every event.  Slots from
    ``n_slots`` (the counter N_SLOTS) on were never used and are not read."""
    rmask = np.int64(0)
    nxt = _BIG
    hi_bid = -_BIG
    lo_ask = _BIG
    fb = np.int64(0)
    fa = np.int64(0)
    hi_ob = -_BIG
    lo_oa = _BIG
    for k in range(n_slots):
        st = ordv[k, O_STATE]
        if st == S_FREE:
            continue
        if st == S_RESTING:
            rmask |= np.int64(1) << k
            px = ordv[k, O_PRICE]
            if ordv[k, O_QUEUE] == _UNKNOWN or ordv[k, O_OUT] != 0:
                if ordv[k, O_SIDE] > 0:
                    hi_ob = max(hi_ob, px)
                else:
                    lo_oa = min(lo_oa, px)
            elif ordv[k, O_SIDE] > 0:
                hi_bid = max(hi_bid, px)
                fb |= np.int64(1) << (px & 63)
            else:
                lo_ask = min(lo_ask, px)
                fa |= np.int64(1) << (px & 63)
        elif ordv[k, O_ARRIVE] < nxt:
            nxt = ordv[k, O_ARRIVE]
        if ordv[k, O_CANCEL] >= 0 and ordv[k, O_CANCEL] < nxt:
            nxt = ordv[k, O_CANCEL]
    return rmask, nxt, hi_bid, lo_ask, fb, fa, hi_ob, lo_oa


def book_event_skips(ekind, eside, eprice, hi_bid, lo_ask, fb, fa, hi_ob, lo_oa, b0, a0, bd,
                     ad):  # pragma: no cover - jitted
    """True when :func:`on_book` would change nothing for this event, whose book row has best prices
    ``b0`` / ``a0`` and N-th level prices ``bd`` / ``ad`` (the event view's), so it need not run.

    Orders in view with a known queue (``hi_bid``, ``lo_ask``, ``fb``, ``fa``): the event changes one
    level, on a side where no such order of ours has that price (a bit of ``fb`` / ``fa`` clear: exact;
    a set bit may be another price, then on_book decides), and cannot cross those of the other side.
    Orders out of view (``hi_ob``, ``lo_oa``), after any event: the row's N-th level on their side is
    still strictly better than every one of them (rows hold their levels best first, empty ones last,
    so all N are), and the opposite best does not reach them: on_book would only confirm that they are
    out of view.  Four values of the row instead of a scan of its levels per order: on a book deeper
    than N levels most quotes a few ticks away sit out of view most of the time."""
    if hi_bid > -_BIG or lo_ask < _BIG:
        if not single_level(ekind):
            return False
        bit = np.int64(1) << (eprice & 63)
        if eside > 0:  # a bid level: our bids at that price, our asks at or below it
            if (fb & bit) != 0 or eprice >= lo_ask:
                return False
        elif eside < 0:
            if (fa & bit) != 0 or eprice <= hi_bid:
                return False
        else:
            return False
    if hi_ob > -_BIG and (bd <= hi_ob or a0 <= hi_ob):
        return False
    return not (lo_oa < _BIG and (ad >= lo_oa or b0 >= lo_oa))


def block_quiet(blk, k, t_sample, next_x, next_p, next_decision, rmask, hi_bid, lo_ask, fb, fa, hi_ob,
                lo_oa):  # pragma: no cover - jitted
    """True when no event of event block ``k`` (summary row ``blk[k]``, see :data:`SKIP_BLOCK`) can do more for
    this set than move its current book rows: no equity sample (``t_sample``: the next one's time, BIG when
    none is left), order arrival or cancel, fill notice or decision falls in it, no trade reaches a resting
    order (a passive-side trade at or through its price), and :func:`book_event_skips` holds for each of its
    book-row changes (the same tests on the block's extremes and OR-ed price bits: exact for every event
    of the block at once).

    Every column is read before any test: on a GPU the reads are then issued together and the check waits on
    memory once (tests that read their columns as they went waited on each group of reads in turn)."""
    tmax = blk[k, B_TS]
    txmax = blk[k, B_TX]
    pb = blk[k, B_PB]
    pa = blk[k, B_PA]
    multi = blk[k, B_MULTI]
    bidbits = blk[k, B_BIDBITS]
    bidmax = blk[k, B_BIDMAX]
    askbits = blk[k, B_ASKBITS]
    askmin = blk[k, B_ASKMIN]
    bdmin = blk[k, B_BDMIN]
    a0min = blk[k, B_A0MIN]
    admax = blk[k, B_ADMAX]
    b0max = blk[k, B_B0MAX]
    if t_sample <= tmax or next_p <= tmax or next_decision <= tmax or next_x <= txmax:
        return False
    if rmask == 0:
        return True
    if pb <= max(hi_bid, hi_ob) or pa >= min(lo_ask, lo_oa):
        return False
    if hi_bid > -_BIG or lo_ask < _BIG:
        if multi != 0:
            return False
        if (bidbits & fb) != 0 or bidmax >= lo_ask:
            return False
        if (askbits & fa) != 0 or askmin <= hi_bid:
            return False
    if hi_ob > -_BIG and (bdmin <= hi_ob or a0min <= hi_ob):
        return False
    return not (lo_oa < _BIG and (admax >= lo_oa or b0max >= lo_oa))


def warp_all_cpu(q):  # pragma: no cover - jitted
    """CPU (and the CUDA simulator): each parameter set decides alone whether to pass a block over; bound as both
    votes, ``warp_all`` and ``warp_any`` (:func:`warp_all_cuda`, :func:`warp_any_cuda` on a device)."""
    return q


def warp_all_cuda(q):  # pragma: no cover - device code
    """GPU: a block is passed over only when every thread of the warp (those running with this one) can pass it
    over, so the warp's threads stay at the same event (per-thread skipping made the sweep 3.6x slower on the
    H100: threads at different events).  Exact either way: a thread skips only when its own ``q`` holds."""
    return cuda.all_sync(cuda.activemask(), q)


def warp_any_cuda(q):  # pragma: no cover - device code
    """GPU: ``q`` holds for any thread of the warp (those running with this one): then the whole warp takes the
    branch it guards, together."""
    return cuda.any_sync(cuda.activemask(), q)


def pend_next(pend):  # pragma: no cover - jitted
    """Earliest time a fill notice reaches the strategy (BIG when none is in flight); drops the free rows at the
    end of the rows in use from ``pend[PEND_N, 0]``."""
    n = pend[PEND_N, 0]
    while n > 0 and pend[n - 1, 0] < 0:
        n -= 1
    pend[PEND_N, 0] = n
    nxt = _BIG
    for j in range(n):
        if pend[j, 0] >= 0 and pend[j, 0] < nxt:
            nxt = pend[j, 0]
    return nxt


# ----------------------------------------------------------------------------- event access
# Every parameter set reads, per event, its receive and exchange times and the event view's flags (and, for
# an event that changes a book row while it has resting orders, the row's best and N-th prices): the values
# every set would otherwise derive alike from the event and its book row are computed once per market
# (:func:`event_view`).  With tiles (the GPU kernel's option) these are read from an event tile in the
# block's shared memory: the block loads ``tile`` events at a time with coalesced reads, one event per
# thread, and each thread then walks the tile instead of waiting on global memory at every event.  Without
# tiles (the CPU twin, the GPU kernel by default) the arrays are read inline and the tile readers are never
# called.  Tile columns (the tile has one row more than events, so that a tile of one is told from none):
TL_TS, TL_TX, TL_FLAGS, TL_B0, TL_A0, TL_BD, TL_AD = range(7)
NTL = 7


def view_rows(vst, e, n_inst, cur):  # pragma: no cover - jitted
    """Each instrument's current book row before event ``e`` (``e = n``: after the last) into ``cur``."""
    for m in range(n_inst):
        cur[m] = vst[e, VS_ROW0 + m]


def view_mids(vst, e, n_inst, mid2):  # pragma: no cover - jitted
    """Each instrument's last two-sided mid x 2 before event ``e`` into ``mid2``."""
    for m in range(n_inst):
        mid2[m] = vst[e, VS_MID0 + m]


def ev_tile_none(b, n, ts, tx, ev, tl):  # pragma: no cover - jitted
    """No tile (the CPU twin, the GPU kernel without tiles): nothing to load; offset 0."""
    return 0


def ev_tile_cuda(b, n, ts, tx, ev, tl):  # pragma: no cover - device code
    """Load events ``b .. b + T`` (T = tile length, ``tl`` has T + 1 rows) into the block's tile; returns the
    offset ``b``.  Every thread of the block calls it the same number of times (the barriers)."""
    cuda.syncthreads()  # every thread is done with the previous tile
    T = tl.shape[0] - 1
    i = cuda.threadIdx.x
    while i < T:
        e = b + i
        if e < n:
            tl[i, TL_TS] = ts[e]
            tl[i, TL_TX] = tx[e]
            tl[i, TL_FLAGS] = ev[V_FLAGS, e]
            tl[i, TL_B0] = ev[V_B0, e]
            tl[i, TL_A0] = ev[V_A0, e]
            tl[i, TL_BD] = ev[V_BD, e]
            tl[i, TL_AD] = ev[V_AD, e]
        i += cuda.blockDim.x
    cuda.syncthreads()
    return b


def ev_fields(e, off, tl):  # pragma: no cover - device code
    """Event ``e`` from the tile: (ts_local, exchange time, view flags)."""
    j = e - off
    return tl[j, TL_TS], tl[j, TL_TX], tl[j, TL_FLAGS]


def ev_top(e, off, tl):  # pragma: no cover - device code
    """The event view's best / N-th prices of event ``e``'s row, from the tile."""
    j = e - off
    return tl[j, TL_B0], tl[j, TL_A0], tl[j, TL_BD], tl[j, TL_AD]


def record_sample(p, s_i, n_inst, acct, mid2, eqs):  # pragma: no cover - jitted
    """Equity sample ``s_i``: ``2 * cash + pos * (bid + ask)`` and the fees so far, per instrument.

    One array ``eqs`` holds every set's samples, laid out (sample, value :data:`EQ_2` ..., instrument, set):
    every set records sample ``s_i`` at the same event (the sample clock is the same for all), so on a GPU a
    warp's 32 stores of one value are adjacent (8 sectors instead of 32, a set's whole row apart: ncu flagged
    the former (set, sample, instrument) arrays' stores as uncoalesced), and one array instead of three
    keeps fewer base addresses live in the kernel (ptxas sm_90: 128 registers, not 132)."""
    for m in range(n_inst):
        eqs[s_i, EQ_2, m, p] = 2 * acct[m, ACC_CASH] + acct[m, ACC_POS] * mid2[m]
        eqs[s_i, EQ_FEE, m, p] = acct[m, ACC_FEE]
        eqs[s_i, EQ_FEE_REM, m, p] = acct[m, ACC_FEE_REM]


def simulate(p, ts, tx, ev, vst, ev_row, price, qty, bp, bq, ap, aq, nlev, sig, params, cfg, n_inst,
             ordv, lv, acct, seen, pend, cnt, sst, acts, cur, mid2, fills, eqs, out_cnt,
             out_acct, out_sst, tl, tile, blk, act_rows, skip_levels):  # pragma: no cover - jitted
    """Run parameter set ``p`` over every event (the engine's one loop; see the module docstring).

    Per event a set reads the receive and exchange times and the event view's flags (``ev``,
    :func:`event_view`); the event's kind, side and price and its row's best and N-th prices only when it has
    resting orders and the event is a trade or changes a book row; the event view's state (``vst``: current
    rows and mids) only where an order arrives, a sample is taken or the strategy decides.
    Events are taken ``tile`` at a time; with a shared-memory tile ``tl`` (more than one row: the GPU kernel
    with tiles) ``ev_tile`` loads each tile and the ``ev_*`` readers read it, else the arrays are read inline.
    A block of ``2 ** cfg[C_SKIP]`` events that :func:`block_quiet` clears (summaries ``blk``; none when
    ``cfg[C_SKIP]`` is 0) is passed over at once (nothing of the set changes in it); with tiles, block by block
    inside each tile (the tile is still loaded: every thread of the block takes part in its loads).  With
    ``skip_levels`` > 1 (a compile-time constant) a coarser block that starts at the current event is asked first
    (:data:`MAX_SKIP_LEVELS`)."""
    n = ts.size
    for k in range(ordv.shape[0]):
        for c in range(NCOL):
            ordv[k, c] = 0
            lv[k, c] = 0
        ordv[k, O_CANCEL] = -1
        lv[k, O_CANCEL] = -1
    for m in range(acct.shape[0]):
        for c in range(NACC):
            acct[m, c] = 0
        seen[m] = 0
        cur[m] = -1
        mid2[m] = 0
    for j in range(pend.shape[0]):
        pend[j, 0] = -1
    pend[PEND_N, 0] = 0
    for c in range(cnt.size):
        cnt[c] = 0
    for c in range(sst.size):
        sst[c] = 0.0
    feed = cfg[C_FEED]
    interval = cfg[C_INTERVAL]
    sample = cfg[C_SAMPLE]
    n_samples = eqs.shape[0]  # (sample, value, instrument, set): record_sample
    next_decision = cfg[C_T0]
    next_sample = cfg[C_T0] + sample
    s_i = 0
    # slots resting at the exchange (the trade and book checks only run when non-zero), the earliest order
    # arrival or cancel at the exchange, and the resting orders' summary for book_event_skips
    rmask, next_x, hi_bid, lo_ask, fb, fa, hi_ob, lo_oa = order_schedule(ordv, cnt[N_SLOTS])
    next_p = _BIG  # earliest fill notice reaching the strategy
    tile = max(tile, 1)
    # events from a shared-memory tile (the GPU kernel with tiles: ``tl`` has a row per event and one more),
    # else straight from the arrays, inline
    tiled = tl.shape[0] > 1
    sh = cfg[C_SKIP]
    bmask = (np.int64(1) << sh) - 1
    # levels of summaries (2 ** SKIP_FANOUT_SHIFT times coarser each; see MAX_SKIP_LEVELS): ``skip_levels``, a
    # compile-time constant of the kernels (engine_pair; at 1 the level loop below folds away and the kernel is the
    # one-level kernel: a loop over a run-time count of levels cost registers, ptxas sm_90 134-146 instead of 128
    # for some strategies); the rows of levels 1 and 2 in ``blk`` start at cfg[C_BOFF1] and cfg[C_BOFF2] (level 0
    # at 0), read where used (held across the event loop they took registers everywhere in it)
    top = skip_levels - 1
    # blocks are aligned to the stream: without tiles the one "tile" is the whole stream, with tiles the
    # tile length must be a multiple of the coarsest block's length (the engine sees to it)
    coarsest = (bmask + 1) << (top * SKIP_FANOUT_SHIFT)
    skips = sh > 0 and blk.shape[0] > 0 and (not tiled or (tile & (coarsest - 1)) == 0)
    for b in range(0, n, tile):
        off = ev_tile(b, n, ts, tx, ev, tl)  # noqa: F821
        e_end = min(b + tile, n)
        # skip blocks of bmask + 1 events (aligned: see above), else one block
        step = bmask + 1 if skips else e_end - b
        e_skip = b  # with coarse levels: the end of the last coarse block passed over
        for e0 in range(b, e_end, step):
            if skips:
                # warp_all: the per-target vote, bound by engine_pair (warp_all_cpu / warp_all_cuda); e0 and the
                # levels are the same on every thread of a warp
                if top == 0:  # one level (a compile-time constant: the other branch is not compiled)
                    if warp_all(block_quiet(blk, e0 >> sh, next_sample if s_i < n_samples else _BIG,  # noqa: F821
                                            next_x, next_p, next_decision, rmask, hi_bid, lo_ask, fb, fa, hi_ob,
                                            lo_oa)):
                        continue
                else:
                    # the coarsest block that starts at e0 and is quiet is passed over (its finest blocks, one
                    # compare each); when none is, the finest block at e0 is walked
                    if e0 < e_skip:
                        continue
                    lvl = top
                    s = sh + lvl * SKIP_FANOUT_SHIFT
                    while lvl >= 0:
                        if (e0 & ((np.int64(1) << s) - 1)) == 0 and warp_all(block_quiet(  # noqa: F821
                                blk, (0 if lvl == 0 else cfg[C_BOFF1 + lvl - 1]) + (e0 >> s),
                                next_sample if s_i < n_samples else _BIG, next_x, next_p, next_decision, rmask,
                                hi_bid, lo_ask, fb, fa, hi_ob, lo_oa)):
                            break
                        lvl -= 1
                        s -= SKIP_FANOUT_SHIFT
                    if lvl >= 0:
                        e_skip = e0 + (np.int64(1) << s)
                        continue
            for e in range(e0, min(e0 + step, e_end)):
                # acted: this event moved one of the set's clocks or its orders (a sample, an arrival or cancel at the
                # exchange, a report, a fill, a decision); the block is then asked again whether it is quiet
                acted = False
                if tiled:
                    t, t_x, f = ev_fields(e, off, tl)
                else:
                    t = ts[e]
                    t_x = tx[e]
                    f = ev[V_FLAGS, e]
                # equity samples due before this event; orders reaching the exchange before a sample time are
                # processed first (against the current book: no market event happens in between)
                while s_i < n_samples and next_sample <= t:
                    if next_x <= next_sample - feed:
                        view_rows(vst, e, n_inst, cur)
                        exchange_until(p, e, next_sample - feed, ordv, cur, bp, bq, ap, aq, nlev, cfg, acct, pend, cnt,
                                       fills)
                        rmask, next_x, hi_bid, lo_ask, fb, fa, hi_ob, lo_oa = order_schedule(ordv, cnt[N_SLOTS])
                        next_p = pend_next(pend)
                    view_mids(vst, e, n_inst, mid2)
                    record_sample(p, s_i, n_inst, acct, mid2, eqs)
                    s_i += 1
                    next_sample += sample
                    acted = True
                # orders and cancels reaching the exchange before this event
                if next_x <= t_x:
                    acted = True
                    view_rows(vst, e, n_inst, cur)
                    exchange_until(p, e, t_x, ordv, cur, bp, bq, ap, aq, nlev, cfg, acct, pend, cnt, fills)
                    rmask, next_x, hi_bid, lo_ask, fb, fa, hi_ob, lo_oa = order_schedule(ordv, cnt[N_SLOTS])
                    next_p = pend_next(pend)
                # reports (fills, ends of orders) that have reached the strategy
                if next_p <= t:
                    acted = True
                    for j in range(pend[PEND_N, 0]):
                        if pend[j, 0] >= 0 and pend[j, 0] <= t:
                            k = pend[j, 3]
                            dq = pend[j, 2]
                            seen[pend[j, 1]] += dq
                            lv[k, O_QTY] -= dq if dq >= 0 else -dq
                            if pend[j, 4] != 0:
                                lv[k, O_STATE] = 0
                            pend[j, 0] = -1
                    next_p = pend_next(pend)
                # the event itself, against our resting orders; nf0: the fill count before the first check of
                # our orders (-1: none ran)
                nf0 = np.int64(-1)
                if rmask != 0 and (f & (EV_TRADE | EV_ROW)) != 0:
                    inst = (f >> EV_INST_SHIFT) & 1
                    kd = (f >> EV_KIND_SHIFT) & 255
                    es = ((f >> EV_SIDE_SHIFT) & 3) - 1
                    epx = price[e]
                    agg = es if kd == _KIND_TRADE else -es
                    # a trade reaches only resting orders of its passive side at or behind its price: none when it
                    # is above every resting bid (a sell) or below every resting ask (a buy), by the summary's
                    # extremes (registers, instead of the order table); exact, as book_event_skips
                    if (f & EV_TRADE) != 0 and ((agg < 0 and epx <= max(hi_bid, hi_ob))
                                                or (agg > 0 and epx >= min(lo_ask, lo_oa))):
                        nf0 = cnt[N_FILLS]
                        on_trade(p, e, t_x, inst, agg, epx, qty[e], ordv, rmask, cfg, acct, pend, cnt, fills)
                    if (f & EV_ROW) != 0:
                        if tiled:
                            b0, a0, bd, ad = ev_top(e, off, tl)
                        else:
                            b0 = ev[V_B0, e]
                            a0 = ev[V_A0, e]
                            bd = ev[V_BD, e]
                            ad = ev[V_AD, e]
                        if not book_event_skips(kd, es, epx, hi_bid, lo_ask, fb, fa, hi_ob, lo_oa, b0, a0, bd, ad):
                            # a changed view of our orders changes the summary (fills: below)
                            if nf0 < 0:
                                nf0 = cnt[N_FILLS]
                            if on_book(p, e, t_x, inst, ev_row[e], bp, bq, ap, aq, nlev, ordv, rmask, cfg, acct, pend,
                                       cnt, fills, kd, es, epx):
                                rmask, next_x, hi_bid, lo_ask, fb, fa, hi_ob, lo_oa = order_schedule(ordv, cnt[N_SLOTS])
                if nf0 >= 0 and cnt[N_FILLS] != nf0:  # fills free orders and put notices in flight
                    acted = True
                    rmask, next_x, hi_bid, lo_ask, fb, fa, hi_ob, lo_oa = order_schedule(ordv, cnt[N_SLOTS])
                    next_p = pend_next(pend)
                # the strategy decides after a complete message (the last event of its receive time: it has seen
                # every event with ts_local <= t), at the first one at or after each decision time
                if t >= next_decision and (f & EV_LAST) != 0:
                    acted = True
                    if interval > 0:
                        if cfg[C_GRID] != 0:
                            next_decision += ((t - next_decision) // interval + 1) * interval  # fixed clock from t0
                        else:
                            next_decision = t + interval
                    # the rows the strategy may return (its ACTION_ROWS) start each decision zeroed; the rest are
                    # never read (each zeroed row is a thread-local write: 48 per decision for all 8 rows)
                    for a in range(act_rows):
                        for c in range(6):
                            acts[a, c] = 0
                    view_rows(vst, e + 1, n_inst, cur)
                    # strategy_step: the strategy's step, bound by engine_pair
                    n_act = strategy_step(params[p], sst, t, e, (f >> EV_INST_SHIFT) & 1, cur, bp, bq, ap, aq, nlev, sig,  # noqa: F821
                                          seen, lv, acts)
                    cnt[N_DECISIONS] += 1
                    if n_act < 0:
                        cnt[N_NAN_ACTIONS] += 1
                        n_act = 0
                    if n_act > act_rows:
                        if act_rows < acts.shape[0]:  # rows past the strategy's ACTION_ROWS: counted, not applied
                            cnt[N_BAD_ACTIONS] += min(n_act, acts.shape[0]) - act_rows
                        n_act = act_rows
                    if n_act > 0:
                        apply_actions(p, n_act, acts, t, ordv, lv, cfg, cnt, n_inst)
                        rmask, next_x, hi_bid, lo_ask, fb, fa, hi_ob, lo_oa = order_schedule(ordv, cnt[N_SLOTS])
                # a block walked for one event's sake (a decision, an arrival, a report...): after that event, ask the
                # block again with the set's new clocks and orders; when it is quiet now, the rest of it is passed
                # over (exact: the test covers the whole block, the events already walked included).  On a GPU the
                # warp asks when any of its sets acted and leaves the block when all of them can (warp_any, warp_all)
                # (warp_any's result is the same on every lane, so the whole warp evaluates warp_all or none of it)
                if skips and warp_any(acted) and warp_all(  # noqa: F821
                        block_quiet(blk, e0 >> sh, next_sample if s_i < n_samples else _BIG, next_x, next_p,
                                    next_decision, rmask, hi_bid, lo_ask, fb, fa, hi_ob, lo_oa)):
                    break
    view_rows(vst, n, n_inst, cur)
    view_mids(vst, n, n_inst, mid2)
    while s_i < n_samples:
        if next_x <= next_sample - feed:
            exchange_until(p, n - 1, next_sample - feed, ordv, cur, bp, bq, ap, aq, nlev, cfg, acct, pend, cnt, fills)
            rmask, next_x, hi_bid, lo_ask, fb, fa, hi_ob, lo_oa = order_schedule(ordv, cnt[N_SLOTS])
        record_sample(p, s_i, n_inst, acct, mid2, eqs)
        s_i += 1
        next_sample += sample
    for c in range(cnt.size):
        out_cnt[p, c] = cnt[c]
    for m in range(n_inst):
        for c in range(NACC):
            out_acct[p, m, c] = acct[m, c]
    for c in range(sst.size):
        out_sst[p, c] = sst[c]


def event_view(ts: np.ndarray, ev_inst: np.ndarray, ev_row: np.ndarray, kind: np.ndarray, side: np.ndarray,
               bp: np.ndarray, bq: np.ndarray, ap: np.ndarray, aq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Host: the event view that every parameter set reads instead of deriving it alike from each event and its
    book row (one compiled pass over the events, once per market).

    Returns ``ev`` (:data:`NEV`, n; a row per field, so that a read of one event's flags is a plain 1-D
    read): per event its flags (:data:`EV_ROW` ...: the event makes a book row its
    instrument's current one, i.e. ``row >= 0`` and not the current one already; it is a trade or execution
    with an aggressor side; it is the last event of its receive time; instrument 1; kind and side) and, for
    EV_ROW events, the best and N-th bid / ask prices of that row (an empty level: -BIG / BIG); and ``vst``
    (n + 1, :data:`NVS`): after each event (row e + 1; row 0 before the first) each instrument's current
    book row (-1: none yet) and its last mid x 2 with both sides present (0: none yet)."""
    n = int(ts.size)
    if n:
        # the flags word packs the side into two bits and the instrument into one
        lo, hi = int(side.min()), int(side.max())
        if lo < -1 or hi > 1 or int(ev_inst.min()) < 0 or int(ev_inst.max()) >= MAX_INSTRUMENTS:
            from gpuflow.errors import SchemaError

            msg = (f"event_view: expected sides in -1..1 and instruments in 0..{MAX_INSTRUMENTS - 1}, got sides "
                   f"{lo}..{hi} and instruments {int(ev_inst.min())}..{int(ev_inst.max())}")
            raise SchemaError(msg)
    ev = np.empty((NEV, n), np.int64)
    vst = np.empty((n + 1, NVS), np.int64)
    if bp.shape[0] == 0 or bp.shape[1] == 0:  # no book rows: no event changes one
        bp = bq = ap = aq = np.zeros((1, 1), np.int64)
    _compiled("view")(ts, ev_inst, ev_row, kind, side, bp, bq, ap, aq, ev, vst)
    return ev, vst


def event_blocks(ts: np.ndarray, tx: np.ndarray, price: np.ndarray, ev: np.ndarray,
                 block: int = SKIP_BLOCK, levels: int = 1) -> np.ndarray:
    """Host: the summary of each block of ``block`` events that :func:`block_quiet` reads (columns
    :data:`B_TS` ...; one row per block, the last one possibly partial), from the engine's event arrays and
    the event view ``ev`` (:func:`event_view`); with ``levels`` > 1 then those of the blocks of
    ``block << SKIP_FANOUT_SHIFT``, and so on (level ``i``'s rows start at :func:`skip_offsets`'s ``i``-th value).

    Computed over the same events the engine would look at one by one: trades by their passive side
    (:func:`on_trade`), and the events that change their instrument's current book row (EV_ROW; the same for
    every set, since every set sees the same events).  One compiled pass over the events per level."""
    if not 1 <= int(levels) <= MAX_SKIP_LEVELS:
        msg = f"event_blocks: levels must be in 1..{MAX_SKIP_LEVELS}, got {levels}"
        raise ValueError(msg)
    n = int(ts.size)
    offs = skip_offsets(n, block, levels)
    out = np.empty((offs[-1], NBLK), np.int64)
    for i in range(int(levels) if n else 0):
        _compiled("blocks")(ts, tx, price, ev, int(block) << (i * SKIP_FANOUT_SHIFT), out[offs[i]:offs[i + 1]])
    return out


def skip_offsets(n: int, block: int, levels: int) -> list[int]:
    """The first summary row of each level of :func:`event_blocks` for ``n`` events (level 0 at 0), and their
    total rows last: ``levels + 1`` values."""
    offs = [0]
    for i in range(int(levels)):
        size = int(block) << (i * SKIP_FANOUT_SHIFT)
        offs.append(offs[-1] + -(-int(n) // size))
    return offs


_NB: dict = {}


def _compiled(name: str):  # returns a numba dispatcher
    """The compiled host passes of :func:`event_view` and :func:`event_blocks` (compiled on first use)."""
    if not _NB:
        from numba import njit

        big = _BIG

        @njit(nogil=True)
        def view(ts, ev_inst, ev_row, kind, side, bp, bq, ap, aq, ev, vst):  # pragma: no cover
            n = ts.size
            d = bp.shape[1] - 1
            cur0 = np.int64(-1)
            cur1 = np.int64(-1)
            mid0 = np.int64(0)
            mid1 = np.int64(0)
            vst[0, VS_ROW0] = cur0
            vst[0, VS_ROW1] = cur1
            vst[0, VS_MID0] = mid0
            vst[0, VS_MID1] = mid1
            for e in range(n):
                kd = np.int64(kind[e])
                sd = np.int64(side[e])
                i = np.int64(ev_inst[e])
                r = np.int64(ev_row[e])
                f = (kd << EV_KIND_SHIFT) | ((sd + 1) << EV_SIDE_SHIFT)
                if i != 0:
                    f |= EV_INST1
                if (kd == _KIND_TRADE or kd == _KIND_EXECUTE) and sd != 0:
                    f |= EV_TRADE
                if e == n - 1 or ts[e + 1] > ts[e]:
                    f |= EV_LAST
                b0, a0, bd, ad = -big, big, -big, big
                if r >= 0 and r != (cur0 if i == 0 else cur1):
                    f |= EV_ROW
                    b0 = bp[r, 0] if bq[r, 0] > 0 else -big
                    a0 = ap[r, 0] if aq[r, 0] > 0 else big
                    bd = bp[r, d] if bq[r, d] > 0 else -big
                    ad = ap[r, d] if aq[r, d] > 0 else big
                    both = b0 > -big and a0 < big
                    if i == 0:
                        cur0 = r
                        if both:
                            mid0 = b0 + a0
                    else:
                        cur1 = r
                        if both:
                            mid1 = b0 + a0
                ev[V_FLAGS, e] = f
                ev[V_B0, e] = b0
                ev[V_A0, e] = a0
                ev[V_BD, e] = bd
                ev[V_AD, e] = ad
                vst[e + 1, VS_ROW0] = cur0
                vst[e + 1, VS_ROW1] = cur1
                vst[e + 1, VS_MID0] = mid0
                vst[e + 1, VS_MID1] = mid1

        @njit(nogil=True)
        def blocks(ts, tx, price, ev, block, out):  # pragma: no cover
            n = ts.size
            for k in range(out.shape[0]):
                lo = k * block
                hi = min(n, lo + block)
                out[k, B_TS] = ts[hi - 1]
                txm = -big
                pb, pa, multi = big, -big, np.int64(0)
                bidmax, bidbits, askmin, askbits = -big, np.int64(0), big, np.int64(0)
                bdmin, a0min, admax, b0max = big, big, -big, -big
                for e in range(lo, hi):
                    txm = max(txm, np.int64(tx[e]))
                    f = ev[V_FLAGS, e]
                    kd = (f >> EV_KIND_SHIFT) & 255
                    sd = ((f >> EV_SIDE_SHIFT) & 3) - 1
                    px = np.int64(price[e])
                    if (kd == _KIND_TRADE and sd == -1) or (kd == _KIND_EXECUTE and sd == 1):
                        pb = min(pb, px)
                    elif (kd == _KIND_TRADE and sd == 1) or (kd == _KIND_EXECUTE and sd == -1):
                        pa = max(pa, px)
                    if (f & EV_ROW) == 0:
                        continue
                    single = kd == _KIND_SET or kd == _KIND_ADD or kd == _KIND_CANCEL or kd == _KIND_DELETE \
                        or kd == _KIND_EXECUTE
                    if not single or sd == 0:
                        multi = np.int64(1)
                    bit = np.int64(1) << (px & 63)
                    if sd > 0:
                        bidmax = max(bidmax, px)
                        bidbits |= bit
                    elif sd < 0:
                        askmin = min(askmin, px)
                        askbits |= bit
                    bdmin = min(bdmin, ev[V_BD, e])
                    a0min = min(a0min, ev[V_A0, e])
                    admax = max(admax, ev[V_AD, e])
                    b0max = max(b0max, ev[V_B0, e])
                out[k, B_TX] = txm
                out[k, B_PB] = pb
                out[k, B_PA] = pa
                out[k, B_MULTI] = multi
                out[k, B_BIDMAX] = bidmax
                out[k, B_BIDBITS] = bidbits
                out[k, B_ASKMIN] = askmin
                out[k, B_ASKBITS] = askbits
                out[k, B_BDMIN] = bdmin
                out[k, B_A0MIN] = a0min
                out[k, B_ADMAX] = admax
                out[k, B_B0MAX] = b0max

        _NB["view"] = view
        _NB["blocks"] = blocks
    return _NB[name]


# ----------------------------------------------------------------------------- kernels
def run_cuda(ts, tx, ev, vst, ev_row, price, qty, bp, bq, ap, aq, nlev, sig, params, cfg, n_inst, fills,
             eqs, out_cnt, out_acct, out_sst, blk):  # pragma: no cover - device code
    """One thread per parameter set.  Twin: :func:`run_cpu`.  ``TILE`` (compile-time): events per
    shared-memory tile, 0 for none."""
    p = cuda.grid(1)
    P = params.shape[0]
    if TILE == 0 and p >= P:  # noqa: F821 - TILE bound by engine_pair
        return
    if p >= P:
        # with tiles every thread of the block takes part in the tile loads (block barriers): a thread past
        # the last set runs the last set again and writes the same values as its own thread
        p = P - 1
    ordv = cuda.local.array((MAX_ORDERS, NCOL), dtype=np.int64)
    lv = cuda.local.array((MAX_ORDERS, NCOL), dtype=np.int64)
    acct = cuda.local.array((MAX_INSTRUMENTS, NACC), dtype=np.int64)
    seen = cuda.local.array(MAX_INSTRUMENTS, dtype=np.int64)
    pend = cuda.local.array((PEND_ROWS, 5), dtype=np.int64)
    cnt = cuda.local.array(NCNT, dtype=np.int64)
    sst = cuda.local.array(STATE_SIZE, dtype=np.float64)  # noqa: F821 - bound by engine_pair
    acts = cuda.local.array((MAX_ACTIONS, 6), dtype=np.int64)
    cur = cuda.local.array(MAX_INSTRUMENTS, dtype=np.int64)
    mid2 = cuda.local.array(MAX_INSTRUMENTS, dtype=np.int64)
    tl = cuda.shared.array((TILE_ROWS, NTL), dtype=np.int64)  # noqa: F821 - TILE + 1, bound by engine_pair
    tile = ts.size
    if TILE > 0:  # noqa: F821
        tile = TILE  # noqa: F821
    simulate(p, ts, tx, ev, vst, ev_row, price, qty, bp, bq, ap, aq, nlev, sig, params, cfg, n_inst,
             ordv, lv, acct, seen, pend, cnt, sst, acts, cur, mid2, fills, eqs, out_cnt, out_acct,
             out_sst, tl, tile, blk, ACTION_ROWS, SKIP_LEVELS)  # noqa: F821 - bound by engine_pair


def run_cpu(ts, tx, ev, vst, ev_row, price, qty, bp, bq, ap, aq, nlev, sig, params, cfg, n_inst, fills,
            eqs, out_cnt, out_acct, out_sst, blk):  # pragma: no cover - jitted
    """The exact engine: every parameter set in turn on the CPU (``prange`` over sets)."""
    for p in prange(params.shape[0]):
        ordv = np.zeros((MAX_ORDERS, NCOL), dtype=np.int64)
        lv = np.zeros((MAX_ORDERS, NCOL), dtype=np.int64)
        acct = np.zeros((MAX_INSTRUMENTS, NACC), dtype=np.int64)
        seen = np.zeros(MAX_INSTRUMENTS, dtype=np.int64)
        pend = np.zeros((PEND_ROWS, 5), dtype=np.int64)
        cnt = np.zeros(NCNT, dtype=np.int64)
        sst = np.zeros(STATE_SIZE, dtype=np.float64)  # noqa: F821 - bound by engine_pair
        acts = np.zeros((MAX_ACTIONS, 6), dtype=np.int64)
        cur = np.zeros(MAX_INSTRUMENTS, dtype=np.int64)
        mid2 = np.zeros(MAX_INSTRUMENTS, dtype=np.int64)
        tl = np.zeros((1, NTL), dtype=np.int64)  # no tile on the CPU: events are read where they lie
        simulate(p, ts, tx, ev, vst, ev_row, price, qty, bp, bq, ap, aq, nlev, sig, params, cfg, n_inst,
                 ordv, lv, acct, seen, pend, cnt, sst, acts, cur, mid2, fills, eqs, out_cnt, out_acct,
                 out_sst, tl, ts.size, blk, ACTION_ROWS, SKIP_LEVELS)  # noqa: F821 - bound by engine_pair


_ENGINE_CORES = (level_qty, add_fee, notice, record_fill, take, arrive, on_trade, on_book, send_cancel, apply_actions,
                 exchange_until, order_schedule, single_level, book_event_skips, block_quiet, pend_next, view_rows,
                 view_mids, ev_fields, ev_top, record_sample, simulate)
_PAIRS: dict[tuple[str, int, int, int, int], KernelPair] = {}
#: registers per thread of the sweep kernel as the device's toolchain builds it (market making, H200, numba-cuda
#: 0.30.4, 2026-11-27 16:20 UTC: 128, 130 in the morning; the other strategies 128-150 on the CPU box's ptxas) and
#: the cap the ``auto`` setting of ``backtest_max_registers`` chooses when it saves a wave of blocks
NATURAL_REGISTERS = 128
AUTO_REGISTER_CAP = 80


def auto_register_cap(n_sets: int, threads: int, sms: int) -> int:
    """The register cap for a sweep of ``n_sets`` on ``sms`` SMs: :data:`AUTO_REGISTER_CAP` when it runs the
    sweep in fewer waves of blocks than :data:`NATURAL_REGISTERS` does, else 0 (none).  Each wave costs about
    one thread's walk over the events, and the capped kernel's walk is slower (its spills): on the H200 a
    sweep that fits one wave either way ran 0.41 s uncapped and 0.49 s capped (10,000 sets), one that took
    two waves uncapped and one capped 1.02 s and 0.83 s (100,000 sets)."""
    blocks = -(-int(n_sets) // threads)

    def waves(regs: int) -> int:
        return -(-blocks // (sms * blocks_per_sm(regs, threads)))

    return AUTO_REGISTER_CAP if waves(AUTO_REGISTER_CAP) < waves(NATURAL_REGISTERS) else 0


def engine_pair(strategy: object, tile: int | None = None, max_registers: int | None = None,
                threads: int | None = None, skip_levels: int | None = None) -> KernelPair:
    """The engine compiled with ``strategy`` (a module or object with ``step``, ``CORES``, ``STATE_SIZE``).

    ``strategy.step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts) -> int``
    is called at each decision time; it reads the current book rows ``cur[inst]``,
    its float64 ``params`` row and ``state``, the signals row ``sig[e]``, the
    position it has been told of (``seen``) and its view of its orders
    (``orders``: O_STATE 1 = live as far as it has been told, O_QTY = size not yet
    reported filled, O_CANCEL = when its cancel reaches the exchange or -1; never
    the exchange's own state, which would be look-ahead), writes up to
    ``ACTION_ROWS`` rows of ``acts`` (the strategy's, default ``MAX_ACTIONS``;
    :func:`action_rows`), which start each decision zeroed, and returns their number
    (-1: no valid decision, e.g. a NaN; counted).  ``CORES`` lists the plain-Python
    helpers it calls.

    ``tile``: events per shared-memory tile of the CUDA kernel (0: none; default: the
    ``backtest_event_tile`` option).  ``max_registers``: the CUDA kernel's register cap (0: none; default:
    the ``backtest_max_registers`` option, whose ``auto`` means none here).  ``threads``: threads per block of the CUDA launch (default: the
    ``backtest_block_threads`` option).  ``skip_levels``: levels of event-block summaries the kernels read
    (:data:`MAX_SKIP_LEVELS`; default: the ``backtest_skip_levels`` option), a compile-time constant of both
    twins.  The CPU twin is the same for every tile, cap and block size.
    """
    name = getattr(strategy, "NAME", None) or getattr(strategy, "__name__", repr(strategy))
    tile = int(config.get_option("backtest_event_tile") if tile is None else tile)
    if tile < 0:
        msg = f"engine_pair: tile must be >= 0 events, got {tile}"
        raise ValueError(msg)
    regs = config.get_option("backtest_max_registers") if max_registers is None else max_registers
    regs = 0 if regs == "auto" else int(regs)  # 'auto' is the engine's choice per sweep (:func:`auto_register_cap`)
    threads = int(config.get_option("backtest_block_threads") if threads is None else threads)
    levels = int(config.get_option("backtest_skip_levels") if skip_levels is None else skip_levels)
    if not 1 <= levels <= MAX_SKIP_LEVELS:
        msg = f"engine_pair: skip_levels must be in 1..{MAX_SKIP_LEVELS}, got {levels}"
        raise ValueError(msg)
    key = (name, tile, regs, threads, levels)
    if key not in _PAIRS:
        # the block's tile loads on the GPU with tiles; nothing to do on the CPU and without tiles
        loader = ("ev_tile", ev_tile_none, ev_tile_cuda if tile else ev_tile_none)
        # the warp vote on a device; the simulator has no warp votes (its threads then skip alone: also exact)
        vote = ("warp_all", warp_all_cpu, warp_all_cpu if simulator_enabled() else warp_all_cuda)
        vote_any = ("warp_any", warp_all_cpu, warp_all_cpu if simulator_enabled() else warp_any_cuda)
        cores = [*_ENGINE_CORES, loader, vote, vote_any, *getattr(strategy, "CORES", ()),
                 ("strategy_step", strategy.step)]
        # the cores never allocate: no per-call array reference counting. Every core is inlined by force in
        # the CUDA kernel: at NVVM -O1 a dozen of them stayed calls (book_event_skips, single_level,
        # block_quiet, warp_all, pend_next and order_schedule among them, on the per-event path), each call
        # saving and restoring live registers in local memory; inlined, ptxas sm_90 gives 128 registers
        # instead of 162 (96 instead of 140 with tiles) and a smaller stack, with no spills
        tw = Twins(*cores, nrt=False, forceinline=[c[0] if isinstance(c, tuple) else c.__name__ for c in cores])
        size = max(int(getattr(strategy, "STATE_SIZE", 1)), 1)
        rows = action_rows(strategy)
        # NVVM -O1: the whole engine inlined takes NVVM minutes at -O3 (ptxas -O3 still optimises the code).
        # No link-time optimisation: with nvJitLink installed numba-cuda links LTO-IR by default and
        # nvJitLink re-optimises the whole kernel at -O3 at link time, as slow as NVVM -O3
        label = (f"backtest[{name}]" + (f"[tile {tile}]" if tile else "") + (f"[regs {regs}]" if regs else "")
                 + (f"[threads {threads}]" if threads != 32 else "") + (f"[levels {levels}]" if levels != 1 else ""))
        _PAIRS[key] = KernelPair(label, tw.cuda(run_cuda, STATE_SIZE=size, ACTION_ROWS=rows, TILE=tile,
                                                TILE_ROWS=tile + 1, SKIP_LEVELS=levels, lto=False,
                                                max_registers=regs),
                                 tw.cpu(_with_state(run_cpu, size, rows, levels), parallel=True), threads=threads,
                                 nvvm_opt=int(config.get_option("backtest_nvvm_opt")), nvvm_fma=False)
    return _PAIRS[key]


def compiled_registers(pair: KernelPair) -> int | None:
    """The most registers per thread of ``pair``'s compiled CUDA kernels (one per argument signature launched so
    far), as the device's toolchain built them; None before the first launch or without a device."""
    get = getattr(pair.cuda, "get_regs_per_thread", None)
    if get is None or not getattr(pair.cuda, "overloads", None):
        return None
    return max(int(r) for r in get().values())


def action_rows(strategy: object) -> int:
    """Rows of the action array the strategy's step may return: its ``ACTION_ROWS`` (default and most:
    :data:`MAX_ACTIONS`).  The engine zeroes these rows before each decision and applies no row past them (a
    step that returns more has the rest counted as bad actions): a strategy that never writes more than a few
    rows declares so, and the engine stops zeroing rows it never uses (market making writes at most 3 of 8:
    48 of the 163 values that take 95 % of a set's thread-local accesses were its zeroed rows, engine_counts)."""
    rows = int(getattr(strategy, "ACTION_ROWS", MAX_ACTIONS))
    if not 1 <= rows <= MAX_ACTIONS:
        name = getattr(strategy, "NAME", None) or getattr(strategy, "__name__", repr(strategy))
        msg = f"strategy {name}: ACTION_ROWS must be in 1..{MAX_ACTIONS}, got {rows}"
        raise ValueError(msg)
    return rows


def _with_state(fn: object, size: int, rows: int = MAX_ACTIONS, levels: int = 1) -> object:
    """``run_cpu`` with its STATE_SIZE, ACTION_ROWS and SKIP_LEVELS constants bound (a clone with its own
    globals)."""
    import types

    g = dict(fn.__globals__)
    g["STATE_SIZE"] = size
    g["ACTION_ROWS"] = rows
    g["SKIP_LEVELS"] = levels
    return types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
