"""Shared machinery of the text and binary readers (private).

* :func:`read_source` reads a file whole, undoing gzip or zstd compression
  (detected from the magic bytes, not the file name), and raises
  :class:`~gpuflow.errors.ParseError` naming the file and how far it got when
  the compressed stream is truncated or corrupt.
* :func:`split_lines` and :func:`split_fields` locate the lines and the
  comma-separated fields of a CSV buffer with compiled loops; numeric fields
  are then converted exactly with :func:`gpuflow.decimals.parse_steps` straight
  from the buffer (:func:`parse_field`), so no per-row Python object is made.
  Fields are located by their start offsets: ``fs[i, j]`` is where field ``j``
  of row ``i`` starts and ``fs[i, j + 1] - 1`` where it ends (the comma), with
  ``fs[i, ncols] = line_end + 1``.
* :class:`RowIssues` gathers per-row problems as boolean masks and turns them
  into the first error (``errors="raise"``) or a quarantine table
  (``errors="quarantine"``).

The CSV dialect is the one the vendors write: comma separated, no quoting, one
record per line (``\\n`` or ``\\r\\n``).  Blank lines are skipped and counted.
"""
from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numba import njit

from gpuflow import decimals
from gpuflow.errors import GpuflowError, ParseError, SchemaError
from gpuflow.io import empty_rejected, rejected_table
from gpuflow.schema import Instrument, decimal_step

__all__: list[str] = []

_log = logging.getLogger("gpuflow.io")

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 22


# ---- files -------------------------------------------------------------------------------------
def check_errors_arg(errors: str) -> None:
    if errors not in ("raise", "quarantine"):
        msg = f"errors={errors!r}: expected 'raise' or 'quarantine'"
        raise GpuflowError(msg)


