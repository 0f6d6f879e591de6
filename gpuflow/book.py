"""Rebuild L2 / L3 order books from schema events and emit top-N levels (and OFI).

:func:`rebuild_book` turns events into *level ops* (:func:`level_ops`), then runs
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

__all__ = ["BookFrame", "LevelOps", "level_ops", "rebuild_book", "top_of_book", "DEFAULT_MAX_LEVELS"]

#: Widest price range (ticks per side) held as a dense tick window; wider ranges use compressed
#: price ranks (exact too, one row entry per distinct price).
DEFAULT_MAX_LEVELS = 1 << 20

_OP_OF_KIND = np.zeros(256, dtype=np.uint8)
_SIGN_OF_KIND = np.zeros(256, dtype=np.int64)


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


@dataclass
class LevelOps:
    """Events reduced to level ops (arrays on the backend's device).

    ``event`` maps each op to its event row; ``last`` marks the last op of each
    event (an event expands to two ops only for an L3 modify that moves price).
    """

    side: Any
    price: Any
    kind: Any
    qty: Any
    observe: Any
    event: Any | None = None
    last: Any | None = None
    unknown_orders: int = 0

    @property
    def n(self) -> int:
        return int(self.kind.shape[0])


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


def level_ops(events: Any, backend: Backend | None = None) -> LevelOps:
    """Reduce events to level ops (vectorised; L3 modifies go through an order tracker on the host).

    Parameters
    ----------
    events : pyarrow.Table or mapping of arrays
        Schema events (columns kind, side, price, qty, flags; order_id for L3 modifies).
    backend : Backend, optional
    """
    be = backend or get_backend()
    xp = be.xp
    if not _OP_OF_KIND.any():
        _init_tables()
    cols = _columns(events, be)
    kind = cols["kind"].astype(xp.uint8, copy=False)
    has_modify = bool((kind == KIND_MODIFY).any())
    if has_modify:
        h = {c: be.to_host(cols[c]) for c in ("kind", "side", "price", "qty", "flags")}
        oid = be.to_host(cols["order_id"]) if "order_id" in cols else np.zeros(h["kind"].size, np.uint64)
        s, p, k, q, obs, ev, last, unknown = _expand_modifies(h["kind"], h["side"], h["price"], h["qty"],
                                                              oid, h["flags"])
        return LevelOps(be.asarray(s), be.asarray(p), be.asarray(k), be.asarray(q), be.asarray(obs),
                        be.asarray(ev), be.asarray(last), int(unknown))
    op = xp.asarray(_OP_OF_KIND)[kind]
    sign = xp.asarray(_SIGN_OF_KIND)[kind]
    qty = cols["qty"].astype(xp.int64, copy=False)
    qty = xp.where(sign != 0, sign * qty, qty)
    flags = cols["flags"]
    hidden = ((flags & FLAG_HIDDEN) != 0) & (kind == KIND_EXECUTE)
    if bool(hidden.any()):
        op = xp.where(hidden, 0, op).astype(xp.uint8)
    observe = ((flags & FLAG_EOM) != 0).astype(xp.uint8)
    return LevelOps(cols["side"].astype(xp.int8, copy=False), cols["price"].astype(xp.int64, copy=False),
                    op.astype(xp.uint8, copy=False), qty, observe)


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


def _emit_flags(n_events: int, ts_local: Any, every: int | None, grid_ns: Any, xp: Any,
                observe: Any) -> tuple[Any, Any | None]:
    """Per-event emit flags, and for a clock grid the event row of every grid point."""
    if grid_ns is not None:
        grid = xp.asarray(grid_ns, dtype=xp.int64)
        if ts_local is None:
            msg = "rebuild_book: a clock grid needs the ts_local column"
            raise SchemaError(msg)
        rows = xp.searchsorted(ts_local, grid, side="right") - 1  # last event with ts_local <= t
        emit = xp.zeros(n_events, dtype=xp.uint8)
        emit[rows[rows >= 0]] = 1
        return emit, rows
    if every is None or every == 1:
        return xp.ones(n_events, dtype=xp.uint8), None
    if every == 0:  # at message ends only
        return observe.astype(xp.uint8), None
    emit = xp.zeros(n_events, dtype=xp.uint8)
    emit[every - 1::every] = 1
    return emit, None


@dataclass
class _PriceAxis:
    """Map prices to row indices: a dense tick window, or ranks among the distinct prices (compressed).

    Dense: index = price - pmin.  Compressed (used when a side's prices span more
    than ``max_levels`` ticks, e.g. a stray order at 10x the price): index = rank
    of the price among the distinct prices of that side, so the book stays exact
    with a row as long as the number of distinct prices.
    """

    pmin_b: int
    wb: int
    pmin_a: int
    wa: int
    ub: Any = None  # sorted distinct bid prices (compressed mode), backend array
    ua: Any = None

    @property
    def compressed(self) -> bool:
        return self.ub is not None

    def kernel_prices(self, side: Any, price: Any, xp: Any) -> Any:
        if not self.compressed:
            return price
        rb = xp.searchsorted(self.ub, price)
        ra = xp.searchsorted(self.ua, price)
        return xp.where(side > 0, rb, ra).astype(xp.int64)

    def bid_prices(self, idx: Any, xp: Any) -> Any:
        """Ticks of row indices (host or device); ``EMPTY`` sentinels pass through."""
        if not self.compressed:
            return idx
        empty = idx == EMPTY_BID_PRICE
        return xp.where(empty, idx, self.ub[xp.clip(idx, 0, max(self.wb - 1, 0))])

    def ask_prices(self, idx: Any, xp: Any) -> Any:
        if not self.compressed:
            return idx
        empty = idx == EMPTY_ASK_PRICE
        return xp.where(empty, idx, self.ua[xp.clip(idx, 0, max(self.wa - 1, 0))])


def _window(ops: LevelOps, init: Mapping[str, Any] | None, window: Any, max_levels: int, xp: Any
            ) -> _PriceAxis:
    """The price axis covering every op price (or the given window)."""
    kb = _kernels()
    book_op = (ops.kind == kb.OP_SET) | (ops.kind == kb.OP_ADD)
    out = []
    side_prices = []
    for s in (1, -1):
        prices = ops.price[book_op & (ops.side == s)]
        if init is not None:
            ip = np.asarray(init["price"])[np.asarray(init["side"]) == s]
            if ip.size:
                prices = xp.concatenate([prices, xp.asarray(ip, dtype=xp.int64)])
        side_prices.append(prices)
        lo = hi = None
        if prices.size:
            lo, hi = int(prices.min()), int(prices.max())
        if window is not None:
            lo, hi = int(window[0]), int(window[1])
        if lo is None:
            lo, hi = 0, 0
        out += [lo, hi - lo + 1]
    if window is None and max(out[1], out[3]) > max_levels:
        ub = xp.unique(side_prices[0]) if side_prices[0].size else xp.zeros(1, xp.int64)
        ua = xp.unique(side_prices[1]) if side_prices[1].size else xp.zeros(1, xp.int64)
        return _PriceAxis(0, int(ub.size), 0, int(ua.size), ub, ua)
    return _PriceAxis(out[0], out[1], out[2], out[3])


def rebuild_book(events: Any, *, levels: int = 5, every: int | None = 1, grid_ns: Any = None,
                 ofi: bool = False, init: Mapping[str, Any] | None = None, window: Any = None,
                 backend: str | Backend | None = None, chunk: int | None = None,
                 max_levels: int = DEFAULT_MAX_LEVELS, profile: bool = False) -> BookFrame:
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
        Price window per side; ops outside it are ignored (counted in ``stats``).
    backend : {"cpu", "gpu", None} or Backend
    chunk : int, optional
        Ops per chunk for the parallel rebuild (GPU); default from the data size.
    profile : bool
        Synchronise the device between phases and record their wall times in ``stats["phase_s"]``.

    Returns
    -------
    BookFrame
    """
    be = backend if isinstance(backend, Backend) else get_backend(backend)
    xp = be.xp
    kb = _kernels()
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
    instrument = None
    if isinstance(events, pa.Table) and events.schema.metadata and b"gpuflow" in events.schema.metadata:
        instrument = Instrument.from_metadata(events.schema.metadata)
    cols = _columns(events, be)
    ts_local = cols.get("ts_local")
    n_events = int(cols["kind"].shape[0])
    ops = level_ops(cols, be)
    emit_ev, grid_rows = _emit_flags(n_events, ts_local, every, grid_ns, xp, ops.observe if ops.event is None
                                     else xp.ones(n_events, xp.uint8))
    if ops.event is not None:
        emit = (emit_ev[ops.event] * ops.last).astype(xp.uint8)
    else:
        emit = emit_ev
    flags = (emit * kb.F_EMIT + ops.observe * kb.F_OBSERVE).astype(xp.uint8)
    axis = _window(ops, init, window, max_levels, xp)
    pmin_b, wb, pmin_a, wa = axis.pmin_b, axis.wb, axis.pmin_a, axis.wa
    side = ops.side
    kprice = axis.kernel_prices(side, ops.price, xp)
    mark("ops")
    n_outside = 0
    if window is not None:
        book_op = (ops.kind == kb.OP_SET) | (ops.kind == kb.OP_ADD)
        off = xp.where(side > 0, ops.price - pmin_b, ops.price - pmin_a)
        n_outside = int((book_op & ((off < 0) | (off >= xp.where(side > 0, wb, wa)))).sum())
    w = wb + wa
    init_row = np.zeros(w, dtype=np.int64)
    if init is not None:
        isd, ipx, iq = (np.asarray(init[k]) for k in ("side", "price", "qty"))
        ipx = be.to_host(axis.kernel_prices(xp.asarray(isd), xp.asarray(ipx, dtype=xp.int64), xp))
        for s, base, pmin, width_s in ((1, 0, pmin_b, wb), (-1, wb, pmin_a, wa)):
            m = (isd == s) & (ipx >= pmin) & (ipx < pmin + width_s)
            init_row[base + (ipx[m] - pmin)] = iq[m]
    n_ops = ops.n
    n_out = int(emit.sum())
    # every output row is written by the replay: no need to zero (first-touch of zeros costs on big outputs)
    out = [be.empty((n_out, levels), xp.int64) for _ in range(4)]
    out_ofi = be.empty((n_out, levels), xp.int64) if ofi else be.empty((1, levels), xp.int64)
    use_chunks = be.uses_cuda
    if use_chunks:
        L = chunk or _auto_chunk(n_ops, w)
        C = max(1, math.ceil(n_ops / L))
    else:
        L, C = max(n_ops, 1), 1
    bounds = be.empty(C + 1, xp.int64)
    if use_chunks:
        be.launch(kb.CHUNK_BOUNDS, C + 1, np.int64(L), np.int64(n_ops), flags, bounds)
        sa = be.empty((C, w), xp.int8)
        sb = be.empty((C, w), xp.int64)
        mark("alloc")
        be.launch(kb.SUMMARISE, C, bounds, side, kprice, ops.kind, ops.qty, sa, sb, np.int64(wb), np.int64(wa),
                  np.int64(pmin_b), np.int64(pmin_a))
        mark("summarise")
        G = max(1, int(math.ceil(math.sqrt(C))))
        ga = be.empty((G, w), xp.int64)
        gb = be.empty((G, w), xp.int64)
        gstart = be.empty((G, w), xp.int64)
        final = be.empty(w, xp.int64)
        be.launch(kb.GROUP_COMPOSE, G * w, np.int64(G), np.int64(C), sa, sb, ga, gb)
        be.launch(kb.GROUP_SCAN, w, np.int64(G), be.asarray(init_row), ga, gb, gstart, final)
        be.launch(kb.GROUP_APPLY, G * w, np.int64(G), np.int64(C), sa, sb, gstart)
        mark("scan")
        del sa, ga, gb, gstart
        rows = sb
    else:
        bounds[0] = 0
        bounds[1] = n_ops
        rows = init_row.reshape(1, w).copy()
        final = None
    best = be.empty((C, 2), xp.int64)
    be.launch(kb.ROW_BEST, C, rows, np.int64(wb), np.int64(wa), best)
    cum = xp.concatenate([xp.zeros(1, xp.int64), xp.cumsum(emit.astype(xp.int64))])
    out_base = cum[bounds[:-1]]
    mark("best")
    be.launch(kb.replay_pair(levels), C, bounds, side, kprice, ops.kind, ops.qty, flags, rows, np.int64(wb),
              np.int64(wa),
              np.int64(pmin_b), np.int64(pmin_a), best, out_base, np.int64(levels), bool(ofi),
              out[0], out[1], out[2], out[3], out_ofi)
    mark("replay")
    if final is None:
        final_row = be.to_host(rows[0])
    else:
        final_row = be.to_host(final)
    final_book = _sparse_book(final_row, wb, pmin_b, pmin_a)
    if axis.compressed:
        fb = final_book["price"]
        ub, ua = be.to_host(axis.ub), be.to_host(axis.ua)
        final_book["price"] = np.where(final_book["side"] > 0, ub[np.clip(fb, 0, ub.size - 1)],
                                       ua[np.clip(fb, 0, ua.size - 1)]).astype(np.int64)
        out[0] = axis.bid_prices(out[0], xp)
        out[2] = axis.ask_prices(out[2], xp)
    ev_index = xp.nonzero(emit_ev)[0].astype(xp.int64) if grid_rows is None else grid_rows
    if grid_rows is not None:
        # one output row per grid point: gather (grid points before the first event show the init book)
        pos = xp.searchsorted(xp.nonzero(emit_ev)[0], xp.maximum(grid_rows, 0))
        pre = grid_rows < 0
        init_top = _init_top(init_row, wb, wa, pmin_b, pmin_a, levels)
        if axis.compressed:
            init_top[0] = be.to_host(axis.bid_prices(xp.asarray(init_top[0]), xp))
            init_top[2] = be.to_host(axis.ask_prices(xp.asarray(init_top[2]), xp))
        gathered = []
        for a, fill in zip(out, init_top):
            g = a[xp.minimum(pos, max(n_out - 1, 0))] if n_out else xp.zeros((pos.size, levels), xp.int64)
            g[pre] = xp.asarray(fill)
            gathered.append(g)
        out = gathered
        if ofi:
            # OFI accumulated between consecutive distinct observed rows; repeated rows add nothing
            g = out_ofi[xp.minimum(pos, max(n_out - 1, 0))] if n_out else xp.zeros((pos.size, levels), xp.int64)
            dup = xp.concatenate([xp.zeros(1, bool), pos[1:] == pos[:-1]]) if pos.size else pos.astype(bool)
            g[dup | pre] = 0
            out_ofi = g
    ts_out = None
    if ts_local is not None:
        if grid_rows is not None:
            ts_out = xp.asarray(grid_ns, dtype=xp.int64)
        else:
            ts_out = ts_local[ev_index] if n_events else ts_local[:0]
    stats = {"events": n_events, "ops": n_ops, "chunks": C, "chunk_ops": L, "window_bid": (pmin_b, wb),
             "window_ask": (pmin_a, wa), "compressed_prices": axis.compressed, "ops_outside_window": n_outside, "unknown_orders": ops.unknown_orders,
             "backend": be.name}
    if profile:
        mark("finish")
        stats["phase_s"] = phases
    return BookFrame(ev_index, ts_out, out[0], out[1], out[2], out[3], out_ofi if ofi else None, be,
                     final_book, stats, instrument)


def _auto_chunk(n_ops: int, w: int) -> int:
    """Ops per chunk: enough chunks to fill a GPU, within a memory budget for the C x W start books."""
    budget_cells = int(config.get_option("chunk_events")) * 4096  # ~ 2.4 GB of int64+int8 by default
    target_chunks = 1 << 18
    L = max(256, math.ceil(n_ops / target_chunks))
    while math.ceil(n_ops / L) * w > budget_cells and L < n_ops:
        L *= 2
    return L


def _sparse_book(row: np.ndarray, wb: int, pmin_b: int, pmin_a: int) -> dict[str, np.ndarray]:
    bi = np.nonzero(row[:wb] > 0)[0]
    ai = np.nonzero(row[wb:] > 0)[0]
    return {"side": np.concatenate([np.ones(bi.size, np.int8), -np.ones(ai.size, np.int8)]),
            "price": np.concatenate([pmin_b + bi, pmin_a + ai]).astype(np.int64),
            "qty": np.concatenate([row[:wb][bi], row[wb:][ai]]).astype(np.int64)}


def _init_top(row: np.ndarray, wb: int, wa: int, pmin_b: int, pmin_a: int, levels: int
              ) -> list[np.ndarray]:
    bi = np.nonzero(row[:wb] > 0)[0][::-1][:levels]
    ai = np.nonzero(row[wb:] > 0)[0][:levels]
    bp = np.full(levels, EMPTY_BID_PRICE, np.int64)
    bq = np.zeros(levels, np.int64)
    ap = np.full(levels, EMPTY_ASK_PRICE, np.int64)
    aq = np.zeros(levels, np.int64)
    bp[:bi.size] = pmin_b + bi
    bq[:bi.size] = row[:wb][bi]
    ap[:ai.size] = pmin_a + ai
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
