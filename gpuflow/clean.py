"""Cleaning: find bad rows in an events table, quarantine them with a reason, report counts.

:func:`clean` runs a fixed sequence of rules over an events table (schema
:data:`gpuflow.schema.EVENTS`) and returns a :class:`CleanResult`: the kept rows
(same schema, metadata and order), the quarantined rows (schema
:data:`gpuflow.schema.QUARANTINE`, one row per rejected event with the rule, the
field, the values and a text rendering of the event) and a :class:`CleanReport`
with what each rule found.  Nothing is dropped silently: every removed row is in
the quarantine, and rules that only describe the data (gaps, a crossed book)
report counts and the first lines they concern.

Rules, in the order they run (each later rule sees only the rows kept so far):

==================  =====================  ============  ==================================================
rule (``rules=``)   finding                action        what
==================  =====================  ============  ==================================================
duplicates          duplicates             quarantine    exact copy of an earlier row (all 9 event columns)
out_of_order        out_of_order           quarantine    ``ts_local`` lower than the running max of earlier rows
nonpositive_size    nonpositive_size       quarantine    ``qty < 0`` on a sized row, or ``qty == 0`` on a
                                                         trade / add / execute / bbo row
sequence            update_id_not_monotone quarantine    Binance diff ``u <= previous u`` (stale/duplicate
                                                         message): the marker and its level rows
sequence            sequence_gap           count         diff chain broken (futures ``pu != previous u``, spot
                                                         ``U != previous u + 1``, or the first diff after a
                                                         snapshot does not bridge it); rows are kept, the book
                                                         sync resyncs
sequence            pre_snapshot           info          diff with ``u <= lastUpdateId`` of the snapshot being
                                                         synced to (superseded by the snapshot)
sequence            seq_not_monotone       quarantine    trade id lower than an earlier one, or repeated
                                                         (replayed trade)
sequence            trade_id_gap           info          trade ids skip values
crossed_book        crossed_bbo            quarantine    a BBO pair (bid row + ask row of one quote) with
                                                         bid >= ask: both rows
crossed_book        crossed_book           count         best bid >= best ask after a message of the book
                                                         (rows with ``FLAG_EOM``), from
                                                         :func:`gpuflow.book.top_of_book`
price_outlier       price_outlier          quarantine    trade / bbo price far from a causal rolling median
==================  =====================  ============  ==================================================

Readers' rejects (``off_grid_price``, ``malformed_line``, ...) are folded into the
same report and quarantine when a :class:`~gpuflow.io.ReadResult` is cleaned or
``rejected=`` is given.

All rules work on whole columns (numpy) or in numba ``@njit`` loops; none loops
over rows in Python, so tables of tens of millions of rows are fine.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numba import njit
from tqdm.auto import tqdm

from gpuflow import config
from gpuflow.errors import GpuflowError, SchemaError
from gpuflow.schema import (EMPTY_ASK_PRICE, EMPTY_BID_PRICE, EVENT_COLUMNS, FLAG_AGGREGATED, FLAG_EOM,
                            FLAG_SNAPSHOT_BEGIN, KIND_ADD, KIND_BBO, KIND_CANCEL, KIND_CLEAR, KIND_DELETE,
                            KIND_DIFF, KIND_EXECUTE, KIND_MODIFY, KIND_NAMES, KIND_SET, KIND_SNAPSHOT,
                            KIND_STATUS, KIND_TRADE, QUARANTINE, validate)

if TYPE_CHECKING:  # pragma: no cover
    from numpy.typing import NDArray

    from gpuflow.io import ReadResult

__all__ = [
    "RULES", "FINDINGS", "DEFAULT_OUTLIER_WINDOW", "DEFAULT_OUTLIER_K", "DEFAULT_OUTLIER_MIN_FRAC",
    "DEFAULT_OUTLIER_MIN_PERIODS", "RuleCount", "CleanReport", "CleanResult", "clean",
    "write_quarantine", "render_events",
]

#: Rule names accepted by ``clean(rules=...)``, in the order they run.
RULES: tuple[str, ...] = ("duplicates", "out_of_order", "nonpositive_size", "sequence", "crossed_book",
                          "price_outlier")

#: finding -> (rule that produces it, action, description).  Reader rejects add their own rules.
FINDINGS: dict[str, tuple[str, str, str]] = {
    "duplicates": ("duplicates", "quarantine", "exact duplicate of an earlier row (first copy kept)"),
    "out_of_order": ("out_of_order", "quarantine", "ts_local lower than the running max of earlier rows"),
    "nonpositive_size": ("nonpositive_size", "quarantine",
                         "qty < 0, or qty == 0 on a trade/add/execute/bbo row"),
    "update_id_not_monotone": ("sequence", "quarantine",
                               "diff message with u <= previous u (stale or duplicate), with its levels"),
    "sequence_gap": ("sequence", "count", "diff update-id chain broken; rows kept, the book resyncs"),
    "pre_snapshot": ("sequence", "info", "diff superseded by the snapshot being synced to (u <= lastUpdateId)"),
    "seq_not_monotone": ("sequence", "quarantine", "trade id lower than an earlier one or replayed"),
    "trade_id_gap": ("sequence", "info", "trade ids skip values"),
    "crossed_bbo": ("crossed_book", "quarantine", "BBO quote with bid >= ask (both rows)"),
    "price_outlier": ("price_outlier", "quarantine", "trade/bbo price far from the causal rolling median"),
    "crossed_book": ("crossed_book", "count", "best bid >= best ask after a book message (FLAG_EOM row)"),
}

#: Rolling window of earlier trade/quote prices for ``price_outlier`` (number of prices).
DEFAULT_OUTLIER_WINDOW = 201
#: A price is an outlier when ``|price - median| > max(k * MAD, min_frac * |median|)``.
DEFAULT_OUTLIER_K = 12.0
#: Floor of the outlier threshold as a fraction of the median price (0.005 = 0.5 %).
DEFAULT_OUTLIER_MIN_FRAC = 0.005
#: Prices needed in the window before any price is judged.
DEFAULT_OUTLIER_MIN_PERIODS = 30

_BOOK_KINDS = (KIND_SET, KIND_SNAPSHOT, KIND_CLEAR, KIND_ADD, KIND_MODIFY, KIND_CANCEL, KIND_DELETE,
               KIND_EXECUTE)
#: Rows whose ``qty`` is not a size: diff markers (pu or -1) and status rows (-1 = halt).
_UNSIZED_KINDS = (KIND_DIFF, KIND_STATUS)
_MUST_BE_POSITIVE = (KIND_TRADE, KIND_ADD, KIND_EXECUTE, KIND_BBO)
_KIND_TEXT = np.array([KIND_NAMES.get(i, str(i)) for i in range(256)], dtype=object)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
@dataclass
class RuleCount:
    """What one finding counted.

    Attributes
    ----------
    rule : str
        Finding name (``duplicates``, ``sequence_gap``, ``off_grid_price``, ...).
    stage : {"clean", "read"}
        ``read`` for rejects reported by a reader.
    action : {"quarantine", "count", "info"}
        ``quarantine``: the rows are moved to the quarantine; ``count``: a problem
        reported but the rows are kept; ``info``: normal, reported for context.
    found : int
        Rows (or messages, events) found.
    quarantined : int
        Rows moved to the quarantine.
    examples : list of (int, str)
        The first few (line, detail) pairs.
    description : str
    """

    rule: str
    stage: str = "clean"
    action: str = "quarantine"
    found: int = 0
    quarantined: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "stage": self.stage, "action": self.action, "found": self.found,
                "quarantined": self.quarantined, "description": self.description,
                "examples": [{"line": int(ln), "detail": d} for ln, d in self.examples]}


@dataclass
class CleanReport:
    """Per-rule counts of one cleaning run (plus a reader's rejects, when merged).

    Attributes
    ----------
    source : str
    rows_in : int
        Rows given to :func:`clean` (reader rejects are not rows of the table).
    rows_kept : int
    rules : dict of str to RuleCount
        In the order the rules ran; reader rejects first.
    max_examples : int
        How many (line, detail) examples each finding keeps.
    """

    source: str = ""
    rows_in: int = 0
    rows_kept: int = 0
    rules: dict[str, RuleCount] = field(default_factory=dict)
    max_examples: int = 10

    @property
    def rows_quarantined(self) -> int:
        """Rows in the quarantine, reader rejects included."""
        return sum(r.quarantined for r in self.rules.values())

    def __getitem__(self, rule: str) -> RuleCount:
        try:
            return self.rules[rule]
        except KeyError:
            msg = f"report of {self.source!r} has no rule {rule!r}; it has {list(self.rules)}"
            raise KeyError(msg) from None

    def __contains__(self, rule: object) -> bool:
        return rule in self.rules

    def found(self, rule: str) -> int:
        """Count found by ``rule`` (0 when the rule did not run)."""
        r = self.rules.get(rule)
        return 0 if r is None else r.found

    def _entry(self, rule: str, stage: str = "clean", action: str | None = None) -> RuleCount:
        r = self.rules.get(rule)
        if r is None:
            meta = FINDINGS.get(rule)
            r = RuleCount(rule=rule, stage=stage,
                          action=action or (meta[1] if meta else "quarantine"),
                          description=meta[2] if meta else "rejected by the reader")
            self.rules[rule] = r
        return r

    def add(self, rule: str, found: int, quarantined: int = 0, lines: Any = (), details: Any = (),
            stage: str = "clean", action: str | None = None) -> RuleCount:
        """Add counts (and examples) to ``rule``; creates the entry if needed."""
        r = self._entry(rule, stage, action)
        r.found += int(found)
        r.quarantined += int(quarantined)
        room = self.max_examples - len(r.examples)
        if room > 0:
            lines = list(lines[:room]) if len(lines) else []
            details = list(details[:room]) if len(details) else [""] * len(lines)
            r.examples.extend((int(ln), str(d)) for ln, d in zip(lines, details))
        return r

    def merge(self, other: CleanReport | pa.Table) -> CleanReport:
        """Add another report's counts, or a reader's rejected table (QUARANTINE schema), in place.

        Parameters
        ----------
        other : CleanReport or pyarrow.Table
            A rejected table counts one ``found`` and one ``quarantined`` per row
            under its ``rule`` (stage ``read``).

        Returns
        -------
        CleanReport
            ``self``.
        """
        if isinstance(other, CleanReport):
            self.rows_in += other.rows_in
            self.rows_kept += other.rows_kept
            if not self.source:
                self.source = other.source
            for name, r in other.rules.items():
                self.add(name, r.found, r.quarantined, [e[0] for e in r.examples],
                         [e[1] for e in r.examples], stage=r.stage, action=r.action)
            return self
        if isinstance(other, pa.Table):
            _check_quarantine(other, "CleanReport.merge")
            if other.num_rows == 0:
                return self
            rules = np.asarray(other.column("rule").to_pylist(), dtype=object)
            lines = other.column("line").to_numpy(zero_copy_only=False)
            details = np.asarray(other.column("detail").to_pylist(), dtype=object)
            names, first = np.unique(rules.astype(str), return_index=True)
            for name in names[np.argsort(first, kind="stable")]:
                m = rules == name
                self.add(str(name), int(m.sum()), int(m.sum()), lines[m], details[m], stage="read",
                         action="quarantine")
            return self
        msg = f"CleanReport.merge: expected a CleanReport or a QUARANTINE table, got {type(other).__name__}"
        raise TypeError(msg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for ``--json``)."""
        return {"source": self.source, "rows_in": self.rows_in, "rows_kept": self.rows_kept,
                "rows_quarantined": self.rows_quarantined,
                "rules": [r.to_dict() for r in self.rules.values()]}

    def to_table(self) -> str:
        """Text table with aligned columns (for the CLI)."""
        head = ("rule", "stage", "action", "found", "quarantined", "first lines")
        rows = []
        for r in self.rules.values():
            first = ", ".join(str(ln) for ln, _ in r.examples[:5])
            rows.append((r.rule, r.stage, r.action, f"{r.found:,}", f"{r.quarantined:,}", first))
        widths = [max(len(head[i]), *(len(row[i]) for row in rows)) if rows else len(head[i])
                  for i in range(len(head))]
        right = {3, 4}

        def fmt(row: Sequence[str]) -> str:
            return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                             for i, c in enumerate(row)).rstrip()

        out = [fmt(head), fmt(["-" * w for w in widths])]
        out += [fmt(row) for row in rows]
        out.append(f"rows: in {self.rows_in:,}, kept {self.rows_kept:,}, "
                   f"quarantined {self.rows_quarantined:,}" + (f"  ({self.source})" if self.source else ""))
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_table()


