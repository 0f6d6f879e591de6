"""Databento MBO (market by order) files: ``.dbn`` or ``.dbn.zst``.

The metadata header is decoded with :class:`databento_dbn.Metadata`; the
records are then read without one Python object per record: the record bytes
are viewed as a numpy structured array laid out as DBN's ``MboMsg`` (56 bytes,
identical in DBN versions 1-3; 64 with ``ts_out``).  A compiled walk over the
records' length bytes checks that they are whole and picks the MBO records
(``rtype`` 0xA0) out of files that mix record types.  The tests check the
result field by field against :class:`databento_dbn.DBNDecoder`.

====================  ==============================================================
action                event
====================  ==============================================================
``A`` add             ``KIND_ADD`` side = order side, qty = size
``C`` cancel          ``KIND_CANCEL`` qty = size.  Databento's C removes ``size`` lots
                      from the order; on CME it nearly always removes all that is left
                      (a full cancel), and the book removes an order whose size reaches 0.
``M`` modify          ``KIND_MODIFY`` price, qty = new size
``T`` trade           ``KIND_TRADE`` side = aggressor ('B' +1, 'A' -1, 'N' 0)
``F`` fill            ``KIND_EXECUTE`` side = the resting order's side
``R`` clear book      ``KIND_CLEAR`` side 0, price 0
``N`` none            skipped (no book effect), counted in ``stats["skipped"]``
====================  ==============================================================

Columns: ``ts_exch`` = ts_event, ``ts_local`` = ts_recv, ``seq`` = sequence,
``price`` = price (1e-9 units) / tick, ``qty`` = size / lot, ``order_id``.
Flags: ``F_SNAPSHOT`` (32) -> ``FLAG_SNAPSHOT``, ``F_LAST`` (128) ->
``FLAG_EOM``.  A run of snapshot records is laid out as every gpuflow snapshot
is: it opens with a ``KIND_CLEAR`` row (``FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN``;
inserted, with the first record's times, ``seq`` and ``src_line``, unless the
run already starts with an ``R`` record, which then plays that part) and its
last record gets ``FLAG_SNAPSHOT_END | FLAG_EOM``: the book is complete there,
although the sample's snapshot records carry no ``F_LAST``.  The undefined
price (``INT64_MAX``) becomes 0.  An undefined ``ts_event`` takes ``ts_recv``
and ``FLAG_TS_EXCH_MISSING``.

The venue is the dataset lowercased with ``.`` -> ``-`` (``GLBX.MDP3`` ->
``"glbx-mdp3"``); the symbol comes from the metadata's symbol mappings
(instrument_id -> raw symbol, the first interval when an id has several), else
the instrument id.  Tick and lot come from the user, then the built-in table
(when the prices are on its grid), else the tick is inferred as the gcd of the
prices and the lot is ``"1"``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import numpy as np
from numba import njit

from gpuflow.errors import FormatError, ParseError, SchemaError
from gpuflow.instruments import lookup
from gpuflow.io import ReadResult
from gpuflow.io._scan import (
    RowIssues,
    apply_order,
    check_errors_arg,
    insert_clears,
    pick_instrument,
    read_source,
    report,
    stable_order,
)
from gpuflow.schema import (
    FLAG_EOM,
    FLAG_SNAPSHOT,
    FLAG_SNAPSHOT_BEGIN,
    FLAG_SNAPSHOT_END,
    FLAG_TS_EXCH_MISSING,
    KIND_ADD,
    KIND_CANCEL,
    KIND_CLEAR,
    KIND_EXECUTE,
    KIND_MODIFY,
    KIND_TRADE,
    Instrument,
    decimal_step,
    events_table,
)

__all__ = ["MBO_DTYPE", "mbo_records", "read_databento"]

_log = logging.getLogger("gpuflow.io")

#: DBN ``MboMsg`` layout (little-endian, 56 bytes); the header is the common ``RecordHeader``.
MBO_DTYPE = np.dtype([
    ("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"),
    ("ts_event", "<u8"), ("order_id", "<u8"), ("price", "<i8"), ("size", "<u4"), ("flags", "u1"),
    ("channel_id", "u1"), ("action", "u1"), ("side", "u1"), ("ts_recv", "<u8"), ("ts_in_delta", "<i4"),
    ("sequence", "<u4"),
])
assert MBO_DTYPE.itemsize == 56
_RTYPE_MBO = 0xA0
_UNDEF_PRICE = np.iinfo(np.int64).max
_UNDEF_TS = np.iinfo(np.uint64).max
_F_LAST = 128
_F_SNAPSHOT = 32
_ACTIONS = {ord("A"): KIND_ADD, ord("C"): KIND_CANCEL, ord("M"): KIND_MODIFY, ord("T"): KIND_TRADE,
            ord("F"): KIND_EXECUTE, ord("R"): KIND_CLEAR}
_KIND_OF_ACTION = np.zeros(256, np.uint8)
for _a, _k in _ACTIONS.items():
    _KIND_OF_ACTION[_a] = _k
_SIDE_OF = np.zeros(256, np.int8)
_SIDE_OF[ord("B")] = 1
_SIDE_OF[ord("A")] = -1


@njit(cache=True, nogil=True)
def _walk_records(rec, rtype_keep):  # pragma: no cover - jitted
    """Offsets of records of ``rtype_keep``; (offsets, their record numbers, n_records, bad_pos, other)."""
    n = rec.size
    cap = n // 16 + 1
    offs = np.empty(cap, np.int64)
    nums = np.empty(cap, np.int64)
    k = 0
    count = 0
    other = 0
    pos = 0
    while pos < n:
        length = np.int64(rec[pos]) * 4
        if length < 16 or pos + length > n:
            return offs[:k], nums[:k], count, pos, other
        if rec[pos + 1] == rtype_keep:
            offs[k] = pos
            nums[k] = count
            k += 1
        else:
            other += 1
        count += 1
        pos += length
    return offs[:k], nums[:k], count, -1, other


def mbo_records(path: Any) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """Decode a DBN file's metadata and its MBO records as a structured array.

    Parameters
    ----------
    path : str or path
        ``.dbn`` or ``.dbn.zst`` (zstd detected from the content).

    Returns
    -------
    records : ndarray of :data:`MBO_DTYPE`, host
        The MBO records in file order (a view of the decompressed bytes when they
        are all MBO records).
    metadata : databento_dbn.Metadata
    info : dict
        ``record_number`` (0-based index of each MBO record among all records),
        ``records`` (all records), ``other_records``, ``version``, ``compression``.

    Raises
    ------
    FormatError
        Not a DBN file, or a schema other than MBO.
    ParseError
        Truncated zstd stream, metadata or records.
    """
    import databento_dbn

    path = os.fspath(path)
    buf, info = read_source(path)
    head = buf[:64].tobytes()
    if head[:3] != b"DBN":
        if head.lstrip()[:1] in (b"{", b"[") or b" {" in head:
            what = "a JSON text file (a Binance or other JSON recording?)"
        elif b"," in head:
            what = "a CSV text file"
        else:
            what = f"bytes {head[:8]!r}"
        msg = f"{path}: expected a Databento DBN file (starting with b'DBN'), found {what}"
        raise FormatError(msg)
    if buf.size < 8:
        msg = f"{path}: truncated DBN file: {buf.size} bytes, the header needs 8"
        raise ParseError(msg)
    version = int(buf[3])
    mlen = int(np.frombuffer(head[4:8], "<u4")[0])
    if 8 + mlen > buf.size:
        msg = (f"{path}: truncated DBN file: the metadata needs {mlen:,} bytes after the 8-byte header, "
               f"found {buf.size - 8:,}")
        raise ParseError(msg)
    try:
        meta = databento_dbn.Metadata.decode(buf[: 8 + mlen].tobytes())
    except (databento_dbn.DBNError, ValueError, OverflowError) as exc:
        msg = f"{path}: could not decode the DBN metadata (version {version}): {exc}"
        raise ParseError(msg) from None
    schema = str(meta.schema) if meta.schema is not None else None
    if schema not in (None, "mbo"):
        msg = f"{path}: expected a Databento MBO file (schema 'mbo'), found schema {schema!r}"
        raise FormatError(msg)
    rec = buf[8 + mlen:]
    offs, nums, count, bad_pos, other = _walk_records(rec, _RTYPE_MBO)
    if bad_pos >= 0:
        length = int(rec[bad_pos]) * 4
        msg = (f"{path}: truncated or corrupt DBN records: record {count + 1:,} "
               f"at byte {8 + mlen + bad_pos:,} "
               f"declares {length} bytes, {rec.size - bad_pos:,} left; {count:,} complete records before it")
        raise ParseError(msg)
    size = MBO_DTYPE.itemsize + (8 if meta.ts_out else 0)
    dtype = np.dtype({"names": MBO_DTYPE.names, "formats": [MBO_DTYPE.fields[n][0] for n in MBO_DTYPE.names],
                      "offsets": [MBO_DTYPE.fields[n][1] for n in MBO_DTYPE.names], "itemsize": size})
    n = offs.size
    if n and bool(np.all(rec[offs] == size // 4)) and (n == count) and rec.size == n * size:
        records = np.ndarray((n,), dtype=dtype, buffer=rec.data, offset=0)
    elif n:
        lengths = rec[offs].astype(np.int64) * 4
        if bool(np.any(lengths < size)):
            i = int(np.argmax(lengths < size))
            msg = (f"{path}: record {int(nums[i]) + 1:,}: an MBO record needs {size} bytes, "
                   f"its header declares {int(lengths[i])}")
            raise ParseError(msg)
        gathered = rec[offs[:, None] + np.arange(size)]
        records = gathered.reshape(-1).view(dtype)
    else:
        records = np.zeros(0, dtype=dtype)
    info.update(record_number=nums, records=int(count), other_records=int(other), version=version)
    return records, meta, info


def _symbol_map(meta: Any) -> dict[int, str]:
    """instrument_id -> raw symbol from the metadata's mappings (first interval wins)."""
    out: dict[int, str] = {}
    mappings = getattr(meta, "mappings", None) or {}
    for raw_symbol, intervals in mappings.items():
        for iv in intervals:
            sym = iv["symbol"] if isinstance(iv, Mapping) else getattr(iv, "symbol", "")
            try:
                iid = int(sym)
            except (TypeError, ValueError):
                continue
            out.setdefault(iid, raw_symbol)
    return out


