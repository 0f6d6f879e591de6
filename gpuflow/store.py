"""A partitioned Parquet store of events with an atomic manifest.

Layout under ``root``::

    root/_manifest.json                                       the commit point
    root/venue=V/symbol=S/date=YYYY-MM-DD/part-<id>.parquet   events, sorted by ts_local (stable)
    root/_quarantine/source=<id>/quarantine-<gen>.parquet     rejected rows of each source
    root/_staging/<token>/...                                 files of an ingest in progress
    root/_lock                                                held by the one writer

Dates are the UTC date of ``ts_local``.  Every part file carries the instrument
metadata in its schema (key ``gpuflow``) and only the 9 event columns
(:data:`gpuflow.schema.EVENTS`; a reader's ``src_line`` refers to one source file
and is not stored).

Commit protocol (:meth:`Store.ingest`): take the lock (``O_CREAT | O_EXCL``);
write every part file of the ingest into a staging folder inside ``root``; when
the input is exhausted without error, rename the files into their partitions
(names carry the new manifest generation, so they never replace a listed file),
then replace the manifest atomically (temp file, ``fsync``, ``os.replace``,
``fsync`` of the folder).  :meth:`Store.load` reads only files listed in the
manifest, so a crash at any point leaves the store as it was; leftovers (staging
folders, unlisted part files) are ignored by readers and removed by the next
ingest (or :meth:`Store.vacuum`).

A source is identified by ``source_id`` (see :func:`fingerprint`); ingesting a
source that is already in the manifest does nothing, so re-running an ingest is
idempotent.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from gpuflow import config
from gpuflow.errors import BackendUnavailableError, GpuflowError, SchemaError, StoreError
from gpuflow.schema import (EVENT_COLUMNS, EVENTS, QUARANTINE, Instrument, instrument_of, validate,
                            with_instrument)

if TYPE_CHECKING:  # pragma: no cover
    from gpuflow.backend import Backend

__all__ = ["Store", "IngestReport", "fingerprint", "MANIFEST_NAME", "STORE_FORMAT", "STORE_VERSION"]

MANIFEST_NAME = "_manifest.json"
LOCK_NAME = "_lock"
STAGING_DIR = "_staging"
QUARANTINE_DIR = "_quarantine"
STORE_FORMAT = "gpuflow-store"
STORE_VERSION = 1
NS_PER_DAY = 86_400 * 1_000_000_000
_INT64_MIN = -(2 ** 63)
_INT64_MAX = 2 ** 63 - 1
_PARTITION_SCHEMA = pa.schema([("venue", pa.string()), ("symbol", pa.string()), ("date", pa.string())])
_PARTITIONING = ds.partitioning(_PARTITION_SCHEMA, flavor="hive")
_DATASET_SCHEMA = pa.schema(list(EVENTS) + list(_PARTITION_SCHEMA))


def fingerprint(path: str | os.PathLike[str], **options: Any) -> str:
    """Identify a source: sha256 of the file's bytes and the reader options.

    Parameters
    ----------
    path : path-like
        The source file.
    **options
        Reader options that change the events (format, instrument, ...); values
        are rendered with ``str`` in key order.

    Returns
    -------
    str
        64 hex digits, usable as ``source_id`` in :meth:`Store.ingest`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = pathlib.Path(d) / "x.txt"
    ...     _ = p.write_text("abc")
    ...     fingerprint(p) == fingerprint(p), fingerprint(p) == fingerprint(p, fmt="binance")
    (True, False)
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        msg = f"fingerprint: cannot read source file {os.fspath(path)!r} ({exc.strerror or exc})"
        raise StoreError(msg) from exc
    file_digest = h.hexdigest()
    opts = json.dumps({k: str(v) for k, v in sorted(options.items())}, sort_keys=True)
    return hashlib.sha256(f"{file_digest}\n{opts}".encode()).hexdigest()


