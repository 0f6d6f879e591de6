"""LOBSTER (lobsterdata.com) NASDAQ message and orderbook files.

A message file ``SYMBOL_YYYY-MM-DD_start_end_message_N.csv[.gz]`` has no header
and six fields per row: time (seconds after midnight, New York wall clock, up to
9 decimals), type, order id, size (shares), price (dollars x 10000, integer) and
direction (1 buy order, -1 sell order).  Each row is one message, so every event
gets ``FLAG_EOM``.

========  ==========================  ===================================================
type      LOBSTER meaning             event
========  ==========================  ===================================================
1         submission                  ``KIND_ADD`` side = direction, qty = size
2         partial cancellation        ``KIND_CANCEL`` qty = cancelled size
3         deletion                    ``KIND_DELETE``
4         visible execution           ``KIND_EXECUTE`` side = direction (the resting order)
5         hidden execution            ``KIND_TRADE`` | ``FLAG_HIDDEN``, side = -direction (aggressor)
6         cross trade                 ``KIND_TRADE`` | ``FLAG_AUCTION``, side 0
7         trading halt indicator      ``KIND_STATUS`` qty = price field (-1 halt, 0 quoting, 1 trading)
========  ==========================  ===================================================

Units
-----
The default instrument has ``tick_size="0.0001"``: LOBSTER's own price
resolution (the price field is dollars x 10000), so the raw integer *is* the
tick count and hidden or midpoint executions at sub-cent prices stay exact.  A
coarser ``tick_size`` (``"0.01"``) is allowed; prices that are not on it are
then off-grid rows.  ``lot_size`` defaults to ``"1"`` (one share).

Times are parsed from their text as exact integer nanoseconds, never through a
float: ``ts_exch = ts_local = local midnight (UTC ns) + time``.  The time is
read as New York wall-clock seconds after midnight, with the UTC offset of the
trading day taken at noon (EDT, UTC-4, on 2012-06-21), which is right for any
time after 03:00 on the two daylight-saving change days.  ``seq`` is the
0-based row index in the file.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from gpuflow import decimals
from gpuflow.errors import FormatError, ParseError, SchemaError
from gpuflow.io import ReadResult
from gpuflow.io._scan import (
    CsvView,
    RowIssues,
    apply_order,
    check_errors_arg,
    first_line,
    read_source,
    report,
    stable_order,
)
from gpuflow.schema import (
    EMPTY_ASK_PRICE,
    EMPTY_BID_PRICE,
    FLAG_AUCTION,
    FLAG_EOM,
    FLAG_HIDDEN,
    KIND_ADD,
    KIND_CANCEL,
    KIND_DELETE,
    KIND_EXECUTE,
    KIND_STATUS,
    KIND_TRADE,
    Instrument,
    decimal_step,
    events_table,
)

__all__ = [
    "ASK_DUMMY_PRICE",
    "BID_DUMMY_PRICE",
    "LOBSTER_TICK_SIZE",
    "LobsterBook",
    "LobsterName",
    "find_orderbook",
    "parse_lobster_name",
    "read_lobster",
    "read_lobster_orderbook",
]

#: LOBSTER's price resolution: the price field is dollars x 10000.
LOBSTER_TICK_SIZE = "0.0001"
#: Price LOBSTER writes on an empty ask level of the orderbook file (its size is 0).
ASK_DUMMY_PRICE = 9999999999
#: Price LOBSTER writes on an empty bid level of the orderbook file (its size is 0).
BID_DUMMY_PRICE = -9999999999

_NAME_RE = re.compile(r"^(?P<symbol>.+?)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<start>\d+)_(?P<end>\d+)_"
                      r"(?P<kind>message|orderbook)_(?P<levels>\d+)\.csv(?:\.gz|\.zst)?$")
_NUMBER_RE = re.compile(r"^[+-]?\d+(?:\.\d*)?$")
_EXPECTED_LINE = "6 comma-separated numbers: time,type,order_id,size,price,direction"

# type -> event kind (index 0 unused)
_KIND_OF_TYPE = np.array([0, KIND_ADD, KIND_CANCEL, KIND_DELETE, KIND_EXECUTE, KIND_TRADE, KIND_TRADE,
                          KIND_STATUS], dtype=np.uint8)


@dataclass(frozen=True)
class LobsterName:
    """The parts of a LOBSTER file name ``SYMBOL_DATE_start_end_{message|orderbook}_N.csv``."""

    symbol: str
    date: _dt.date
    start_ms: int
    end_ms: int
    kind: str
    levels: int


def parse_lobster_name(path: Any) -> LobsterName | None:
    """Split a LOBSTER file name into its parts; None when it does not follow the pattern."""
    m = _NAME_RE.match(Path(os.fspath(path)).name)
    if m is None:
        return None
    try:
        day = _dt.date.fromisoformat(m["date"])
    except ValueError:
        return None
    return LobsterName(m["symbol"], day, int(m["start"]), int(m["end"]), m["kind"], int(m["levels"]))


def _midnight_utc_ns(day: _dt.date, tz: str) -> int:
    """UTC ns of the wall-clock midnight of ``day`` in ``tz``, using the offset in force at noon."""
    noon = _dt.datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(tz))
    offset = noon.utcoffset()
    assert offset is not None
    days = (day - _dt.date(1970, 1, 1)).days
    return (days * 86400 - offset // _dt.timedelta(seconds=1)) * 1_000_000_000


def _price_step(tick_size: str) -> tuple[int, int]:
    """``tick_size`` in units of the price field ($0.0001) as a parse_steps (mantissa, scale)."""
    mant, scale = decimal_step(tick_size)
    if scale >= 4:
        return mant, scale - 4
    return mant * 10 ** (4 - scale), 0


def _sniff_message(path: str, buf: np.ndarray) -> None:
    """Raise FormatError unless the first line looks like a LOBSTER message row."""
    line = first_line(buf)
    if not line:
        return
    shown = line[:120]
    if "{" in line or "[" in line:
        msg = (f"{path}: expected a LOBSTER message file ({_EXPECTED_LINE}), found a JSON line "
               f"(a Binance or other JSON recording?): {shown!r}")
        raise FormatError(msg)
    fields = line.split(",")
    numeric = all(_NUMBER_RE.match(f.strip()) for f in fields)
    if len(fields) != 6 and numeric and len(fields) % 4 == 0:
        msg = (f"{path}: expected a LOBSTER message file ({_EXPECTED_LINE}), found {len(fields)} numeric "
               f"fields: this looks like a LOBSTER orderbook file with {len(fields) // 4} level(s); "
               "pass the *_message_N file (see find_orderbook for the pairing)")
        raise FormatError(msg)
    if not numeric or len(fields) != 6:
        msg = (f"{path}: expected a LOBSTER message file ({_EXPECTED_LINE}), found {len(fields)} field(s) "
               f"on the first line: {shown!r}")
        raise FormatError(msg)


def read_lobster(message_path: Any, *, instrument: Instrument | None = None, errors: str = "raise",
                 progress: Any = None, venue: str = "nasdaq", symbol: str | None = None,
                 date: str | _dt.date | None = None, tz: str = "America/New_York",
                 tick_size: str | None = None, lot_size: str | None = None) -> ReadResult:
    """Read a LOBSTER message file into the event schema.

    Parameters
    ----------
    message_path : str or path
        ``SYMBOL_YYYY-MM-DD_start_end_message_N.csv`` or ``.csv.gz`` (gzip is
        detected from the content).
    instrument : Instrument, optional
        Overrides the default instrument (venue ``"nasdaq"``, the symbol from the
        file name, ``tick_size="0.0001"``, ``lot_size="1"``, source ``"lobster"``).
    errors : {"raise", "quarantine"}
        What to do with a bad row (see :mod:`gpuflow.io`).
    progress : callable(done, total) or bool, optional
        Progress report; None follows the ``progress`` option (logging).
    venue, symbol : str, optional
        Override the venue and the symbol taken from the file name.
    date : str or datetime.date, optional
        Trading day; required when the file name does not follow LOBSTER's pattern.
    tz : str
        Time zone of the time column (``"America/New_York"``).
    tick_size, lot_size : str, optional
        Override the default steps (``"0.0001"`` and ``"1"``).

    Returns
    -------
    ReadResult
        One events table (host, pyarrow) with ``src_line``; ``stats`` holds
        ``rows``, ``blank_lines``, ``rejected`` and ``types`` (count per LOBSTER type).

    Raises
    ------
    FormatError
        The file is not a LOBSTER message file (an orderbook file, a JSON recording, a CSV with a header).
    ParseError
        Truncated gzip, a malformed row (``errors="raise"``), or no date known.
    SchemaError
        An off-grid price or size, or a value out of range (``errors="raise"``).

    Examples
    --------
    >>> res = read_lobster("AAPL_2012-06-21_34200000_57600000_message_1.csv.gz")  # doctest: +SKIP
    >>> res.tables[0].num_rows  # doctest: +SKIP
    118497
    """
    check_errors_arg(errors)
    path = os.fspath(message_path)
    name = parse_lobster_name(path)
    if name is not None and name.kind == "orderbook":
        msg = (f"{path}: expected a LOBSTER message file, found an orderbook file (by its name); "
               "read it with read_lobster_orderbook, or pass the *_message_N file")
        raise FormatError(msg)
    if date is None and name is None:
        msg = (f"{path}: cannot tell the trading day: the name does not follow LOBSTER's pattern "
               "SYMBOL_YYYY-MM-DD_start_end_message_N.csv; pass date='YYYY-MM-DD' (and symbol=...)")
        raise ParseError(msg)
    if date is None:
        day = name.date  # type: ignore[union-attr]  # name is not None here
    elif isinstance(date, _dt.date):
        day = date
    else:
        try:
            day = _dt.date.fromisoformat(str(date))
        except ValueError:
            msg = f"date={date!r}: expected 'YYYY-MM-DD'"
            raise ParseError(msg) from None
    if instrument is None:
        sym = symbol or (name.symbol if name is not None else None)
        if not sym:
            msg = f"{path}: cannot tell the symbol from the file name; pass symbol=..."
            raise ParseError(msg)
        instrument = Instrument(venue=venue, symbol=sym, tick_size=tick_size or LOBSTER_TICK_SIZE,
                                lot_size=lot_size or "1", source="lobster")
    elif tick_size is not None or lot_size is not None:
        instrument = instrument.with_(tick_size=tick_size or instrument.tick_size,
                                      lot_size=lot_size or instrument.lot_size)

    buf, info = read_source(path)
    _sniff_message(path, buf)
    view = CsvView(path, buf, 6)
    n = view.n
    report(progress, path, "lines", n, n)

    t_ns, st_t = view.parse(0, "0.000000001")
    typ, st_typ = view.parse(1, "1")
    oid, st_oid = view.parse(2, "1")
    size, st_size = view.parse(3, instrument.lot_size)
    praw, st_praw = view.parse(4, "1")
    price, st_price = view.parse(4, _price_step(instrument.tick_size))
    dirn, st_dir = view.parse(5, "1")

    def found(j: int) -> Any:
        return lambda i: view.text(i, j)

    iss = RowIssues(path, n, view.line, view.raw)
    iss.add(view.nf != 6, "field_count", "line", _EXPECTED_LINE,
            lambda i: f"{int(view.nf[i])} field(s): {view.raw(i)}", ParseError)
    iss.add_status(st_t, "time", found(0), expected="seconds after midnight as a decimal number",
                   off_grid_rule="bad_timestamp", off_grid_expected="at most 9 decimals (ns resolution)",
                   col=1)
    iss.add_status(st_typ, "type", found(1), expected="an integer message type 1-7",
                   off_grid_rule="bad_value", off_grid_expected="an integer message type 1-7", col=2)
    iss.add_status(st_oid, "order_id", found(2), expected="an integer order id",
                   off_grid_rule="bad_value", off_grid_expected="an integer order id", col=3)
    iss.add_status(st_size, "size", found(3), expected="a number of shares",
                   off_grid_rule="off_grid_size",
                   off_grid_expected=f"a whole number of lots (lot_size={instrument.lot_size})", col=4)
    is_status = (typ == 7) & (st_typ == decimals.OK)
    iss.add_status(st_praw, "price", found(4), expected="an integer price (dollars x 10000)",
                   off_grid_rule="bad_value", off_grid_expected="-1, 0 or 1 on a type-7 row",
                   where=is_status, col=5)
    iss.add_status(st_price, "price", found(4), expected="an integer price (dollars x 10000)",
                   off_grid_rule="off_grid_price",
                   off_grid_expected=(f"a whole number of ticks (tick_size={instrument.tick_size}; the field "
                                      "is dollars x 10000)"),
                   where=~is_status, col=5)
    iss.add_status(st_dir, "direction", found(5), expected="an integer direction 1 or -1",
                   off_grid_rule="bad_value", off_grid_expected="an integer direction 1 or -1", col=6)
    iss.add((t_ns < 0), "bad_value", "time", "a non-negative time", found(0), SchemaError, 1)
    iss.add((typ < 1) | (typ > 7), "bad_value", "type", "a message type 1-7", found(1), SchemaError, 2)
    iss.add(oid < 0, "bad_value", "order_id", "a non-negative order id", found(2), SchemaError, 3)
    iss.add(size < 0, "bad_value", "size", "a non-negative size", found(3), SchemaError, 4)
    iss.add(~is_status & (price <= 0), "bad_value", "price", "a positive price", found(4), SchemaError, 5)
    iss.add(is_status & ((praw < -1) | (praw > 1)), "bad_value", "price",
            "-1 (halt), 0 (quoting) or 1 (trading) on a type-7 row", found(4), SchemaError, 5)
    iss.add((dirn != 1) & (dirn != -1), "bad_value", "direction", "1 (buy) or -1 (sell)", found(5),
            SchemaError, 6)
    keep, rejected = iss.resolve(errors)

    rows = np.flatnonzero(keep)
    typ_k = typ[rows]
    dir_k = dirn[rows]
    side = np.where(typ_k == 5, -dir_k, np.where(typ_k >= 6, 0, dir_k))
    flags = np.full(rows.size, FLAG_EOM, dtype=np.uint16)
    flags[typ_k == 5] |= FLAG_HIDDEN
    flags[typ_k == 6] |= FLAG_AUCTION
    ts = _midnight_utc_ns(day, tz) + t_ns[rows]
    cols = {
        "ts_local": ts,
        "ts_exch": ts,
        "seq": rows.astype(np.int64),
        "kind": _KIND_OF_TYPE[typ_k],
        "side": side,
        "price": np.where(typ_k == 7, 0, price[rows]),
        "qty": np.where(typ_k == 7, praw[rows], size[rows]),
        "order_id": oid[rows],
        "flags": flags,
        "src_line": view.line[rows],
    }
    cols = apply_order(cols, stable_order(ts))
    src_line = cols.pop("src_line")
    table = events_table(cols, instrument, src_line=src_line)
    counts = np.bincount(typ_k, minlength=8)
    stats = {"rows": n, "events": int(rows.size), "blank_lines": view.n_blank, "rejected": rejected.num_rows,
             "types": {int(k): int(counts[k]) for k in range(1, 8) if counts[k]},
             "compression": info["compression"], "bytes": info["bytes"]}
    return ReadResult(tables=[table], rejected=rejected, source=path, stats=stats)


@dataclass(frozen=True)
class LobsterBook:
    """The top-N book after each message, from a LOBSTER orderbook file.

    Attributes
    ----------
    ask_price, bid_price : ndarray[int64], host, shape (rows, levels)
        Level prices in ticks of ``instrument.tick_size`` (with the default
        ``"0.0001"`` the raw integer is the tick count).  Empty levels keep
        LOBSTER's dummy prices as they are: :data:`ASK_DUMMY_PRICE`
        (``9999999999``) on the ask side and :data:`BID_DUMMY_PRICE`
        (``-9999999999``) on the bid side, with size 0, whatever the tick size.
    ask_size, bid_size : ndarray[int64], host, shape (rows, levels)
        Level sizes in lots.
    levels : int
    instrument : Instrument
    source : str
    """

    ask_price: NDArray[np.int64]
    ask_size: NDArray[np.int64]
    bid_price: NDArray[np.int64]
    bid_size: NDArray[np.int64]
    levels: int
    instrument: Instrument
    source: str = ""

    @property
    def rows(self) -> int:
        return int(self.ask_price.shape[0])

    def as_dict(self) -> dict[str, NDArray[np.int64]]:
        return {"ask_price": self.ask_price, "ask_size": self.ask_size,
                "bid_price": self.bid_price, "bid_size": self.bid_size}


def read_lobster_orderbook(orderbook_path: Any, levels: int | None = None, *, venue: str = "nasdaq",
                           symbol: str | None = None, tick_size: str = LOBSTER_TICK_SIZE,
                           lot_size: str = "1", empty_prices: str = "lobster") -> LobsterBook:
    """Read a LOBSTER orderbook file (row i = the top-N book after message i).

    Parameters
    ----------
    orderbook_path : str or path
        ``SYMBOL_YYYY-MM-DD_start_end_orderbook_N.csv[.gz]``.
    levels : int, optional
        Number of levels N; default from the file name, else from the column count (4 N).
    venue, symbol : str, optional
        Instrument names (symbol from the file name by default).
    tick_size, lot_size : str
        Steps of the returned integers (``"0.0001"`` and ``"1"``).
    empty_prices : {"lobster", "schema"}
        ``"lobster"`` (default) keeps LOBSTER's dummy prices of empty levels
        (+/-9999999999) as they are; ``"schema"`` replaces them with
        :data:`gpuflow.schema.EMPTY_ASK_PRICE` / ``EMPTY_BID_PRICE``, the sentinels
        of gpuflow's own top-N book output, for direct comparison.

    Returns
    -------
    LobsterBook
        int64 arrays of shape (rows, N).

    Raises
    ------
    FormatError
        The file is a message file or has a column count that is not 4 N.
    ParseError, SchemaError
        A malformed row, a non-integer field or an off-grid price (the whole file is
        an oracle, so there is no quarantine).
    """
    path = os.fspath(orderbook_path)
    if empty_prices not in ("lobster", "schema"):
        msg = f"empty_prices={empty_prices!r}: expected 'lobster' or 'schema'"
        raise SchemaError(msg)
    name = parse_lobster_name(path)
    if name is not None and name.kind == "message":
        msg = (f"{path}: expected a LOBSTER orderbook file, found a message file (by its name); "
               "read it with read_lobster")
        raise FormatError(msg)
    buf, _ = read_source(path)
    line = first_line(buf)
    ncols = len(line.split(",")) if line else 0
    if "{" in line or (ncols and "." in line.split(",")[0]):
        msg = (f"{path}: expected a LOBSTER orderbook file (4 N integer columns: ask px, ask size, bid px, "
               f"bid size per level), found {line[:120]!r}")
        raise FormatError(msg)
    if levels is None:
        levels = name.levels if name is not None else max(ncols // 4, 1)
    if ncols and ncols != 4 * levels:
        msg = (f"{path}: expected a LOBSTER orderbook file with {levels} level(s) = {4 * levels} columns, "
               f"found {ncols} columns on the first line")
        raise FormatError(msg)
    instrument = Instrument(venue=venue, symbol=symbol or (name.symbol if name is not None else "UNKNOWN"),
                            tick_size=tick_size, lot_size=lot_size, source="lobster")
    view = CsvView(path, buf, 4 * levels)
    bad = np.flatnonzero(view.nf != 4 * levels)
    if bad.size:
        i = int(bad[0])
        msg = (f"{path}: line {int(view.line[i])}: expected {4 * levels} comma-separated integers, "
               f"found {int(view.nf[i])} field(s): {view.raw(i)[:200]!r}")
        raise ParseError(msg)
    pstep = _price_step(tick_size)
    names = ("ask_price", "ask_size", "bid_price", "bid_size")
    ncols = 4 * levels
    # Prices as raw integers (dollars x 10000) and sizes in lots, all columns in one pass.
    vals, st = view.parse_many(list(range(ncols)), ["1" if k % 2 == 0 else lot_size for k in range(ncols)])
    is_price = (np.arange(ncols) % 2 == 0)[None, :]
    if pstep != (1, 0):
        # Dummy prices of empty levels stay as they are; the others go to ticks.
        dummy = is_price & (st == decimals.OK) & ((vals == ASK_DUMMY_PRICE) | (vals == BID_DUMMY_PRICE))
        pcols = list(range(0, ncols, 2))
        ticks, st_ticks = view.parse_many(pcols, [pstep] * len(pcols))
        conv = np.zeros_like(dummy)
        conv[:, pcols] = True
        conv &= ~dummy & (st == decimals.OK)
        vals[:, pcols] = np.where(conv[:, pcols], ticks, vals[:, pcols])
        st[:, pcols] = np.where(conv[:, pcols], st_ticks, st[:, pcols])
    bad = np.argwhere(st != decimals.OK)
    if bad.size:
        i, j = (int(x) for x in bad[0])
        key, lev = names[j % 4], j // 4
        expected = (f"an integer price (dollars x 10000) on the grid of tick_size={tick_size}"
                    if j % 2 == 0 else f"a whole number of lots (lot_size={lot_size})")
        exc = SchemaError if st[i, j] == decimals.OFF_GRID else ParseError
        msg = (f"{path}: line {int(view.line[i])}: field {key!r} level {lev + 1} (column {j + 1}): "
               f"expected {expected}, found {view.text(i, j)!r}")
        raise exc(msg)
    out = {key: np.ascontiguousarray(vals[:, k::4]) for k, key in enumerate(names)}
    if empty_prices == "schema":
        out["ask_price"][out["ask_price"] == ASK_DUMMY_PRICE] = EMPTY_ASK_PRICE
        out["bid_price"][out["bid_price"] == BID_DUMMY_PRICE] = EMPTY_BID_PRICE
    return LobsterBook(out["ask_price"], out["ask_size"], out["bid_price"], out["bid_size"], levels,
                       instrument, path)


def find_orderbook(message_path: Any) -> Path:
    """The orderbook file beside a LOBSTER message file.

    Returns ``..._orderbook_N.csv`` or ``..._orderbook_N.csv.gz`` (whichever exists,
    preferring the one compressed like the message file).

    Raises
    ------
    FormatError
        The name is not a LOBSTER message file name.
    FileNotFoundError
        Neither candidate exists.
    """
    p = Path(os.fspath(message_path))
    name = parse_lobster_name(p)
    if name is None or name.kind != "message":
        msg = f"{p}: not a LOBSTER message file name (SYMBOL_YYYY-MM-DD_start_end_message_N.csv[.gz])"
        raise FormatError(msg)
    stem = p.name.split(".csv")[0].replace(f"_message_{name.levels}", f"_orderbook_{name.levels}")
    suffix = p.name[len(p.name.split(".csv")[0]):]
    cands = [p.with_name(stem + s) for s in dict.fromkeys([suffix, ".csv", ".csv.gz"])]
    for c in cands:
        if c.is_file():
            return c
    msg = f"{p}: no orderbook file beside it; looked for {[str(c) for c in cands]}"
    raise FileNotFoundError(msg)
