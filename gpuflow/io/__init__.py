"""Readers that normalise raw market-data formats into the gpuflow event schema.

Every reader has the signature::

    read_<format>(path, *, instrument=None, errors="raise", progress=None) -> ReadResult

and returns one events table per instrument (schema :data:`gpuflow.schema.EVENTS`
plus ``src_line``, instrument metadata attached, stably sorted by ``ts_local``)
and a table of rejected rows (:data:`gpuflow.schema.QUARANTINE`).

``errors="raise"`` raises :class:`~gpuflow.errors.ParseError` /
:class:`~gpuflow.errors.SchemaError` at the first bad row, naming file, line,
field and what was expected; ``errors="quarantine"`` keeps going and puts each
bad row (off-grid price, unparsable number, malformed line) into ``rejected``
with its rule and raw text.  File-level problems (truncated gzip, a file of
another format, a missing column) always raise.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa

from gpuflow.errors import GpuflowError
from gpuflow.schema import QUARANTINE

__all__ = ["ReadResult", "FORMATS", "get_reader", "read", "empty_rejected", "rejected_table"]

#: format name -> "module:function"
FORMATS: dict[str, str] = {
    "lobster": "gpuflow.io.lobster:read_lobster",
    "binance": "gpuflow.io.binance:read_binance",
    "tardis": "gpuflow.io.tardis:read_tardis",
    "databento": "gpuflow.io.databento:read_databento",
}


def empty_rejected() -> pa.Table:
    return QUARANTINE.empty_table()


def rejected_table(source: str, lines: Any, rule: str | list[str], field: str | list[str],
                   detail: str | list[str], raw: list[str] | None = None) -> pa.Table:
    """Build a quarantine table; scalar ``rule``/``field``/``detail`` apply to every row."""
    lines = [int(x) for x in lines]
    n = len(lines)

    def col(v: Any) -> list[Any]:
        return list(v) if isinstance(v, (list, tuple)) else [v] * n

    return pa.Table.from_pydict({
        "source": [source] * n, "line": lines, "rule": col(rule), "field": col(field),
        "detail": col(detail), "raw": list(raw) if raw is not None else [None] * n,
    }, schema=QUARANTINE)


@dataclass
class ReadResult:
    """What a reader returns.

    Attributes
    ----------
    tables : list of pyarrow.Table
        One events table per instrument (usually one).
    rejected : pyarrow.Table
        Rows that could not be normalised, with rule and raw text (QUARANTINE schema).
    source : str
        The path read.
    stats : dict
        Reader-specific counts (lines, messages per stream, ...).
    """

    tables: list[pa.Table]
    rejected: pa.Table = field(default_factory=empty_rejected)
    source: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return sum(t.num_rows for t in self.tables)


def get_reader(fmt: str) -> Callable[..., ReadResult]:
    """Return the reader function for format ``fmt`` (imported lazily)."""
    try:
        target = FORMATS[fmt.lower()]
    except KeyError:
        msg = f"unknown format {fmt!r}; expected one of {sorted(FORMATS)}"
        raise GpuflowError(msg) from None
    mod, fn = target.split(":")
    return getattr(importlib.import_module(mod), fn)


def read(fmt: str, path: Any, **kwargs: Any) -> ReadResult:
    """Read ``path`` with the reader of format ``fmt``."""
    return get_reader(fmt)(path, **kwargs)