@dataclass
class IngestReport:
    """What :meth:`Store.ingest` did.

    Attributes
    ----------
    source_id : str
    events : int
        Events written (0 when skipped).
    partitions : list of str
        ``venue=V/symbol=S/date=D`` touched, sorted.
    files : list of str
        Part files written, relative to the root.
    quarantined : int
        Quarantine rows stored for this source.
    skipped : bool
        True when the source was already in the store (nothing written).
    replaced : bool
        True when ``replace=True`` replaced an earlier ingest of the source.
    removed_orphans : list of str
        Leftovers of crashed ingests removed before this one.
    """

    source_id: str
    events: int = 0
    partitions: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    quarantined: int = 0
    skipped: bool = False
    replaced: bool = False
    removed_orphans: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _empty_manifest() -> dict[str, Any]:
    return {"format": STORE_FORMAT, "version": STORE_VERSION, "generation": 0, "instruments": {},
            "sources": {}, "files": {}}


def _short_id(source_id: str) -> str:
    if re.fullmatch(r"[0-9a-f]{16,}", source_id):
        return source_id[:16]
    return hashlib.sha256(source_id.encode()).hexdigest()[:16]


def _date_of_day(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def _to_ns(value: Any, name: str) -> int | None:
    """``start`` / ``end`` as int ns since the epoch (UTC); naive datetimes and strings are UTC."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    try:
        import pandas as pd

        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        msg = (f"Store.load: {name}={value!r} is not a time; expected int ns since the epoch, an ISO "
               f"string, a datetime or numpy.datetime64 ({exc})")
        raise GpuflowError(msg) from None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.value)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_parquet(table: pa.Table, path: Path, compression: str, row_group_size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pq.write_table(table, fh, compression=compression, row_group_size=row_group_size)
        fh.flush()
        os.fsync(fh.fileno())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # pragma: no cover
        return True
    return True


class Store:
    """A partitioned Parquet store of events under ``root``.

    Parameters
    ----------
    root : path-like
        The store folder (created by the first ingest).
    compression : str, default "zstd"
        Parquet compression of new part files.
    row_group_size : int, default 131072
        Rows per Parquet row group; smaller groups let time-range loads skip more.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from gpuflow.schema import Instrument, events_table, KIND_TRADE
    >>> ins = Instrument("binance-futures", "BTCUSDT", "0.10", "0.001")
    >>> t = events_table({"ts_local": np.array([1, 2, 3]) * 10**9, "kind": np.full(3, KIND_TRADE),
    ...                   "price": np.array([10, 11, 12]), "qty": np.ones(3)}, ins)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     st = Store(d)
    ...     rep = st.ingest(t, source_id="demo")
    ...     again = st.ingest(t, source_id="demo")
    ...     st.load(symbol="BTCUSDT", start=2 * 10**9).column("price").to_pylist(), again.skipped
    ([11, 12], True)
    """

    def __init__(self, root: str | os.PathLike[str], *, compression: str = "zstd",
                 row_group_size: int = 1 << 17) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            msg = f"Store: {self.root} is a file; expected a store folder (or a path to create one)"
            raise StoreError(msg)
        self.compression = compression
        self.row_group_size = int(row_group_size)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- manifest ------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def _has_data_dirs(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and (p.name.startswith("venue=") or p.name == QUARANTINE_DIR))

    def manifest(self, must_exist: bool = True) -> dict[str, Any]:
        """Read and check the manifest.

        Parameters
        ----------
        must_exist : bool
            When False, a store folder without data (or no folder) gives an empty manifest.

        Raises
        ------
        StoreError
            The manifest is missing (while ``must_exist`` or while data folders exist),
            is not valid JSON, or is not a gpuflow store manifest.
        """
        path = self.manifest_path
        if not path.is_file():
            data_dirs = self._has_data_dirs()
            if data_dirs:
                msg = (f"{path}: manifest missing, but the store holds data folders {data_dirs[:5]}; "
                       "expected the manifest written by Store.ingest (it lists the committed files). "
                       "Restore it from a backup, or re-ingest the sources into a new root")
                raise StoreError(msg)
            if must_exist:
                msg = (f"{path}: no gpuflow store here (manifest {MANIFEST_NAME} not found); "
                       "create one with Store(root).ingest(...)")
                raise StoreError(msg)
            return _empty_manifest()
        try:
            text = path.read_text(encoding="utf-8")
            m = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            msg = (f"{path}: manifest is corrupt (not valid JSON: {exc}); expected the JSON manifest "
                   "written by Store.ingest. Restore it from a backup, or re-ingest the sources into a new root")
            raise StoreError(msg) from None
        except OSError as exc:
            msg = f"{path}: cannot read the manifest ({exc.strerror or exc})"
            raise StoreError(msg) from exc
        if not isinstance(m, dict) or m.get("format") != STORE_FORMAT:
            found = m.get("format") if isinstance(m, dict) else type(m).__name__
            msg = (f"{path}: not a gpuflow store manifest (format {found!r}, expected {STORE_FORMAT!r})")
            raise StoreError(msg)
        if m.get("version") != STORE_VERSION:
            msg = (f"{path}: store manifest version {m.get('version')!r}, this gpuflow reads version "
                   f"{STORE_VERSION}; upgrade gpuflow or re-ingest")
            raise StoreError(msg)
        for key, typ in (("generation", int), ("instruments", dict), ("sources", dict), ("files", dict)):
            if not isinstance(m.get(key), typ):
                msg = (f"{path}: manifest field {key!r} is {type(m.get(key)).__name__}, expected "
                       f"{typ.__name__}; the manifest is damaged")
                raise StoreError(msg)
        for rel, info in m["files"].items():
            if not isinstance(info, dict) or not {"venue", "symbol", "date", "rows", "ts_min", "ts_max",
                                                  "source"} <= set(info):
                msg = f"{path}: manifest entry for file {rel!r} is incomplete ({info!r}); the manifest is damaged"
                raise StoreError(msg)
        return m

    def _write_manifest(self, m: dict[str, Any]) -> None:
        text = json.dumps(m, indent=1, sort_keys=False)
        fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.manifest_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.root)

    # -- lock ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_NAME
        host = socket.gethostname()
        for attempt in (0, 1):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                try:
                    info = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    info = {}
                pid = info.get("pid")
                stale = (attempt == 0 and info.get("host") == host and isinstance(pid, int)
                         and not _pid_alive(pid))
                if stale:
                    # the writer died (killed mid-ingest): its lock protects nothing any more
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    continue
                who = f"pid {pid} on {info.get('host')!r}" if pid is not None else "an unknown writer"
                msg = (f"{self.root}: the store is locked by another writer ({who}; lock file {path}); "
                       "expected no concurrent ingest. Wait for it to finish, or remove the lock file if "
                       "no ingest is running")
                raise StoreError(msg) from None
        else:  # pragma: no cover - the stale lock was re-taken between our unlink and open
            msg = f"{self.root}: could not take the lock {path}; another writer is starting"
            raise StoreError(msg)
        try:
            os.write(fd, json.dumps({"pid": os.getpid(), "host": host,
                                     "since": datetime.now().isoformat()}).encode())
            os.close(fd)
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # -- housekeeping ----------------------------------------------------------------------------
    def _orphans(self, m: dict[str, Any]) -> list[Path]:
        listed = set(m["files"])
        for src in m["sources"].values():
            listed.update(src.get("quarantine", []))
        out: list[Path] = []
        staging = self.root / STAGING_DIR
        if staging.exists():
            out.append(staging)
        for top in self.root.iterdir() if self.root.is_dir() else []:
            if top.is_dir() and (top.name.startswith("venue=") or top.name == QUARANTINE_DIR):
                for p in top.rglob("*"):
                    if p.is_file() and p.relative_to(self.root).as_posix() not in listed:
                        out.append(p)
            elif top.is_file() and top.name.startswith(f".{MANIFEST_NAME}.") and top.name.endswith(".tmp"):
                out.append(top)
        return out

    def _remove(self, paths: list[Path]) -> list[str]:
        removed = []
        for p in paths:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed.append(p.relative_to(self.root).as_posix())
        # drop partition folders left empty
        for top in self.root.iterdir():
            if top.is_dir() and (top.name.startswith("venue=") or top.name == QUARANTINE_DIR):
                for d in sorted((q for q in top.rglob("*") if q.is_dir()), key=lambda q: -len(q.parts)):
                    with contextlib.suppress(OSError):
                        d.rmdir()
                with contextlib.suppress(OSError):
                    top.rmdir()
        return removed

    def vacuum(self) -> list[str]:
        """Remove leftovers of crashed ingests (staging folders, unlisted files); return their paths.

        Raises
        ------
        StoreError
            The store is locked by a running ingest, or its manifest is unreadable.
        """
        with self._lock():
            m = self.manifest(must_exist=False)
            return self._remove(self._orphans(m))

    # -- ingest ----------------------------------------------------------------------------------
    def ingest(self, data: Any, source_id: str, quarantine: pa.Table | None = None, *,
               replace: bool = False) -> IngestReport:
        """Write the events of one source into the store, atomically and idempotently.

        Parameters
        ----------
        data : pyarrow.Table, list or iterator of Tables, RecordBatchReader, ReadResult or CleanResult
            Events (schema :data:`gpuflow.schema.EVENTS` with instrument metadata;
            extra columns such as ``src_line`` are not stored).  An iterator is
            consumed chunk by chunk, so files larger than memory can be ingested.
            A ``ReadResult`` contributes its ``rejected`` rows and a ``CleanResult``
            its ``quarantine`` to the stored quarantine.
        source_id : str
            Identity of the source (:func:`fingerprint` of the file and reader options).
        quarantine : pyarrow.Table, optional
            Rejected rows to keep with the source (QUARANTINE schema).
        replace : bool, default False
            Replace an earlier ingest of the same ``source_id`` instead of skipping.

        Returns
        -------
        IngestReport

        Raises
        ------
        StoreError
            The store is locked, its manifest is damaged, or an instrument's tick or
            lot size differs from the one already stored for its venue and symbol.
        SchemaError
            A chunk does not follow the event schema or lacks instrument metadata.

        Notes
        -----
        If anything fails before the manifest is replaced (including an exception
        raised by the ``data`` iterator), the staged files are removed, the
        exception propagates, and the store is exactly as it was.
        """
        if not isinstance(source_id, str) or not source_id.strip():
            msg = f"Store.ingest: source_id must be a non-empty string (e.g. fingerprint(path)), got {source_id!r}"
            raise StoreError(msg)
        chunks, q_from_data = _as_chunks(data)
        qparts = [q for q in (q_from_data, quarantine) if q is not None]
        with self._lock():
            m = self.manifest(must_exist=False)
            removed = self._remove(self._orphans(m))
            if source_id in m["sources"] and not replace:
                return IngestReport(source_id=source_id, skipped=True, removed_orphans=removed,
                                    partitions=list(m["sources"][source_id].get("partitions", [])),
                                    files=list(m["sources"][source_id].get("files", [])))
            report = self._ingest_locked(m, chunks, qparts, source_id, replace)
            report.removed_orphans = removed
            return report

    def _ingest_locked(self, m: dict[str, Any], chunks: Iterable[pa.Table], qparts: list[pa.Table],
                       source_id: str, replace: bool) -> IngestReport:
        gen = int(m["generation"]) + 1
        short = _short_id(source_id)
        staging = self.root / STAGING_DIR / uuid.uuid4().hex
        staging.mkdir(parents=True)
        staged: dict[str, dict[str, Any]] = {}
        instruments: dict[str, dict[str, Any]] = {}
        placed: list[Path] = []
        committed = False
        events = 0
        try:
            with tqdm(desc=f"ingest {short}", unit="chunk",
                      disable=not config.get_option("progress")) as bar:
                for i, chunk in enumerate(chunks):
                    events += self._stage_chunk(chunk, i, source_id, short, gen, staging, staged,
                                                instruments, m)
                    bar.update()
            q_rel: list[str] = []
            q_rows = 0
            if qparts:
                q = _concat_quarantine(qparts, source_id)
                q_rows = q.num_rows
            if q_rows:
                rel = f"{QUARANTINE_DIR}/source={short}/quarantine-{gen:06d}.parquet"
                _write_parquet(q, staging / rel, self.compression, self.row_group_size)
                q_rel.append(rel)
            # -- commit: move files into place, then replace the manifest --------------------------
            new = json.loads(json.dumps(m))
            old_files: list[str] = []
            replaced = source_id in new["sources"]
            if replaced:
                old = new["sources"].pop(source_id)
                old_files = list(old.get("files", [])) + list(old.get("quarantine", []))
                for rel in old.get("files", []):
                    new["files"].pop(rel, None)
            for rel in list(staged) + q_rel:
                dest = self.root / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / rel, dest)
                placed.append(dest)
            for d in {p.parent for p in placed}:
                _fsync_dir(d)
            for key, ins in instruments.items():
                new["instruments"].setdefault(key, ins)
            new["files"].update(staged)
            parts = sorted({f"venue={v['venue']}/symbol={v['symbol']}/date={v['date']}" for v in staged.values()})
            new["sources"][source_id] = {"events": events, "quarantined": q_rows, "files": list(staged),
                                         "quarantine": q_rel, "partitions": parts, "generation": gen}
            new["generation"] = gen
            self._write_manifest(new)
            committed = True
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.root / STAGING_DIR).rmdir()
            if not committed:
                for p in placed:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
        if old_files:
            self._remove([self.root / rel for rel in old_files if (self.root / rel).exists()])
        return IngestReport(source_id=source_id, events=events, partitions=parts, files=list(staged),
                            quarantined=q_rows, replaced=replaced)

    def _stage_chunk(self, chunk: Any, i: int, source_id: str, short: str, gen: int, staging: Path,
                     staged: dict[str, dict[str, Any]], instruments: dict[str, dict[str, Any]],
                     m: dict[str, Any]) -> int:
        where = f"Store.ingest(source_id={source_id!r}) chunk {i}"
        if not isinstance(chunk, pa.Table):
            msg = f"{where}: expected a pyarrow.Table of events, got {type(chunk).__name__}"
            raise SchemaError(msg)
        chunk = validate(chunk, where)
        ins = instrument_of(chunk, where)
        key = f"{ins.venue}/{ins.symbol}"
        known = m["instruments"].get(key) or instruments.get(key)
        if known is not None and (known["tick_size"], known["lot_size"]) != (ins.tick_size, ins.lot_size):
            msg = (f"{self.root}: {where}: instrument {key} has tick_size={ins.tick_size!r}, "
                   f"lot_size={ins.lot_size!r}, but the store holds it with tick_size={known['tick_size']!r}, "
                   f"lot_size={known['lot_size']!r}; expected the same steps for one venue and symbol "
                   "(prices are stored in ticks). Use another root or fix the instrument")
            raise StoreError(msg)
        instruments.setdefault(key, asdict(ins))
        if chunk.num_rows == 0:
            return 0
        t = with_instrument(chunk.select(list(EVENT_COLUMNS)), ins)
        ts = t.column("ts_local").to_numpy()
        if ts.size > 1 and not bool(np.all(ts[1:] >= ts[:-1])):
            order = np.argsort(ts, kind="stable")
            t = t.take(pa.array(order))
            ts = ts[order]
        days = ts // NS_PER_DAY
        cuts = np.concatenate([[0], np.flatnonzero(days[1:] != days[:-1]) + 1, [ts.size]])
        for a, b in zip(cuts[:-1], cuts[1:]):
            d = _date_of_day(days[a])
            rel = (f"venue={ins.venue}/symbol={ins.symbol}/date={d}/"
                   f"part-{short}-{gen:06d}-{i:05d}.parquet")
            piece = t.slice(int(a), int(b - a))
            _write_parquet(piece, staging / rel, self.compression, self.row_group_size)
            staged[rel] = {"source": source_id, "venue": ins.venue, "symbol": ins.symbol, "date": d,
                           "rows": int(b - a), "ts_min": int(ts[a]), "ts_max": int(ts[b - 1])}
        return int(ts.size)

    # -- reading ---------------------------------------------------------------------------------
    def partitions(self) -> list[dict[str, Any]]:
        """Committed partitions: venue, symbol, date, files, events, ts_min, ts_max (sorted)."""
        m = self.manifest(must_exist=False)
        parts: dict[tuple[str, str, str], dict[str, Any]] = {}
        for info in m["files"].values():
            k = (info["venue"], info["symbol"], info["date"])
            p = parts.setdefault(k, {"venue": k[0], "symbol": k[1], "date": k[2], "files": 0, "events": 0,
                                     "ts_min": info["ts_min"], "ts_max": info["ts_max"]})
            p["files"] += 1
            p["events"] += info["rows"]
            p["ts_min"] = min(p["ts_min"], info["ts_min"])
            p["ts_max"] = max(p["ts_max"], info["ts_max"])
        return [parts[k] for k in sorted(parts)]

    def info(self) -> list[dict[str, Any]]:
        """Per venue and symbol: partitions, files, events, first/last ts_local (ns and ISO), sources."""
        m = self.manifest(must_exist=False)
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for p in self.partitions():
            k = (p["venue"], p["symbol"])
            e = out.setdefault(k, {"venue": k[0], "symbol": k[1], "partitions": 0, "files": 0, "events": 0,
                                   "first_ts": p["ts_min"], "last_ts": p["ts_max"], "sources": 0})
            e["partitions"] += 1
            e["files"] += p["files"]
            e["events"] += p["events"]
            e["first_ts"] = min(e["first_ts"], p["ts_min"])
            e["last_ts"] = max(e["last_ts"], p["ts_max"])
        for k, e in out.items():
            srcs = {info["source"] for info in m["files"].values() if (info["venue"], info["symbol"]) == k}
            e["sources"] = len(srcs)
            e["first"] = str(np.datetime64(e["first_ts"], "ns"))
            e["last"] = str(np.datetime64(e["last_ts"], "ns"))
            ins = m["instruments"].get(f"{k[0]}/{k[1]}", {})
            e["tick_size"] = ins.get("tick_size")
            e["lot_size"] = ins.get("lot_size")
        return [out[k] for k in sorted(out)]

    def sources(self) -> dict[str, dict[str, Any]]:
        """Committed sources: source_id -> events, quarantined, files, partitions."""
        return self.manifest(must_exist=False)["sources"]

    def load(self, venue: str | None = None, symbol: str | None = None, start: Any = None, end: Any = None,
             columns: Iterable[str] | None = None, as_: str = "arrow",
             backend: str | Backend | None = None) -> Any:
        """Load the events of one instrument, optionally in a ``ts_local`` range.

        Parameters
        ----------
        venue : str, optional
            Needed only when ``symbol`` is stored for several venues.
        symbol : str, optional
            Needed only when the store holds several instruments.
        start, end : int (ns since the epoch, UTC), str, datetime or numpy.datetime64, optional
            Keep rows with ``start <= ts_local < end``.  Partitions (dates) outside
            the range are never opened; within files Parquet statistics skip row groups.
        columns : iterable of str, optional
            Subset of the event columns (default: all 9).
        as_ : {"arrow", "numpy", "device", "cudf"}
            ``arrow``: a pyarrow Table with the instrument metadata; ``numpy``: a dict
            of host arrays; ``device``: a dict of backend arrays (cupy on the GPU,
            via ``gpuflow.backend``); ``cudf``: a cudf.DataFrame (needs cudf).
        backend : str or Backend, optional
            Backend for ``as_="device"``.

        Returns
        -------
        pyarrow.Table, dict of arrays or cudf.DataFrame
            Rows sorted by ``ts_local`` (stable: within a partition ties keep the
            order of ingest, then of the source).

        Raises
        ------
        StoreError
            No manifest, the instrument is not in the store (or ambiguous), or a
            listed file is missing or unreadable.
        """
        if as_ not in ("arrow", "numpy", "device", "cudf"):
            msg = f"Store.load: as_={as_!r}; expected 'arrow', 'numpy', 'device' or 'cudf'"
            raise GpuflowError(msg)
        cudf = None
        if as_ == "cudf":
            try:
                import cudf  # type: ignore[import-not-found]
            except ImportError as exc:
                msg = (f"Store.load(as_='cudf') needs cudf, which is not importable ({exc}); "
                       "install RAPIDS (environment.yml) or use as_='arrow' / 'device'")
                raise BackendUnavailableError(msg) from None
        cols = list(EVENT_COLUMNS) if columns is None else list(columns)
        unknown = [c for c in cols if c not in EVENT_COLUMNS]
        if unknown:
            msg = f"Store.load: unknown column(s) {unknown}; expected some of {list(EVENT_COLUMNS)}"
            raise SchemaError(msg)
        m = self.manifest(must_exist=True)
        v, s = self._pick_instrument(m, venue, symbol)
        ins = Instrument(**m["instruments"][f"{v}/{s}"])
        lo = _to_ns(start, "start")
        hi = _to_ns(end, "end")
        lo_ = _INT64_MIN if lo is None else lo
        hi_ = _INT64_MAX if hi is None else hi
        files = [(rel, info) for rel, info in m["files"].items()
                 if info["venue"] == v and info["symbol"] == s and info["rows"] > 0
                 and info["ts_max"] >= lo_ and info["ts_min"] < hi_]
        files.sort(key=lambda x: x[1]["date"])  # stable: manifest (ingest) order within a date
        read_cols = cols if "ts_local" in cols else cols + ["ts_local"]
        schema = pa.schema([EVENTS.field(c) for c in read_cols])
        tables = []
        if files:
            for rel, _ in files:
                if not (self.root / rel).is_file():
                    msg = (f"{self.root / rel}: file listed in the manifest is missing; expected the part "
                           "file written by Store.ingest. The store was modified outside gpuflow; restore "
                           "the file or re-ingest its source")
                    raise StoreError(msg)
            # the schema is given, so building the dataset opens no file: pruned partitions stay closed
            dataset = ds.dataset([str(self.root / rel) for rel, _ in files], format="parquet",
                                 schema=_DATASET_SCHEMA, partitioning=_PARTITIONING,
                                 partition_base_dir=str(self.root))
            row_filter = None
            date_filter = None
            if lo is not None:
                row_filter = ds.field("ts_local") >= lo
                date_filter = ds.field("date") >= _date_of_day(lo // NS_PER_DAY)
            if hi is not None:
                f_hi = ds.field("ts_local") < hi
                row_filter = f_hi if row_filter is None else row_filter & f_hi
                d_hi = ds.field("date") <= _date_of_day((hi - 1) // NS_PER_DAY)
                date_filter = d_hi if date_filter is None else date_filter & d_hi
            try:
                for frag in dataset.get_fragments(filter=date_filter):
                    part = frag.to_table(schema=dataset.schema, columns=read_cols, filter=row_filter)
                    tables.append(part.replace_schema_metadata(None).cast(schema))
            except (OSError, pa.ArrowInvalid) as exc:
                msg = f"{self.root}: cannot read part files of {v}/{s} ({exc}); expected Parquet files from Store.ingest"
                raise StoreError(msg) from exc
        tbl = pa.concat_tables(tables) if tables else schema.empty_table()
        if tbl.num_rows > 1:
            ts = tbl.column("ts_local").to_numpy()
            if not bool(np.all(ts[1:] >= ts[:-1])):
                tbl = tbl.take(pa.array(np.argsort(ts, kind="stable")))
        tbl = tbl.select(cols).combine_chunks()
        tbl = with_instrument(tbl, ins)
        if as_ == "arrow":
            return tbl
        if as_ == "cudf":
            return cudf.DataFrame.from_arrow(tbl)
        host = {c: tbl.column(c).to_numpy() for c in cols}
        if as_ == "numpy":
            return host
        from gpuflow.backend import Backend, get_backend

        be = backend if isinstance(backend, Backend) else get_backend(backend)
        return {c: be.to_device(a) for c, a in host.items()}

    def load_quarantine(self, source_id: str | None = None) -> pa.Table:
        """Stored quarantine rows (all sources, or one), QUARANTINE schema."""
        m = self.manifest(must_exist=True)
        srcs = m["sources"] if source_id is None else {source_id: m["sources"].get(source_id)}
        if source_id is not None and srcs[source_id] is None:
            msg = f"{self.manifest_path}: source {source_id!r} is not in the store; it holds {sorted(m['sources'])}"
            raise StoreError(msg)
        parts = [pq.read_table(self.root / rel) for src in srcs.values() for rel in src.get("quarantine", [])]
        return pa.concat_tables(parts).cast(QUARANTINE) if parts else QUARANTINE.empty_table()

    @staticmethod
    def _pick_instrument(m: dict[str, Any], venue: str | None, symbol: str | None) -> tuple[str, str]:
        pairs = sorted(tuple(k.split("/", 1)) for k in m["instruments"])
        cand = [p for p in pairs if (venue is None or p[0] == venue) and (symbol is None or p[1] == symbol)]
        if len(cand) == 1:
            return cand[0][0], cand[0][1]
        held = ", ".join(f"{a}/{b}" for a, b in pairs) or "nothing"
        if not cand:
            msg = f"Store.load: no data for venue={venue!r}, symbol={symbol!r}; the store holds {held}"
        else:
            msg = (f"Store.load: venue={venue!r}, symbol={symbol!r} matches several instruments "
                   f"({', '.join(f'{a}/{b}' for a, b in cand)}); pass venue= and symbol=")
        raise StoreError(msg)


def _concat_quarantine(parts: list[pa.Table], source_id: str) -> pa.Table:
    out = []
    for q in parts:
        missing = [f.name for f in QUARANTINE if f.name not in q.column_names]
        if missing:
            msg = (f"Store.ingest(source_id={source_id!r}): quarantine table lacks columns {missing}; "
                   f"expected the QUARANTINE schema {QUARANTINE.names}")
            raise SchemaError(msg)
        out.append(q.select(QUARANTINE.names).cast(QUARANTINE))
    return pa.concat_tables(out)


def _as_chunks(data: Any) -> tuple[Iterable[pa.Table], pa.Table | None]:
    """(iterable of event tables, quarantine table or None) from what ``ingest`` accepts."""
    from gpuflow.io import ReadResult

    if isinstance(data, pa.Table):
        return [data], None
    if isinstance(data, ReadResult):
        return list(data.tables), data.rejected
    try:
        from gpuflow.clean import CleanResult
    except ImportError:  # pragma: no cover
        CleanResult = ()  # type: ignore[assignment]
    if CleanResult and isinstance(data, CleanResult):
        return list(data.tables), data.quarantine
    if isinstance(data, pa.RecordBatchReader):
        schema = data.schema
        return (pa.Table.from_batches([b], schema=schema) for b in data), None
    if isinstance(data, (list, tuple)) or hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
        return data, None
    msg = (f"Store.ingest: expected a pyarrow.Table, a list or iterator of Tables, a RecordBatchReader, a "
           f"ReadResult or a CleanResult, got {type(data).__name__}")
    raise StoreError(msg)

