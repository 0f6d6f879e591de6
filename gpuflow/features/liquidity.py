r"""Liquidity and feed diagnostics: hidden liquidity, iceberg refills, quote stuffing, feed latency, lead-lag.

Every function validates its input, allocates with the backend's ``xp``, runs the kernel pairs of
:mod:`gpuflow.kernels.features_liquidity` through :meth:`gpuflow.backend.Backend.launch` (a numba.cuda
kernel on the GPU, its njit twin on the CPU; integer outputs are identical) and returns arrays on the
backend's device inside a small result object with a ``to_host()`` method.

Time and causality: events are in replay order (sorted by ``ts_local``).  Bucketed outputs cover
``(edge[b], edge[b + 1]]`` on the ``ts_local`` clock and are stamped with the bucket's *end*
``edge[b + 1]``, so a value at time t only uses events with ``ts_local <= t``; iceberg detections are
stamped with the ``ts_local`` of the refill event and use nothing after it.  :func:`latency_stats`
and :func:`lead_lag` are whole-sample diagnostics, not features to be read at time t.

L2 or L3: ``mode="auto"`` treats the events as L3 (order by order) when they hold any KIND_ADD,
KIND_MODIFY, KIND_CANCEL, KIND_DELETE or KIND_EXECUTE row, else as L2 (level sets and trade prints).

====================  ======================================================================
function              what it measures
====================  ======================================================================
hidden_liquidity      hidden executions (L3) or trades beyond the displayed touch (L2) per bucket
icebergs              repeated refills at one price after fills (a heuristic detector)
quote_stuffing        message rate, bursts over a trailing median, cancel-to-trade ratio per window
latency_stats         ``ts_local - ts_exch`` distribution per kind (stream)
lead_lag              gridded cross-correlation of two return series over a set of lags
====================  ======================================================================
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from gpuflow.backend import Backend, get_backend
from gpuflow.errors import SchemaError
from gpuflow.schema import (
    EVENT_DTYPES,
    FLAG_AUCTION,
    FLAG_EOM,
    KIND_ADD,
    KIND_CANCEL,
    KIND_CLEAR,
    KIND_DELETE,
    KIND_EXECUTE,
    KIND_MODIFY,
    KIND_NAMES,
    KIND_SET,
    KIND_SNAPSHOT,
    KIND_TRADE,
)

if TYPE_CHECKING:  # pragma: no cover
    from gpuflow.book import BookFrame

__all__ = [
    "DEFAULT_GRID_NS",
    "DEFAULT_PERCENTILES",
    "HiddenLiquidity",
    "Icebergs",
    "LatencyStats",
    "LeadLag",
    "QuoteStuffing",
    "hidden_liquidity",
    "icebergs",
    "latency_stats",
    "lead_lag",
    "quote_stuffing",
]

#: Array of numpy or cupy.
Array = Any

#: Default clock bucket of :func:`hidden_liquidity` (1 s).
DEFAULT_GRID_NS = 1_000_000_000
#: Default percentiles of :func:`latency_stats`.
DEFAULT_PERCENTILES = (1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0)

_L3_KINDS = (KIND_ADD, KIND_MODIFY, KIND_CANCEL, KIND_DELETE, KIND_EXECUTE)
_MODES = ("auto", "l2", "l3")


def _kernels() -> Any:
    from gpuflow.kernels import features_liquidity as kl

    return kl


# ----------------------------------------------------------------------------- result objects
class _Result:
    """Shared ``to_host``: copy every device array field to the host once."""

    backend: Backend

    def to_host(self) -> Any:
        be = self.backend
        vals = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if f.name == "backend":
                v = get_backend("cpu")
            elif v is not None and hasattr(v, "shape") and not isinstance(v, np.generic):
                v = be.to_host(v)
            vals[f.name] = v
        return type(self)(**vals)


@dataclass
class HiddenLiquidity(_Result):
    """Hidden liquidity per clock bucket (arrays on the backend's device).

    Attributes
    ----------
    ts_local : int64 (B,)
        Bucket end (ns, ``ts_local`` clock); bucket b covers ``(edges[b], edges[b + 1]]``.
    hidden_lots : int64 (B,)
        L3: lots of hidden executions; L2: lots traded beyond the displayed size.
    hidden_count : int64 (B,)
        Number of trades with ``hidden_lots > 0``.
    traded_lots : int64 (B,)
        Denominator of the share (L3: visible executions + hidden executions; L2: trade prints).
    hidden_share : float64 (B,)
        ``hidden_lots / traded_lots``; NaN in a bucket without trades.
    unresolved_count : int64 (B,)
        L2 only: trades that could not be classified (aggressor unknown, first event, empty passive
        side, or the frame's N levels do not reach past the trade price); 0 on L3.
    event_hidden_lots : int64 (n,)
        Per event: its hidden lots (0 for events that are not hidden trades).
    mode : {"l2", "l3"}
    backend : Backend
    """

    ts_local: Array
    hidden_lots: Array
    hidden_count: Array
    traded_lots: Array
    hidden_share: Array
    unresolved_count: Array
    event_hidden_lots: Array
    mode: str
    backend: Backend


@dataclass
class Icebergs(_Result):
    """Iceberg refill detections, one row per refill whose chain has ``refills >= k`` (time order).

    Attributes
    ----------
    index : int64 (D,)
        Event row of the refill (the level set on L2, the add on L3).
    ts_local : int64 (D,)
        Its receive time (ns): the detection uses no event after it.
    side : int8 (D,)
        Side of the refilled level (+1 bid, -1 ask).
    price : int64 (D,)
        Price in ticks.
    refills : int64 (D,)
        Refills of the chain so far (>= k).
    executed_lots : int64 (D,)
        Lots executed against the chain before this refill (see :func:`icebergs`).
    chain : int64 (D,)
        Event row where the chain began (its first trade-through / emptying execution): groups the rows
        of one chain; the last row of a chain holds its final count.
    mode : {"l2", "l3"}
    backend : Backend
    """

    index: Array
    ts_local: Array
    side: Array
    price: Array
    refills: Array
    executed_lots: Array
    chain: Array
    mode: str
    backend: Backend


@dataclass
class QuoteStuffing(_Result):
    """Message-rate and cancel-to-trade statistics per clock window (arrays on the backend's device).

    Attributes
    ----------
    ts_local : int64 (W,)
        Window end (ns); window w covers ``(ts_local[w] - window_ns, ts_local[w]]``.
    messages : int64 (W,)
        Source messages ending in the window (rows with FLAG_EOM).
    rows : int64 (W,)
        Event rows in the window.
    rate_per_s : float64 (W,)
        ``count / window_s`` with count = messages (or rows with ``unit="rows"``).
    median_rate_per_s : float64 (W,)
        Median rate of the ``median_windows`` windows before w (NaN for the first window).
    burst : bool (W,)
        ``count[w] > k * max(median_count[w], 1)``.
    cancels, trades : int64 (W,)
        Cancel-like and trade-like rows (see :func:`quote_stuffing`).
    cancel_to_trade : float64 (W,)
        ``cancels / trades``; NaN in a window without trades.
    window_ns : int
    mode : {"l2", "l3"}
    backend : Backend
    """

    ts_local: Array
    messages: Array
    rows: Array
    rate_per_s: Array
    median_rate_per_s: Array
    burst: Array
    cancels: Array
    trades: Array
    cancel_to_trade: Array
    window_ns: int
    mode: str
    backend: Backend


@dataclass
class LatencyStats(_Result):
    """Feed latency ``ts_local - ts_exch`` per group (arrays on the backend's device; values in ns).

    Attributes
    ----------
    group : int64 (G,)
        Group label: the event kind (``KIND_*``) of the message's first row, or 0 with ``by=None``.
    names : list of str
        Readable group names (``KIND_NAMES``; ``"all"`` with ``by=None``), on the host.
    count : int64 (G,)
        Values per group.
    mean_ns : float64 (G,)
    min_ns, max_ns : int64 (G,)
    q : tuple of float
        Percentile levels (0..100), on the host.
    percentiles_ns : float64 (G, P)
        numpy's default (``linear``) percentiles.
    missing_ts_exch : int
        Rows (messages) left out because they carry FLAG_TS_EXCH_MISSING (their latency is 0 by
        construction).
    backend : Backend
    """

    group: Array
    names: list
    count: Array
    mean_ns: Array
    min_ns: Array
    max_ns: Array
    q: tuple
    percentiles_ns: Array
    missing_ts_exch: int
    backend: Backend

    def to_pandas(self) -> Any:
        """One row per group: name, count, mean, min, percentiles, max (ns) as a pandas DataFrame."""
        import pandas as pd

        h = self.to_host()
        cols: dict[str, Any] = {"group": h.group, "name": h.names, "count": h.count, "mean_ns": h.mean_ns,
                                "min_ns": h.min_ns}
        for j, q in enumerate(h.q):
            cols[f"p{q:g}_ns"] = h.percentiles_ns[:, j]
        cols["max_ns"] = h.max_ns
        return pd.DataFrame(cols)


@dataclass
class LeadLag(_Result):
    """Gridded cross-correlation of two return series (arrays on the backend's device).

    Attributes
    ----------
    lags_ns : int64 (L,)
        Lags (ns).  ``corr[l]`` correlates ``r_a(t)`` with ``r_b(t + lags_ns[l])``: a positive best lag
        means series a leads series b.
    corr : float64 (L,)
        Pearson correlation per lag (NaN with fewer than 2 pairs or a constant series).
    pairs : int64 (L,)
        Return pairs used per lag.
    best_lag_ns : int or None
        Lag of the largest correlation (None when every correlation is NaN), on the host.
    best_corr : float
        That correlation (NaN when none).
    grid_ns : int
        Grid step (ns).
    t0_ns : int
        First grid time (ns).
    n_returns : int
        Returns per series on the grid.
    backend : Backend
    """

    lags_ns: Array
    corr: Array
    pairs: Array
    best_lag_ns: int | None
    best_corr: float
    grid_ns: int
    t0_ns: int
    n_returns: int
    backend: Backend


# ----------------------------------------------------------------------------- validation helpers
def _backend(backend: str | Backend | None) -> Backend:
    return backend if isinstance(backend, Backend) else get_backend(backend)


def _event_columns(events: Any, names: Sequence[str], func: str, be: Backend) -> dict[str, Array]:
    """Event columns as backend arrays with the schema dtypes; checks shape, dtype and ts_local order."""
    if isinstance(events, pa.Table):
        have = events.column_names
        cols = {c: events.column(c).to_numpy() for c in names if c in have}
    elif isinstance(events, Mapping):
        have = list(events.keys())
        cols = {c: events[c] for c in names if c in events}
    else:
        msg = (f"{func}: argument 'events': expected a pyarrow Table or a mapping of event columns, "
               f"found {type(events).__name__}")
        raise SchemaError(msg)
    missing = [c for c in names if c not in cols]
    if missing:
        msg = (f"{func}: argument 'events' lacks column(s) {missing}; expected the event-schema columns "
               f"{list(names)}, found {list(have)}")
        raise SchemaError(msg)
    out: dict[str, Array] = {}
    n = None
    for c in names:
        a = be.asarray(cols[c])
        if a.ndim != 1:
            msg = f"{func}: events column {c!r}: expected a 1-D array, found shape {tuple(a.shape)}"
            raise SchemaError(msg)
        want = EVENT_DTYPES[c]
        if a.dtype != want:
            if a.dtype.kind not in "iu" or (a.size and c == "order_id" and bool((a < 0).any())):
                msg = (f"{func}: events column {c!r}: expected dtype {want} (the event schema), "
                       f"found {a.dtype}")
                raise SchemaError(msg)
            a = a.astype(want)
        if n is None:
            n = int(a.shape[0])
        elif a.shape[0] != n:
            msg = (f"{func}: events column {c!r} has {a.shape[0]} rows, expected {n} "
                   f"(the length of column {names[0]!r})")
            raise SchemaError(msg)
        out[c] = a
    ts = out.get("ts_local")
    if ts is not None and ts.size > 1:
        back = ts[1:] < ts[:-1]
        if bool(back.any()):
            row = int(be.xp.argmax(back)) + 1
            msg = (f"{func}: events column 'ts_local' is not sorted: row {row} ({int(ts[row])}) is before row "
                   f"{row - 1} ({int(ts[row - 1])}); events must be in replay order (sorted by ts_local)")
            raise SchemaError(msg)
    return out


def _mode_of(mode: str, kind: Array, func: str) -> int:
    kl = _kernels()
    if mode not in _MODES:
        msg = f"{func}: argument 'mode': expected one of {list(_MODES)}, found {mode!r}"
        raise SchemaError(msg)
    if mode == "l2":
        return kl.MODE_L2
    if mode == "l3":
        return kl.MODE_L3
    l3 = kind == _L3_KINDS[0]
    for k in _L3_KINDS[1:]:
        l3 |= kind == k
    return kl.MODE_L3 if kind.size and bool(l3.any()) else kl.MODE_L2


def _positive_int(value: Any, name: str, func: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        msg = f"{func}: argument {name!r}: expected a positive integer, found {value!r}"
        raise SchemaError(msg)
    return int(value)


def _bucket_edges(ts: Array, grid_ns: Any, func: str, be: Backend) -> Array:
    """Bucket edges (int64, device): a width in ns (edges on multiples of it) or an explicit edge array."""
    xp = be.xp
    if isinstance(grid_ns, (int, np.integer)) and not isinstance(grid_ns, (bool, np.bool_)):
        w = _positive_int(grid_ns, "grid_ns", func)
        if ts.size == 0:
            return xp.zeros(1, dtype=xp.int64)
        lo = -(-int(ts[0]) // w) * w   # first edge at or after the first event: it ends bucket 0
        hi = -(-int(ts[-1]) // w) * w
        return xp.arange(lo - w, hi + 1, w, dtype=xp.int64)
    try:
        edges = be.asarray(grid_ns)
    except (TypeError, ValueError):
        edges = None
    if edges is None or edges.ndim != 1 or edges.dtype.kind not in "iu" or edges.size < 2:
        found = (f"{type(grid_ns).__name__}" if edges is None
                 else f"dtype {edges.dtype}, shape {tuple(edges.shape)}")
        msg = (f"{func}: argument 'grid_ns': expected a positive bucket width (int, ns) or a 1-D integer "
               f"array of at least 2 increasing bucket edges (ns), found {found}")
        raise SchemaError(msg)
    edges = edges.astype(xp.int64)
    if bool((edges[1:] <= edges[:-1]).any()):
        row = int(xp.argmax(edges[1:] <= edges[:-1])) + 1
        msg = f"{func}: argument 'grid_ns': edges must increase strictly; edge {row} is not after edge {row - 1}"
        raise SchemaError(msg)
    return edges


def _bucket_sums(vals: Array, ts: Array, edges: Array, be: Backend) -> Array:
    """``out[r, b]`` = sum of ``vals[r]`` over events with ``edges[b] < ts_local <= edges[b + 1]``."""
    kl = _kernels()
    xp = be.xp
    bounds = xp.searchsorted(ts, edges, side="right").astype(xp.int64)
    n_b = int(edges.size) - 1
    out = be.zeros((int(vals.shape[0]), n_b), xp.int64)
    be.launch(kl.BUCKET_SUM, n_b, bounds, vals, out)
    return out


def _ratio(a: Array, b: Array, be: Backend) -> Array:
    kl = _kernels()
    out = be.empty(int(a.size), be.xp.float64)
    be.launch(kl.RATIO, int(a.size), a, b, out)
    return out


def _groups(key: Array, idx: Array, be: Backend) -> tuple[Array, Array]:
    """Stable sort of the rows ``idx`` by ``key``: (rows in group order, group start offsets incl. the end)."""
    xp = be.xp
    order = xp.argsort(key, kind="stable")
    perm = idx[order].astype(xp.int64)
    sk = key[order]
    starts = xp.flatnonzero(sk[1:] != sk[:-1]) + 1
    gstart = xp.concatenate([xp.zeros(1, xp.int64), starts.astype(xp.int64),
                             xp.full(1, int(idx.size), dtype=xp.int64)])
    if idx.size == 0:
        gstart = xp.zeros(1, xp.int64)
    return perm, gstart


def _side_epochs(kind: Array, side: Array, level_side: Array, be: Backend) -> Array:
    """Per event, the number of KIND_CLEAR rows up to it that cleared the side ``level_side`` (int64)."""
    xp = be.xp
    clear = kind == KIND_CLEAR
    eb = xp.cumsum(clear & (side >= 0), dtype=xp.int64)
    ea = xp.cumsum(clear & (side <= 0), dtype=xp.int64)
    return xp.where(level_side > 0, eb, ea).astype(xp.int64)


# ----------------------------------------------------------------------------- hidden liquidity
def hidden_liquidity(events: Any, frame: BookFrame | None = None, grid_ns: Any = DEFAULT_GRID_NS, *,
                     mode: str = "auto", levels: int = 5,
                     backend: str | Backend | None = None) -> HiddenLiquidity:
    r"""Hidden liquidity per clock bucket: hidden executions (L3) or trades beyond the displayed touch (L2).

    L3 (order-by-order data that flags hidden executions, as LOBSTER's type 5):

    .. code-block:: text

        hidden_lots[b]  = sum(qty_i  : kind_i = TRADE, FLAG_HIDDEN in flags_i, ts_i in bucket b)
        hidden_count[b] = #{i : same condition}
        traded_lots[b]  = sum(qty_i  : kind_i = EXECUTE, ts_i in b) + hidden_lots[b]
        hidden_share[b] = hidden_lots[b] / traded_lots[b]            (NaN when traded_lots[b] = 0)

    Other KIND_TRADE rows are left out of ``traded_lots``: on L3 feeds they are either auction crosses
    (FLAG_AUCTION) or prints of executions already counted as KIND_EXECUTE (Databento ``T`` and ``F``).

    L2 (no hidden flag): a trade i of aggressor side s, q lots at price p, is compared with the book
    *just before it*, row ``i - 1`` of a per-event top-N frame (the book after the previous event):

    .. code-block:: text

        displayed_i = sum(ask_qty[i-1, m] : ask_price[i-1, m] <= p)   for a buyer  (s = +1)
                      sum(bid_qty[i-1, m] : bid_price[i-1, m] >= p)   for a seller (s = -1)
        hidden_i    = max(0, q - displayed_i)                          (excess over the displayed size)
        hidden_lots[b] = sum(hidden_i), hidden_count[b] = #{hidden_i > 0}, traded_lots[b] = sum(q_i)

    A trade inside the spread has ``displayed_i = 0`` (all of it was hidden); a trade that walks past
    all N levels of the frame is *unresolved* (a deeper level could hold the rest) and counted in
    ``unresolved_count`` with ``hidden_i = 0``, as are trades with an unknown aggressor (side 0), a
    trade in row 0 and trades against an empty passive side (a book not built yet, e.g. before the
    first snapshot of a recording).  Auction crosses (FLAG_AUCTION) are ignored.  The L2 rule needs a book that is
    current when the trade prints: on feeds whose depth stream is batched apart from the trade
    stream (Binance diffs every 50-100 ms), a trade may print against a stale book and the excess is
    then an upper bound, not a measurement.

    Parameters
    ----------
    events : pyarrow.Table or mapping of arrays
        Schema events of one instrument in replay order (host or device arrays); needs ``ts_local``,
        ``kind``, ``side``, ``price`` (ticks), ``qty`` (lots), ``flags``.
    frame : BookFrame, optional
        L2 only: the output of ``rebuild_book(events, every=1)`` (one row per event, any number of
        levels).  Built with ``levels`` levels when not given.
    grid_ns : int or 1-D int64 array
        Bucket width in ns (buckets end on multiples of it and cover every event), or explicit bucket
        edges (ns, ``ts_local`` clock, strictly increasing; events outside them are not counted).
    mode : {"auto", "l2", "l3"}
        ``auto``: L3 when the events hold L3 order kinds (add, modify, cancel, delete, execute).
    levels : int
        Levels of the frame built when ``frame`` is None.
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    HiddenLiquidity
        Arrays on the backend's device; bucket b is stamped with its end ``ts_local[b]`` and only uses
        events with ``ts_local <= ts_local[b]``.

    Raises
    ------
    SchemaError
        A missing or mistyped event column, unsorted ``ts_local``, a bad ``grid_ns`` or ``mode``, or a
        frame whose row count is not the number of events.

    References
    ----------
    H. Bessembinder, M. Panayides and K. Venkataraman, "Hidden liquidity: an analysis of order
    exposure strategies in electronic stock markets", *Journal of Financial Economics* 94(3):361-383,
    2009.

    See Also
    --------
    gpuflow.book.rebuild_book : the per-event frame of the L2 rule.
    icebergs : refill patterns of hidden size.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuflow.schema import KIND_ADD, KIND_EXECUTE, KIND_TRADE, FLAG_HIDDEN
    >>> ev = {"ts_local": np.array([1, 2, 3, 12]), "kind": np.array([KIND_ADD, KIND_EXECUTE, KIND_TRADE,
    ...       KIND_TRADE], np.uint8), "side": np.array([1, 1, -1, 1], np.int8), "price": np.array([100] * 4),
    ...       "qty": np.array([5, 3, 2, 4]), "flags": np.array([0, 0, FLAG_HIDDEN, FLAG_HIDDEN], np.uint16)}
    >>> h = hidden_liquidity(ev, grid_ns=10, backend="cpu")
    >>> h.ts_local.tolist(), h.hidden_lots.tolist(), h.traded_lots.tolist(), h.hidden_share.tolist()
    ([10, 20], [2, 4], [5, 4], [0.4, 1.0])
    """
    func = "hidden_liquidity"
    be = _backend(backend)
    xp = be.xp
    kl = _kernels()
    c = _event_columns(events, ("ts_local", "kind", "side", "price", "qty", "flags"), func, be)
    n = int(c["kind"].size)
    m = _mode_of(mode, c["kind"], func)
    if m == kl.MODE_L2:
        if frame is None:
            from gpuflow.book import rebuild_book

            frame = rebuild_book(events, levels=levels, every=1, backend=be)
        for name in ("bid_price", "bid_qty", "ask_price", "ask_qty"):
            if not hasattr(frame, name):
                msg = (f"{func}: argument 'frame': expected a BookFrame from rebuild_book(events, every=1), "
                       f"found {type(frame).__name__} without {name!r}")
                raise SchemaError(msg)
        bp, bq, ap, aq = (be.asarray(getattr(frame, a), dtype=xp.int64)
                          for a in ("bid_price", "bid_qty", "ask_price", "ask_qty"))
        if bp.ndim != 2 or bp.shape[0] != n or any(a.shape != bp.shape for a in (bq, ap, aq)):
            msg = (f"{func}: argument 'frame': expected one book row per event ({n} rows, from "
                   f"rebuild_book(events, every=1)), found bid_price of shape {tuple(bp.shape)}")
            raise SchemaError(msg)
    else:
        bp = bq = ap = aq = be.zeros((1, 1), xp.int64)
    vals = be.zeros((4, n), xp.int64)
    be.launch(kl.HIDDEN_EVENTS, n, np.int64(m), c["kind"], c["side"], c["price"], c["qty"], c["flags"],
              bp, bq, ap, aq, vals)
    edges = _bucket_edges(c["ts_local"], grid_ns, func, be)
    out = _bucket_sums(vals, c["ts_local"], edges, be)
    share = _ratio(out[0], out[2], be)
    return HiddenLiquidity(ts_local=edges[1:], hidden_lots=out[0], hidden_count=out[1], traded_lots=out[2],
                           hidden_share=share, unresolved_count=out[3], event_hidden_lots=vals[0],
                           mode="l3" if m == kl.MODE_L3 else "l2", backend=be)


# ----------------------------------------------------------------------------- icebergs
def icebergs(events: Any, *, dt_ns: int | None = None, k: int = 3, size_tol: float | None = None,
             mode: str = "auto", backend: str | Backend | None = None) -> Icebergs:
    r"""Detect iceberg-like refills: a price level that is filled and refilled to the same size, k or more times.

    This is a **heuristic**: a pattern consistent with an iceberg (reserve) order, not an observation
    of one.  Round sizes and busy levels produce false positives; raise ``k`` to be stricter.  Each
    (side, price) level is replayed on its own, in time order (one GPU thread per level).

    L2 rule (level sets and trade prints; a trade's passive side is minus its aggressor side):

    .. code-block:: text

        peak       = largest displayed size set at (side, p) since the level was last empty or refilled
        traded through at t_fill:  lots printed at p against `side` since the last set >= that set (> 0)
        refill:    within dt_ns after t_fill, a set at (side, p) with |qty - peak| <= size_tol * peak
                   (sets to 0 in between are the emptied level and are waited through; sets of other
                   sizes are ignored)
        chain:     consecutive trade-through -> refill cycles; it ends when dt_ns passes without a
                   refill, the level is set to 0 without being traded through, or the side is cleared
        detection: every refill with refills >= k
        executed_lots = lots printed at (side, p) from the start of the chain's first segment (the
                        level last empty) up to the refill

    L3 rule (order adds and executions):

    .. code-block:: text

        emptying execution: an execution that leaves its order (added in the data) with 0 lots
        chain start: an emptying execution at (side, p); the tip is that order, size = its added lots
        refill:      within dt_ns, a new order added at (side, p) with |qty - size| <= size_tol * size;
                     it becomes the tip (adds of other sizes are ignored)
        next cycle:  an emptying execution of the tip re-arms the chain
        chain end:   no refill within dt_ns, the tip cancelled or deleted to 0, or the side cleared
        detection:   every refill with refills >= k
        executed_lots = lots executed from the chain's orders that were emptied before the refill

    Parameters
    ----------
    events : pyarrow.Table or mapping of arrays
        Schema events of one instrument in replay order; needs ``ts_local``, ``kind``, ``side``,
        ``price``, ``qty``, ``flags`` (and ``order_id`` for L3).
    dt_ns : int, optional
        Longest wait from a fill to its refill (ns).  Default 1 ms on L3 (in the LOBSTER samples
        same-size re-adds follow the emptying execution by about 0.2-0.3 ms, none within 1 us) and
        250 ms on L2 (Binance depth diffs arrive every 50 ms on USD-M futures, 100 ms on spot).
    k : int
        Refills needed before a chain is reported.
    size_tol : float, optional
        Relative size tolerance of a refill.  Default 0.1 on L2 (the level may hold other orders) and
        0.0 on L3 (same size).
    mode : {"auto", "l2", "l3"}
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    Icebergs
        One row per detected refill, in event order, on the backend's device.

    Raises
    ------
    SchemaError
        A missing or mistyped event column, unsorted ``ts_local``, or a bad parameter.

    References
    ----------
    H. Bessembinder, M. Panayides and K. Venkataraman, "Hidden liquidity: an analysis of order
    exposure strategies in electronic stock markets", *Journal of Financial Economics* 94(3):361-383,
    2009 (iceberg orders and their use).

    Examples
    --------
    >>> import numpy as np
    >>> from gpuflow.schema import KIND_SET, KIND_TRADE
    >>> # ask level 100 shows 5 lots; a buyer takes 5, the level refills to 5; twice
    >>> ev = {"ts_local": np.array([0, 10, 20, 30, 40]),
    ...       "kind": np.array([KIND_SET, KIND_TRADE, KIND_SET, KIND_TRADE, KIND_SET], np.uint8),
    ...       "side": np.array([-1, 1, -1, 1, -1], np.int8), "price": np.array([100] * 5),
    ...       "qty": np.array([5, 5, 5, 5, 5]), "flags": np.zeros(5, np.uint16)}
    >>> d = icebergs(ev, dt_ns=50, k=2, backend="cpu")
    >>> d.index.tolist(), d.refills.tolist(), d.executed_lots.tolist()
    ([4], [2], [10])
    """
    func = "icebergs"
    be = _backend(backend)
    xp = be.xp
    kl = _kernels()
    names = ["ts_local", "kind", "side", "price", "qty", "flags"]
    c = _event_columns(events, names, func, be)
    m = _mode_of(mode, c["kind"], func)
    if m == kl.MODE_L3:
        c.update(_event_columns(events, ["order_id", "kind"], func, be))
    k = _positive_int(k, "k", func)
    if dt_ns is None:
        dt_ns = 1_000_000 if m == kl.MODE_L3 else 250_000_000
    if isinstance(dt_ns, (bool, np.bool_)) or not isinstance(dt_ns, (int, np.integer)) or dt_ns < 0:
        msg = f"{func}: argument 'dt_ns': expected a non-negative integer (ns), found {dt_ns!r}"
        raise SchemaError(msg)
    if size_tol is None:
        size_tol = 0.0 if m == kl.MODE_L3 else 0.1
    if not isinstance(size_tol, (int, float, np.floating, np.integer)) or not 0.0 <= float(size_tol) < 1.0:
        msg = f"{func}: argument 'size_tol': expected a relative tolerance in [0, 1), found {size_tol!r}"
        raise SchemaError(msg)
    kind, side, price, qty, ts = c["kind"], c["side"], c["price"], c["qty"], c["ts_local"]
    n = int(kind.size)
    det_count = be.zeros(n, xp.int64)
    det_vol = be.zeros(n, xp.int64)
    det_chain = be.zeros(n, xp.int64)
    if m == kl.MODE_L2:
        trade = (kind == KIND_TRADE) & (side != 0) & ((c["flags"] & FLAG_AUCTION) == 0)
        level = (kind == KIND_SET) | (kind == KIND_SNAPSHOT)
        lside = xp.where(kind == KIND_TRADE, -side.astype(xp.int64), side.astype(xp.int64))
        idx = xp.flatnonzero(trade | level)
        perm, gstart = _groups(price[idx] * 2 + (lside[idx] > 0), idx, be)
        epoch = _side_epochs(kind, side, lside, be)
        be.launch(kl.ICEBERG_L2, int(gstart.size) - 1, gstart, perm, kind, ts, qty, epoch, np.int64(dt_ns),
                  np.float64(size_tol), np.int64(k), det_count, det_vol, det_chain)
        out_side = lside.astype(xp.int8)
    else:
        oid = c["order_id"]
        is_order = kind == _L3_KINDS[0]
        for kk in _L3_KINDS[1:]:
            is_order |= kind == kk
        oidx = xp.flatnonzero(is_order)
        operm, ogstart = _groups(oid[oidx], oidx, be)
        o_state = be.zeros(n, xp.uint8)
        o_size = be.zeros(n, xp.int64)
        o_exec = be.zeros(n, xp.int64)
        be.launch(kl.ORDER_PASS, int(ogstart.size) - 1, ogstart, operm, kind, qty, o_state, o_size, o_exec)
        level = (kind == KIND_ADD) | (kind == KIND_EXECUTE) | (kind == KIND_CANCEL) | (kind == KIND_DELETE)
        idx = xp.flatnonzero(level)
        perm, gstart = _groups(price[idx] * 2 + (side[idx] > 0), idx, be)
        epoch = _side_epochs(kind, side, side, be)
        be.launch(kl.ICEBERG_L3, int(gstart.size) - 1, gstart, perm, kind, ts, qty, oid, o_state, o_size, o_exec,
                  epoch, np.int64(dt_ns), np.float64(size_tol), np.int64(k), det_count, det_vol, det_chain)
        out_side = side
    d = xp.flatnonzero(det_count > 0)
    return Icebergs(index=d.astype(xp.int64), ts_local=ts[d], side=out_side[d], price=price[d],
                    refills=det_count[d], executed_lots=det_vol[d], chain=det_chain[d],
                    mode="l3" if m == kl.MODE_L3 else "l2", backend=be)


# ----------------------------------------------------------------------------- quote stuffing
def quote_stuffing(events: Any, window_ns: int, *, k: float = 5.0, median_windows: int = 60,
                   unit: str = "messages", mode: str = "auto",
                   backend: str | Backend | None = None) -> QuoteStuffing:
    r"""Message rate, message bursts and cancel-to-trade ratio per clock window.

    Windows are ``(e_w, e_w + window_ns]`` on the ``ts_local`` clock with ends on multiples of
    ``window_ns``, covering every event; each is stamped with its end.

    .. code-block:: text

        count[w]      = messages ending in w (rows with FLAG_EOM), or rows with unit="rows"
        rate[w]       = count[w] / (window_ns * 1e-9)                          (per second)
        median[w]     = median(count[w - M], ..., count[w - 1]),  M = min(median_windows, w)
                        (the windows *before* w: a burst does not lift its own baseline; NaN for w = 0)
        burst[w]      = M >= 1 and count[w] > k * max(median[w], 1)
        cancel_to_trade[w] = cancels[w] / trades[w]                            (NaN when trades[w] = 0)

        L3: cancels = KIND_CANCEL + KIND_DELETE rows, trades = KIND_EXECUTE + hidden KIND_TRADE rows
        L2: cancels = KIND_SET rows with qty 0 (level removals), trades = KIND_TRADE rows (no auctions)

    On L2 a level removal can also be the last fill of the level, so the L2 ratio is a proxy.  The
    burst rule (k times a trailing median) is this library's, not the reference's.

    Parameters
    ----------
    events : pyarrow.Table or mapping of arrays
        Schema events in replay order; needs ``ts_local``, ``kind``, ``qty``, ``flags``.
    window_ns : int
        Window width (ns).
    k : float
        Burst multiple (> 0).
    median_windows : int
        Windows in the trailing median (1..MAX_MEDIAN_WINDOWS = 256).
    unit : {"messages", "rows"}
        What the rate counts: source messages (FLAG_EOM) or event rows.
    mode : {"auto", "l2", "l3"}
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    QuoteStuffing
        Arrays on the backend's device; window w uses only events with ``ts_local <= ts_local[w]``.

    Raises
    ------
    SchemaError
        A missing or mistyped event column, unsorted ``ts_local``, a bad parameter, or
        ``unit="messages"`` on events without any FLAG_EOM.

    References
    ----------
    J. F. Egginton, B. F. Van Ness and R. A. Van Ness, "Quote stuffing", *Financial Management*
    45(3):583-608, 2016.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuflow.schema import KIND_SET, KIND_TRADE, FLAG_EOM
    >>> ev = {"ts_local": np.array([5, 15, 21, 22, 23, 24, 25]),
    ...       "kind": np.array([KIND_SET, KIND_SET, KIND_SET, KIND_SET, KIND_SET, KIND_SET, KIND_TRADE],
    ...                        np.uint8),
    ...       "qty": np.array([1, 1, 0, 0, 0, 1, 2]), "flags": np.full(7, FLAG_EOM, np.uint16)}
    >>> q = quote_stuffing(ev, 10, k=2.0, median_windows=2, backend="cpu")
    >>> q.messages.tolist(), q.burst.tolist(), q.cancel_to_trade.tolist()[2]
    ([1, 1, 5], [False, False, True], 3.0)
    """
    func = "quote_stuffing"
    be = _backend(backend)
    xp = be.xp
    kl = _kernels()
    c = _event_columns(events, ("ts_local", "kind", "qty", "flags"), func, be)
    window_ns = _positive_int(window_ns, "window_ns", func)
    median_windows = _positive_int(median_windows, "median_windows", func)
    if median_windows > kl.MAX_MEDIAN_WINDOWS:
        msg = (f"{func}: argument 'median_windows': expected at most {kl.MAX_MEDIAN_WINDOWS} windows, "
               f"found {median_windows}; use wider windows instead")
        raise SchemaError(msg)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, float, np.integer, np.floating)) or not k > 0:
        msg = f"{func}: argument 'k': expected a positive number, found {k!r}"
        raise SchemaError(msg)
    if unit not in ("messages", "rows"):
        msg = f"{func}: argument 'unit': expected 'messages' or 'rows', found {unit!r}"
        raise SchemaError(msg)
    m = _mode_of(mode, c["kind"], func)
    n = int(c["kind"].size)
    vals = be.zeros((4, n), xp.int64)
    be.launch(kl.QUOTE_EVENTS, n, np.int64(m), c["kind"], c["qty"], c["flags"], vals)
    if unit == "messages" and n and int(vals[0].sum()) == 0:
        msg = (f"{func}: unit='messages' counts rows with FLAG_EOM, but none of the {n} events carries it; "
               "pass unit='rows' to count event rows")
        raise SchemaError(msg)
    edges = _bucket_edges(c["ts_local"], window_ns, func, be)
    out = _bucket_sums(vals, c["ts_local"], edges, be)
    counts = out[0] if unit == "messages" else out[1]
    n_w = int(counts.size)
    med = be.empty(n_w, xp.float64)
    burst = be.zeros(n_w, xp.uint8)
    be.launch(kl.BURSTS, n_w, xp.ascontiguousarray(counts), np.int64(median_windows), np.float64(k), med, burst)
    per_s = 1e9 / window_ns
    return QuoteStuffing(ts_local=edges[1:], messages=out[0], rows=out[1], rate_per_s=counts * per_s,
                         median_rate_per_s=med * per_s, burst=burst.astype(bool), cancels=out[2], trades=out[3],
                         cancel_to_trade=_ratio(out[2], out[3], be), window_ns=window_ns,
                         mode="l3" if m == kl.MODE_L3 else "l2", backend=be)


# ----------------------------------------------------------------------------- latency
def latency_stats(events: Any, *, by: str | None = "kind", unit: str = "messages",
                  percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                  backend: str | Backend | None = None) -> LatencyStats:
    r"""Feed latency ``ts_local - ts_exch`` (ns): count, mean, min, percentiles and max per stream (kind).

    .. code-block:: text

        latency_i = ts_local_i - ts_exch_i                          (ns, int64)
        one value per source message (its first row; unit="messages") or per row (unit="rows");
        rows with FLAG_TS_EXCH_MISSING are left out (their ts_exch is a copy of ts_local)
        group = kind of the message's first row (by="kind"), e.g. on Binance recordings
                diff = depthUpdate, bbo = bookTicker, trade = trade, clear = REST snapshot
        percentile q: numpy's default "linear" method on the sorted values of the group

    The two clocks belong to different machines: a latency is the true feed delay plus the offset
    between the receiver's clock and the exchange's.  A **negative latency means the clocks differ**
    (the receiver's clock is behind): the Binance sample recordings in ``shared/data`` have
    ``ts_local`` about 1.27 s *behind* the exchange's ``E``/``T``, so their latencies are about
    -1.27e9 ns; their spread, not their level, describes the feed.  LOBSTER has one clock
    (``ts_local == ts_exch``): latency 0.

    Parameters
    ----------
    events : pyarrow.Table or mapping of arrays
        Schema events in replay order; needs ``ts_local``, ``ts_exch``, ``kind``, ``flags``.
    by : {"kind", None}
        Group by the message's kind, or one group ``"all"``.
    unit : {"messages", "rows"}
        One value per source message (FLAG_EOM delimits messages) or per event row.
    percentiles : sequence of float
        Levels in [0, 100].
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    LatencyStats
        Arrays on the backend's device (``to_pandas()`` gives a table).  A whole-sample statistic.

    Raises
    ------
    SchemaError
        A missing or mistyped event column, unsorted ``ts_local``, bad ``by``, ``unit`` or
        ``percentiles``, or ``unit="messages"`` on events without any FLAG_EOM.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuflow.schema import KIND_TRADE, FLAG_EOM
    >>> ev = {"ts_local": np.array([10, 20, 30]), "ts_exch": np.array([7, 18, 21]),
    ...       "kind": np.full(3, KIND_TRADE, np.uint8), "flags": np.full(3, FLAG_EOM, np.uint16)}
    >>> s = latency_stats(ev, percentiles=(50,), backend="cpu")
    >>> s.names, s.count.tolist(), s.min_ns.tolist(), s.percentiles_ns.tolist(), s.max_ns.tolist()
    (['trade'], [3], [2], [[3.0]], [9])
    """
    func = "latency_stats"
    be = _backend(backend)
    xp = be.xp
    kl = _kernels()
    c = _event_columns(events, ("ts_local", "ts_exch", "kind", "flags"), func, be)
    if by not in ("kind", None):
        msg = f"{func}: argument 'by': expected 'kind' or None, found {by!r}"
        raise SchemaError(msg)
    if unit not in ("messages", "rows"):
        msg = f"{func}: argument 'unit': expected 'messages' or 'rows', found {unit!r}"
        raise SchemaError(msg)
    qs = np.asarray(percentiles, dtype=np.float64).reshape(-1)
    if qs.size == 0 or not np.all((qs >= 0) & (qs <= 100)):
        msg = f"{func}: argument 'percentiles': expected levels in [0, 100], found {list(percentiles)!r}"
        raise SchemaError(msg)
    n = int(c["kind"].size)
    if unit == "messages" and n and not bool(((c["flags"] & FLAG_EOM) != 0).any()):
        msg = (f"{func}: unit='messages' needs FLAG_EOM to delimit messages, but none of the {n} events "
               "carries it; pass unit='rows'")
        raise SchemaError(msg)
    lat = be.empty(n, xp.int64)
    sel = be.zeros(n, xp.uint8)
    be.launch(kl.LATENCY, n, c["ts_local"], c["ts_exch"], c["flags"], np.int64(unit == "messages"), lat, sel)
    keep = sel != 0
    # messages (rows) that would count but have no exchange time
    starts = xp.ones(n, dtype=bool)
    if unit == "messages" and n > 1:
        starts[1:] = (c["flags"][:-1] & FLAG_EOM) != 0
    missing = int((starts & ~keep).sum())
    labels = c["kind"].astype(xp.int64) if by == "kind" else xp.zeros(n, xp.int64)
    lab = labels[keep]
    vals = lat[keep]
    groups_h = be.to_host(xp.unique(lab)).astype(np.int64)
    parts = [xp.sort(vals[lab == g]) for g in groups_h]
    a = xp.concatenate(parts) if parts else xp.zeros(0, xp.int64)
    counts_h = np.array([int(p.size) for p in parts], dtype=np.int64)
    offs = be.asarray(np.concatenate([[0], np.cumsum(counts_h)]).astype(np.int64))
    n_g = int(groups_h.size)
    cnt = be.zeros(n_g, xp.int64)
    mn = be.zeros(n_g, xp.int64)
    mx = be.zeros(n_g, xp.int64)
    mean = be.empty(n_g, xp.float64)
    pct = be.empty((n_g, int(qs.size)), xp.float64)
    be.launch(kl.GROUP_STATS, n_g, offs, a, cnt, mn, mx, mean)
    be.launch(kl.PERCENTILES, n_g * int(qs.size), offs, a, be.asarray(qs), pct)
    names = [KIND_NAMES.get(int(g), str(int(g))) if by == "kind" else "all" for g in groups_h]
    return LatencyStats(group=be.asarray(groups_h), names=names, count=cnt, mean_ns=mean, min_ns=mn, max_ns=mx,
                        q=tuple(float(x) for x in qs), percentiles_ns=pct, missing_ts_exch=missing, backend=be)


# ----------------------------------------------------------------------------- lead-lag
def _series(ts: Any, x: Any, name_ts: str, name_x: str, func: str, be: Backend, positive: bool
            ) -> tuple[Array, Array]:
    xp = be.xp
    t = be.asarray(ts)
    v = be.asarray(x)
    if t.ndim != 1 or t.dtype.kind not in "iu":
        msg = (f"{func}: argument {name_ts!r}: expected a 1-D integer array of ns timestamps, found dtype "
               f"{t.dtype}, shape {tuple(t.shape)}")
        raise SchemaError(msg)
    if v.ndim != 1 or v.shape[0] != t.shape[0] or v.dtype.kind not in "iuf":
        msg = (f"{func}: argument {name_x!r}: expected a 1-D numeric array with one value per timestamp "
               f"({t.shape[0]}), found dtype {v.dtype}, shape {tuple(v.shape)}")
        raise SchemaError(msg)
    if t.shape[0] < 2:
        msg = f"{func}: argument {name_ts!r}: expected at least 2 observations, found {t.shape[0]}"
        raise SchemaError(msg)
    t = t.astype(xp.int64)
    v = v.astype(xp.float64)
    if bool((t[1:] < t[:-1]).any()):
        row = int(xp.argmax(t[1:] < t[:-1])) + 1
        msg = f"{func}: argument {name_ts!r}: timestamps must be sorted; row {row} is before row {row - 1}"
        raise SchemaError(msg)
    bad = ~xp.isfinite(v)
    if positive:
        bad |= v <= 0
    if bool(bad.any()):
        row = int(xp.argmax(bad))
        what = "finite positive values (log returns)" if positive else "finite values"
        msg = (f"{func}: argument {name_x!r}: expected {what}, found {float(v[row])!r} at row {row}"
               + ("; pass returns='diff' for series that are not positive" if positive else ""))
        raise SchemaError(msg)
    return t, v


def lead_lag(ts_a: Any, x_a: Any, ts_b: Any, x_b: Any, lags_ns: Any, *, grid_ns: int | None = None,
             returns: str = "log", backend: str | Backend | None = None) -> LeadLag:
    r"""Lead-lag of two series: cross-correlation of their returns on a common clock grid, over a set of lags.

    This is the **gridded (previous-tick) cross-correlation**, not the Hayashi-Yoshida estimator: both
    series are sampled as of each grid time (the last value at or before it), returns are taken
    between consecutive grid times, and the Pearson correlation is computed at each lag.

    .. code-block:: text

        grid       t_j = t0 + j * g, j = 0..N;  t0 = first multiple of g at or after both series start,
                   t_N = last multiple of g at or before both series end
        sampling   x(t) = x_i with i the last observation with ts_i <= t
        returns    r_j = log x(t_{j+1}) - log x(t_j)        (returns="log"; x(t_{j+1}) - x(t_j) with "diff")
        lag L = s * g:  C(L) = corr( r^a_j , r^b_{j+s} ) over every j where both exist
        best lag   L* = argmax_L C(L);  L* > 0: a leads b by L* (a's moves show up in b later)

    Log returns do not depend on the price scale, so prices in ticks of different tick sizes can be
    compared directly.  Coarse grids blur short leads, fine grids add zero returns (the Epps effect);
    try a few ``grid_ns``.  A whole-sample diagnostic.

    Parameters
    ----------
    ts_a, ts_b : 1-D int64 arrays (host or device)
        Observation times (ns), sorted, on one clock for both series: ``ts_local`` of one recorder
        (the lead then includes the feeds' delivery delays) or ``ts_exch`` where both venues stamp
        their events on synchronised clocks.
    x_a, x_b : 1-D float arrays
        Values (e.g. mid prices in ticks), one per timestamp; positive with ``returns="log"``.
    lags_ns : 1-D int array
        Lags (ns), multiples of ``grid_ns``; negative lags test b leading a.
    grid_ns : int, optional
        Grid step (ns); default the greatest common divisor of the non-zero lags.
    returns : {"log", "diff"}
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    LeadLag
        ``corr`` and ``pairs`` per lag on the backend's device; ``best_lag_ns`` / ``best_corr`` on the host.

    Raises
    ------
    SchemaError
        Mistyped, unsorted or non-finite inputs, lags that are not multiples of ``grid_ns``, or series
        that overlap on too few grid points for the largest lag.

    References
    ----------
    T. Hayashi and N. Yoshida, "On covariance estimation of non-synchronously observed diffusion
    processes", *Bernoulli* 11(2):359-379, 2005 (the tick-time estimator this gridded version
    approximates; not implemented here).

    Examples
    --------
    >>> import numpy as np
    >>> ts = np.arange(0, 100, 10)
    >>> a = np.array([1, 2, 1, 3, 2, 4, 2, 5, 3, 6], float)
    >>> b = np.concatenate([[1.0, 1.0], a[:-2]])        # b repeats a two steps (20 ns) later
    >>> r = lead_lag(ts, a, ts, b, np.arange(-30, 31, 10), backend="cpu")
    >>> r.best_lag_ns, round(r.best_corr, 6)
    (20, 1.0)
    """
    func = "lead_lag"
    be = _backend(backend)
    xp = be.xp
    kl = _kernels()
    if returns not in ("log", "diff"):
        msg = f"{func}: argument 'returns': expected 'log' or 'diff', found {returns!r}"
        raise SchemaError(msg)
    positive = returns == "log"
    ta, va = _series(ts_a, x_a, "ts_a", "x_a", func, be, positive)
    tb, vb = _series(ts_b, x_b, "ts_b", "x_b", func, be, positive)
    lags = be.to_host(be.asarray(lags_ns))
    if lags.ndim != 1 or lags.size == 0 or lags.dtype.kind not in "iu":
        msg = (f"{func}: argument 'lags_ns': expected a non-empty 1-D integer array of lags (ns), found dtype "
               f"{lags.dtype}, shape {lags.shape}")
        raise SchemaError(msg)
    lags = lags.astype(np.int64)
    if grid_ns is None:
        nz = np.abs(lags[lags != 0])
        if nz.size == 0:
            msg = f"{func}: argument 'grid_ns': needed when every lag is 0 (found lags_ns={lags.tolist()})"
            raise SchemaError(msg)
        grid_ns = int(np.gcd.reduce(nz))
    g = _positive_int(grid_ns, "grid_ns", func)
    if np.any(lags % g != 0):
        bad = int(lags[lags % g != 0][0])
        msg = f"{func}: argument 'lags_ns': every lag must be a multiple of grid_ns={g}; found {bad}"
        raise SchemaError(msg)
    start = max(int(ta[0]), int(tb[0]))
    end = min(int(ta[-1]), int(tb[-1]))
    t0 = -(-start // g) * g
    n_ret = (end - t0) // g if end >= t0 else 0
    shifts = lags // g
    need = int(np.abs(shifts).max()) + 2
    if n_ret < need:
        msg = (f"{func}: the series overlap on {max(n_ret, 0)} grid returns of {g} ns, expected at least {need} "
               f"for lags up to {int(np.abs(lags).max())} ns; use a finer grid_ns, smaller lags or longer series")
        raise SchemaError(msg)
    ra = be.empty(n_ret, xp.float64)
    rb = be.empty(n_ret, xp.float64)
    use_log = np.int64(positive)
    be.launch(kl.GRID_RETURNS, n_ret, np.int64(t0), np.int64(g), ta, va, use_log, ra)
    be.launch(kl.GRID_RETURNS, n_ret, np.int64(t0), np.int64(g), tb, vb, use_log, rb)
    d_shifts = be.asarray(shifts)
    corr = be.empty(int(lags.size), xp.float64)
    pairs = be.zeros(int(lags.size), xp.int64)
    be.launch(kl.XCORR, int(lags.size), ra, rb, d_shifts, corr, pairs)
    h = be.to_host(corr)
    if np.isnan(h).all():
        best_lag, best_corr = None, math.nan
    else:
        j = int(np.nanargmax(h))
        best_lag, best_corr = int(lags[j]), float(h[j])
    return LeadLag(lags_ns=be.asarray(lags), corr=corr, pairs=pairs, best_lag_ns=best_lag, best_corr=best_corr,
                   grid_ns=g, t0_ns=t0, n_returns=int(n_ret), backend=be)

