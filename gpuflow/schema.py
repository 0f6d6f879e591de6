"""The event schema: the contract between every gpuflow stage.

One row per market event, columnar, sorted by ``ts_local`` (ties keep source
order) within a partition.  Prices are integer ticks and sizes integer lots of
the instrument, whose metadata (venue, symbol, tick and lot size as decimal
strings, source, schema version) travels in the Parquet/Arrow key-value metadata
under the key ``gpuflow``.

========  ======  ==========================================================
column    dtype   meaning
========  ======  ==========================================================
ts_exch   int64   exchange timestamp, ns since Unix epoch UTC
ts_local  int64   receive timestamp, ns (equal to ts_exch where the source has none)
seq       int64   source sequence / update id, monotone within a stream
kind      uint8   one of the ``KIND_*`` constants below
side      int8    +1 bid / buy, -1 ask / sell, 0 none (trades: aggressor side)
price     int64   price in ticks (price / tick_size, exact)
qty       int64   size in lots (level size for L2 set, order size for L3, traded size)
order_id  uint64  L3 order id, 0 otherwise
flags     uint16  ``FLAG_*`` bits below
========  ======  ==========================================================

Readers may add ``src_line`` (int64, 1-based line or record number in the source
file) so that cleaning can point quarantined rows back to their source.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from gpuflow.errors import SchemaError

__all__ = [
    "SCHEMA_VERSION", "EVENT_COLUMNS", "EVENT_DTYPES", "EVENTS", "QUARANTINE",
    "Instrument", "validate", "events_table", "empty_events", "instrument_of", "with_instrument",
    "decimal_step", "KIND_NAMES", "EMPTY_BID_PRICE", "EMPTY_ASK_PRICE",
]

SCHEMA_VERSION = 1
METADATA_KEY = b"gpuflow"

# ---- kind -------------------------------------------------------------------
#: L2 level set: the level (side, price) now holds ``qty`` lots; qty 0 removes it.
KIND_SET = 1
#: L3 add: new order ``order_id`` rests at (side, price) with ``qty`` lots.
KIND_ADD = 2
#: L3 modify: order ``order_id`` now rests at ``price`` with ``qty`` lots (loses priority
#: if the price changes or the size grows, as exchanges do).
KIND_MODIFY = 3
#: L3 partial cancel: ``qty`` lots are removed from order ``order_id``.
KIND_CANCEL = 4
#: L3 delete: order ``order_id`` is removed whatever its remaining size (``qty`` is informative).
KIND_DELETE = 5
#: L3 execution of the resting order ``order_id`` for ``qty`` lots; ``side`` is the
#: resting order's side (the aggressor is the other side).
KIND_EXECUTE = 6
#: Trade print; ``side`` is the aggressor side (+1 buyer-initiated), 0 unknown. Does not touch the book.
KIND_TRADE = 7
#: Level of a full book snapshot (same semantics as KIND_SET); a snapshot is preceded by KIND_CLEAR.
KIND_SNAPSHOT = 8
#: Clear the book (``side`` 0: both sides, else that side) before a snapshot or after a reset.
KIND_CLEAR = 9
#: Top-of-book quote (one row per side): best ``price`` and its ``qty``; does not touch the book.
KIND_BBO = 10
#: Update-id marker of a diff message (Binance depthUpdate): ``seq`` = final id ``u``,
#: ``price`` = first id ``U``, ``qty`` = previous final id ``pu`` (USD-M futures) or -1 (spot).
#: The message's level sets follow it with the same ``seq``.
KIND_DIFF = 11
#: Trading status (LOBSTER type 7): ``qty`` = -1 halt, 0 quoting resumes, 1 trading resumes.
KIND_STATUS = 12

KIND_NAMES = {
    KIND_SET: "set", KIND_ADD: "add", KIND_MODIFY: "modify", KIND_CANCEL: "cancel",
    KIND_DELETE: "delete", KIND_EXECUTE: "execute", KIND_TRADE: "trade",
    KIND_SNAPSHOT: "snapshot", KIND_CLEAR: "clear", KIND_BBO: "bbo", KIND_DIFF: "diff",
    KIND_STATUS: "status",
}

# ---- flags ------------------------------------------------------------------
#: Execution against a hidden (non-displayed) order.
FLAG_HIDDEN = 1 << 0
#: Row belongs to a snapshot.
FLAG_SNAPSHOT = 1 << 1
#: First row of a snapshot.
FLAG_SNAPSHOT_BEGIN = 1 << 2
#: Last row of a snapshot.
FLAG_SNAPSHOT_END = 1 << 3
#: Auction / cross trade (LOBSTER type 6).
FLAG_AUCTION = 1 << 4
#: Last row of one source message: the book is consistent after this row.
FLAG_EOM = 1 << 5
#: ``ts_exch`` was not in the source and is a copy of ``ts_local``.
FLAG_TS_EXCH_MISSING = 1 << 6
#: The order existed before the data starts (L3 event for an id never added in the file).
FLAG_UNKNOWN_ORDER = 1 << 7
#: Trade aggregated from several fills (Binance aggTrade).
FLAG_AGGREGATED = 1 << 8

#: Price reported for a missing bid level in top-N book output (qty 0): below any real price.
EMPTY_BID_PRICE = -(1 << 62)
#: Price reported for a missing ask level in top-N book output (qty 0): above any real price.
EMPTY_ASK_PRICE = 1 << 62

EVENT_COLUMNS: tuple[str, ...] = ("ts_exch", "ts_local", "seq", "kind", "side", "price", "qty",
                                  "order_id", "flags")
EVENT_DTYPES: dict[str, np.dtype] = {
    "ts_exch": np.dtype(np.int64), "ts_local": np.dtype(np.int64), "seq": np.dtype(np.int64),
    "kind": np.dtype(np.uint8), "side": np.dtype(np.int8), "price": np.dtype(np.int64),
    "qty": np.dtype(np.int64), "order_id": np.dtype(np.uint64), "flags": np.dtype(np.uint16),
}
EVENTS = pa.schema([pa.field(c, pa.from_numpy_dtype(EVENT_DTYPES[c]), nullable=False)
                    for c in EVENT_COLUMNS])
SRC_LINE = pa.field("src_line", pa.int64(), nullable=False)

#: Quarantine file: one row per rejected row, with the rule and where it came from.
QUARANTINE = pa.schema([
    pa.field("source", pa.string()),
    pa.field("line", pa.int64()),
    pa.field("rule", pa.string()),
    pa.field("field", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("raw", pa.string()),
])


def decimal_step(text: str) -> tuple[int, int]:
    """Split a positive decimal string into (mantissa, scale): ``"0.10"`` -> ``(10, 2)``.

    Raises
    ------
    SchemaError
        ``text`` is not a positive decimal number.
    """
    try:
        d = Decimal(str(text))
    except (InvalidOperation, ValueError):
        d = Decimal(-1)
    if not d.is_finite() or d <= 0:
        msg = f"expected a positive decimal step such as '0.01', got {text!r}"
        raise SchemaError(msg)
    sign, digits, exp = d.as_tuple()
    mant = int("".join(map(str, digits)))
    scale = -int(exp)
    if scale < 0:
        mant *= 10 ** (-scale)
        scale = 0
    return mant, scale


@dataclass(frozen=True)
class Instrument:
    """Instrument metadata that travels with every events table.

    Parameters
    ----------
    venue, symbol : str
        For example ``"binance-futures"``, ``"BTCUSDT"``.
    tick_size, lot_size : str
        Decimal strings (``"0.10"``, ``"0.001"``): price = ticks * tick_size,
        size = lots * lot_size, both exact.
    source : str
        Format the events came from (``lobster``, ``binance``, ``tardis``, ``databento``, ``synthetic``).
    tick_size_inferred, lot_size_inferred : bool
        True when the step was taken from the finest decimal present in the file.
    """

    venue: str
    symbol: str
    tick_size: str
    lot_size: str
    source: str = ""
    tick_size_inferred: bool = False
    lot_size_inferred: bool = False
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        decimal_step(self.tick_size)
        decimal_step(self.lot_size)
        for name in ("venue", "symbol"):
            v = getattr(self, name)
            if not v or "/" in v or "=" in v:
                msg = f"Instrument.{name}: expected a non-empty name without '/' or '=', got {v!r}"
                raise SchemaError(msg)

    def to_metadata(self) -> dict[bytes, bytes]:
        return {METADATA_KEY: json.dumps(asdict(self), sort_keys=True).encode()}

    @classmethod
    def from_metadata(cls, meta: Mapping[bytes, bytes] | None, source: str = "<table>") -> "Instrument":
        if not meta or METADATA_KEY not in meta:
            msg = f"{source}: no gpuflow instrument metadata (key 'gpuflow') in the schema"
            raise SchemaError(msg)
        d = json.loads(meta[METADATA_KEY])
        return cls(**d)

    def price_of(self, ticks: Any) -> Any:
        """Convert integer ticks to float prices (the feature boundary)."""
        return np.asarray(ticks, dtype=np.float64) * float(Decimal(self.tick_size))

    def size_of(self, lots: Any) -> Any:
        """Convert integer lots to float sizes (the feature boundary)."""
        return np.asarray(lots, dtype=np.float64) * float(Decimal(self.lot_size))

    def with_(self, **changes: Any) -> "Instrument":
        return replace(self, **changes)


def instrument_of(table: pa.Table, source: str = "<table>") -> Instrument:
    """Return the :class:`Instrument` stored in ``table``'s schema metadata."""
    return Instrument.from_metadata(table.schema.metadata, source)