def read_source(path: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Read ``path`` whole and decompress it (gzip or zstd by magic bytes).

    Returns
    -------
    buf : ndarray[uint8], host
        The decompressed bytes.
    info : dict
        ``compression`` ("gzip", "zstd" or None), ``compressed_bytes``, ``bytes``.

    Raises
    ------
    ParseError
        The compressed stream is truncated or corrupt; the message names the file
        and how many bytes (and complete lines) were decompressed before the end.
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        data = fh.read()
    info: dict[str, Any] = {"compression": None, "compressed_bytes": len(data)}
    if data[:2] == GZIP_MAGIC:
        info["compression"] = "gzip"
        out = _decompress(path, data, "gzip", lambda: zlib.decompressobj(wbits=31), zlib.error)
    elif data[:4] == ZSTD_MAGIC:
        import zstandard

        info["compression"] = "zstd"
        out = _decompress(path, data, "zstd", lambda: zstandard.ZstdDecompressor().decompressobj(),
                          zstandard.ZstdError)
    else:
        out = data
    info["bytes"] = len(out)
    return np.frombuffer(out, dtype=np.uint8), info


def _decompress(path: str, data: bytes, kind: str, make: Callable[[], Any], error: type) -> bytes:
    """Decompress every member/frame of ``data``; raise ParseError when it ends early."""
    parts: list[bytes] = []
    total = 0
    pos = 0
    n = len(data)
    while pos < n:
        d = make()
        member_start = pos
        while True:
            chunk = data[pos: pos + _CHUNK]
            try:
                out = d.decompress(chunk)
            except error as exc:
                msg = (f"{path}: corrupt {kind} data near compressed byte {pos:,} of {n:,} "
                       f"(decompressed {total:,} bytes before it): {exc}")
                raise ParseError(msg) from None
            parts.append(out)
            total += len(out)
            if d.eof:
                pos = pos + len(chunk) - len(d.unused_data)
                if pos <= member_start:  # pragma: no cover - defensive: no progress
                    pos = n
                break
            pos += len(chunk)
            if pos >= n:
                lines = sum(p.count(b"\n") for p in parts)
                msg = (f"{path}: truncated {kind} file: the compressed stream ends after {n:,} bytes "
                       f"without its end marker; decompressed {total:,} bytes ({lines:,} complete lines) "
                       "before the data ran out; the file is incomplete (copy or download it again)")
                raise ParseError(msg)
        # gzip files may carry trailing zero padding after the last member.
        if pos < n and not any(data[pos:]):
            break
    return b"".join(parts)


# ---- compiled scanners --------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _line_bounds(buf):  # pragma: no cover - jitted
    size = buf.size
    n = 0
    for i in range(size):
        if buf[i] == 10:
            n += 1
    if size > 0 and buf[size - 1] != 10:
        n += 1
    starts = np.empty(n, np.int64)
    ends = np.empty(n, np.int64)
    k = 0
    s = 0
    for i in range(size):
        if buf[i] == 10:
            e = i
            if e > s and buf[e - 1] == 13:
                e -= 1
            starts[k] = s
            ends[k] = e
            k += 1
            s = i + 1
    if s < size:
        e = size
        if e > s and buf[e - 1] == 13:
            e -= 1
        starts[k] = s
        ends[k] = e
    return starts, ends


@njit(cache=True, nogil=True)
def _blank(buf, starts, ends):  # pragma: no cover - jitted
    out = np.zeros(starts.size, np.bool_)
    for k in range(starts.size):
        b = True
        for p in range(starts[k], ends[k]):
            c = buf[p]
            if c != 32 and c != 9:
                b = False
                break
        out[k] = b
    return out


@njit(cache=True, nogil=True)
def _field_starts(buf, starts, ends, ncols):  # pragma: no cover - jitted
    n = starts.size
    fs = np.empty((n, ncols + 1), np.int64)
    nf = np.empty(n, np.int64)
    for i in range(n):
        a = starts[i]
        b = ends[i]
        fs[i, 0] = a
        j = 1
        for p in range(a, b):
            if buf[p] == 44:
                if j < ncols:
                    fs[i, j] = p + 1
                j += 1
        nf[i] = j
        for q in range(min(j, ncols), ncols + 1):
            fs[i, q] = b + 1
    return fs, nf


@njit(cache=True, nogil=True)
def _parse_col(buf, fs, j, mants, scales, group, out, status):  # pragma: no cover - jitted
    for i in range(out.size):
        g = group[i]
        v, s = decimals.parse_steps(buf, fs[i, j], fs[i, j + 1] - 1, mants[g], scales[g])
        out[i] = v
        status[i] = s


@njit(cache=True, nogil=True)
def _parse_cols(buf, fs, cols, mants, scales, out, status):  # pragma: no cover - jitted
    """Row-major variant of :func:`_parse_col` for many columns (one step per column)."""
    for i in range(out.shape[0]):
        for k in range(cols.size):
            j = cols[k]
            v, s = decimals.parse_steps(buf, fs[i, j], fs[i, j + 1] - 1, mants[k], scales[k])
            out[i, k] = v
            status[i, k] = s


@njit(cache=True, nogil=True)
def _match_col(buf, fs, j, words, woff, out):  # pragma: no cover - jitted
    nw = woff.size - 1
    for i in range(out.size):
        a = fs[i, j]
        b = fs[i, j + 1] - 1
        code = -1
        for w in range(nw):
            wa = woff[w]
            wb = woff[w + 1]
            if wb - wa != b - a:
                continue
            same = True
            for p in range(b - a):
                if buf[a + p] != words[wa + p]:
                    same = False
                    break
            if same:
                code = w
                break
        out[i] = code


@njit(cache=True, nogil=True)
def _hash_cols(buf, fs, cols, out):  # pragma: no cover - jitted
    for i in range(out.size):
        h = np.uint64(14695981039346656037)
        for c in cols:
            for p in range(fs[i, c], fs[i, c + 1] - 1):
                h = (h ^ np.uint64(buf[p])) * np.uint64(1099511628211)
            h = (h ^ np.uint64(44)) * np.uint64(1099511628211)
        out[i] = h


@njit(cache=True, nogil=True)
def _same_cols(buf, fs, cols, rep):  # pragma: no cover - jitted
    """True where row i's fields ``cols`` equal those of row ``rep[i]`` byte for byte."""
    out = np.ones(rep.size, np.bool_)
    for i in range(rep.size):
        r = rep[i]
        for c in cols:
            a = fs[i, c]
            b = fs[i, c + 1] - 1
            ra = fs[r, c]
            rb = fs[r, c + 1] - 1
            if b - a != rb - ra:
                out[i] = False
                break
            for p in range(b - a):
                if buf[a + p] != buf[ra + p]:
                    out[i] = False
                    break
    return out


@njit(cache=True, nogil=True)
def _max_frac_digits(buf, fs, j, rows):  # pragma: no cover - jitted
    """Largest number of significant fraction digits of field j over ``rows`` (exponent aware)."""
    best = 0
    for r in rows:
        a = fs[r, j]
        b = fs[r, j + 1] - 1
        dot = -1
        epos = b
        for p in range(a, b):
            c = buf[p]
            if c == 46:
                dot = p
            elif c == 101 or c == 69:
                epos = p
                break
        frac = 0
        if dot >= 0:
            last = epos - 1
            while last > dot and buf[last] == 48:
                last -= 1
            frac = last - dot
        if epos < b:
            e = 0
            neg = False
            p = epos + 1
            if p < b and (buf[p] == 45 or buf[p] == 43):
                neg = buf[p] == 45
                p += 1
            while p < b and 48 <= buf[p] <= 57 and e < 100:
                e = e * 10 + (buf[p] - 48)
                p += 1
            frac = frac + e if neg else frac - e
        best = max(best, frac)
    return best


# ---- CSV view -----------------------------------------------------------------------------------
class CsvView:
    """Lines and fields of a CSV buffer.

    Parameters
    ----------
    path : str
        The file, for messages.
    buf : ndarray[uint8], host
    ncols : int
        Expected number of fields per record.
    skip_lines : int
        Leading lines (a header) that are not data.

    Attributes
    ----------
    line : ndarray[int64]
        1-based source line number of each data row (blank lines skipped).
    fs : ndarray[int64], shape (n, ncols + 1)
        Field start offsets (see the module docstring).
    nf : ndarray[int64]
        Number of fields found on each data row.
    """

    def __init__(self, path: str, buf: np.ndarray, ncols: int, skip_lines: int = 0,
                 bounds: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.path = path
        self.buf = buf
        self.ncols = ncols
        starts, ends = bounds if bounds is not None else _line_bounds(buf)
        starts = starts[skip_lines:]
        ends = ends[skip_lines:]
        blank = _blank(buf, starts, ends)
        self.n_blank = int(blank.sum())
        keep = np.flatnonzero(~blank)
        self.line = keep.astype(np.int64) + 1 + skip_lines
        self.starts = starts[keep]
        self.ends = ends[keep]
        self.fs, self.nf = _field_starts(buf, self.starts, self.ends, ncols)
        self.n = int(self.starts.size)

    def text(self, i: int, j: int) -> str:
        """Text of field ``j`` of data row ``i``."""
        a = int(self.fs[i, j])
        b = int(self.fs[i, j + 1]) - 1
        return self.buf[a:max(a, b)].tobytes().decode("utf-8", "replace")

    def raw(self, i: int) -> str:
        """Text of data row ``i`` (without the line break)."""
        return self.buf[int(self.starts[i]):int(self.ends[i])].tobytes().decode("utf-8", "replace")

    def parse(self, j: int, step: str | tuple[int, int] | list[tuple[int, int]] = "1",
              group: np.ndarray | None = None, rows: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Convert field ``j`` to whole numbers of ``step`` exactly (see :func:`gpuflow.decimals.to_steps`).

        ``step`` is a decimal string, a ``(mantissa, scale)`` pair, or a list of pairs
        indexed by ``group`` (one step per row group).  ``rows`` restricts the rows.
        """
        if isinstance(step, str):
            steps = [decimal_step(step)]
        elif isinstance(step, tuple):
            steps = [step]
        else:
            steps = list(step)
        mants = np.array([s[0] for s in steps], dtype=np.int64)
        scales = np.array([s[1] for s in steps], dtype=np.int64)
        fs = self.fs if rows is None else self.fs[rows]
        n = fs.shape[0]
        g = np.zeros(n, np.int64) if group is None else np.ascontiguousarray(group, dtype=np.int64)
        out = np.empty(n, np.int64)
        status = np.empty(n, np.uint8)
        _parse_col(self.buf, fs, j, mants, scales, g, out, status)
        return out, status

    def parse_many(self, cols: list[int], steps: list[str | tuple[int, int]]
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Convert fields ``cols`` (one decimal step or (mantissa, scale) each) in one row-major pass.

        Returns int64 values and uint8 statuses of shape (n, len(cols)).
        """
        pairs = [decimal_step(st) if isinstance(st, str) else st for st in steps]
        mants = np.array([m for m, _ in pairs], dtype=np.int64)
        scales = np.array([sc for _, sc in pairs], dtype=np.int64)
        out = np.empty((self.n, len(cols)), np.int64)
        status = np.empty((self.n, len(cols)), np.uint8)
        _parse_cols(self.buf, self.fs, np.asarray(cols, dtype=np.int64), mants, scales, out, status)
        return out, status

    def match(self, j: int, words: list[bytes], rows: np.ndarray | None = None) -> np.ndarray:
        """Index into ``words`` of field ``j`` per row (int64), -1 where it is none of them."""
        blob = np.frombuffer(b"".join(words), dtype=np.uint8) if words else np.zeros(0, np.uint8)
        woff = np.zeros(len(words) + 1, np.int64)
        woff[1:] = np.cumsum([len(w) for w in words])
        fs = self.fs if rows is None else self.fs[rows]
        out = np.empty(fs.shape[0], np.int64)
        _match_col(self.buf, fs, j, blob, woff, out)
        return out

    def keys(self, cols: list[int]) -> tuple[np.ndarray, list[tuple[str, ...]]]:
        """Group rows by the exact text of fields ``cols``.

        Returns the group code of every row (in order of first appearance) and the
        text of each group's key.
        """
        if self.n == 0:
            return np.zeros(0, np.int64), []
        c = np.asarray(cols, dtype=np.int64)
        h = np.empty(self.n, np.uint64)
        _hash_cols(self.buf, self.fs, c, h)
        _, first, inv = np.unique(h, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        code = rank[inv.reshape(-1)]
        rep_rows = first[order]
        same = _same_cols(self.buf, self.fs, c, rep_rows[code])
        if not same.all():  # pragma: no cover - 64-bit hash collision
            msg = f"{self.path}: internal error: key hash collision; please report this file"
            raise GpuflowError(msg)
        keys = [tuple(self.text(int(r), int(j)) for j in cols) for r in rep_rows]
        return code.astype(np.int64), keys

    def finest_step(self, j: int, rows: np.ndarray) -> str:
        """The finest decimal step present in field ``j`` over ``rows`` (``"0.01"``, ``"1"``)."""
        d = int(_max_frac_digits(self.buf, self.fs, j, np.ascontiguousarray(rows, dtype=np.int64)))
        return "1" if d <= 0 else "0." + "0" * (d - 1) + "1"


def first_line(buf: np.ndarray, limit: int = 4096) -> str:
    """The first non-blank line of ``buf`` (at most ``limit`` bytes), decoded leniently."""
    head = buf[: 1 << 16].tobytes()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    for ln in head.split(b"\n"):
        s = ln.strip()
        if s:
            return s[:limit].decode("utf-8", "replace")
    return ""


# ---- per-row problems ---------------------------------------------------------------------------
STATUS_RULE = {decimals.SYNTAX: "bad_number", decimals.OVERFLOW: "overflow", decimals.EMPTY: "missing_value"}


@dataclass
class _Issue:
    mask: np.ndarray
    rule: str
    field: str
    expected: str
    found: Callable[[int], str]
    exc: type
    col: int | None = None


class RowIssues:
    """Per-row problems of one file, resolved into an exception or a quarantine table.

    Parameters
    ----------
    path : str
    n : int
        Number of data rows.
    line : ndarray[int64]
        Source line (or record) number of each row, for messages.
    raw : callable(int) -> str
        Raw text of row i, for the quarantine table.
    unit : str
        "line" or "record", for messages.
    """

    def __init__(self, path: str, n: int, line: np.ndarray, raw: Callable[[int], str],
                 unit: str = "line") -> None:
        self.path = path
        self.n = n
        self.line = line
        self.raw = raw
        self.unit = unit
        self.issues: list[_Issue] = []

    def add(self, mask: np.ndarray, rule: str, field: str, expected: str,
            found: Callable[[int], str], exc: type = SchemaError, col: int | None = None) -> None:
        """Record that rows where ``mask`` is True break ``rule`` on ``field`` (1-based column ``col``)."""
        mask = np.asarray(mask, dtype=np.bool_)
        if mask.any():
            self.issues.append(_Issue(mask, rule, field, expected, found, exc, col))

    def add_status(self, status: np.ndarray, field: str, found: Callable[[int], str], *,
                   expected: str, off_grid_rule: str, off_grid_expected: str,
                   where: np.ndarray | None = None, col: int | None = None) -> None:
        """Record the non-OK statuses of a :func:`gpuflow.decimals.parse_steps` column."""
        st = status if where is None else np.where(where, status, decimals.OK)
        for code in (decimals.EMPTY, decimals.SYNTAX, decimals.OVERFLOW):
            exp = expected if code != decimals.OVERFLOW else expected + " that fits in int64"
            self.add(st == code, STATUS_RULE[code], field, exp, found, ParseError, col)
        self.add(st == decimals.OFF_GRID, off_grid_rule, field, off_grid_expected, found, SchemaError, col)

    @property
    def any(self) -> bool:
        return bool(self.issues)

    def resolve(self, errors: str) -> tuple[np.ndarray, pa.Table]:
        """Raise at the first bad row, or return (keep mask, quarantine table)."""
        keep = np.ones(self.n, dtype=np.bool_)
        if not self.issues:
            return keep, empty_rejected()
        owner = np.full(self.n, -1, dtype=np.int64)
        for k, iss in enumerate(self.issues):
            owner[iss.mask & (owner < 0)] = k
        bad = np.flatnonzero(owner >= 0)
        if errors == "raise":
            i = int(bad[0])
            iss = self.issues[int(owner[i])]
            more = bad.size - 1
            tail = f" ({more:,} more bad rows follow)" if more > 0 else ""
            where = f" (column {iss.col})" if iss.col is not None else ""
            msg = (f"{self.path}: {self.unit} {int(self.line[i])}: field {iss.field!r}{where}: "
                   f"expected {iss.expected}, "
                   f"found {iss.found(i)!r}{tail}; pass errors='quarantine' to set bad rows aside")
            raise iss.exc(msg)
        keep[bad] = False
        rules, fields, details, raws = [], [], [], []
        for i in bad.tolist():
            iss = self.issues[int(owner[i])]
            rules.append(iss.rule)
            fields.append(iss.field)
            details.append(f"expected {iss.expected}, found {iss.found(i)!r}")
            raws.append(self.raw(i))
        rej = rejected_table(self.path, self.line[bad], rules, fields, details, raws)
        return keep, rej


# ---- instruments, ordering, progress ------------------------------------------------------------
def pick_instrument(instrument: Instrument | Mapping[Any, Instrument] | None, venue: str, symbol: str,
                    path: str, n_streams: int) -> Instrument | None:
    """The user's instrument for stream (venue, symbol), or None when the user gave none.

    ``instrument`` is one :class:`Instrument` (files with one stream) or a mapping
    keyed by symbol or by ``(venue, symbol)``.
    """
    if instrument is None:
        return None
    if isinstance(instrument, Instrument):
        if n_streams > 1:
            msg = (f"{path}: the file holds {n_streams} instruments but one Instrument was given; pass a "
                   "mapping {symbol: Instrument} or {(venue, symbol): Instrument}")
            raise SchemaError(msg)
        return instrument
    if isinstance(instrument, Mapping):
        return instrument.get((venue, symbol), instrument.get(symbol))
    msg = f"instrument: expected an Instrument, a mapping of them or None, got {type(instrument).__name__}"
    raise SchemaError(msg)


def stable_order(ts_local: np.ndarray) -> np.ndarray | None:
    """Permutation that sorts by ``ts_local`` keeping ties in source order; None if already sorted."""
    if ts_local.size < 2 or bool(np.all(ts_local[1:] >= ts_local[:-1])):
        return None
    return np.argsort(ts_local, kind="stable")


def apply_order(cols: dict[str, np.ndarray], order: np.ndarray | None) -> dict[str, np.ndarray]:
    if order is None:
        return cols
    return {k: v[order] for k, v in cols.items()}


def insert_clears(cols: dict[str, np.ndarray], before: np.ndarray, flags: int) -> dict[str, np.ndarray]:
    """Insert a ``KIND_CLEAR`` row before each row where ``before`` is True.

    The inserted row copies ``ts_exch``, ``ts_local``, ``seq``, ``src_line`` and the
    ``FLAG_TS_EXCH_MISSING`` bit of the row it precedes; its flags are ``flags``
    plus that bit; every other column is 0.
    """
    from gpuflow.schema import FLAG_TS_EXCH_MISSING, KIND_CLEAR

    n = before.size
    n_new = int(before.sum())
    if n_new == 0:
        return cols
    pos = np.arange(n) + np.cumsum(before)
    new_pos = pos[before] - 1
    out: dict[str, np.ndarray] = {}
    for k, v in cols.items():
        o = np.zeros(n + n_new, dtype=v.dtype)
        o[pos] = v
        if k in ("ts_exch", "ts_local", "seq", "src_line"):
            o[new_pos] = v[before]
        out[k] = o
    out["kind"][new_pos] = KIND_CLEAR
    out["flags"][new_pos] = (cols["flags"][before] & FLAG_TS_EXCH_MISSING) | flags
    return out


def report(progress: Any, path: str, stage: str, done: int, total: int) -> None:
    """Report progress: call ``progress(done, total)`` if callable, else log when enabled."""
    if callable(progress):
        progress(done, total)
        return
    if progress is None:
        from gpuflow.config import get_option

        progress = get_option("progress")
    if progress:
        _log.info("%s: %s %s/%s", path, stage, f"{done:,}", f"{total:,}")