@dataclass
class CleanResult:
    """What :func:`clean` returns.

    Attributes
    ----------
    tables : list of pyarrow.Table
        Kept rows of each input table (same schema, metadata, row order).
    quarantine : pyarrow.Table
        Rejected rows (schema :data:`gpuflow.schema.QUARANTINE`), reader rejects first,
        then the cleaning rejects in row order.
    report : CleanReport
    """

    tables: list[pa.Table]
    quarantine: pa.Table
    report: CleanReport

    @property
    def table(self) -> pa.Table:
        """The kept rows when one table was cleaned (use :attr:`tables` for several instruments)."""
        if len(self.tables) != 1:
            msg = (f"CleanResult holds {len(self.tables)} tables (one per instrument); "
                   "use .tables instead of .table")
            raise GpuflowError(msg)
        return self.tables[0]


# ---------------------------------------------------------------------------------------------
# jitted helpers
# ---------------------------------------------------------------------------------------------
@njit(cache=True)
def _mix(h, v):  # pragma: no cover - jitted
    # splitmix64-style combine; uint64 arithmetic wraps
    h ^= np.uint64(v) + np.uint64(0x9E3779B97F4A7C15) + (h << np.uint64(6)) + (h >> np.uint64(2))
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(31)
    return h


@njit(cache=True)
def _hash_rows(a0, a1, a2, a3, a4, a5, a6, a7, a8):  # pragma: no cover - jitted
    """uint64 hash of each row's 9 event columns (each given as int64)."""
    n = a0.size
    out = np.empty(n, np.uint64)
    for i in range(n):
        h = np.uint64(0x243F6A8885A308D3)
        h = _mix(h, a0[i])
        h = _mix(h, a1[i])
        h = _mix(h, a2[i])
        h = _mix(h, a3[i])
        h = _mix(h, a4[i])
        h = _mix(h, a5[i])
        h = _mix(h, a6[i])
        h = _mix(h, a7[i])
        h = _mix(h, a8[i])
        out[i] = h
    return out


