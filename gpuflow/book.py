"""Rebuild L2 / L3 order books from schema events and emit top-N levels (and OFI).

:func:`rebuild_book` turns events into *level ops* (one fused pass), then runs
the kernels of :mod:`gpuflow.kernels.book`: on the GPU the chunked parallel
rebuild (summarise chunks, scan chunk maps over levels, replay chunks in
parallel), on the CPU the sequential replay.  Both give identical integer
outputs.  L2 level sets (Binance, tardis, snapshots) and L3 order events
(LOBSTER, Databento MBO; aggregated to levels) go through the same kernels.

Outputs are stamped with the ``ts_local`` of the event after which the book is
observed, so a row at time t only uses events with ``ts_local <= t``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
from numba import njit, types
from numba.typed import Dict

from gpuflow import config
from gpuflow.backend import Backend, get_backend
from gpuflow.errors import SchemaError
from gpuflow.schema import (EMPTY_ASK_PRICE, EMPTY_BID_PRICE, FLAG_EOM, FLAG_HIDDEN, KIND_ADD,
                            KIND_CANCEL, KIND_CLEAR, KIND_DELETE, KIND_EXECUTE, KIND_MODIFY, KIND_SET,
                            KIND_SNAPSHOT, Instrument)

__all__ = ["BookFrame", "rebuild_book", "top_of_book", "DEFAULT_MAX_LEVELS"]

#: Widest price range (ticks per side) held as a dense tick window; wider ranges use compressed
#: price ranks (exact too, one row entry per distinct price).
DEFAULT_MAX_LEVELS = 1 << 20

_OP_OF_KIND = np.zeros(256, dtype=np.uint8)
_SIGN_OF_KIND = np.zeros(256, dtype=np.int64)
#: op codes map to themselves (for ops already expanded on the host)
_IDENTITY_OPS = np.arange(256, dtype=np.uint8)


def _kernels() -> Any:
    from gpuflow.kernels import book as kb

    return kb


def _init_tables() -> None:
    kb = _kernels()
    _OP_OF_KIND[KIND_SET] = kb.OP_SET
    _OP_OF_KIND[KIND_SNAPSHOT] = kb.OP_SET
    _OP_OF_KIND[KIND_CLEAR] = kb.OP_CLEAR
    for k, sign in ((KIND_ADD, 1), (KIND_CANCEL, -1), (KIND_DELETE, -1), (KIND_EXECUTE, -1)):
        _OP_OF_KIND[k] = kb.OP_ADD
        _SIGN_OF_KIND[k] = sign


@njit(cache=True)
def _expand_modifies(kind, side, price, qty, order_id, flags):  # pragma: no cover - jitted
    """Track L3 orders to turn MODIFY (and DELETE without size) into level deltas.

    Returns op arrays (side, price, op kind, signed qty, observe, event index, last).
    Orders never added in the data (they rested before it started) are tracked
    from their first event; their modifies use the event's own fields only.
    """
    n = kind.size
    cap = n + np.count_nonzero(kind == KIND_MODIFY)
    o_side = np.empty(cap, np.int8)
    o_price = np.empty(cap, np.int64)
    o_kind = np.empty(cap, np.uint8)
    o_qty = np.empty(cap, np.int64)
    o_obs = np.empty(cap, np.uint8)
    o_ev = np.empty(cap, np.int64)
    o_last = np.empty(cap, np.uint8)
    live_px = Dict.empty(key_type=types.uint64, value_type=types.int64)
    live_qty = Dict.empty(key_type=types.uint64, value_type=types.int64)
    unknown = 0
    k = 0
    for i in range(n):
        kd = kind[i]
        oid = order_id[i]
        obs = 1 if (flags[i] & FLAG_EOM) != 0 else 0
        if kd == KIND_ADD:
            live_px[oid] = price[i]
            live_qty[oid] = qty[i]
            o_side[k] = side[i]; o_price[k] = price[i]; o_kind[k] = 2; o_qty[k] = qty[i]
        elif kd == KIND_CANCEL or kd == KIND_EXECUTE or kd == KIND_DELETE:
            q = qty[i]
            if (flags[i] & FLAG_HIDDEN) != 0:
                q = 0
            if oid in live_qty:
                rem = live_qty[oid]
                if kd == KIND_DELETE or q > rem:
                    q = rem
                rem -= q
                if rem <= 0:
                    live_qty.pop(oid)
                    live_px.pop(oid)
                else:
                    live_qty[oid] = rem
            elif oid != 0:
                unknown += 1
            o_side[k] = side[i]; o_price[k] = price[i]; o_kind[k] = 2; o_qty[k] = -q
        elif kd == KIND_MODIFY:
            if oid in live_qty:
                # remove the old size at the old price, then add the new one
                o_side[k] = side[i]; o_price[k] = live_px[oid]; o_kind[k] = 2; o_qty[k] = -live_qty[oid]
                o_obs[k] = 0; o_ev[k] = i; o_last[k] = 0
                k += 1
            else:
                unknown += 1
            live_px[oid] = price[i]
            live_qty[oid] = qty[i]
            o_side[k] = side[i]; o_price[k] = price[i]; o_kind[k] = 2; o_qty[k] = qty[i]
        elif kd == KIND_SET or kd == KIND_SNAPSHOT:
            o_side[k] = side[i]; o_price[k] = price[i]; o_kind[k] = 1; o_qty[k] = qty[i]
        elif kd == KIND_CLEAR:
            if side[i] == 0:  # one-sided clears keep tracking (none of our sources emits them for L3)
                live_px.clear()
                live_qty.clear()
            o_side[k] = side[i]; o_price[k] = 0; o_kind[k] = 3; o_qty[k] = 0
        else:
            o_side[k] = 0; o_price[k] = 0; o_kind[k] = 0; o_qty[k] = 0
        o_obs[k] = obs
        o_ev[k] = i
        o_last[k] = 1
        k += 1
    return (o_side[:k], o_price[:k], o_kind[:k], o_qty[:k], o_obs[:k], o_ev[:k], o_last[:k], unknown)


def _columns(events: Any, be: Backend) -> dict[str, Any]:
    """Event columns as backend arrays from a pyarrow Table or a mapping of arrays."""
    names = ("ts_local", "kind", "side", "price", "qty", "order_id", "flags")
    if isinstance(events, pa.Table):
        cols = {c: events.column(c).to_numpy() for c in names if c in events.column_names}
    elif isinstance(events, Mapping):
        cols = dict(events)
    else:
        msg = f"rebuild_book: expected a pyarrow Table or a mapping of columns, got {type(events).__name__}"
        raise SchemaError(msg)
    for c in ("kind", "side", "price", "qty", "flags"):
        if c not in cols:
            msg = f"rebuild_book: events lack column {c!r}"
            raise SchemaError(msg)
    return {c: be.asarray(v) for c, v in cols.items()}


@dataclass
class BookFrame:
    """Top-N book levels after selected events (arrays on the backend's device).

    Attributes
    ----------
    index : int64 (n_out,)
        Event row after which each output row observes the book.
    ts_local : int64 (n_out,) or None
        Its receive timestamp (ns).
    bid_price, bid_qty, ask_price, ask_qty : int64 (n_out, levels)
        Ticks and lots; a missing level has price EMPTY_BID_PRICE / EMPTY_ASK_PRICE and qty 0.
    ofi : int64 (n_out, levels) or None
        Multi-level order-flow imbalance (lots) summed over observations since the previous row.
    final_book : dict of host arrays
        The book after the last event: ``side``, ``price``, ``qty`` of every non-empty level.
    """

    index: Any
    ts_local: Any
    bid_price: Any
    bid_qty: Any
    ask_price: Any
    ask_qty: Any
    ofi: Any | None
    backend: Backend
    final_book: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    instrument: Instrument | None = None

    @property
    def levels(self) -> int:
        return int(self.bid_price.shape[1])

    def to_host(self) -> "BookFrame":
        h = self.backend.to_host
        return BookFrame(h(self.index), None if self.ts_local is None else h(self.ts_local),
                         h(self.bid_price), h(self.bid_qty), h(self.ask_price), h(self.ask_qty),
                         None if self.ofi is None else h(self.ofi), get_backend("cpu"), self.final_book,
                         self.stats, self.instrument)

    def to_arrow(self) -> pa.Table:
        """Flat table: index, ts_local, bid_px_1..N, bid_qty_1..N, ask_px_1..N, ask_qty_1..N[, ofi_1..N]."""
        f = self.to_host()
        cols: dict[str, Any] = {"index": f.index}
        if f.ts_local is not None:
            cols["ts_local"] = f.ts_local
        for name, arr in (("bid_px", f.bid_price), ("bid_qty", f.bid_qty), ("ask_px", f.ask_price),
                          ("ask_qty", f.ask_qty), ("ofi", f.ofi)):
            if arr is None:
                continue
            for m in range(arr.shape[1]):
                cols[f"{name}_{m + 1}"] = np.ascontiguousarray(arr[:, m])
        t = pa.table(cols)
        if self.instrument is not None:
            t = t.replace_schema_metadata(self.instrument.to_metadata())
        return t


def _event_emits(n_events: int, ts_local: Any, every: int | None, grid_ns: Any, xp: Any
                 ) -> tuple[int, Any, Any]:
    """(emit_mode, per-event emit flags or None, grid event rows or None) for the prepare kernel."""
    if grid_ns is not None:
        if ts_local is None:
            msg = "rebuild_book: a clock grid needs the ts_local column"
            raise SchemaError(msg)
        grid = xp.asarray(grid_ns, dtype=xp.int64)
        rows = xp.searchsorted(ts_local, grid, side="right") - 1  # last event with ts_local <= t
        emit = xp.zeros(n_events, dtype=xp.uint8)
        emit[rows[rows >= 0]] = 1
        return 3, emit, rows
    if every is None or every == 1:
        return 0, None, None
    if every == 0:
        return 2, None, None
    if every < 0:
        msg = f"rebuild_book: every must be >= 0, got {every}"
        raise SchemaError(msg)
    return 1, None, None


@dataclass
class _PriceAxis:
    """Map prices to row indices.

    * ``dense``: index = price - pmin over the side's price range (ranges up to ``max_levels``).
    * ``lut``: a side's prices span more ticks than ``max_levels`` (a stray order at 10x the price):
      index = rank among the distinct prices, looked up in a running-count table over the range
      (``lut[p - pmin] - 1``); output prices come from the distinct-price arrays ``ub`` / ``ua``.
    * ``ranked``: ranges beyond ``_LUT_LIMIT``: ranks are computed per op by sorting
      (``kernel_prices``) and mapped back to ticks after the replay.
    All three are exact.
    """

    mode: str
    pmin_b: int
    wb: int
    pmin_a: int
    wa: int
    lut_b: Any = None
    lut_a: Any = None
    ub: Any = None
    ua: Any = None

    def bid_prices(self, idx: Any, xp: Any) -> Any:
        if self.mode != "ranked":
            return idx
        return xp.where(idx == EMPTY_BID_PRICE, idx, self.ub[xp.clip(idx, 0, max(self.wb - 1, 0))])

    def ask_prices(self, idx: Any, xp: Any) -> Any:
        if self.mode != "ranked":
            return idx
        return xp.where(idx == EMPTY_ASK_PRICE, idx, self.ua[xp.clip(idx, 0, max(self.wa - 1, 0))])

    def row_prices(self, side: np.ndarray, idx: np.ndarray, be: Backend) -> np.ndarray:
        """Ticks of host row indices (``final_book``)."""
        if self.mode == "dense":
            return np.where(side > 0, self.pmin_b + idx, self.pmin_a + idx).astype(np.int64)
        ub, ua = be.to_host(self.ub), be.to_host(self.ua)
        return np.where(side > 0, ub[np.clip(idx, 0, ub.size - 1)], ua[np.clip(idx, 0, ua.size - 1)]).astype(np.int64)


_LUT_LIMIT = 1 << 28


def _axis(kind: Any, side: Any, price: Any, mm: np.ndarray, init: Mapping[str, Any] | None, window: Any,
          max_levels: int, xp: Any) -> tuple[_PriceAxis, Any]:
    """Choose the price axis; return it and the prices the kernels see (ranks in ``ranked`` mode)."""
    kb = _kernels()
    lo_hi = [[int(mm[0]), int(mm[1])], [int(mm[2]), int(mm[3])]]
    ip = isd = None
    if init is not None and len(init["price"]):
        ip = np.asarray(init["price"], dtype=np.int64)
        isd = np.asarray(init["side"])
        for k, s in ((0, 1), (1, -1)):
            sel = ip[isd == s]
            if sel.size:
                lo_hi[k][0] = min(lo_hi[k][0], int(sel.min()))
                lo_hi[k][1] = max(lo_hi[k][1], int(sel.max()))
    for k in range(2):
        if window is not None:
            lo_hi[k] = [int(window[0]), int(window[1])]
        if lo_hi[k][0] > lo_hi[k][1]:  # no book op on this side
            lo_hi[k] = [0, 0]
    (lb, hb), (la, ha) = lo_hi
    wb, wa = hb - lb + 1, ha - la + 1
    if window is not None or max(wb, wa) <= max_levels:
        return _PriceAxis("dense", lb, wb, la, wa), price
    book = (kind == kb.OP_SET) | (kind == kb.OP_ADD)
    sides = []
    for s, lo, w in ((1, lb, wb), (-1, la, wa)):
        ps = price[book & (side == s)]
        if ip is not None:
            ps = xp.concatenate([ps, xp.asarray(ip[isd == s])])
        sides.append(ps)
    if max(wb, wa) <= _LUT_LIMIT and xp is np:
        ipx = ip if ip is not None else np.zeros(0, np.int64)
        isx = isd if isd is not None else np.zeros(0, np.int8)
        lut_b, lut_a, ub, ua = _luts_host(kind, side, price, ipx, isx, lb, wb, la, wa)
        return _PriceAxis("lut", lb, int(ub.size), la, int(ua.size), lut_b, lut_a, ub, ua), price
    if max(wb, wa) <= _LUT_LIMIT:
        luts, uniq = [], []
        for ps, lo, w in ((sides[0], lb, wb), (sides[1], la, wa)):
            marks = xp.zeros(w, dtype=xp.int32)
            marks[ps - lo] = 1
            uniq.append(xp.nonzero(marks)[0].astype(xp.int64) + lo)
            luts.append(xp.cumsum(marks, dtype=xp.int32))
        return _PriceAxis("lut", lb, int(uniq[0].size), la, int(uniq[1].size), luts[0], luts[1], uniq[0],
                          uniq[1]), price
    ub = xp.unique(sides[0]) if sides[0].size else xp.zeros(1, xp.int64)
    ua = xp.unique(sides[1]) if sides[1].size else xp.zeros(1, xp.int64)
    ranks = xp.where(side > 0, xp.searchsorted(ub, price), xp.searchsorted(ua, price)).astype(xp.int64)
    return _PriceAxis("ranked", 0, int(ub.size), 0, int(ua.size), None, None, ub, ua), ranks


@njit(cache=True)
def _mark_prices_cpu(kind, side, price, ipx, isd, lb, la, mb, ma, op_set, op_add):  # pragma: no cover
    """Mark the prices of book ops (and of the initial book) per side in ``mb`` / ``ma`` (host twin of the
    cupy scatter in :func:`_axis`)."""
    for i in range(kind.size):
        k = kind[i]
        if k == op_set or k == op_add:
            if side[i] > 0:
                mb[price[i] - lb] = 1
            else:
                ma[price[i] - la] = 1
    for i in range(ipx.size):
        if isd[i] > 0:
            mb[ipx[i] - lb] = 1
        else:
            ma[ipx[i] - la] = 1


@njit(cache=True)
def _rank_table_cpu(marks, lo, lut, uniq):  # pragma: no cover - jitted
    """``lut`` = running count of marks (the rank table); ``uniq`` = the marked prices, ascending."""
    n = 0
    for j in range(marks.size):
        if marks[j]:
            uniq[n] = lo + j
            n += 1
        lut[j] = n


def _luts_host(kind: np.ndarray, side: np.ndarray, price: np.ndarray, ipx: np.ndarray, isd: np.ndarray,
               lb: int, wb: int, la: int, wa: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rank tables and distinct prices of both sides.  The large arrays are numpy allocations (which
    ask the kernel for huge pages), not numba ones: a fresh 4 KiB-page table costs a page fault per
    page on every call."""
    kb = _kernels()
    mb = np.zeros(wb, np.uint8)
    ma = np.zeros(wa, np.uint8)
    _mark_prices_cpu(kind, side, price, ipx, isd, np.int64(lb), np.int64(la), mb, ma, np.uint8(kb.OP_SET),
                     np.uint8(kb.OP_ADD))
    out = []
    for m, lo in ((mb, lb), (ma, la)):
        lut = np.empty(m.size, np.int32)
        uniq = np.empty(int(np.count_nonzero(m)), np.int64)
        _rank_table_cpu(m, np.int64(lo), lut, uniq)
        out.append((lut, uniq))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def rebuild_book(events: Any, *, levels: int = 5, every: int | None = 1, grid_ns: Any = None,
                 ofi: bool = False, init: Mapping[str, Any] | None = None, window: Any = None,
                 backend: str | Backend | None = None, chunk: int | None = None,
                 max_levels: int = DEFAULT_MAX_LEVELS, profile: bool = False,
                 layout: tuple[bool | int, ...] = (True, False, 2, True), threads: int | None = None,
                 replay: str = "thread", warps: int | None = None) -> BookFrame:
    """Rebuild the book and emit the top ``levels`` levels per event, every k events or on a clock grid.

    Parameters
    ----------
    events : pyarrow.Table or mapping of arrays
        Schema events of one instrument, in replay order (host or device arrays).
    levels : int
        Levels per side to emit (1..MAX_LEVELS).
    every : int or None
        1 (default): a row after every event; k > 1: after every k-th event
        (rows k-1, 2k-1, ...); 0: after every complete source message (FLAG_EOM).
    grid_ns : array of int64, optional
        Clock grid (ns, ts_local clock): one row per grid time t, describing the book after the
        last event with ``ts_local <= t`` (rows before the first event show the initial book).
        Overrides ``every``.
    ofi : bool
        Also emit multi-level order-flow imbalance (see :mod:`gpuflow.kernels.book`).
    init : mapping with host arrays ``side``, ``price``, ``qty``, optional
        The book before the first event (e.g. ``final_book`` of a previous call).
    window : (lo, hi) ticks, optional
        Price window for both sides; ops outside it are ignored (counted in ``stats``).
    backend : {"cpu", "gpu", None} or Backend
    chunk : int, optional
        Ops per chunk for the parallel rebuild (GPU); default from the data size.
    max_levels : int
        Widest price range per side held as a dense tick axis; wider ones use compressed ranks.
    profile : bool
        Synchronise the device between phases and record their wall times in ``stats["phase_s"]``.
    layout : (bool, bool[, int[, bool]])
        GPU memory layout: interleaved ops, level-major start books, (when every event emits a row)
        how the replay writes rows: 0 each thread straight to the outputs; 1 slot records (each row as
        one record next to its warp neighbours', a second pass gathers them into row order); 2 staged
        in shared memory and written out by the warp a few rows per thread at a time (contiguous runs);
        and int32 level sizes in the chunk summaries and start books where they provably fit (streams
        of level sets, L2; ``stats["level_size_dtype"]`` says which was used).
        Results are the same, speed is not; the default, interleaved ops, row-major books, rows staged
        in shared memory and int32 sizes where they fit, was the fastest measured (H100, 2026-11-26:
        1.9e9 events/s with a row after every event, 2.0x direct rows; BENCHMARKS.md).
    threads : int, optional
        Threads per block of the GPU replay kernel (default 64; the staged replay always uses 32).
    replay : {"thread", "warp"}
        How the GPU replays: ``thread``, one thread per chunk (the layout above); ``warp``, one warp per
        chunk, a few thousand long chunks, ops loaded 32 at a time: each chunk is summarised by its warp
        (level sets a batch at a time), one scan over the chunks gives their start books, and each op is
        applied by the whole warp (top lists, OFI and rows lane-parallel; see
        :func:`gpuflow.kernels.book.replay_warp_chunk`).  The ops are read in their own order (the layout's
        interleaving and row modes do not apply; its int32 level sizes do).  Same rows either way; the CPU
        path is the sequential replay.
    warps : int, optional
        Chunks (warps) of the warp replay when ``chunk`` is not given (default: the one-warp blocks the
        device holds at once, 32 per SM).

    Returns
    -------
    BookFrame
    """
    be = backend if isinstance(backend, Backend) else get_backend(backend)
    xp = be.xp
    kb = _kernels()
    if replay not in ("thread", "warp"):
        msg = f"rebuild_book: replay must be 'thread' or 'warp', got {replay!r}"
        raise ValueError(msg)
    warp = replay == "warp" and be.uses_cuda
    phases: dict[str, float] = {}
    clock = [time.perf_counter()]

    def mark(name: str) -> None:
        if profile:
            be.synchronize()
            now = time.perf_counter()
            phases[name] = phases.get(name, 0.0) + now - clock[0]
            clock[0] = now

    if not 1 <= levels <= kb.MAX_LEVELS:
        msg = f"rebuild_book: levels must be in 1..{kb.MAX_LEVELS}, got {levels}"
        raise SchemaError(msg)
    if not _OP_OF_KIND.any():
        _init_tables()
    instrument = None
    if isinstance(events, pa.Table) and events.schema.metadata and b"gpuflow" in events.schema.metadata:
        instrument = Instrument.from_metadata(events.schema.metadata)
    cols = _columns(events, be)
    ts_local = cols.get("ts_local")
    n_events = int(cols["kind"].shape[0])
    emit_mode, emit_ev, grid_rows = _event_emits(n_events, ts_local, every, grid_ns, xp)

    # events -> level ops (one fused pass); an L3 modify expands to two ops on the host
    ev_of_op = None
    unknown = 0
    if bool((cols["kind"] == KIND_MODIFY).any()):
        h = {c: be.to_host(cols[c]) for c in ("kind", "side", "price", "qty", "flags")}
        oid = be.to_host(cols["order_id"]) if "order_id" in cols else np.zeros(n_events, np.uint64)
        s_, p_, k_, q_, obs_, ev_, last_, unknown = _expand_modifies(h["kind"], h["side"], h["price"], h["qty"],
                                                                     oid, h["flags"])
        if emit_ev is None:
            emit_ev = _host_emits(emit_mode, every, h["flags"])
            emit_ev = be.asarray(emit_ev)
        ev_of_op = be.asarray(ev_)
        side, price = be.asarray(s_), be.asarray(p_)
        kind_in, qty_in = be.asarray(k_), be.asarray(q_)
        flags_in = be.asarray((obs_ * FLAG_EOM).astype(np.uint16))
        emit_arr = (emit_ev[ev_of_op] * be.asarray(last_)).astype(xp.uint8)
        emit_mode = 3
        op_lut, sign_lut = xp.asarray(_IDENTITY_OPS), xp.zeros(256, xp.int64)
    else:
        side, price = cols["side"].astype(xp.int8, copy=False), cols["price"].astype(xp.int64, copy=False)
        kind_in, qty_in = cols["kind"].astype(xp.uint8, copy=False), cols["qty"].astype(xp.int64, copy=False)
        flags_in = cols["flags"].astype(xp.uint16, copy=False)
        emit_arr = emit_ev if emit_ev is not None else xp.zeros(1, xp.uint8)
        op_lut, sign_lut = xp.asarray(_OP_OF_KIND), xp.asarray(_SIGN_OF_KIND)
    n_ops = int(kind_in.shape[0])
    o_kind = be.empty(n_ops, xp.uint8)
    o_qty = be.empty(n_ops, xp.int64)
    o_flags = be.empty(n_ops, xp.uint8)
    big = 1 << 62
    mm = be.asarray(np.array([big, -big, big, -big, 0, 0, 0], dtype=np.int64))
    n_prep = min(n_ops, 132 * 2048) if be.uses_cuda else n_ops  # grid-stride threads of the prepare pass
    k_every = max(every or 1, 1)  # emit mode 1: the prepare pass marks every k_every-th op
    be.launch(kb.PREPARE, n_prep, kind_in, side, price, qty_in, flags_in, np.int64(emit_mode),
              np.int64(k_every), emit_arr, op_lut, sign_lut, o_kind, o_qty, o_flags, mm)
    mm_h = be.to_host(mm)
    n_out = int(mm_h[4])
    axis, kprice = _axis(o_kind, side, price, mm_h, init, window, max_levels, xp)
    pmin_b, wb, pmin_a, wa = axis.pmin_b, axis.wb, axis.pmin_a, axis.wa
    comp = axis.mode == "lut"
    dummy = be.zeros(1, xp.int64)
    lut_b = axis.lut_b if comp else be.zeros(1, xp.int32)
    lut_a = axis.lut_a if comp else be.zeros(1, xp.int32)
    ub = axis.ub if comp else dummy
    ua = axis.ua if comp else dummy
    n_outside = 0
    if window is not None:
        book_op = (o_kind == kb.OP_SET) | (o_kind == kb.OP_ADD)
        off = xp.where(side > 0, price - pmin_b, price - pmin_a)
        n_outside = int((book_op & ((off < 0) | (off >= xp.where(side > 0, wb, wa)))).sum())
    w = wb + wa
    init_row = np.zeros(w, dtype=np.int64)
    if init is not None and len(init["price"]):
        isd, ipx, iq = (np.asarray(init[k]) for k in ("side", "price", "qty"))
        lvl = be.to_host(_init_levels(axis, isd, ipx.astype(np.int64), be))
        ok = lvl >= 0
        init_row[lvl[ok]] = iq[ok]
    mark("prepare")
    # every output row is written by the replay: no zeroing (first touch of zeros costs on big outputs)
    if warp:  # the warp replay writes one array of planes (one base address in the kernel, not five)
        outs = be.empty((5 if ofi else 4, n_out, levels), xp.int64)
        out = [outs[0], outs[1], outs[2], outs[3]]
        out_ofi = outs[4] if ofi else be.empty((1, levels), xp.int64)
    else:
        out = [be.empty((n_out, levels), xp.int64) for _ in range(4)]
        out_ofi = be.empty((n_out, levels), xp.int64) if ofi else be.empty((1, levels), xp.int64)
    every_op_emits = emit_mode == 0 and ev_of_op is None
    if every_op_emits:
        op_rows = None
    elif emit_mode == 1 and ev_of_op is None:  # every k-th event: the ops the prepare pass marks, without a pass
        op_rows = xp.arange(k_every - 1, n_ops, k_every, dtype=xp.int64)
    else:
        op_rows = xp.nonzero((o_flags & kb.F_EMIT) != 0)[0].astype(xp.int64)
    if be.uses_cuda:
        if warp:  # a chunk per warp
            L = chunk or max(1, -(-n_ops // (int(warps) if warps else _auto_warps(n_ops, be))))
        else:
            L = chunk or _auto_chunk(n_ops, w, be)
        C = max(1, math.ceil(n_ops / L))
        bounds = be.empty(C + 1, xp.int64)
        be.launch(kb.CHUNK_BOUNDS, C + 1, np.int64(L), np.int64(n_ops), o_flags, bounds)
        inter, rt = (False, False) if warp else (bool(layout[0]), bool(layout[1]))
        # where the replay puts rows: 0 the outputs, 1 slot records + gather, 2 staged in shared memory
        out_mode = int(layout[2]) if len(layout) > 2 and every_op_emits else 0
        if warp:
            out_mode = 0  # the warp writes each row itself, a level per lane
        if out_mode not in (0, 1, 2):
            msg = f"rebuild_book: layout[2] must be 0, 1 or 2 (row output mode), got {layout[2]!r}"
            raise ValueError(msg)
        # ops in the longest chunk: the slot count of the interleaved ops and of the slot records is Lp * C
        Lp = int(xp.diff(bounds).max()) if (inter or out_mode) else 0
    if be.uses_cuda and inter:
        # interleave the ops (op j of chunk c at c + j*C) so that neighbouring threads read neighbouring ops
        i_side = be.empty(Lp * C, xp.int8)  # every slot is written (padding slots: OP_NONE, no flags)
        i_price = be.empty(Lp * C, xp.int64)
        i_kind = be.empty(Lp * C, xp.uint8)
        i_qty = be.empty(Lp * C, xp.int64)
        i_flags = be.empty(Lp * C, xp.uint8)
        n_ct = -(-C // kb.TILE)
        be.launch(kb.INTERLEAVE, n_ct * -(-Lp // kb.TILE), bounds, np.int64(C), np.int64(n_ct), side, kprice, o_kind,
                  o_qty, o_flags, i_side, i_price, i_kind, i_qty, i_flags)
        side, kprice, o_kind, o_qty, o_flags = i_side, i_price, i_kind, i_qty, i_flags
    if be.uses_cuda:
        sa = be.empty((C, w), xp.int8)
        # level sizes as int32 where they provably fit (layout[3]): no ADD ops (every level size is a SET
        # size, 0 or an initial size) and all of those below 2**31; halves the traffic of the dense phases
        narrow = (len(layout) > 3 and bool(layout[3]) and int(mm_h[5]) == 0 and int(mm_h[6]) < 2**31
                  and int(np.abs(init_row).max(initial=0)) < 2**31)
        sdt = xp.int32 if narrow else xp.int64
        sb = be.empty((C, w), sdt)
        sa.fill(1)  # identity maps; summarise writes only the levels its chunk touches
        sb.fill(0)
        mark("alloc")
        if warp:
            xch = be.zeros((3, 32), xp.int64)  # the simulator's warp exchange (unused on a GPU)
            be.launch(kb.SUMMARISE_WARP, C, xch, bounds, side, kprice, o_kind, o_qty, sa, sb, np.int64(wb),
                      np.int64(wa), np.int64(pmin_b), np.int64(pmin_a), comp, lut_b, lut_a)
        else:
            be.launch(kb.SUMMARISE, C, bounds, np.int64(C), inter, side, kprice, o_kind, o_qty, sa, sb,
                      np.int64(wb), np.int64(wa), np.int64(pmin_b), np.int64(pmin_a), comp, lut_b, lut_a)
        mark("summarise")
        final = be.empty(w, sdt)
        if warp:
            # a few thousand chunks (one per warp): one scan over them gives every chunk's start book
            rows = be.empty((C, w), sdt)  # row-major: rows[c, j]
            be.launch(kb.GROUP_SCAN, w, np.int64(C), be.asarray(init_row), sa, sb, rows, final)
        else:
            # groups of chunks: the scan composes each group, scans the groups, then walks each group
            G = max(1, math.ceil(math.sqrt(C)))
            ga = be.empty((G, w), xp.int64)
            gb = be.empty((G, w), sdt)
            gstart = be.empty((G, w), sdt)
            be.launch(kb.GROUP_COMPOSE, G * w, np.int64(G), np.int64(C), sa, sb, ga, gb)
            be.launch(kb.GROUP_SCAN, w, np.int64(G), be.asarray(init_row), ga, gb, gstart, final)
            rows = be.empty((w, C) if rt else (C, w), sdt)  # start books, level-major when rt: rows[j, c]
            be.launch(kb.GROUP_APPLY, G * w, np.int64(G), np.int64(C), sa, sb, gstart, rows, rt)
            del ga, gb, gstart
        mark("scan")
        del sa, sb
        if every_op_emits:
            out_base = bounds[:-1]  # every op emits one row: a chunk's first row is its first op
        else:
            out_base = xp.searchsorted(op_rows, bounds[:-1]).astype(xp.int64)  # rows emitted before the chunk
    else:
        L, C = max(n_ops, 1), 1
        narrow = False
        out_mode = Lp = 0
        bounds = np.array([0, n_ops], dtype=np.int64)
        rows = init_row.reshape(1, w).copy()  # the replay works in place; init_row stays the initial book
        final = None
        out_base = np.zeros(1, np.int64)
        inter = rt = False
    best = be.empty((C, 4), xp.int64)
    be.launch(kb.ROW_BEST, C, rows, rt, np.int64(wb), np.int64(wa), best)
    mark("best")
    tail = be.zeros((C, levels), xp.int64)
    diag = be.zeros((C, 4), xp.int64)
    if out_mode == 1:  # one record per op slot c + j*C (padding slots stay unwritten and are never read)
        rec = be.empty((max(Lp * C, 1), (5 if ofi else 4) * levels), xp.int64)
    else:
        rec = be.empty((1, 1), xp.int64)
    if warp:
        be.launch(kb.warp_replay_pair(levels), C, xch, bounds, side, kprice, o_kind, o_qty, o_flags, rows,
                  np.int64(wb), np.int64(wa), np.int64(pmin_b), np.int64(pmin_a), comp, lut_b, lut_a, ub, ua, best,
                  out_base, np.int64(levels), bool(ofi), outs, tail, diag)
    else:
        be.launch(kb.replay_pair(levels, staged=out_mode == 2), C, bounds, np.int64(C), inter, side, kprice, o_kind,
                  o_qty, o_flags, rows, rt, np.int64(wb), np.int64(wa), np.int64(pmin_b), np.int64(pmin_a), comp,
                  lut_b, lut_a, ub, ua, best, out_base, np.int64(levels), bool(ofi), out[0], out[1], out[2], out[3],
                  out_ofi, tail, diag, np.int64(out_mode), rec, np.int64(Lp),
                  threads=32 if out_mode == 2 else threads)
    if out_mode == 1:
        mark("replay")
        be.launch(kb.GATHER_ROWS, n_out, bounds, np.int64(C), np.int64(levels), bool(ofi), rec, out[0], out[1],
                  out[2], out[3], out_ofi)
        del rec
        mark("gather")
    if ofi and C > 1 and not every_op_emits:
        _carry_ofi(out_ofi, tail, out_base, n_out, xp)
    mark("replay")
    final_row = (be.to_host(rows[0]) if final is None else be.to_host(final)).astype(np.int64, copy=False)
    fb_side, fb_idx, fb_qty = _sparse_rows(final_row, wb)
    final_book = {"side": fb_side, "price": axis.row_prices(fb_side, fb_idx, be), "qty": fb_qty}
    if axis.mode == "ranked":
        out[0] = axis.bid_prices(out[0], xp)
        out[2] = axis.ask_prices(out[2], xp)
    # event row of every output row
    if every_op_emits:
        ev_index = xp.arange(n_events, dtype=xp.int64)
    else:
        ev_index = ev_of_op[op_rows] if ev_of_op is not None else op_rows
    if grid_rows is not None:
        out, out_ofi, ev_index = _gather_grid(out, out_ofi, ofi, ev_index, grid_rows, init_row, axis, levels, be)
        ts_out = xp.asarray(grid_ns, dtype=xp.int64)
    else:
        if ts_local is None:
            ts_out = None
        elif every_op_emits:
            ts_out = ts_local  # a row per event: no gather
        else:
            ts_out = ts_local[ev_index]
    mark("finish")
    stats = {"events": n_events, "ops": n_ops, "chunks": C, "chunk_ops": L, "replay": "warp" if warp else "thread",
             "window_bid": (pmin_b, wb),
             "window_ask": (pmin_a, wa), "price_axis": axis.mode, "ops_outside_window": n_outside,
             "unknown_orders": int(unknown), "backend": be.name,
             "level_size_dtype": "int32" if be.uses_cuda and narrow else "int64"}
    stats.update(_diagnostics(be.to_host(diag), None if ev_of_op is None else be.to_host(ev_of_op)))
    if profile:
        stats["phase_s"] = phases
    return BookFrame(ev_index, ts_out, out[0], out[1], out[2], out[3], out_ofi if ofi else None, be,
                     final_book, stats, instrument)


def _diagnostics(diag: np.ndarray, ev_of_op: np.ndarray | None) -> dict[str, Any]:
    """Book-state findings of the replay, with the first event row of each (never silent).

    * ``negative_level_ops``: ops that removed more size than their level held (for L3 data without
      an initial book: liquidity that rested before the data started; such a level shows as empty);
    * ``crossed_messages``: complete messages after which the best bid >= the best ask.
    """
    out: dict[str, Any] = {}
    for name, col in (("negative_level_ops", 0), ("crossed_messages", 2)):
        hit = diag[:, col] > 0
        out[name] = int(diag[:, col].sum())
        first = int(diag[hit, col + 1].min()) if hit.any() else None
        if first is not None and ev_of_op is not None:
            first = int(ev_of_op[first])
        out[f"first_{name.rsplit('_', 1)[0]}_row"] = first
    return out


def _carry_ofi(out_ofi: Any, tail: Any, out_base: Any, n_out: int, xp: Any) -> None:
    """Add the OFI a chunk observed after its last emitted row to the next emitted row (a later chunk's).

    Chunk c's first row (if it emits any) gets the tails of every chunk since the previous emitting
    chunk: exactly what the sequential replay accumulates across the chunk boundary.
    """
    C = int(tail.shape[0])
    starts = out_base[:C]
    ends = xp.concatenate([out_base[1:C], xp.asarray([n_out], dtype=xp.int64)])
    emits = ends > starts
    csum = xp.cumsum(tail, axis=0)
    idx = xp.arange(C)
    # last emitting chunk strictly before c (or -1); searchsorted, since cupy has no maximum.accumulate
    emitting = xp.nonzero(emits)[0]
    pos = xp.searchsorted(emitting, idx) - 1
    prev = xp.where(pos >= 0, emitting[xp.maximum(pos, 0)] if emitting.size else 0, -1)
    upto = xp.where(idx[:, None] > 0, csum[xp.maximum(idx - 1, 0)], 0)
    before = xp.where(prev[:, None] >= 0, csum[xp.maximum(prev, 0)] - tail[xp.maximum(prev, 0)], 0)
    # tails of chunks prev .. c-1 (prev's tail is what followed its last row; chunks between emitted nothing)
    add = upto - before
    rows = starts[emits]
    out_ofi[rows] += add[emits]


def _host_emits(emit_mode: int, every: int | None, flags: np.ndarray) -> np.ndarray:
    n = flags.size
    if emit_mode == 0:
        return np.ones(n, np.uint8)
    if emit_mode == 2:
        return ((flags & FLAG_EOM) != 0).astype(np.uint8)
    e = np.zeros(n, np.uint8)
    e[int(every) - 1::int(every)] = 1
    return e


def _init_levels(axis: _PriceAxis, side: np.ndarray, price: np.ndarray, be: Backend) -> np.ndarray:
    """Row index of each initial level (-1 outside the axis)."""
    if axis.mode == "dense":
        lb = price - axis.pmin_b
        la = price - axis.pmin_a
        return np.where(side > 0, np.where((lb >= 0) & (lb < axis.wb), lb, -1),
                        np.where((la >= 0) & (la < axis.wa), axis.wb + la, -1))
    ub, ua = be.to_host(axis.ub), be.to_host(axis.ua)
    rb = np.searchsorted(ub, price)
    ra = np.searchsorted(ua, price)
    okb = (rb < ub.size) & (ub[np.minimum(rb, ub.size - 1)] == price)
    oka = (ra < ua.size) & (ua[np.minimum(ra, ua.size - 1)] == price)
    return np.where(side > 0, np.where(okb, rb, -1), np.where(oka, axis.wb + ra, -1))


def _gather_grid(out: list[Any], out_ofi: Any, ofi: bool, ev_index: Any, grid_rows: Any, init_row: np.ndarray,
                 axis: _PriceAxis, levels: int, be: Backend) -> tuple[list[Any], Any, Any]:
    """One output row per grid point (rows before the first event show the initial book)."""
    xp = be.xp
    n_out = int(ev_index.shape[0])
    pos = xp.searchsorted(ev_index, xp.maximum(grid_rows, 0))
    pre = grid_rows < 0
    take = xp.minimum(pos, max(n_out - 1, 0))
    init_top = _init_top(init_row, axis, levels, be)
    gathered = []
    for a, fill in zip(out, init_top):
        g = a[take] if n_out else xp.zeros((pos.size, levels), xp.int64)
        g[pre] = xp.asarray(fill)
        gathered.append(g)
    if ofi:
        # OFI accumulated between consecutive distinct observed rows; repeated rows add nothing
        g = out_ofi[take] if n_out else xp.zeros((pos.size, levels), xp.int64)
        # (a grid point before the first event is clipped to pos 0: it does not make row 0 a repeat)
        dup = (xp.concatenate([xp.zeros(1, bool), (pos[1:] == pos[:-1]) & ~pre[:-1]]) if pos.size
               else pos.astype(bool))
        g[dup | pre] = 0
        out_ofi = g
    return gathered, out_ofi, grid_rows


def _auto_chunk(n_ops: int, w: int, be: Backend | None = None) -> int:
    """Ops per chunk: about 2^15 chunks (one replay thread each), within a memory budget.

    The chunk summaries and start books take about 17 bytes per (chunk, level); they may use a
    quarter of the device's free memory (or ``chunk_events * 4096`` cells without a device).
    """
    budget_cells = int(config.get_option("chunk_events")) * 4096
    if be is not None and be.name == "gpu":
        free, _ = be.xp.cuda.runtime.memGetInfo()
        budget_cells = max(budget_cells, int(free) // 4 // 17)
    # about 2^15 chunks: the best of 1024 / 4096 / 16384 ops per chunk on 1e8-event batches on the H200
    # (4096, BENCHMARKS.md); fewer chunks starve the replay of threads, more inflate the chunk x level
    # summaries and start books
    target_chunks = 1 << 15
    L = max(256, math.ceil(n_ops / target_chunks))
    while math.ceil(n_ops / L) * w > budget_cells and L < n_ops:
        L *= 2
    return L


def _auto_warps(n_ops: int, be: Backend) -> int:
    """Chunks (warps) of the warp replay: as many one-warp blocks as the device holds at once at the replay
    kernel's register cap (one wave: each chunk is a long sequential walk, so a second wave would double
    the time); under the simulator, four (so that tests cross chunk boundaries); never more than ops."""
    if be.name == "gpu":
        from gpuflow.backend import blocks_per_sm, device_sm_count

        kb = _kernels()
        return max(1, min(n_ops, device_sm_count() * blocks_per_sm(kb.WARP_REPLAY_REGISTERS, 32)))
    return max(1, min(n_ops, 4))


def _sparse_rows(row: np.ndarray, wb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(side, row index within the side, qty) of the non-empty levels of a book row."""
    bi = np.nonzero(row[:wb] > 0)[0]
    ai = np.nonzero(row[wb:] > 0)[0]
    return (np.concatenate([np.ones(bi.size, np.int8), -np.ones(ai.size, np.int8)]),
            np.concatenate([bi, ai]).astype(np.int64), np.concatenate([row[:wb][bi], row[wb:][ai]]).astype(np.int64))


def _init_top(row: np.ndarray, axis: _PriceAxis, levels: int, be: Backend) -> list[np.ndarray]:
    wb = axis.wb
    bi = np.nonzero(row[:wb] > 0)[0][::-1][:levels]
    ai = np.nonzero(row[wb:] > 0)[0][:levels]
    bp = np.full(levels, EMPTY_BID_PRICE, np.int64)
    bq = np.zeros(levels, np.int64)
    ap = np.full(levels, EMPTY_ASK_PRICE, np.int64)
    aq = np.zeros(levels, np.int64)
    bp[:bi.size] = axis.row_prices(np.ones(bi.size, np.int8), bi, be)
    bq[:bi.size] = row[:wb][bi]
    ap[:ai.size] = axis.row_prices(-np.ones(ai.size, np.int8), ai, be)
    aq[:ai.size] = row[wb:][ai]
    return [bp, bq, ap, aq]


def top_of_book(table: Any, backend: str | Backend | None = "cpu") -> dict[str, np.ndarray]:
    """Best bid and ask after every row (host int64 arrays bid_price, bid_qty, ask_price, ask_qty).

    An empty side has price EMPTY_BID_PRICE / EMPTY_ASK_PRICE and qty 0.  Rows that
    do not touch the book repeat the previous values.  Values are meaningful as a
    consistent book only on rows with FLAG_EOM.
    """
    f = rebuild_book(table, levels=1, every=1, backend=backend).to_host()
    return {"bid_price": f.bid_price[:, 0], "bid_qty": f.bid_qty[:, 0],
            "ask_price": f.ask_price[:, 0], "ask_qty": f.ask_qty[:, 0]}
