"""tardis.dev CSV files (``incremental_book_L2``, ``trades``, ``quotes``, ``book_snapshot_N``).

The data type is detected from the header (``data_type=`` overrides it);
timestamps are microseconds since the epoch and become ns exactly (the text is
parsed as a whole number of 0.001 us).  The venue is tardis's exchange name
(``"binance-futures"``, ``"deribit"``) and there is one table per
(exchange, symbol) in the file, in order of first appearance.  ``seq`` is the
0-based data-row index (trades: the numeric trade id when every id of the
stream is an integer).  When ``timestamp`` is empty the row takes
``local_timestamp`` and ``FLAG_TS_EXCH_MISSING``.  Instrument names may not
hold ``/`` or ``=`` (they name store partitions), so a symbol such as kraken's
``XBT/USD`` becomes ``XBT-USD``, noted in ``stats["instrument_notes"]``.

================================  ================================================================
data type                         events
================================  ================================================================
``incremental_book_L2``           ``KIND_SET`` per row (``amount`` = new level size, 0 deletes);
                                  ``is_snapshot=true`` rows are ``KIND_SNAPSHOT`` | FLAG_SNAPSHOT.
                                  A snapshot run (consecutive snapshot rows of a stream starting
                                  after a non-snapshot row or at the start) is preceded by a
                                  ``KIND_CLEAR`` row (FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN); its last
                                  row has FLAG_SNAPSHOT_END.  Rows sharing (timestamp,
                                  local_timestamp) are one message: FLAG_EOM on the group's last row,
                                  except inside a snapshot run, where only the run's last row (or
                                  the end of its group) is a consistent book.
``trades``                        ``KIND_TRADE``, side = aggressor (buy +1, sell -1, unknown 0),
                                  FLAG_EOM on every row.
``quotes``                        two ``KIND_BBO`` rows per line: bid (+1) then ask (-1, FLAG_EOM).
                                  An empty side (price and amount both empty) gives price 0, qty 0.
``book_snapshot_N``               per line ``KIND_CLEAR`` (FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN),
                                  then ``KIND_SNAPSHOT`` rows for bids[0..N-1] and asks[0..N-1]
                                  (FLAG_SNAPSHOT; empty levels are skipped); the last row has
                                  FLAG_SNAPSHOT_END | FLAG_EOM.
================================  ================================================================

Instrument
----------
An explicit ``instrument`` (or ``tick_size=`` / ``lot_size=``) is used as given
and off-grid prices are errors.  Otherwise :func:`gpuflow.instruments.lookup`
is tried; the built-in table holds today's steps, so when the file's prices or
sizes are not on that grid (older data: Binance futures BTCUSDT had a 0.01 tick
in 2020, 0.10 now) the reader falls back to inference and says so in
``stats["instrument_notes"]`` and the log.  Inference takes the finest decimal
step present in the stream's prices and sizes and sets
``tick_size_inferred`` / ``lot_size_inferred``.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gpuflow import decimals
from gpuflow.errors import FormatError, ParseError, SchemaError
from gpuflow.instruments import lookup
from gpuflow.io import ReadResult
from gpuflow.io._scan import (
    CsvView,
    RowIssues,
    _line_bounds,
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
    KIND_BBO,
    KIND_CLEAR,
    KIND_SET,
    KIND_SNAPSHOT,
    KIND_TRADE,
    Instrument,
    decimal_step,
    events_table,
)

__all__ = ["DATA_TYPES", "detect_data_type", "read_tardis"]

_log = logging.getLogger("gpuflow.io")

_BASE = ["exchange", "symbol", "timestamp", "local_timestamp"]
#: Supported data types and their columns (book_snapshot_N: see :func:`_snapshot_columns`).
DATA_TYPES: dict[str, list[str]] = {
    "incremental_book_L2": _BASE + ["is_snapshot", "side", "price", "amount"],
    "trades": _BASE + ["id", "side", "price", "amount"],
    "quotes": _BASE + ["ask_amount", "ask_price", "bid_price", "bid_amount"],
    "book_snapshot_N": _BASE + ["asks[i].price", "asks[i].amount", "bids[i].price", "bids[i].amount"],
}
_NAME_TYPE_RE = re.compile(r"(incremental_book_L2|trades|quotes|book_snapshot_(\d+))")
_SNAP_COL_RE = re.compile(r"^(asks|bids)\[(\d+)\]\.(price|amount)$")


def _snapshot_columns(n: int) -> list[str]:
    cols = list(_BASE)
    for i in range(n):
        cols += [f"asks[{i}].price", f"asks[{i}].amount", f"bids[{i}].price", f"bids[{i}].amount"]
    return cols


def detect_data_type(header: list[str], path: str = "") -> str:
    """The tardis data type of a CSV from its header (then its file name).

    Returns ``"incremental_book_L2"``, ``"trades"``, ``"quotes"`` or ``"book_snapshot_<N>"``.

    Raises
    ------
    FormatError
        Neither the header nor the name says which supported data type it is.
    """
    cols = set(header)
    if "is_snapshot" in cols:
        return "incremental_book_L2"
    levels = [int(m[2]) for m in map(_SNAP_COL_RE.match, header) if m]
    if levels:
        return f"book_snapshot_{max(levels) + 1}"
    if "ask_price" in cols or "bid_price" in cols or "ask_amount" in cols or "bid_amount" in cols:
        return "quotes"
    if "id" in cols:
        return "trades"
    m = _NAME_TYPE_RE.search(Path(path).name)
    if m:
        return m[1]
    msg = (f"{path}: cannot tell the tardis data type from the header {header} or the file name; "
           f"supported: {sorted(DATA_TYPES)}; pass data_type=...")
    raise FormatError(msg)


def _header(path: str, buf: np.ndarray) -> tuple[list[str], tuple[np.ndarray, np.ndarray]]:
    bounds = _line_bounds(buf)
    starts, ends = bounds
    if starts.size == 0:
        msg = f"{path}: empty file; expected a tardis.dev CSV with a header line"
        raise FormatError(msg)
    line = buf[int(starts[0]):int(ends[0])].tobytes()
    if line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    text = line.decode("utf-8", "replace").strip()
    cols = [c.strip() for c in text.split(",")]
    if not {"exchange", "symbol"} & set(cols) or not text:
        shown = text[:120]
        if "{" in text:
            what = "a JSON line (a Binance or other JSON recording?)"
        elif re.match(r"^[+-]?\d", text):
            what = "a line of numbers and no header (a LOBSTER file?)"
        else:
            what = "a header without exchange/symbol columns"
        msg = (f"{path}: expected a tardis.dev CSV whose header starts "
               f"{','.join(_BASE)}, found {what}: {shown!r}")
        raise FormatError(msg)
    return cols, bounds


def read_tardis(path: Any, *, instrument: Instrument | Mapping[Any, Instrument] | None = None,
                errors: str = "raise", progress: Any = None, data_type: str | None = None,
                tick_size: str | None = None, lot_size: str | None = None) -> ReadResult:
    """Read a tardis.dev CSV (plain or gzip) into the event schema.

    Parameters
    ----------
    path : str or path
    instrument : Instrument or mapping, optional
        One Instrument (one stream in the file) or a mapping keyed by symbol or
        (venue, symbol).  Default: the built-in table, else inferred (see the module docs).
    errors : {"raise", "quarantine"}
    progress : callable(done, total) or bool, optional
    data_type : str, optional
        ``"incremental_book_L2"``, ``"trades"``, ``"quotes"`` or ``"book_snapshot_N"``;
        detected from the header when None.
    tick_size, lot_size : str, optional
        Steps for every stream of the file (not marked inferred).

    Returns
    -------
    ReadResult
        One events table per (exchange, symbol), with ``src_line``; ``stats`` has
        ``data_type``, ``rows``, ``streams`` and ``instrument_notes``.

    Raises
    ------
    FormatError
        Not a tardis CSV, or an unsupported data type.
    ParseError
        Truncated gzip, a missing column (named, with the columns found), or a
        malformed row with ``errors="raise"``.
    SchemaError
        An off-grid price or size, or a bad value with ``errors="raise"``.
    """
    check_errors_arg(errors)
    path = os.fspath(path)
    buf, info = read_source(path)
    header, bounds = _header(path, buf)
    dtype = data_type if data_type is not None else detect_data_type(header, path)
    if dtype.startswith("book_snapshot"):
        m = re.fullmatch(r"book_snapshot(?:_(\d+))?", dtype)
        if m is None:
            msg = f"data_type={dtype!r}: expected one of {sorted(DATA_TYPES)}"
            raise FormatError(msg)
        n_levels = int(m[1]) if m[1] else len([c for c in header if _SNAP_COL_RE.match(c)]) // 4
        required = _snapshot_columns(n_levels)
        dtype = f"book_snapshot_{n_levels}"
    elif dtype in DATA_TYPES:
        n_levels = 0
        required = DATA_TYPES[dtype]
    else:
        msg = f"data_type={dtype!r}: expected one of {sorted(DATA_TYPES)}"
        raise FormatError(msg)
    missing = [c for c in required if c not in header]
    if missing:
        msg = (f"{path}: line 1 (header): missing column(s) {missing} for tardis {dtype}; "
               f"expected columns {required}, found {header}")
        raise ParseError(msg)
    ix = {c: header.index(c) for c in required}

    view = CsvView(path, buf, len(header), skip_lines=1, bounds=bounds)
    n = view.n
    iss = RowIssues(path, n, view.line, view.raw)
    iss.add(view.nf != len(header), "field_count", "line",
            f"{len(header)} comma-separated fields as in the header",
            lambda i: f"{int(view.nf[i])} field(s): {view.raw(i)}", ParseError)

    def found(j: int) -> Any:
        return lambda i: view.text(i, j)

    def col_no(name: str) -> int:
        return ix[name] + 1

    # ---- timestamps
    ts, st_ts = view.parse(ix["timestamp"], "0.001")
    lts, st_lts = view.parse(ix["local_timestamp"], "0.001")
    ts_missing = st_ts == decimals.EMPTY
    ts = np.where(ts_missing, lts, ts)
    for name, st in (("timestamp", np.where(ts_missing, decimals.OK, st_ts)), ("local_timestamp", st_lts)):
        iss.add_status(st, name, found(ix[name]), expected="microseconds since the epoch",
                       off_grid_rule="bad_timestamp", off_grid_expected="at most 3 decimals (ns resolution)",
                       col=col_no(name))

    # ---- streams
    code, keys = view.keys([ix["exchange"], ix["symbol"]])
    for name in ("exchange", "symbol"):
        empty = view.match(ix[name], [b""]) == 0
        iss.add(empty, "missing_value", name, f"a non-empty {name} name", found(ix[name]), ParseError,
                col_no(name))

    # ---- (price, amount) column pairs
    if dtype == "quotes":
        pairs = [("bid_price", "bid_amount"), ("ask_price", "ask_amount")]
    elif dtype.startswith("book_snapshot"):
        pairs = [(f"{s}[{i}].price", f"{s}[{i}].amount") for s in ("bids", "asks") for i in range(n_levels)]
    else:
        pairs = [("price", "amount")]
    optional = dtype == "quotes" or dtype.startswith("book_snapshot")

    # ---- instruments per stream
    steps_p: list[tuple[int, int]] = []
    steps_q: list[tuple[int, int]] = []
    instruments: list[Instrument | None] = []
    notes: list[str] = []
    for g, (venue, symbol) in enumerate(keys):
        if not venue or not symbol:  # rows rejected above (missing_value)
            instruments.append(None)
            steps_p.append((1, 0))
            steps_q.append((1, 0))
            continue
        safe_venue, safe_symbol = _safe_name(venue), _safe_name(symbol)
        if (safe_venue, safe_symbol) != (venue, symbol):
            notes.append(f"{path}: {venue} {symbol}: '/' and '=' are not allowed in instrument names "
                         f"(store partitions); named {safe_venue} {safe_symbol}")
        rows = np.flatnonzero(code == g)
        inst = _stream_instrument(view, pairs, ix, rows, instrument, safe_venue, safe_symbol, path,
                                  len(keys), tick_size, lot_size, notes)
        instruments.append(inst)
        steps_p.append(decimal_step(inst.tick_size))
        steps_q.append(decimal_step(inst.lot_size))
    for note in notes:
        _log.warning("%s", note)

    ticks = " or ".join(dict.fromkeys(i.tick_size for i in instruments if i is not None))
    lots = " or ".join(dict.fromkeys(i.lot_size for i in instruments if i is not None))
    prices: list[np.ndarray] = []
    amounts: list[np.ndarray] = []
    present: list[np.ndarray] = []
    for pname, aname in pairs:
        p, st_p = view.parse(ix[pname], steps_p, group=code)
        a, st_a = view.parse(ix[aname], steps_q, group=code)
        if optional:
            absent = (st_p == decimals.EMPTY) & (st_a == decimals.EMPTY)
            st_p = np.where(absent, decimals.OK, st_p)
            st_a = np.where(absent, decimals.OK, st_a)
        else:
            absent = np.zeros(n, dtype=np.bool_)
        iss.add_status(st_p, pname, found(ix[pname]), expected="a decimal price",
                       off_grid_rule="off_grid_price",
                       off_grid_expected=f"a whole number of ticks (tick_size={ticks})", col=col_no(pname))
        iss.add_status(st_a, aname, found(ix[aname]), expected="a decimal amount",
                       off_grid_rule="off_grid_size",
                       off_grid_expected=f"a whole number of lots (lot_size={lots})", col=col_no(aname))
        iss.add(~absent & (a < 0), "bad_value", aname, "a non-negative amount", found(ix[aname]), SchemaError,
                col_no(aname))
        prices.append(np.where(absent, 0, p))
        amounts.append(np.where(absent, 0, a))
        present.append(~absent)

    # ---- type-specific fields
    extra: dict[str, np.ndarray] = {}
    if dtype == "incremental_book_L2":
        snap = view.match(ix["is_snapshot"], [b"false", b"true", b"False", b"True", b"FALSE", b"TRUE"])
        iss.add(snap < 0, "bad_value", "is_snapshot", "true or false", found(ix["is_snapshot"]), ParseError,
                col_no("is_snapshot"))
        extra["snap"] = (snap >= 0) & (snap % 2 == 1)
        side = view.match(ix["side"], [b"bid", b"ask"])
        iss.add(side < 0, "bad_value", "side", "bid or ask", found(ix["side"]), ParseError, col_no("side"))
        extra["side"] = np.where(side == 0, 1, -1).astype(np.int8)
    elif dtype == "trades":
        side = view.match(ix["side"], [b"buy", b"sell", b"unknown", b""])
        iss.add(side < 0, "bad_value", "side", "buy, sell or unknown", found(ix["side"]), ParseError,
                col_no("side"))
        extra["side"] = np.select([side == 0, side == 1], [1, -1], 0).astype(np.int8)
        tid, st_id = view.parse(ix["id"], "1")
        extra["id"] = tid
        extra["id_ok"] = st_id == decimals.OK
    keep, rejected = iss.resolve(errors)
    report(progress, path, "rows", n, n)

    tables = []
    stream_stats = []
    for g, inst in enumerate(instruments):
        if inst is None:
            continue
        rows = np.flatnonzero(keep & (code == g))
        flags0 = np.where(ts_missing[rows], FLAG_TS_EXCH_MISSING, 0).astype(np.uint16)
        base = {"ts_exch": ts[rows], "ts_local": lts[rows], "seq": rows.astype(np.int64),
                "src_line": view.line[rows], "flags": flags0}
        if dtype == "incremental_book_L2":
            cols = _build_l2(base, extra["snap"][rows], extra["side"][rows], prices[0][rows],
                             amounts[0][rows])
        elif dtype == "trades":
            all_ids = np.flatnonzero(code == g)
            if all_ids.size and bool(extra["id_ok"][all_ids].all()):
                base["seq"] = extra["id"][rows]
            cols = dict(base, kind=np.full(rows.size, KIND_TRADE, np.uint8), side=extra["side"][rows],
                        price=prices[0][rows], qty=amounts[0][rows])
            cols["flags"] = cols["flags"] | np.uint16(FLAG_EOM)
        elif dtype == "quotes":
            cols = _build_quotes(base, [p[rows] for p in prices], [a[rows] for a in amounts])
        else:
            cols = _build_snapshots(base, np.stack([p[rows] for p in prices], axis=1),
                                    np.stack([a[rows] for a in amounts], axis=1),
                                    np.stack([q[rows] for q in present], axis=1), n_levels)
        cols = apply_order(cols, stable_order(cols["ts_local"]))
        src_line = cols.pop("src_line")
        tables.append(events_table(cols, inst, src_line=src_line))
        stream_stats.append({"venue": inst.venue, "symbol": inst.symbol, "rows": int(rows.size),
                             "events": int(src_line.size)})
    stats = {"data_type": dtype, "rows": n, "blank_lines": view.n_blank, "rejected": rejected.num_rows,
             "streams": stream_stats, "instrument_notes": notes, "compression": info["compression"],
             "bytes": info["bytes"]}
    return ReadResult(tables=tables, rejected=rejected, source=path, stats=stats)


def _stream_instrument(view: CsvView, pairs: list[tuple[str, str]], ix: dict[str, int], rows: np.ndarray,
                       instrument: Any, venue: str, symbol: str, path: str, n_streams: int,
                       tick_size: str | None, lot_size: str | None, notes: list[str]) -> Instrument:
    """The instrument of one stream: the user's, the known one if the data fits it, else inferred."""
    user = pick_instrument(instrument, venue, symbol, path, n_streams)
    if user is not None:
        if tick_size or lot_size:
            user = user.with_(tick_size=tick_size or user.tick_size, lot_size=lot_size or user.lot_size)
        return user
    known = lookup(venue, symbol, source="tardis")
    if known is not None and known.symbol != symbol:
        known = known.with_(symbol=symbol)
    tick = tick_size
    lot = lot_size
    tick_inf = lot_inf = False
    if tick is None:
        if known is not None and _fits(view, [ix[p] for p, _ in pairs], rows, known.tick_size):
            tick = known.tick_size
        else:
            tick = _finest(view, [ix[p] for p, _ in pairs], rows)
            tick_inf = True
            if known is not None:
                notes.append(f"{path}: {venue} {symbol}: prices are not on the built-in tick_size "
                             f"{known.tick_size} (the venue changed it since?); using the finest step in the "
                             f"file, {tick}")
    if lot is None:
        if known is not None and _fits(view, [ix[a] for _, a in pairs], rows, known.lot_size):
            lot = known.lot_size
        else:
            lot = _finest(view, [ix[a] for _, a in pairs], rows)
            lot_inf = True
            if known is not None:
                notes.append(f"{path}: {venue} {symbol}: amounts are not on the built-in lot_size "
                             f"{known.lot_size}; using the finest step in the file, {lot}")
    return Instrument(venue=venue, symbol=symbol, tick_size=tick, lot_size=lot, source="tardis",
                      tick_size_inferred=tick_inf, lot_size_inferred=lot_inf)