@njit(cache=True)
def _same_row(i, j, a0, a1, a2, a3, a4, a5, a6, a7, a8):  # pragma: no cover - jitted
    return (a0[i] == a0[j] and a1[i] == a1[j] and a2[i] == a2[j] and a3[i] == a3[j] and a4[i] == a4[j]
            and a5[i] == a5[j] and a6[i] == a6[j] and a7[i] == a7[j] and a8[i] == a8[j])


@njit(cache=True)
def _duplicate_of(order, h, a0, a1, a2, a3, a4, a5, a6, a7, a8):  # pragma: no cover - jitted
    """``dup[i]`` = index of the first earlier row equal to row ``i`` in all columns, else -1.

    ``order`` is a stable argsort of the hashes ``h``: rows with one hash are
    adjacent and in row order.  Within a run of equal hashes each row is compared
    with the distinct rows seen so far in the run, so hash collisions never merge
    different rows.
    """
    n = order.size
    dup = np.full(h.size, -1, np.int64)
    s = 0
    while s < n:
        e = s + 1
        while e < n and h[order[e]] == h[order[s]]:
            e += 1
        if e - s > 1:
            reps = np.empty(e - s, np.int64)
            nrep = 0
            for t in range(s, e):
                j = order[t]
                found = -1
                for r in range(nrep):
                    if _same_row(reps[r], j, a0, a1, a2, a3, a4, a5, a6, a7, a8):
                        found = reps[r]
                        break
                if found >= 0:
                    dup[j] = found
                else:
                    reps[nrep] = j
                    nrep += 1
        s = e
    return dup


# status codes of diff markers
_ST_OK = 0
_ST_NOT_MONOTONE = 1
_ST_GAP = 2
_ST_PRE_SNAPSHOT = 3
_ST_BRIDGE = 4
_ST_START = 5