def with_instrument(table: pa.Table, instrument: Instrument) -> pa.Table:
    """Return ``table`` with ``instrument`` in its schema metadata (other keys kept)."""
    meta = dict(table.schema.metadata or {})
    meta.update(instrument.to_metadata())
    return table.replace_schema_metadata(meta)


def events_table(columns: Mapping[str, Any], instrument: Instrument | None = None,
                 src_line: Any = None) -> pa.Table:
    """Build an events table from numpy columns (cast to the schema dtypes).

    Missing ``ts_exch`` is copied from ``ts_local``; missing ``seq``, ``order_id``,
    ``flags`` and ``side`` are zeros.
    """
    n = None
    for c in ("ts_local", "ts_exch", "kind", "price"):
        if c in columns:
            n = len(columns[c])
            break
    if n is None:
        msg = "events_table: need at least one of ts_local, ts_exch, kind, price"
        raise SchemaError(msg)
    arrays = []
    for c in EVENT_COLUMNS:
        if c in columns:
            a = np.asarray(columns[c])
        elif c == "ts_exch" and "ts_local" in columns:
            a = np.asarray(columns["ts_local"])
        elif c == "ts_local" and "ts_exch" in columns:
            a = np.asarray(columns["ts_exch"])
        else:
            a = np.zeros(n, dtype=EVENT_DTYPES[c])
        if len(a) != n:
            msg = f"events_table: column {c!r} has {len(a)} rows, expected {n}"
            raise SchemaError(msg)
        arrays.append(pa.array(a.astype(EVENT_DTYPES[c], copy=False)))
    fields = list(EVENTS)
    if src_line is not None:
        arrays.append(pa.array(np.asarray(src_line, dtype=np.int64)))
        fields.append(SRC_LINE)
    t = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    if instrument is not None:
        t = with_instrument(t, instrument)
    return t


def empty_events(instrument: Instrument | None = None) -> pa.Table:
    return events_table({c: np.zeros(0, EVENT_DTYPES[c]) for c in EVENT_COLUMNS}, instrument)


def validate(table: pa.Table, source: str = "<table>", require_instrument: bool = True) -> pa.Table:
    """Check that ``table`` follows the event schema; return it with exact schema dtypes.

    Raises
    ------
    SchemaError
        A column is missing, has the wrong type or holds nulls, or the instrument
        metadata is missing.
    """
    names = set(table.column_names)
    missing = [c for c in EVENT_COLUMNS if c not in names]
    if missing:
        msg = (f"{source}: missing event column(s) {missing}; expected columns {list(EVENT_COLUMNS)}, "
               f"found {table.column_names}")
        raise SchemaError(msg)
    for f in EVENTS:
        col = table.column(f.name)
        if col.type != f.type:
            msg = f"{source}: column {f.name!r} has type {col.type}, expected {f.type}"
            raise SchemaError(msg)
        if col.null_count:
            msg = f"{source}: column {f.name!r} holds {col.null_count} null value(s); nulls are not allowed"
            raise SchemaError(msg)
    if require_instrument:
        instrument_of(table, source)
    return table
