"""Ingest raw files into the store: read (normalise), clean (report + quarantine), store atomically.

The CLI's ``gpuflow ingest`` and ``gpuflow demo`` call :func:`ingest_file`;
notebooks can too.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from gpuflow.errors import GpuflowError
from gpuflow.schema import Instrument

__all__ = ["ingest_file", "clean_file"]

log = logging.getLogger(__name__)


def _read(fmt: str, path: str, errors: str, instrument: Instrument | None) -> Any:
    from gpuflow.io import get_reader

    return get_reader(fmt)(path, instrument=instrument, errors=errors)


def clean_file(fmt: str, path: Any, *, errors: str = "quarantine", instrument: Instrument | None = None,
               rules: Any = None) -> Any:
    """Read and clean one file; return the :class:`gpuflow.clean.CleanResult` (reader rejects folded in)."""
    from gpuflow.clean import clean

    res = _read(fmt, os.fspath(path), errors, instrument)
    return clean(res, rules=rules)


def ingest_file(fmt: str, path: Any, store: Any, *, do_clean: bool = True, errors: str = "quarantine",
                instrument: Instrument | None = None, replace: bool = False) -> dict[str, Any]:
    """Read, clean and store one source file.

    Parameters
    ----------
    fmt : {"lobster", "binance", "tardis", "databento"}
    path : path
    store : gpuflow.store.Store
    do_clean : bool
        Run the cleaning rules (default); rejected rows go to the store's quarantine.
    errors : {"quarantine", "raise"}
        Reader policy for bad rows.
    instrument : Instrument, optional
        Overrides the reader's instrument lookup / inference.
    replace : bool
        Re-ingest a source already in the store (default: skip it, idempotent).

    Returns
    -------
    dict
        ``source``, ``source_id``, ``events`` written, ``quarantined``, ``partitions``,
        ``skipped``, the cleaning ``report`` (dict) and, for LOBSTER, ``orderbook``.
    """
    from gpuflow.store import fingerprint

    path = os.fspath(path)
    opts: dict[str, Any] = {"format": fmt, "clean": do_clean, "errors": errors}
    if instrument is not None:
        opts["instrument"] = repr(instrument)
    sid = fingerprint(path, **opts)
    out: dict[str, Any] = {"source": path, "format": fmt, "source_id": sid}
    if fmt == "lobster":
        from gpuflow.io.lobster import find_orderbook

        try:
            out["orderbook"] = os.fspath(find_orderbook(path))
        except GpuflowError as exc:
            out["orderbook"] = None
            out["orderbook_note"] = str(exc)
    if sid in store.sources() and not replace:
        # idempotent: the same bytes with the same options are already stored
        out.update({"events": 0, "quarantined": 0, "partitions": [], "skipped": True, "report": None})
        return out
    res = _read(fmt, path, errors, instrument)
    if do_clean:
        from gpuflow.clean import clean

        data = clean(res)
        report = data.report.to_dict()
        out["report_text"] = data.report.to_table()
    else:
        data = res
        report = None
    rep = store.ingest(data, sid, replace=replace)
    out.update({"events": rep.events, "quarantined": rep.quarantined, "partitions": rep.partitions,
                "skipped": rep.skipped, "report": report, "read_stats": _jsonable(res.stats)})
    return out


def _jsonable(d: Any) -> Any:
    if isinstance(d, dict):
        return {str(k): _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if hasattr(d, "item"):
        return d.item()
    return d