@njit(cache=True)
def _diff_chain(is_snap, seq, first_id, prev_final):  # pragma: no cover - jitted
    """Walk the diff markers and snapshot starts of one book stream, in row order.

    Parameters (one entry per marker or snapshot start, int64 / bool, host)
    ----------
    is_snap : snapshot start (seq = lastUpdateId) or diff marker (seq = u)
    seq : u or lastUpdateId
    first_id : U of a diff (its ``price``)
    prev_final : pu of a futures diff (its ``qty``), -1 for spot

    A diff's "previous id" is ``pu`` (futures) or ``U - 1`` (spot); the chain holds
    when it equals the previous diff's ``u``.  The snapshot a diff is synced to is
    the latest one at or before it, else (before the first snapshot) the next one:
    diffs with ``u <= lastUpdateId`` are ``pre_snapshot``, the first later diff must
    bridge it (previous id <= lastUpdateId < u) or the chain has a gap.  A snapshot
    whose id the chain has already passed (the bridging diff was recorded before
    the REST snapshot) needs no bridge.

    Returns
    -------
    status : int8 per entry (``_ST_*``; snapshot entries are 0)
    expected : int64 per entry, the id the "previous id" should have matched
    """
    n = seq.size
    status = np.zeros(n, np.int8)
    expected = np.full(n, -1, np.int64)
    # next snapshot id for the entries before the first snapshot
    next_snap = np.full(n, -1, np.int64)
    nxt = np.int64(-1)
    for i in range(n - 1, -1, -1):
        if is_snap[i]:
            nxt = seq[i]
        next_snap[i] = nxt
    have_last = False
    last_u = np.int64(0)
    target = np.int64(-1)
    seen_snap = False
    bridged = False
    for i in range(n):
        if is_snap[i]:
            seen_snap = True
            target = seq[i]
            bridged = have_last and last_u >= target
            continue
        if not seen_snap:
            target = next_snap[i]
        u = seq[i]
        prev = prev_final[i] if prev_final[i] != -1 else first_id[i] - 1
        if have_last and u <= last_u:
            status[i] = _ST_NOT_MONOTONE
            expected[i] = last_u
            continue
        if target >= 0 and not bridged:
            if u <= target:
                status[i] = _ST_PRE_SNAPSHOT
                expected[i] = target
            elif prev <= target:
                status[i] = _ST_BRIDGE
                bridged = True
            elif have_last and prev == last_u and last_u >= target:
                bridged = True
            else:
                status[i] = _ST_GAP
                expected[i] = target
                bridged = True
        elif not have_last:
            status[i] = _ST_START
        elif prev != last_u:
            status[i] = _ST_GAP
            expected[i] = last_u
        have_last = True
        last_u = u
    return status, expected


@njit(cache=True)
def _trade_ids(seq, ts_exch, price, qty, side):  # pragma: no cover - jitted
    """Trade-id checks of one trade stream (ids > 0), in row order.

    Returns ``status`` (0 ok, 1 stale: id lower than the max so far, 2 replayed: the
    same id as the last trade with the same exchange time, price, qty and side or a
    different exchange time, 3 gap: id > max + 1) and ``ref`` (the max id so far).
    Several prints of one match may share an id (same ``ts_exch``, different
    price or qty): those are kept.
    """
    n = seq.size
    status = np.zeros(n, np.int8)
    ref = np.full(n, -1, np.int64)
    have = False
    mx = np.int64(0)
    last = -1
    for j in range(n):
        s = seq[j]
        if have and s < mx:
            status[j] = 1
            ref[j] = mx
        elif have and s == mx:
            p = last
            if ts_exch[j] != ts_exch[p] or (price[j] == price[p] and qty[j] == qty[p] and side[j] == side[p]):
                status[j] = 2
                ref[j] = mx
            else:
                last = j
        else:
            if have and s != mx + 1:
                status[j] = 3
                ref[j] = mx
            mx = s
            have = True
            last = j
    return status, ref


@njit(cache=True)
def _bbo_pairs(side, ts_local, seq):  # pragma: no cover - jitted
    """Greedy pairing of consecutive BBO rows (opposite sides, same ts_local and seq).

    Returns ``mate`` per row: the index (into these arrays) of the other row of its
    quote, or -1.
    """
    n = side.size
    mate = np.full(n, -1, np.int64)
    k = 0
    while k < n - 1:
        if side[k] * side[k + 1] == -1 and ts_local[k] == ts_local[k + 1] and seq[k] == seq[k + 1]:
            mate[k] = k + 1
            mate[k + 1] = k
            k += 2
        else:
            k += 1
    return mate


@njit(cache=True)
def _insert_sorted(srt, cnt, x):  # pragma: no cover - jitted
    lo = np.searchsorted(srt[:cnt], x)
    for t in range(cnt, lo, -1):
        srt[t] = srt[t - 1]
    srt[lo] = x


@njit(cache=True)
def _remove_sorted(srt, cnt, x):  # pragma: no cover - jitted
    p = np.searchsorted(srt[:cnt], x)
    for t in range(p, cnt - 1):
        srt[t] = srt[t + 1]


@njit(cache=True)
def _kth_abs_dev(srt, cnt, med, k):  # pragma: no cover - jitted
    """k-th smallest (0-based) of ``|srt[:cnt] - med|`` by merging both sides of ``med``."""
    right = np.searchsorted(srt[:cnt], med)
    left = right - 1
    val = 0.0
    for _ in range(k + 1):
        if left >= 0 and (right >= cnt or med - srt[left] <= srt[right] - med):
            val = med - srt[left]
            left -= 1
        else:
            val = srt[right] - med
            right += 1
    return val