def _safe_name(name: str) -> str:
    return name.replace("/", "-").replace("=", "-")


def _fits(view: CsvView, cols: list[int], rows: np.ndarray, step: str) -> bool:
    for j in cols:
        _, st = view.parse(j, step, rows=rows)
        if bool((st == decimals.OFF_GRID).any()):
            return False
    return True


def _finest(view: CsvView, cols: list[int], rows: np.ndarray) -> str:
    best = "1"
    for j in cols:
        s = view.finest_step(j, rows)
        if len(s) > len(best):
            best = s
    return best


def _build_l2(base: dict[str, np.ndarray], snap: np.ndarray, side: np.ndarray, price: np.ndarray,
              qty: np.ndarray) -> dict[str, np.ndarray]:
    """Level sets and snapshot runs (with a CLEAR row before each run) of one stream."""
    n = snap.size
    ts, lts = base["ts_exch"], base["ts_local"]
    prev_snap = np.r_[False, snap[:-1]]
    next_snap = np.r_[snap[1:], False]
    run_start = snap & ~prev_snap
    run_end = snap & ~next_snap
    same_next = (ts[1:] == ts[:-1]) & (lts[1:] == lts[:-1])
    group_end = np.r_[~same_next, True] if n else np.zeros(0, np.bool_)
    eom = group_end & ~(snap & ~run_end)
    flags = base["flags"].copy()
    flags[snap] |= FLAG_SNAPSHOT
    flags[run_end] |= FLAG_SNAPSHOT_END
    flags[eom] |= FLAG_EOM
    cols = dict(base, flags=flags, kind=np.where(snap, KIND_SNAPSHOT, KIND_SET).astype(np.uint8), side=side,
                price=price, qty=qty)
    return insert_clears(cols, run_start, FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN)


