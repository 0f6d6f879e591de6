"""Exact snapshot + diff synchronisation of Binance depth streams, with resync on gaps.

Binance publishes the rules for keeping a local book from a REST snapshot
(``lastUpdateId`` L) and the ``depthUpdate`` stream (first id U, final id u,
previous final id pu on USD-M futures):

* USD-M futures: drop diffs with ``u < L``; the first applied diff has
  ``U <= L <= u``; after that every diff must have ``pu ==`` the previous ``u``.
* Spot: drop diffs with ``u <= L``; the first applied diff has
  ``U <= L + 1 <= u``; after that ``U ==`` previous ``u + 1``.

A recording holds the snapshot a few lines *after* the diff that bridges it, so
diffs are buffered until the snapshot arrives.  On a broken chain (gap) the book
is out of sync until the next snapshot (resync); diffs in between are not
applied and counted.  :func:`synced_order` returns the event rows in the order
they are applied (snapshot, then the buffered bridging diffs, then live diffs;
other rows - bookTicker, trades - stay at their place), which
:func:`gpuflow.book.rebuild_book` then replays on the CPU or GPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from numba import njit

from gpuflow.errors import SchemaError
from gpuflow.schema import (FLAG_EOM, FLAG_SNAPSHOT_BEGIN, KIND_BBO, KIND_CLEAR, KIND_DIFF, KIND_SET,
                            KIND_SNAPSHOT, instrument_of)

__all__ = ["SyncInfo", "synced_order", "synced_events", "binance_l2_compare", "compare_book_ticker"]


@dataclass
class SyncInfo:
    """Counts from :func:`synced_order`."""

    diffs: int
    applied: int
    dropped_before_sync: int
    gaps: int
    snapshots: int
    resyncs: int
    futures: bool
    gap_rows: list = None  # table rows of the first diffs (up to 20) whose ids broke the chain


@njit(cache=True)
def _message_end(kind, flags, i, n):  # pragma: no cover - jitted
    """Index one past the last row of the message starting at row i."""
    k = kind[i]
    j = i + 1
    if k == KIND_DIFF:
        if flags[i] & FLAG_EOM:
            return j
        while j < n and kind[j] == KIND_SET:
            j += 1
            if flags[j - 1] & FLAG_EOM:
                break
        return j
    if k == KIND_CLEAR and (flags[i] & FLAG_SNAPSHOT_BEGIN):
        while j < n and kind[j] == KIND_SNAPSHOT:
            j += 1
        return j
    return j


@njit(cache=True)
def _diff_rule(state, futures, U, u, pu, snap_id, last_u):  # pragma: no cover - jitted
    """Binance's rule for one diff: -1 drop (older than the snapshot), 1 apply, 0 gap.

    ``state`` 1: the first diff after a snapshot (bridging rule); 2: chained to the previous diff.
    """
    if state == 1:
        if (futures and u < snap_id) or ((not futures) and u <= snap_id):
            return -1
        ok = (U <= snap_id and snap_id <= u) if futures else (U <= snap_id + 1 and snap_id + 1 <= u)
    else:
        ok = (pu == last_u) if futures else (U == last_u + 1)
    return 1 if ok else 0


@njit(cache=True)
def _sync(kind, flags, seq, price, qty, futures):  # pragma: no cover - jitted
    """Return (order of rows to apply, applied-diff mask per row, counters)."""
    n = kind.size
    order = np.empty(n, np.int64)
    applied_row = np.zeros(n, np.uint8)
    no = 0
    buf = np.empty(n, np.int64)  # start rows of buffered diffs (not yet synced)
    nb = 0
    state = 0  # 0 unsynced (no snapshot), 1 awaiting first diff after snapshot, 2 synced
    last_u = np.int64(0)
    snap_id = np.int64(0)
    diffs = 0
    applied = 0
    dropped = 0
    gaps = 0
    snaps = 0
    resyncs = 0
    gap_rows = np.full(20, -1, np.int64)
    i = 0
    while i < n:
        e = _message_end(kind, flags, i, n)
        k = kind[i]
        if k == KIND_DIFF:
            diffs += 1
            U = price[i]
            u = seq[i]
            pu = qty[i]
            if state == 0:
                buf[nb] = i
                nb += 1
            else:
                rule = _diff_rule(state, futures, U, u, pu, snap_id, last_u)
                if rule < 0:
                    dropped += 1
                    i = e
                    continue
                if rule == 1:
                    for r in range(i, e):
                        order[no] = r
                        no += 1
                    applied_row[e - 1] = 1
                    applied += 1
                    last_u = u
                    state = 2
                else:
                    if gaps < gap_rows.size:
                        gap_rows[gaps] = i
                    gaps += 1
                    state = 0
                    nb = 0
                    buf[nb] = i
                    nb += 1
        elif k == KIND_CLEAR and (flags[i] & FLAG_SNAPSHOT_BEGIN):
            snaps += 1
            if snaps > 1:
                resyncs += 1
            snap_id = seq[i]
            for r in range(i, e):
                order[no] = r
                no += 1
            state = 1
            # apply the buffered diffs that bridge the snapshot, in arrival order
            for b in range(nb):
                j = buf[b]
                U = price[j]
                u = seq[j]
                pu = qty[j]
                je = _message_end(kind, flags, j, n)
                rule = _diff_rule(state, futures, U, u, pu, snap_id, last_u)
                if rule < 0:
                    dropped += 1
                    continue
                if rule == 0:
                    if gaps < gap_rows.size:
                        gap_rows[gaps] = j
                    gaps += 1
                    state = 0
                    break
                for r in range(j, je):
                    order[no] = r
                    no += 1
                applied_row[je - 1] = 1
                applied += 1
                last_u = u
                state = 2
            nb = 0
        else:
            for r in range(i, e):
                order[no] = r
                no += 1
        i = e
    return order[:no], applied_row, diffs, applied, dropped, gaps, snaps, resyncs, gap_rows


def _is_futures(table: pa.Table) -> bool:
    kind = table.column("kind").to_numpy()
    pu = table.column("qty").to_numpy()[kind == KIND_DIFF]
    if pu.size:
        return bool((pu >= 0).any())
    try:
        return instrument_of(table).venue.endswith("futures")
    except SchemaError:
        return False


def synced_order(table: pa.Table) -> tuple[np.ndarray, np.ndarray, SyncInfo]:
    """Rows of a Binance events table in the order a synced book applies them.

    Returns
    -------
    order : int64 (m,)
        Row indices: snapshots, bridging and chained diffs, and every non-depth row.
    applied : uint8 (n,)
        1 on the last row of every applied diff message.
    info : SyncInfo
    """
    cols = [table.column(c).to_numpy() for c in ("kind", "flags", "seq", "price", "qty")]
    futures = _is_futures(table)
    order, applied, diffs, n_app, dropped, gaps, snaps, resyncs, gap_rows = _sync(*cols, futures)
    return order, applied, SyncInfo(int(diffs), int(n_app), int(dropped), int(gaps), int(snaps), int(resyncs),
                                    futures, [int(r) for r in gap_rows if r >= 0])


def synced_events(table: pa.Table) -> tuple[pa.Table, SyncInfo]:
    """The events a synced book applies, in application order (see :func:`synced_order`)."""
    order, _, info = synced_order(table)
    return table.take(pa.array(order)), info


def _read_all(recordings: Sequence[Any], symbol: str | None) -> pa.Table:
    from gpuflow.io.binance import read_binance

    tables = []
    for path in recordings:
        res = read_binance(path, symbol=symbol)
        ts = [t for t in res.tables if symbol is None or instrument_of(t).symbol == symbol.upper()]
        if len(ts) != 1:
            names = [instrument_of(t).symbol for t in res.tables]
            msg = f"{os.fspath(path)}: holds symbols {names}; pass symbol= to choose one"
            raise SchemaError(msg)
        tables.append(ts[0])
    meta = tables[0].schema.metadata
    return pa.concat_tables([t.replace_schema_metadata(meta) for t in tables])


def binance_l2_compare(recordings: Any, *, symbol: str | None = None, backend: str | None = "cpu") -> Any:
    """Implementation of :func:`gpuflow.verify.verify_binance` (several files = one continuous recording)."""

    paths = [recordings] if isinstance(recordings, (str, os.PathLike)) else list(recordings)
    return compare_book_ticker(_read_all(paths, symbol), ", ".join(os.fspath(p) for p in paths), backend=backend)


def compare_book_ticker(table: pa.Table, label: str = "<table>", *, backend: str | None = "cpu") -> Any:
    """Sync the book of a Binance events table and compare it with its bookTicker rows."""
    from gpuflow.book import rebuild_book
    from gpuflow.verify import BinanceVerification

    sym = instrument_of(table).symbol
    order, applied, info = synced_order(table)
    ev = table.take(pa.array(order))
    kind = ev.column("kind").to_numpy()
    seq = ev.column("seq").to_numpy()
    is_applied_end = applied[order].astype(bool)
    # the book after every applied diff, keyed by its final update id u
    emit_rows = np.nonzero(is_applied_end)[0]
    if emit_rows.size == 0:
        return BinanceVerification(label, sym, 0, 0, 0, 0, 0, info.resyncs,
                                   info.gaps, [{"gap_rows": info.gap_rows, "error": "no diff could be applied: no snapshot bridges the "
                                                "diff stream (pass the earlier file of the recording too)"}])
    f = rebuild_book(ev, levels=1, every=1, backend=backend).to_host()
    book_u = seq[emit_rows]
    bid_p, bid_q = f.bid_price[emit_rows, 0], f.bid_qty[emit_rows, 0]
    ask_p, ask_q = f.ask_price[emit_rows, 0], f.ask_qty[emit_rows, 0]
    # bookTicker rows: bid row then ask row with the same seq
    tkind = table.column("kind").to_numpy()
    tside = table.column("side").to_numpy()
    tseq = table.column("seq").to_numpy()
    tpx = table.column("price").to_numpy()
    tq = table.column("qty").to_numpy()
    bb = np.nonzero((tkind == KIND_BBO) & (tside > 0))[0]
    ba = np.nonzero((tkind == KIND_BBO) & (tside < 0))[0]
    if bb.size != ba.size or not np.array_equal(tseq[bb], tseq[ba]):
        msg = "bookTicker rows are not in bid/ask pairs with equal update ids"
        raise SchemaError(msg)
    u = tseq[bb]
    srt = np.argsort(book_u, kind="stable")
    su = book_u[srt]
    pos = np.searchsorted(su, u)
    exact = (pos < su.size) & (su[np.minimum(pos, su.size - 1)] == u)
    # inside an applied diff's range (U <= u < final u): skipped
    first_ids = np.empty(emit_rows.size, np.int64)
    diff_rows = np.nonzero(kind == KIND_DIFF)[0]
    # for every applied diff, its DIFF marker is the last KIND_DIFF row at or before the message end
    marker = diff_rows[np.searchsorted(diff_rows, emit_rows, side="right") - 1]
    first_ids[:] = ev.column("price").to_numpy()[marker]
    lo = first_ids[srt]
    inside = (~exact) & (pos < su.size) & (lo[np.minimum(pos, su.size - 1)] <= u)
    idx = srt[np.minimum(pos, su.size - 1)]
    sel = np.nonzero(exact)[0]
    got = np.stack([bid_p[idx[sel]], bid_q[idx[sel]], ask_p[idx[sel]], ask_q[idx[sel]]], axis=1)
    want = np.stack([tpx[bb[sel]], tq[bb[sel]], tpx[ba[sel]], tq[ba[sel]]], axis=1)
    bad = np.nonzero((got != want).any(axis=1))[0]
    lines = table.column("src_line").to_numpy() if "src_line" in table.column_names else None
    first = [{"gap_at_row": r, "line": None if lines is None else int(lines[r])} for r in info.gap_rows] + [{"update_id": int(u[sel[b]]), "line": int(table.column("src_line")[int(bb[sel[b]])].as_py())
              if "src_line" in table.column_names else None,
              "book": got[b].tolist(), "bookTicker": want[b].tolist()} for b in bad[:20]]
    return BinanceVerification(label, sym, int(sel.size), int(inside.sum()), int(bad.size),
                               int(u.size - sel.size - inside.sum()), info.applied, info.resyncs, info.gaps, first)