@njit(cache=True)
def _rolling_outliers(px, window, k, min_frac, min_periods):  # pragma: no cover - jitted
    """Causal robust outlier test of each price against the ``window`` prices before it.

    For price ``i``, with ``med`` and ``mad`` the median and the median absolute
    deviation of the (up to) ``window`` prices before it::

        outlier = |px[i] - med| > max(k * mad, min_frac * |med|)    (needs >= min_periods prices)

    Every price, outlier or not, then enters the window: a genuine level shift
    stops being flagged once it holds the median, an isolated bad print never
    moves the median.  Sorted window kept by insertion, O(window) per price.

    Returns ``flag`` (bool), ``med`` and ``thr`` (float64) per price.
    """
    n = px.size
    flag = np.zeros(n, np.bool_)
    meds = np.zeros(n)
    thrs = np.zeros(n)
    ring = np.empty(window)
    srt = np.empty(window)
    cnt = 0
    head = 0
    for i in range(n):
        x = px[i]
        if cnt >= min_periods and cnt > 0:
            h = cnt // 2
            med = srt[h] if cnt % 2 == 1 else 0.5 * (srt[h - 1] + srt[h])
            if cnt % 2 == 1:
                mad = _kth_abs_dev(srt, cnt, med, h)
            else:
                mad = 0.5 * (_kth_abs_dev(srt, cnt, med, h - 1) + _kth_abs_dev(srt, cnt, med, h))
            thr = max(k * mad, min_frac * abs(med))
            meds[i] = med
            thrs[i] = thr
            if abs(x - med) > thr:
                flag[i] = True
        if cnt < window:
            ring[(head + cnt) % window] = x
            _insert_sorted(srt, cnt, x)
            cnt += 1
        else:
            _remove_sorted(srt, cnt, ring[head])
            _insert_sorted(srt, cnt - 1, x)
            ring[head] = x
            head = (head + 1) % window
    return flag, meds, thrs


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------
def _s(a: Any) -> pa.Array:
    return pc.cast(pa.array(np.asarray(a)), pa.string())


def _join(*parts: Any) -> pa.Array:
    """Element-wise concatenation of literal strings and arrays (numpy or Arrow)."""
    args = []
    for p in parts:
        if isinstance(p, str):
            args.append(pa.scalar(p))
        elif isinstance(p, (pa.Array, pa.ChunkedArray)):
            args.append(p if p.type == pa.string() else pc.cast(p, pa.string()))
        else:
            args.append(_s(p))
    if not any(isinstance(a, (pa.Array, pa.ChunkedArray)) for a in args):
        msg = "_join needs at least one array"
        raise TypeError(msg)
    return pc.binary_join_element_wise(*args, "")


def render_events(cols: dict[str, np.ndarray], rows: NDArray[np.int64]) -> pa.Array:
    """Text rendering of event rows (the quarantine's ``raw``).

    Parameters
    ----------
    cols : dict of str to numpy.ndarray
        The 9 event columns (host).
    rows : numpy.ndarray of int64
        Row indices to render.

    Returns
    -------
    pyarrow.StringArray
        ``"ts_exch=.. ts_local=.. seq=.. kind=set side=1 price=.. qty=.. order_id=0 flags=32"``.
    """
    parts: list[Any] = []
    for c in EVENT_COLUMNS:
        parts.append(("" if not parts else " ") + c + "=")
        v = cols[c][rows]
        parts.append(pa.array(_KIND_TEXT[v], pa.string()) if c == "kind" else v)
    if len(rows) == 0:
        return pa.array([], pa.string())
    return _join(*parts)


# ---------------------------------------------------------------------------------------------
# cleaning
# ---------------------------------------------------------------------------------------------
def _check_quarantine(t: pa.Table, where: str) -> None:
    missing = [f.name for f in QUARANTINE if f.name not in t.column_names]
    if missing:
        msg = (f"{where}: expected a quarantine table with columns {QUARANTINE.names}, "
               f"missing {missing} (found {t.column_names})")
        raise SchemaError(msg)