def _build_quotes(base: dict[str, np.ndarray], prices: list[np.ndarray], qtys: list[np.ndarray]
                  ) -> dict[str, np.ndarray]:
    """Two BBO rows per line: bid (+1) then ask (-1, FLAG_EOM)."""
    n = base["ts_local"].size
    out = {k: np.repeat(v, 2) for k, v in base.items()}
    out["kind"] = np.full(2 * n, KIND_BBO, np.uint8)
    out["side"] = np.tile(np.array([1, -1], np.int8), n)
    price = np.empty(2 * n, np.int64)
    qty = np.empty(2 * n, np.int64)
    price[0::2], price[1::2] = prices[0], prices[1]
    qty[0::2], qty[1::2] = qtys[0], qtys[1]
    out["price"], out["qty"] = price, qty
    out["flags"][1::2] |= FLAG_EOM
    return out


def _build_snapshots(base: dict[str, np.ndarray], price: np.ndarray, qty: np.ndarray, present: np.ndarray,
                     n_levels: int) -> dict[str, np.ndarray]:
    """Per line: CLEAR, then bid and ask levels that are present; the last row ends the snapshot."""
    n = base["ts_local"].size
    width = 1 + 2 * n_levels
    mask = np.concatenate([np.ones((n, 1), np.bool_), present], axis=1)
    kind = np.full((n, width), KIND_SNAPSHOT, np.uint8)
    kind[:, 0] = KIND_CLEAR
    side = np.zeros((n, width), np.int8)
    side[:, 1:1 + n_levels] = 1
    side[:, 1 + n_levels:] = -1
    flags = np.repeat(base["flags"][:, None] | np.uint16(FLAG_SNAPSHOT), width, axis=1)
    flags[:, 0] |= FLAG_SNAPSHOT_BEGIN
    last = width - 1 - np.argmax(mask[:, ::-1], axis=1)
    flags[np.arange(n), last] |= FLAG_SNAPSHOT_END | FLAG_EOM
    px = np.concatenate([np.zeros((n, 1), np.int64), price], axis=1)
    q = np.concatenate([np.zeros((n, 1), np.int64), qty], axis=1)
    flat = mask.ravel()
    out = {k: np.repeat(v, width)[flat] for k, v in base.items() if k != "flags"}
    out.update(kind=kind.ravel()[flat], side=side.ravel()[flat], price=px.ravel()[flat], qty=q.ravel()[flat],
               flags=flags.ravel()[flat])
    return out