def _decimal_text(units: int, exp: int) -> str:
    """``units * 10**exp`` as plain decimal text (``250000000, -9`` -> ``"0.25"``)."""
    return f"{Decimal(units).scaleb(exp).normalize():f}"


def _to_steps(v: np.ndarray, unit_exp: int, step: str) -> tuple[np.ndarray, np.ndarray]:
    """Integers ``v`` in units of ``10**unit_exp`` as whole numbers of ``step``; (steps, off-grid mask).

    ``steps = v * 10**(scale + unit_exp) / mant`` for ``step = mant * 10**-scale``.
    """
    mant, scale = decimal_step(step)
    shift = scale + unit_exp
    v = v.astype(np.int64)
    if shift >= 0:
        mul = 10 ** shift
        limit = np.iinfo(np.int64).max // mul
        over = np.abs(v) > limit
        num = np.where(over, 0, v) * mul
        den = mant
    else:
        over = np.zeros(v.shape, np.bool_)
        num = v
        den = mant * 10 ** (-shift)
    off = over | (num % den != 0)
    return num // den, off


def read_databento(path: Any, *, instrument: Instrument | Mapping[Any, Instrument] | None = None,
                   errors: str = "raise", progress: Any = None, venue: str | None = None) -> ReadResult:
    """Read a Databento MBO file (``.dbn`` / ``.dbn.zst``) into the event schema.

    Parameters
    ----------
    path : str or path
    instrument : Instrument or mapping, optional
        One Instrument (one instrument in the file) or a mapping keyed by symbol or
        (venue, symbol).  Default: the built-in table, else inferred.
    errors : {"raise", "quarantine"}
    progress : callable(done, total) or bool, optional
    venue : str, optional
        Overrides the venue taken from the dataset (``"glbx-mdp3"``).

    Returns
    -------
    ReadResult
        One events table per instrument_id (``src_line`` = 1-based record number);
        ``stats`` has ``records``, ``actions`` (count per action letter),
        ``snapshot``, ``skipped``, ``dataset``, ``version``.

    Raises
    ------
    FormatError
        Not a DBN file, or not MBO.
    ParseError
        Truncated zstd stream or records, undecodable metadata; a bad action or
        side with ``errors="raise"``.
    SchemaError
        An off-grid price or size with ``errors="raise"``.
    """
    check_errors_arg(errors)
    path = os.fspath(path)
    records, meta, info = mbo_records(path)
    n = records.size
    report(progress, path, "records", n, n)
    rec_no = info["record_number"] + 1
    dataset = str(meta.dataset or "")
    venue = venue or (dataset.lower().replace(".", "-") if dataset else "databento")
    symbols = _symbol_map(meta)

    action = records["action"]
    side_b = records["side"]
    price = records["price"]
    size = records["size"]
    iid = records["instrument_id"]

    def raw(i: int) -> str:
        r = records[i]
        return (f"MboMsg(instrument_id={int(r['instrument_id'])}, ts_event={int(r['ts_event'])}, "
                f"ts_recv={int(r['ts_recv'])}, action={chr(r['action'])!r}, side={chr(r['side'])!r}, "
                f"price={int(r['price'])}, size={int(r['size'])}, order_id={int(r['order_id'])}, "
                f"flags={int(r['flags'])}, sequence={int(r['sequence'])})")

    iss = RowIssues(path, n, rec_no, raw, unit="record")
    known_action = (_KIND_OF_ACTION[action] != 0) | (action == ord("N"))
    iss.add(~known_action, "bad_value", "action", "one of A, C, M, T, F, R, N",
            lambda i: chr(records["action"][i]), ParseError)
    iss.add((side_b != ord("A")) & (side_b != ord("B")) & (side_b != ord("N")), "bad_value", "side",
            "one of A, B, N", lambda i: chr(records["side"][i]), ParseError)
    iss.add(records["ts_recv"] == _UNDEF_TS, "missing_value", "ts_recv", "a defined receive time",
            lambda i: str(int(records["ts_recv"][i])), ParseError)

    # ---- instruments (order of first appearance)
    uniq, first = np.unique(iid, return_index=True)
    ids = uniq[np.argsort(first, kind="stable")]
    defined = price != _UNDEF_PRICE
    instruments: dict[int, Instrument] = {}
    notes: list[str] = []
    for i_id in ids.tolist():
        symbol = symbols.get(i_id, str(i_id))
        sel = (iid == i_id) & defined
        instruments[i_id] = _instrument(instrument, venue, symbol, price[sel], path, len(ids), notes)
    for note in notes:
        _log.warning("%s", note)

    ticks = np.zeros(n, np.int64)
    qty = np.zeros(n, np.int64)
    off_p = np.zeros(n, np.bool_)
    off_q = np.zeros(n, np.bool_)
    for i_id, inst in instruments.items():
        sel = np.flatnonzero(iid == i_id)
        t, o = _to_steps(price[sel], -9, inst.tick_size)
        ticks[sel], off_p[sel] = t, o
        q, oq = _to_steps(size[sel], 0, inst.lot_size)
        qty[sel], off_q[sel] = q, oq
    off_p &= defined
    ticks[~defined] = 0
    tick_of = {k: v.tick_size for k, v in instruments.items()}
    iss.add(off_p, "off_grid_price", "price", "a whole number of ticks (tick_size="
            + " or ".join(dict.fromkeys(tick_of.values())) + ", prices in 1e-9 units)",
            lambda i: str(int(records["price"][i])), SchemaError)
    iss.add(off_q, "off_grid_size", "size", "a whole number of lots (lot_size="
            + " or ".join(dict.fromkeys(v.lot_size for v in instruments.values())) + ")",
            lambda i: str(int(records["size"][i])), SchemaError)
    keep, rejected = iss.resolve(errors)
    skip = action == ord("N")
    keep &= ~skip

    ts_event = records["ts_event"]
    ts_recv = records["ts_recv"].astype(np.int64)
    ts_missing = ts_event == _UNDEF_TS
    ts_exch = np.where(ts_missing, ts_recv, ts_event.astype(np.int64))
    rflags = records["flags"]
    tables = []
    for i_id, inst in instruments.items():
        rows = np.flatnonzero(keep & (iid == i_id))
        act = action[rows]
        snap = (rflags[rows] & _F_SNAPSHOT) != 0
        run_start = snap & ~np.r_[False, snap[:-1]]
        run_end = snap & ~np.r_[snap[1:], False]
        opens_with_clear = run_start & (act == ord("R"))
        flags = np.zeros(rows.size, np.uint16)
        flags[snap] |= FLAG_SNAPSHOT
        flags[opens_with_clear] |= FLAG_SNAPSHOT_BEGIN
        flags[run_end] |= FLAG_SNAPSHOT_END | FLAG_EOM
        flags[(rflags[rows] & _F_LAST) != 0] |= FLAG_EOM
        flags[ts_missing[rows]] |= FLAG_TS_EXCH_MISSING
        side = _SIDE_OF[side_b[rows]]
        side[act == ord("R")] = 0
        cols = {"ts_exch": ts_exch[rows], "ts_local": ts_recv[rows],
                "seq": records["sequence"][rows].astype(np.int64),
                "kind": _KIND_OF_ACTION[act], "side": side, "price": ticks[rows], "qty": qty[rows],
                "order_id": records["order_id"][rows], "flags": flags, "src_line": rec_no[rows]}
        cols = insert_clears(cols, run_start & ~opens_with_clear, FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN)
        cols = apply_order(cols, stable_order(cols["ts_local"]))
        src_line = cols.pop("src_line")
        tables.append(events_table(cols, inst, src_line=src_line))
    letters, counts = np.unique(action, return_counts=True)
    stats = {"records": info["records"], "mbo_records": n, "other_records": info["other_records"],
             "events": int(sum(t.num_rows for t in tables)), "rejected": rejected.num_rows,
             "actions": {chr(a): int(c) for a, c in zip(letters.tolist(), counts.tolist())},
             "snapshot": int(((rflags & _F_SNAPSHOT) != 0).sum()), "skipped": int(skip.sum()),
             "dataset": dataset, "schema": "mbo", "version": info["version"], "instrument_notes": notes,
             "compression": info["compression"], "bytes": info["bytes"]}
    return ReadResult(tables=tables, rejected=rejected, source=path, stats=stats)


def _instrument(instrument: Any, venue: str, symbol: str, prices: np.ndarray, path: str, n_streams: int,
                notes: list[str]) -> Instrument:
    """The user's instrument, the known one when the prices fit its tick, else the gcd of the prices."""
    user = pick_instrument(instrument, venue, symbol, path, n_streams)
    if user is not None:
        return user
    known = lookup(venue, symbol, source="databento")
    if known is not None:
        _, off = _to_steps(prices, -9, known.tick_size)
        if not bool(off.any()):
            return known
        notes.append(f"{path}: {venue} {symbol}: prices are not on the built-in tick_size {known.tick_size}; "
                     "using the gcd of the prices")
    nz = np.abs(prices[prices != 0].astype(np.int64))
    g = int(np.gcd.reduce(nz)) if nz.size else 1
    return Instrument(venue=venue, symbol=symbol, tick_size=_decimal_text(g, -9), lot_size="1",
                      source="databento", tick_size_inferred=True)