class _Cleaner:
    """State of one :func:`clean` run over one table."""

    def __init__(self, table: pa.Table, source: str, report: CleanReport) -> None:
        self.table = table
        self.source = source
        self.report = report
        self.n = table.num_rows
        self.cols = {c: table.column(c).to_numpy() for c in EVENT_COLUMNS}
        if "src_line" in table.column_names:
            self.lines = table.column("src_line").to_numpy()
        else:
            self.lines = np.arange(self.n, dtype=np.int64)
        self.keep = np.ones(self.n, dtype=bool)
        self.pieces: list[tuple[np.ndarray, str, str, pa.Array]] = []

    # -- helpers ----------------------------------------------------------------------------
    def kept(self) -> np.ndarray:
        return np.flatnonzero(self.keep)

    def quarantine(self, rule: str, rows: np.ndarray, field_: str, detail: pa.Array) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        self.keep[rows] = False
        self.pieces.append((rows, rule, field_, detail))
        self.report.add(rule, len(rows), len(rows), self.lines[rows[: self.report.max_examples]],
                        detail[: self.report.max_examples].to_pylist())

    def count(self, rule: str, rows: np.ndarray, detail: pa.Array | None) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        m = self.report.max_examples
        det = detail[:m].to_pylist() if detail is not None else []
        self.report.add(rule, len(rows), 0, self.lines[rows[:m]], det)

    def quarantine_table(self) -> pa.Table:
        if not self.pieces:
            return QUARANTINE.empty_table()
        rows = np.concatenate([p[0] for p in self.pieces])
        rule = pa.concat_arrays([pa.array(np.full(len(p[0]), p[1], dtype=object), pa.string())
                                 for p in self.pieces])
        fld = pa.concat_arrays([pa.array(np.full(len(p[0]), p[2], dtype=object), pa.string())
                                for p in self.pieces])
        detail = pa.concat_arrays([p[3] for p in self.pieces])
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        idx = pa.array(order)
        return pa.Table.from_arrays([
            pa.array(np.full(len(rows), self.source, dtype=object), pa.string()),
            pa.array(self.lines[rows], pa.int64()),
            rule.take(idx), fld.take(idx), detail.take(idx),
            render_events(self.cols, rows),
        ], schema=QUARANTINE)

    # -- rules ------------------------------------------------------------------------------
    def duplicates(self) -> None:
        c = self.cols
        a = [c[name].astype(np.int64, copy=False) if c[name].dtype != np.int64 else c[name]
             for name in EVENT_COLUMNS]
        a[7] = c["order_id"].view(np.int64)
        h = _hash_rows(*a)
        order = np.argsort(h, kind="stable")
        dup = _duplicate_of(order, h, *a)
        rows = np.flatnonzero(dup >= 0)
        self.report._entry("duplicates")
        if len(rows):
            self.quarantine("duplicates", rows, "*",
                            _join("exact duplicate of line ", self.lines[dup[rows]]))

    def out_of_order(self) -> None:
        idx = self.kept()
        self.report._entry("out_of_order")
        if len(idx) < 2:
            return
        ts = self.cols["ts_local"][idx]
        prev_max = np.empty_like(ts)
        prev_max[0] = ts[0]
        np.maximum.accumulate(ts[:-1], out=prev_max[1:])
        bad = np.flatnonzero(ts < prev_max)
        if len(bad):
            self.quarantine("out_of_order", idx[bad], "ts_local",
                            _join("ts_local ", ts[bad], " < running max ", prev_max[bad], " (",
                                  prev_max[bad] - ts[bad], " ns earlier)"))

    def nonpositive_size(self) -> None:
        idx = self.kept()
        self.report._entry("nonpositive_size")
        kind = self.cols["kind"][idx]
        qty = self.cols["qty"][idx]
        sized = ~np.isin(kind, _UNSIZED_KINDS)
        bad = sized & ((qty < 0) | ((qty == 0) & np.isin(kind, _MUST_BE_POSITIVE)))
        rows = idx[bad]
        if len(rows):
            self.quarantine("nonpositive_size", rows, "qty",
                            _join("qty ", self.cols["qty"][rows], " on a ",
                                  pa.array(_KIND_TEXT[self.cols["kind"][rows]], pa.string()),
                                  " row (expected > 0", pa.array(np.where(
                                      np.isin(self.cols["kind"][rows], _MUST_BE_POSITIVE), "", ", or 0 = delete"
                                  ).astype(object), pa.string()), ")"))

    def sequence(self) -> None:
        for name in ("update_id_not_monotone", "sequence_gap", "pre_snapshot", "seq_not_monotone",
                     "trade_id_gap"):
            self.report._entry(name)
        self._update_ids()
        self._trade_ids()

    def _update_ids(self) -> None:
        c = self.cols
        idx = self.kept()
        kind = c["kind"][idx]
        is_marker = kind == KIND_DIFF
        is_snap = (kind == KIND_CLEAR) & ((c["flags"][idx] & FLAG_SNAPSHOT_BEGIN) != 0)
        ev = np.flatnonzero(is_marker | is_snap)
        if not is_marker.any():
            return
        rows = idx[ev]
        status, expected = _diff_chain(is_snap[ev], c["seq"][rows], c["price"][rows], c["qty"][rows])
        seq, first, prevf = c["seq"][rows], c["price"][rows], c["qty"][rows]
        spot = prevf == -1

        # chain breaks: counted, kept
        g = np.flatnonzero(status == _ST_GAP)
        if len(g):
            m = self.report.max_examples
            gg = g[:m]
            det = _join("diff u=", seq[gg], ": ",
                        pa.array(np.where(spot[gg], "U-1=", "pu=").astype(object), pa.string()),
                        np.where(spot[gg], first[gg] - 1, prevf[gg]), ", expected ", expected[gg],
                        " (previous u or snapshot lastUpdateId)")
            self.count("sequence_gap", rows[g], det)
        else:
            self.count("sequence_gap", rows[:0], None)
        p = np.flatnonzero(status == _ST_PRE_SNAPSHOT)
        self.count("pre_snapshot", rows[p],
                   _join("diff u=", seq[p], " <= snapshot lastUpdateId ", expected[p]) if len(p) else None)

        # stale / duplicate messages: quarantine the marker and its level rows
        bad_ev = np.flatnonzero(status == _ST_NOT_MONOTONE)
        if not len(bad_ev):
            return
        marker_pos = np.where(is_marker, np.arange(len(idx)), -1)
        owner = np.maximum.accumulate(marker_pos)
        bad_marker = np.zeros(len(idx), dtype=bool)
        bad_marker[ev[bad_ev]] = True
        prev_u = np.zeros(len(idx), dtype=np.int64)
        prev_u[ev[bad_ev]] = expected[bad_ev]
        seq_k = c["seq"][idx]
        has_owner = owner >= 0
        own = np.where(has_owner, owner, 0)
        level = (kind == KIND_SET) & has_owner & bad_marker[own] & (seq_k == seq_k[own])
        sel = np.flatnonzero(bad_marker | level)
        is_lvl = level[sel]
        det = _join(pa.array(np.where(is_lvl, "level of stale diff message u=", "diff u=").astype(object),
                             pa.string()),
                    seq_k[sel], " <= previous u=", prev_u[own[sel]],
                    pa.array(np.where(is_lvl, "", " (stale or duplicate message)").astype(object),
                             pa.string()))
        self.quarantine("update_id_not_monotone", idx[sel], "seq", det)

    def _trade_ids(self) -> None:
        c = self.cols
        idx = self.kept()
        kind = c["kind"][idx]
        trade = (kind == KIND_TRADE) & (c["seq"][idx] > 0)
        agg = (c["flags"][idx] & FLAG_AGGREGATED) != 0
        bad_all, gap_all, det_gap = [], [], []
        for stream in (trade & ~agg, trade & agg):
            rows = idx[stream]
            if not len(rows):
                continue
            status, ref = _trade_ids(c["seq"][rows], c["ts_exch"][rows], c["price"][rows], c["qty"][rows],
                                     c["side"][rows])
            bad = np.flatnonzero((status == 1) | (status == 2))
            if len(bad):
                bad_all.append((rows[bad], status[bad], ref[bad]))
            gap = np.flatnonzero(status == 3)
            if len(gap):
                gap_all.append(rows[gap])
                det_gap.append(_join("trade id ", c["seq"][rows[gap]], " follows ", ref[gap], " (",
                                     c["seq"][rows[gap]] - ref[gap] - 1, " ids missing)"))
        if gap_all:
            self.count("trade_id_gap", np.concatenate(gap_all), pa.concat_arrays(det_gap))
        for rows, st, ref in bad_all:
            det = _join("trade id ", c["seq"][rows],
                        pa.array(np.where(st == 1, " < earlier id ", " repeats id ").astype(object),
                                 pa.string()), ref,
                        pa.array(np.where(st == 1, " (stale)", " (replayed trade)").astype(object),
                                 pa.string()))
            self.quarantine("seq_not_monotone", rows, "seq", det)

    def crossed_bbo(self) -> None:
        c = self.cols
        self.report._entry("crossed_bbo")
        idx = self.kept()
        b = idx[c["kind"][idx] == KIND_BBO]
        if len(b) < 2:
            return
        side = c["side"][b]
        mate = _bbo_pairs(side, c["ts_local"][b], c["seq"][b])
        has = mate >= 0
        mate_ = np.where(has, mate, 0)
        px = c["price"][b]
        bid = np.where(side > 0, px, px[mate_])
        ask = np.where(side > 0, px[mate_], px)
        bad = np.flatnonzero(has & (bid >= ask))
        if len(bad):
            self.quarantine("crossed_bbo", b[bad], "price",
                            _join("bbo bid ", bid[bad], " >= ask ", ask[bad], " (quote lines ",
                                  self.lines[b[np.minimum(bad, mate_[bad])]], "/",
                                  self.lines[b[np.maximum(bad, mate_[bad])]], ")"))

    def price_outlier(self, window: int, k: float, min_frac: float, min_periods: int) -> None:
        c = self.cols
        self.report._entry("price_outlier")
        idx = self.kept()
        kind = c["kind"][idx]
        rows = idx[(kind == KIND_TRADE) | (kind == KIND_BBO)]
        if not len(rows):
            return
        flag, med, thr = _rolling_outliers(c["price"][rows].astype(np.float64), window, float(k),
                                           float(min_frac), min_periods)
        bad = np.flatnonzero(flag)
        if len(bad):
            r = rows[bad]
            self.quarantine("price_outlier", r, "price",
                            _join(pa.array(_KIND_TEXT[c["kind"][r]], pa.string()), " price ", c["price"][r],
                                  " deviates from the rolling median ", np.round(med[bad], 1), " by ",
                                  np.round(np.abs(c["price"][r] - med[bad]), 1), " > threshold ",
                                  np.round(thr[bad], 1)))

    def crossed_book(self) -> None:
        c = self.cols
        self.report._entry("crossed_book")
        idx = self.kept()
        kind = c["kind"][idx]
        book = np.isin(kind, _BOOK_KINDS)
        check = book & ((c["flags"][idx] & FLAG_EOM) != 0)
        if not check.any():
            return
        sub = self.table.take(pa.array(idx)) if len(idx) != self.n else self.table
        from gpuflow.book import top_of_book  # the L2/L3 replay lives in book.py

        if (kind == KIND_DIFF).any():
            # a diff-depth stream: replay in the order a synced book applies it (snapshot, then the
            # bridging diffs recorded before it, then chained diffs), as gpuflow.sync defines
            from gpuflow.sync import synced_order

            order, applied, _ = synced_order(sub)
            tob = top_of_book(sub.take(pa.array(order)))
            at = np.zeros(len(idx), dtype=bool)
            bid = np.zeros(len(idx), np.int64)
            ask = np.zeros(len(idx), np.int64)
            bid[order] = np.asarray(tob["bid_price"])
            ask[order] = np.asarray(tob["ask_price"])
            at[order] = applied[order].astype(bool)
            check = check & at
        else:
            tob = top_of_book(sub)
            bid = np.asarray(tob["bid_price"])
            ask = np.asarray(tob["ask_price"])
        crossed = check & (bid != EMPTY_BID_PRICE) & (ask != EMPTY_ASK_PRICE) & (bid >= ask)
        pos = np.flatnonzero(crossed)
        m = self.report.max_examples
        self.count("crossed_book", idx[pos],
                   _join("best bid ", bid[pos[:m]], " >= best ask ", ask[pos[:m]], " after this message")
                   if len(pos) else None)


def _source_of(table: pa.Table, source: str | None) -> str:
    if source:
        return source
    from gpuflow.schema import instrument_of

    try:
        ins = instrument_of(table)
    except SchemaError:
        return "<table>"
    return f"{ins.venue}:{ins.symbol}"


def clean(table: pa.Table | ReadResult, *, rules: Iterable[str] | None = None, source: str | None = None,
          rejected: pa.Table | None = None, outlier_window: int = DEFAULT_OUTLIER_WINDOW,
          outlier_k: float = DEFAULT_OUTLIER_K, outlier_min_frac: float = DEFAULT_OUTLIER_MIN_FRAC,
          outlier_min_periods: int = DEFAULT_OUTLIER_MIN_PERIODS, max_examples: int = 10) -> CleanResult:
    """Clean an events table: quarantine bad rows, count problems, keep the rest in order.

    Parameters
    ----------
    table : pyarrow.Table or gpuflow.io.ReadResult
        Events (schema :data:`gpuflow.schema.EVENTS`, optional ``src_line``), host.
        A ``ReadResult`` cleans each of its tables and folds its ``rejected`` rows
        into the report and the quarantine.
    rules : iterable of str, optional
        Subset of :data:`RULES` to run (always in :data:`RULES` order); None runs all.
    source : str, optional
        Written in the quarantine's ``source`` column and the report; default: the
        ReadResult's path, else ``"venue:symbol"`` from the metadata.
    rejected : pyarrow.Table, optional
        A reader's rejected rows (QUARANTINE schema) to fold in.
    outlier_window : int, default 201
        Number of earlier trade/quote prices in the rolling window of ``price_outlier``.
    outlier_k : float, default 12
        Threshold in rolling MADs.
    outlier_min_frac : float, default 0.005
        Threshold floor as a fraction of the rolling median (0.5 %), so a quiet
        market (MAD of one tick) does not flag ordinary moves.
    outlier_min_periods : int, default 30
        Earlier prices needed before a price is judged.
    max_examples : int, default 10
        (line, detail) examples kept per finding in the report.

    Returns
    -------
    CleanResult
        ``.table`` (or ``.tables``), ``.quarantine`` and ``.report``.

    Raises
    ------
    SchemaError
        ``table`` does not follow the event schema.
    GpuflowError
        An unknown rule name or bad option.

    Notes
    -----
    ``line`` in the quarantine is the row's ``src_line`` when the table has one,
    else its 0-based row index.  The ``crossed_book`` rule replays the book with
    :func:`gpuflow.book.top_of_book` only when the table holds book rows with
    ``FLAG_EOM``.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuflow.schema import events_table, KIND_TRADE
    >>> t = events_table({"ts_local": np.array([1, 2, 2, 3]), "kind": np.full(4, KIND_TRADE),
    ...                   "seq": np.array([1, 2, 2, 3]), "price": np.array([10, 11, 11, 12]),
    ...                   "qty": np.array([1, 1, 1, 0]), "side": np.array([1, -1, -1, 1])})
    >>> res = clean(t, rules=["duplicates", "nonpositive_size"])
    >>> res.table.num_rows, res.report.found("duplicates"), res.report.found("nonpositive_size")
    (2, 1, 1)
    >>> res.quarantine.column("rule").to_pylist()
    ['duplicates', 'nonpositive_size']
    """
    from gpuflow.io import ReadResult

    selected = _select_rules(rules)
    for name, value, ok in (("outlier_window", outlier_window, isinstance(outlier_window, int)
                             and outlier_window > 0),
                            ("outlier_k", outlier_k, outlier_k > 0),
                            ("outlier_min_frac", outlier_min_frac, outlier_min_frac >= 0),
                            ("outlier_min_periods", outlier_min_periods, isinstance(outlier_min_periods, int)
                             and 0 <= outlier_min_periods),
                            ("max_examples", max_examples, isinstance(max_examples, int) and max_examples >= 0)):
        if not ok:
            msg = f"clean: option {name}={value!r} is out of range (see the docstring for valid values)"
            raise GpuflowError(msg)

    if isinstance(table, ReadResult):
        tables = list(table.tables)
        if rejected is None:
            rejected = table.rejected
        src = source or table.source
    elif isinstance(table, pa.Table):
        tables = [table]
        src = source
    else:
        msg = f"clean: expected a pyarrow.Table or a gpuflow.io.ReadResult, got {type(table).__name__}"
        raise TypeError(msg)

    report = CleanReport(source=src or "", max_examples=max_examples)
    quarantines: list[pa.Table] = []
    if rejected is not None:
        _check_quarantine(rejected, "clean(rejected=...)")
        rejected = rejected.select(QUARANTINE.names).cast(QUARANTINE)
        report.merge(rejected)
        quarantines.append(rejected)
    kept_tables = []
    for t in tables:
        s = _source_of(t, src)
        if not report.source:
            report.source = s
        t = validate(t, s, require_instrument=False)
        part = CleanReport(source=s, max_examples=max_examples)
        cl = _Cleaner(t, s, part)
        steps = [r for r in RULES if r in selected]
        with tqdm(total=len(steps), desc=f"clean {s}", unit="rule",
                  disable=not config.get_option("progress")) as bar:
            for r in steps:
                bar.set_postfix_str(r)
                if r == "price_outlier":
                    cl.price_outlier(outlier_window, outlier_k, outlier_min_frac, outlier_min_periods)
                elif r == "crossed_book":
                    cl.crossed_bbo()
                    cl.crossed_book()
                else:
                    getattr(cl, r)()
                bar.update()
        kept = t if cl.keep.all() else t.filter(pa.array(cl.keep))
        part.rows_in = t.num_rows
        part.rows_kept = kept.num_rows
        report.merge(part)
        kept_tables.append(kept)
        quarantines.append(cl.quarantine_table())
    # the merged report lists reader rejects first, then the rules in run order
    q = pa.concat_tables(quarantines) if quarantines else QUARANTINE.empty_table()
    return CleanResult(tables=kept_tables, quarantine=q, report=report)


def _select_rules(rules: Iterable[str] | None) -> set[str]:
    if rules is None:
        return set(RULES)
    if isinstance(rules, str):
        rules = [rules]
    chosen = set()
    for r in rules:
        if r not in RULES:
            msg = f"clean: unknown rule {r!r}; expected some of {list(RULES)}"
            raise GpuflowError(msg)
        chosen.add(r)
    return chosen


def write_quarantine(result_or_table: CleanResult | pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write a quarantine table to Parquet atomically.

    The table is written to a temporary file in the destination folder, flushed to
    disk, then renamed over ``path`` (``os.replace``), so readers see either the old
    file or the complete new one.

    Parameters
    ----------
    result_or_table : CleanResult or pyarrow.Table
        A :class:`CleanResult` (its ``quarantine``) or a QUARANTINE-schema table.
    path : path-like
        Destination ``.parquet`` file; its folder is created if needed.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    t = result_or_table.quarantine if isinstance(result_or_table, CleanResult) else result_or_table
    if not isinstance(t, pa.Table):
        msg = f"write_quarantine: expected a CleanResult or a pyarrow.Table, got {type(t).__name__}"
        raise TypeError(msg)
    _check_quarantine(t, f"write_quarantine({path})")
    t = t.select(QUARANTINE.names).cast(QUARANTINE)
    return atomic_write_table(t, path)


def atomic_write_table(t: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write ``t`` to ``path`` via a temp file in the same folder, fsync and ``os.replace``."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(t, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return dest
