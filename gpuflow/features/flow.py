"""Trade-flow features: trade signs, taker pressure, mid returns, realized volatility, Kyle's and Hasbrouck's lambda.

Clock buckets
-------------
Bucketed features take ``grid_ns``, the **edges** of m clock buckets (m+1 strictly
increasing int64 ns on the ``ts_local`` clock).  Bucket k is the half-open interval
``(grid_ns[k], grid_ns[k+1]]``, right-closed at its end, and its value is stamped
``ts_local = grid_ns[k+1]``: it uses only events with ``ts_local <= grid_ns[k+1]``.
:func:`clock_edges` builds a regular grid.  Rolling windows (:func:`realized_volatility`,
:func:`kyle_lambda`, :func:`hasbrouck_lambda`) run over the last ``window`` buckets,
the current one included, and are NaN until the window is full.

Prints
------
Which rows are trades depends on the source (``prints``): KIND_TRADE rows carry the
aggressor side; KIND_EXECUTE rows (LOBSTER visible executions, Databento fills) carry
the resting order's side, so the aggressor is ``-side``.  Databento MBO prints every
trade twice (a ``T`` trade row and ``F`` fill rows), so ``prints="auto"`` counts only
KIND_TRADE rows for Databento sources and both kinds otherwise (LOBSTER: executions
plus hidden executions and crosses, which are KIND_TRADE rows; Binance, tardis:
trades).  Auction crosses (FLAG_AUCTION) have no aggressor and are signed 0.

Every function takes host or device arrays, runs on the backend given (``backend``
argument, else ``GPUFLOW_BACKEND``, else the GPU if present) through the kernel pairs
of :mod:`gpuflow.kernels.features_flow`, and returns arrays on that backend's device.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from gpuflow.backend import Backend, get_backend
from gpuflow.book import BookFrame
from gpuflow.errors import SchemaError
from gpuflow.schema import FLAG_AUCTION, FLAG_HIDDEN, KIND_EXECUTE, KIND_TRADE, Instrument

__all__ = ["LambdaEstimate", "TakerPressure", "clock_edges", "hasbrouck_lambda", "kyle_lambda", "log_returns",
           "mid_changes", "realized_volatility", "sample_mid", "taker_pressure", "trade_sign"]

Array = Any  # numpy or cupy array

_PRINTS = ("auto", "trade", "execute", "all")


def _kernels() -> Any:
    from gpuflow.kernels import features_flow as kf

    return kf


# ---- results ------------------------------------------------------------------------------------


@dataclass
class TakerPressure:
    """Taker (aggressor) flow per clock bucket (arrays on the backend's device, length m).

    Attributes
    ----------
    ts_local : int64 (m,)
        Bucket end (ns); bucket k covers ``(grid_ns[k], grid_ns[k+1]]``.
    n_trades : int64 (m,)
        Prints in the bucket (signed or not).
    buy_lots, sell_lots : int64 (m,)
        Volume of buyer- and seller-initiated prints (lots).
    unsigned_lots : int64 (m,)
        Volume of prints with sign 0 (auctions, or no side and no way to infer one).
    imbalance : float64 (m,)
        ``(buy - sell) / (buy + sell)``, NaN for a bucket without signed volume.
    signed_sqrt_dollar : float64 (m,) or None
        ``sum(sign * sqrt(price * size))`` in quote currency (price and size converted
        with the instrument's tick and lot size); None when no instrument is known.
    """

    ts_local: Array
    n_trades: Array
    buy_lots: Array
    sell_lots: Array
    unsigned_lots: Array
    imbalance: Array
    signed_sqrt_dollar: Array | None

    @property
    def signed_lots(self) -> Array:
        """``buy_lots - sell_lots`` (int64): the signed order flow of Kyle's lambda."""
        return self.buy_lots - self.sell_lots


@dataclass
class LambdaEstimate:
    """Rolling OLS ``y = intercept + slope * x + e`` per bucket (float64 arrays of length m).

    Attributes
    ----------
    slope : the price-impact coefficient (lambda), in units of y per unit of x.
    intercept : the regression constant.
    t_stat : ``slope / se(slope)`` with ``se = sqrt(SSR / (window - 2) / Sxx)``.
    r2 : coefficient of determination.
    x : the regressor the estimate used (float64, length m).
    """

    slope: Array
    intercept: Array
    t_stat: Array
    r2: Array
    x: Array


# ---- validation helpers -------------------------------------------------------------------------


def _backend(backend: str | Backend | None) -> Backend:
    return backend if isinstance(backend, Backend) else get_backend(backend)


def _move(a: Any, be: Backend, dtype: Any = None) -> Array:
    """``a`` as an array of backend ``be`` (device arrays of another backend go through the host)."""
    if be.name != "gpu" and not isinstance(a, np.ndarray) and hasattr(a, "get"):
        a = a.get()  # a cupy array given to a host backend: the one copy this call makes
    return be.asarray(a, dtype=dtype)


def _vector(a: Any, name: str, fn: str, be: Backend, kind: str, n: int | None = None) -> Array:
    """Validate a 1-D numeric argument: ``kind`` "i" (integers) or "f" (real numbers, cast to float64)."""
    if a is None:
        msg = f"{fn}: {name} is required (a 1-D array), got None"
        raise SchemaError(msg)
    arr = _move(a, be)
    if arr.ndim != 1:
        msg = f"{fn}: {name} must be a 1-D array, got shape {tuple(arr.shape)}"
        raise SchemaError(msg)
    dk = np.dtype(arr.dtype).kind
    if kind == "i" and dk not in "iu":
        msg = f"{fn}: {name} must hold integers (int64 ns / ticks / lots), got dtype {arr.dtype}"
        raise SchemaError(msg)
    if kind == "f":
        if dk not in "iuf":
            msg = f"{fn}: {name} must hold real numbers, got dtype {arr.dtype}"
            raise SchemaError(msg)
        arr = arr.astype(be.xp.float64, copy=False)
    if n is not None and int(arr.shape[0]) != n:
        msg = f"{fn}: {name} has {int(arr.shape[0])} rows, expected {n}"
        raise SchemaError(msg)
    return arr


def _grid(grid_ns: Any, fn: str, be: Backend) -> Array:
    """Validate bucket edges: 1-D integers, at least two, strictly increasing; return int64."""
    g = _vector(grid_ns, "grid_ns", fn, be, "i").astype(be.xp.int64, copy=False)
    if int(g.shape[0]) < 2:
        msg = (f"{fn}: grid_ns must hold at least 2 bucket edges (m buckets need m+1 edges), "
               f"got {int(g.shape[0])}; see clock_edges")
        raise SchemaError(msg)
    _check_sorted(g, "grid_ns", fn, be, strict=True)
    return g


def _check_sorted(a: Array, name: str, fn: str, be: Backend, strict: bool = False) -> None:
    """Raise unless ``a`` is non-decreasing (strictly increasing when ``strict``); one host sync."""
    if int(a.shape[0]) < 2:
        return
    d = a[1:] - a[:-1]
    bad = (d <= 0) if strict else (d < 0)
    n_bad = int(bad.sum())
    if n_bad:
        row = int(be.to_host(be.xp.nonzero(bad)[0][:1])[0]) + 1
        h = be.to_host(a[row - 1:row + 1])
        what = "strictly increasing" if strict else "sorted (non-decreasing)"
        msg = (f"{fn}: {name} must be {what}; row {row} holds {int(h[1])} after {int(h[0])} "
               f"({n_bad} row(s) affected)")
        raise SchemaError(msg)


def _window(window: Any, fn: str, minimum: int) -> int:
    if isinstance(window, (bool, np.bool_)) or not isinstance(window, (int, np.integer)) or window < minimum:
        msg = f"{fn}: window must be an integer number of buckets >= {minimum}, got {window!r}"
        raise SchemaError(msg)
    return int(window)


def _event_columns(events: Any, names: tuple[str, ...], fn: str, be: Backend
                   ) -> tuple[dict[str, Array], Instrument | None]:
    """Event columns (cast to the schema dtypes) and the instrument, from a pyarrow Table or a mapping."""
    dtypes = {"ts_local": np.int64, "kind": np.uint8, "side": np.int8, "price": np.int64, "qty": np.int64,
              "flags": np.uint16}
    instrument = None
    if isinstance(events, pa.Table):
        missing = [c for c in names if c not in events.column_names]
        if missing:
            msg = f"{fn}: events lack column(s) {missing}; found {events.column_names}"
            raise SchemaError(msg)
        raw = {c: events.column(c).to_numpy() for c in names}
        meta = events.schema.metadata
        if meta and b"gpuflow" in meta:
            instrument = Instrument.from_metadata(meta)
    elif isinstance(events, Mapping):
        missing = [c for c in names if c not in events and c != "flags"]
        if missing:
            msg = f"{fn}: events lack column(s) {missing}; found {sorted(events)}"
            raise SchemaError(msg)
        raw = {c: events[c] for c in names if c in events}
    else:
        msg = (f"{fn}: events must be a pyarrow Table or a mapping of column arrays, "
               f"got {type(events).__name__}")
        raise SchemaError(msg)
    cols: dict[str, Array] = {}
    n = None
    for c, v in raw.items():
        a = _move(v, be)
        if a.ndim != 1:
            msg = f"{fn}: events column {c!r} must be 1-D, got shape {tuple(a.shape)}"
            raise SchemaError(msg)
        if np.dtype(a.dtype).kind not in "iu":
            msg = f"{fn}: events column {c!r} must hold integers ({np.dtype(dtypes[c]).name}), got {a.dtype}"
            raise SchemaError(msg)
        if n is None:
            n = int(a.shape[0])
        elif int(a.shape[0]) != n:
            msg = f"{fn}: events column {c!r} has {int(a.shape[0])} rows, expected {n} (as the other columns)"
            raise SchemaError(msg)
        cols[c] = a.astype(dtypes[c], copy=False)
    if "flags" in names and "flags" not in cols:
        cols["flags"] = be.zeros(n or 0, np.uint16)
    return cols, instrument


def _print_mask(cols: Mapping[str, Array], prints: str, instrument: Instrument | None, fn: str) -> Array:
    """Rows that are prints (trades) under ``prints``; see the module docstring."""
    if prints not in _PRINTS:
        msg = f"{fn}: prints must be one of {list(_PRINTS)}, got {prints!r}"
        raise SchemaError(msg)
    if prints == "auto":
        prints = "trade" if instrument is not None and instrument.source == "databento" else "all"
    kind = cols["kind"]
    is_trade = kind == KIND_TRADE
    is_exec = kind == KIND_EXECUTE
    if prints == "trade":
        return is_trade
    if prints == "execute":
        # hidden executions and crosses have no execute row (LOBSTER): keep their trade rows
        return is_exec | (is_trade & ((cols["flags"] & (FLAG_HIDDEN | FLAG_AUCTION)) != 0))
    return is_trade | is_exec


def _frame_arrays(book: BookFrame, fn: str, be: Backend) -> tuple[Array, Array, Array]:
    """(ts_local, best bid ticks, best ask ticks) of a BookFrame, contiguous, on ``be``."""
    if not isinstance(book, BookFrame):
        msg = f"{fn}: book must be a gpuflow.book.BookFrame, got {type(book).__name__}"
        raise SchemaError(msg)
    if book.ts_local is None:
        msg = f"{fn}: book has no ts_local (rebuild_book was given events without a ts_local column)"
        raise SchemaError(msg)
    xp = be.xp
    ts = _move(book.ts_local, be).astype(xp.int64, copy=False)
    bid = xp.ascontiguousarray(_move(book.bid_price[:, 0], be), dtype=xp.int64)
    ask = xp.ascontiguousarray(_move(book.ask_price[:, 0], be), dtype=xp.int64)
    _check_sorted(ts, "book.ts_local", fn, be)
    return ts, bid, ask


# ---- public API ---------------------------------------------------------------------------------


def clock_edges(start_ns: int, end_ns: int, bucket_ns: int, *, backend: str | Backend | None = None) -> Array:
    """Edges of regular clock buckets covering ``[start_ns, end_ns]``, aligned to multiples of ``bucket_ns``.

    ::

        first = largest multiple of bucket_ns strictly below start_ns
        last  = smallest multiple of bucket_ns at or above end_ns
        edges = first, first + bucket_ns, ..., last

    so every event with ``start_ns <= ts_local <= end_ns`` falls in exactly one
    bucket ``(edges[k], edges[k+1]]``.

    Parameters
    ----------
    start_ns, end_ns : int
        First and last ``ts_local`` to cover (ns), ``start_ns <= end_ns``.
    bucket_ns : int
        Bucket width (ns), > 0.
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    int64 array (m+1,) on the backend's device

    Raises
    ------
    SchemaError
        ``bucket_ns <= 0`` or ``end_ns < start_ns``.

    Examples
    --------
    >>> clock_edges(1_000, 2_500, 1_000, backend="cpu").tolist()
    [0, 1000, 2000, 3000]
    """
    start, end, b = int(start_ns), int(end_ns), int(bucket_ns)
    if b <= 0:
        msg = f"clock_edges: bucket_ns must be > 0 ns, got {bucket_ns}"
        raise SchemaError(msg)
    if end < start:
        msg = f"clock_edges: end_ns ({end}) is before start_ns ({start})"
        raise SchemaError(msg)
    first = ((start - 1) // b) * b
    last = -((-end) // b) * b
    be = _backend(backend)
    return be.xp.arange(first, last + 1, b, dtype=be.xp.int64)


def trade_sign(events: Any, book: BookFrame | None = None, *, prints: str = "auto", quote_lag_ns: int = 0,
               backend: str | Backend | None = None) -> Array:
    """Aggressor sign of every print: +1 buyer-initiated, -1 seller-initiated (Lee-Ready where no side).

    ::

        KIND_TRADE    : sign = side                       (the aggressor side)
        KIND_EXECUTE  : sign = -side                      (side is the resting order's)
        FLAG_AUCTION  : sign = 0                          (a cross has no aggressor)
        side == 0     : quote rule   sign = sign(price - mid),  mid = (bid + ask) / 2 of the book
                                     prevailing before the print (last book row with
                                     ts_local < t_print - quote_lag_ns)
                        tick test    at the mid or without a quote: sign = sign(price - p_prev),
                                     p_prev = price of the last earlier print at a different price
                        else 0

    The quote rule compares ``2 * price`` with ``bid + ask`` in integer ticks (exact).
    Only earlier book rows and earlier prints are used, so the sign of a print at t
    depends only on events with ``ts_local <= t``.

    Parameters
    ----------
    events : pyarrow.Table or mapping of arrays
        Schema events (host or device): ``kind``, ``side``, ``price`` (ticks), ``flags``
        (optional in a mapping) and, when ``book`` is given, ``ts_local`` (ns, sorted).
    book : BookFrame, optional
        Books for the quote rule (``rebuild_book`` of the same stream, on any emission
        schedule); without it, prints without a side use the tick test alone.
    prints : {"auto", "trade", "execute", "all"}
        Which rows are prints: KIND_TRADE rows, KIND_EXECUTE rows (plus hidden and cross
        KIND_TRADE rows, which have no execute row), or both.  ``auto``: ``trade`` for
        Databento sources (which print each trade as a trade row and fill rows), else ``all``.
    quote_lag_ns : int
        Use the quote prevailing this long before the print (Lee and Ready suggest 5 s
        for 1980s NYSE quote-reporting delays; 0 for time-consistent feeds).
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    int8 array (n_events,) on the backend's device
        The sign of every print; 0 on rows that are not prints and on prints that cannot
        be signed.

    Raises
    ------
    SchemaError
        Missing columns, columns of unequal length, an unknown ``prints``, unsorted
        ``ts_local`` of the prints or of ``book``.

    References
    ----------
    Lee, C. M. C. and Ready, M. J. (1991). Inferring trade direction from intraday data.
    *Journal of Finance* 46(2), 733-746.

    Examples
    --------
    >>> import numpy as np
    >>> ev = {"kind": np.array([7, 6, 7, 7], np.uint8), "side": np.array([1, 1, 0, 0], np.int8),
    ...       "price": np.array([100, 101, 102, 102], np.int64)}
    >>> trade_sign(ev, backend="cpu").tolist()   # buy, sell (exec of a resting bid), ticks: up, zero-up
    [1, -1, 1, 1]
    """
    fn = "trade_sign"
    be = _backend(backend)
    xp = be.xp
    kf = _kernels()
    names = ("kind", "side", "price", "flags") + (("ts_local",) if book is not None else ())
    cols, instrument = _event_columns(events, names, fn, be)
    n = int(cols["kind"].shape[0])
    out = be.zeros(n, xp.int8)
    rows = xp.nonzero(_print_mask(cols, prints, instrument, fn))[0]
    t = int(rows.shape[0])
    if t == 0:
        return out
    kind, side, flags, price = (cols[c][rows] for c in ("kind", "side", "flags", "price"))
    # tick test: the last earlier print at a different price = the print just before the current run of
    # equal prices (run starts found with a cumulative sum, which cupy has; no sequential scan)
    change = xp.ones(t, dtype=bool)
    change[1:] = price[1:] != price[:-1]
    run_start = xp.nonzero(change)[0][xp.cumsum(change) - 1]
    prev_row = run_start - 1
    has_prev = (prev_row >= 0).astype(xp.uint8)
    prev_price = price[xp.maximum(prev_row, 0)]
    if book is not None:
        f_ts, bid, ask = _frame_arrays(book, fn, be)
        ts = cols["ts_local"][rows]
        _check_sorted(ts, "ts_local of the prints", fn, be)
        # last book row strictly before the print (minus the lag): the quote prevailing before it
        quote_row = xp.searchsorted(f_ts, ts - np.int64(quote_lag_ns), side="left").astype(xp.int64) - 1
    else:
        quote_row = xp.full(t, -1, dtype=xp.int64)
        bid = ask = be.zeros(1, xp.int64)
    sign_t = be.empty(t, xp.int8)
    be.launch(kf.TRADE_SIGN, t, kind, side, flags, price, quote_row, bid, ask, prev_price, has_prev, sign_t)
    out[rows] = sign_t
    return out


def taker_pressure(events: Any, grid_ns: Any, *, signs: Any = None, book: BookFrame | None = None,
                   prints: str = "auto", instrument: Instrument | None = None,
                   backend: str | Backend | None = None) -> TakerPressure:
    """Taker buy and sell volume, their normalised imbalance and signed sqrt-dollar volume per clock bucket.

    For bucket k, ``(grid_ns[k], grid_ns[k+1]]`` on the ``ts_local`` clock::

        buy_k  = sum(qty_i  for prints i in bucket k with sign_i = +1)      (lots)
        sell_k = sum(qty_i  for prints i in bucket k with sign_i = -1)      (lots)
        imbalance_k = (buy_k - sell_k) / (buy_k + sell_k)                 (NaN if both 0)
        signed_sqrt_dollar_k = sum(sign_i * sqrt(price_i * size_i))     (price, size in
                               quote currency and base units: ticks * tick_size, lots * lot_size)

    A value stamped at ``grid_ns[k+1]`` uses only prints with ``ts_local <= grid_ns[k+1]``.

    Parameters
    ----------
    events : pyarrow.Table or mapping of arrays
        Schema events (host or device) with ``ts_local`` (ns, the prints sorted by it),
        ``kind``, ``side``, ``price`` (ticks), ``qty`` (lots) and ``flags``.
    grid_ns : int64 array (m+1,)
        Bucket edges, strictly increasing (see :func:`clock_edges`).
    signs : int8 array (n_events,), optional
        Aggressor signs (:func:`trade_sign`); computed from ``events`` and ``book`` if omitted.
    book : BookFrame, optional
        For the Lee-Ready quote rule when ``signs`` is computed here.
    prints : {"auto", "trade", "execute", "all"}
        Which rows are prints (see :func:`trade_sign`).
    instrument : Instrument, optional
        Tick and lot size for ``signed_sqrt_dollar``; default: the events table's metadata.
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    TakerPressure
        Arrays of length m on the backend's device.

    Raises
    ------
    SchemaError
        Missing or unequal columns, bad ``grid_ns``, ``signs`` of the wrong length, prints
        not sorted by ``ts_local``.

    References
    ----------
    Hasbrouck, J. (2009). Trading costs and returns for U.S. equities: estimating effective
    costs from daily data. *Journal of Finance* 64(3), 1445-1477 (signed square-root dollar
    volume).  Trade signs: Lee and Ready (1991), see :func:`trade_sign`.

    Examples
    --------
    >>> import numpy as np
    >>> ev = {"ts_local": np.array([1, 2, 12, 15], np.int64), "kind": np.full(4, 7, np.uint8),
    ...       "side": np.array([1, -1, 1, 1], np.int8), "price": np.full(4, 100, np.int64),
    ...       "qty": np.array([3, 1, 2, 2], np.int64)}
    >>> tp = taker_pressure(ev, np.array([0, 10, 20]), backend="cpu")
    >>> tp.buy_lots.tolist(), tp.sell_lots.tolist(), tp.imbalance.tolist()
    ([3, 4], [1, 0], [0.5, 1.0])
    """
    fn = "taker_pressure"
    be = _backend(backend)
    xp = be.xp
    kf = _kernels()
    cols, meta_instrument = _event_columns(events, ("ts_local", "kind", "side", "price", "qty", "flags"), fn, be)
    if instrument is not None and not isinstance(instrument, Instrument):
        msg = f"{fn}: instrument must be a gpuflow.schema.Instrument, got {type(instrument).__name__}"
        raise SchemaError(msg)
    instrument = instrument or meta_instrument
    n = int(cols["kind"].shape[0])
    grid = _grid(grid_ns, fn, be)
    m = int(grid.shape[0]) - 1
    if signs is None:
        signs = trade_sign(events, book, prints=prints, backend=be)
    else:
        signs = _vector(signs, "signs", fn, be, "i", n).astype(xp.int8, copy=False)
    rows = xp.nonzero(_print_mask(cols, prints, instrument, fn))[0]
    ts = cols["ts_local"][rows]
    _check_sorted(ts, "ts_local of the prints", fn, be)
    pos = xp.searchsorted(ts, grid, side="right").astype(xp.int64)  # prints with ts_local <= each edge
    scale = (float(Decimal(instrument.tick_size)) * float(Decimal(instrument.lot_size))
             if instrument is not None else 0.0)
    out_n, buy, sell, uns = (be.empty(m, xp.int64) for _ in range(4))
    ssdv, imb = be.empty(m, xp.float64), be.empty(m, xp.float64)
    be.launch(kf.FLOW_BUCKETS, m, pos, xp.ascontiguousarray(signs[rows]), cols["qty"][rows], cols["price"][rows],
              np.float64(scale), out_n, buy, sell, uns, ssdv, imb)
    return TakerPressure(grid[1:], out_n, buy, sell, uns, imb, ssdv if instrument is not None else None)


def _mid_series(frame_or_mid: Any, ts_local: Any, fn: str, be: Backend) -> tuple[Array, Array]:
    """(ts_local int64, mid float64) rows from a BookFrame or a mid array with its timestamps."""
    kf = _kernels()
    xp = be.xp
    if isinstance(frame_or_mid, BookFrame):
        if ts_local is not None:
            msg = f"{fn}: ts_local is taken from the BookFrame; pass it only with a mid array"
            raise SchemaError(msg)
        ts, bid, ask = _frame_arrays(frame_or_mid, fn, be)
        mid = be.empty(int(ts.shape[0]), xp.float64)
        be.launch(kf.MID, int(ts.shape[0]), bid, ask, mid)
        return ts, mid
    mid = _vector(frame_or_mid, "frame_or_mid", fn, be, "f")
    if ts_local is None:
        msg = f"{fn}: a mid array needs its ts_local (int64 ns, same length); got ts_local=None"
        raise SchemaError(msg)
    ts = _vector(ts_local, "ts_local", fn, be, "i", int(mid.shape[0])).astype(xp.int64, copy=False)
    _check_sorted(ts, "ts_local", fn, be)
    return ts, xp.ascontiguousarray(mid)


def sample_mid(frame_or_mid: Any, grid_ns: Any, *, ts_local: Any = None,
               backend: str | Backend | None = None) -> Array:
    """The mid at each grid time: the last value at or before it (as-of, backward).

    ::

        mid(t) = (bid_1 + ask_1) / 2   of the last row with ts_local <= t
        mid(t) = NaN                   before the first row, or when a side is empty

    Parameters
    ----------
    frame_or_mid : BookFrame or float array (n,)
        Book rows (``rebuild_book`` output; the mid is in ticks, half-ticks possible) or
        mid values of any unit with their ``ts_local``.
    grid_ns : int64 array (m+1,)
        Sampling times (ns), strictly increasing.
    ts_local : int64 array (n,), optional
        Timestamps (ns, sorted) of a mid array; not used with a BookFrame.
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    float64 array (m+1,) on the backend's device

    Raises
    ------
    SchemaError
        Bad ``grid_ns``, unsorted timestamps, a mid array without ``ts_local``.

    Examples
    --------
    >>> import numpy as np
    >>> sample_mid(np.array([100.0, 101.0]), np.array([5, 10, 25]), ts_local=np.array([10, 20]),
    ...            backend="cpu").tolist()
    [nan, 100.0, 101.0]
    """
    fn = "sample_mid"
    be = _backend(backend)
    return _sample(frame_or_mid, grid_ns, ts_local, fn, be)


def _sample(frame_or_mid: Any, grid_ns: Any, ts_local: Any, fn: str, be: Backend) -> Array:
    xp = be.xp
    grid = _grid(grid_ns, fn, be)
    ts, mid = _mid_series(frame_or_mid, ts_local, fn, be)
    row = xp.searchsorted(ts, grid, side="right").astype(xp.int64) - 1  # last row with ts_local <= t
    out = be.empty(int(grid.shape[0]), xp.float64)
    be.launch(_kernels().SAMPLE, int(grid.shape[0]), mid, row, out)
    return out


def log_returns(frame_or_mid: Any, grid_ns: Any, *, ts_local: Any = None,
                backend: str | Backend | None = None) -> Array:
    """Log returns of the mid sampled on a clock grid, one per bucket.

    ::

        r_k = log(mid(grid_ns[k+1]) / mid(grid_ns[k])),   k = 0 .. m-1

    with ``mid(t)`` the last mid at or before t (:func:`sample_mid`).  ``r_k`` is
    stamped ``grid_ns[k+1]`` and is NaN where either mid is NaN (no book yet, empty side).
    The tick size cancels, so a BookFrame's mid in ticks gives the same returns as prices.

    Parameters
    ----------
    frame_or_mid : BookFrame or float array (n,)
        See :func:`sample_mid`.
    grid_ns : int64 array (m+1,)
        Bucket edges (ns), strictly increasing.
    ts_local : int64 array (n,), optional
        Timestamps of a mid array.
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    float64 array (m,) on the backend's device

    Raises
    ------
    SchemaError
        As :func:`sample_mid`.

    Examples
    --------
    >>> import numpy as np
    >>> r = log_returns(np.array([100.0, 110.0]), np.array([0, 10, 20]), ts_local=np.array([0, 15]),
    ...                 backend="cpu")
    >>> np.round(r, 6).tolist()
    [0.0, 0.09531]
    """
    fn = "log_returns"
    be = _backend(backend)
    mid = _sample(frame_or_mid, grid_ns, ts_local, fn, be)
    m = int(mid.shape[0]) - 1
    out = be.empty(m, be.xp.float64)
    be.launch(_kernels().LOG_RETURN, m, mid, out)
    return out


def mid_changes(frame_or_mid: Any, grid_ns: Any, *, ts_local: Any = None,
                backend: str | Backend | None = None) -> Array:
    """Mid-price changes per clock bucket, ``dmid_k = mid(grid_ns[k+1]) - mid(grid_ns[k])``.

    The dependent variable of :func:`kyle_lambda`.  A BookFrame gives ticks (multiply by
    the tick size for prices); NaN where either mid is NaN.

    Parameters
    ----------
    frame_or_mid, grid_ns, ts_local, backend
        As :func:`sample_mid`.

    Returns
    -------
    float64 array (m,) on the backend's device

    Examples
    --------
    >>> import numpy as np
    >>> mid_changes(np.array([100.0, 100.5]), np.array([0, 10, 20]), ts_local=np.array([0, 15]),
    ...             backend="cpu").tolist()
    [0.0, 0.5]
    """
    be = _backend(backend)
    mid = _sample(frame_or_mid, grid_ns, ts_local, "mid_changes", be)
    return mid[1:] - mid[:-1]


def realized_volatility(returns: Any, window: int, *, periods_per_year: float | None = None,
                        backend: str | Backend | None = None) -> Array:
    """Rolling realized volatility: the square root of the sum of squared returns over ``window`` buckets.

    ::

        RV_k = sqrt( sum_{j = k-window+1 .. k} r_j^2 )                        (per window)
        RV_k = sqrt( periods_per_year / window * sum_{j} r_j^2 )             (annualised)

    NaN for ``k < window - 1`` (window not full) and where the window holds a NaN.

    Parameters
    ----------
    returns : float array (m,)
        Returns per bucket (e.g. :func:`log_returns`), host or device.
    window : int
        Buckets per window, >= 1.
    periods_per_year : float, optional
        Buckets per year (e.g. ``365 * 86400`` for 1-second buckets of a 24/7 market);
        scales the window's variance to a year.
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    float64 array (m,) on the backend's device

    Raises
    ------
    SchemaError
        ``returns`` not 1-D numeric, ``window`` < 1, ``periods_per_year`` <= 0.

    References
    ----------
    Andersen, T. G. and Bollerslev, T. (1998). Answering the skeptics: yes, standard
    volatility models do provide accurate forecasts. *International Economic Review*
    39(4), 885-905.

    Examples
    --------
    >>> import numpy as np
    >>> realized_volatility(np.array([0.03, 0.04, 0.0]), 2, backend="cpu").round(6).tolist()
    [nan, 0.05, 0.04]
    """
    fn = "realized_volatility"
    be = _backend(backend)
    r = be.xp.ascontiguousarray(_vector(returns, "returns", fn, be, "f"))
    w = _window(window, fn, 1)
    if periods_per_year is None:
        scale = 1.0
    else:
        if not float(periods_per_year) > 0:
            msg = f"{fn}: periods_per_year must be > 0, got {periods_per_year!r}"
            raise SchemaError(msg)
        scale = float(periods_per_year) / w
    out = be.empty(int(r.shape[0]), be.xp.float64)
    be.launch(_kernels().ROLLING_RV, int(r.shape[0]), r, np.int64(w), np.float64(scale), out)
    return out


def _rolling_ols(y: Array, x: Array, w: int, be: Backend) -> LambdaEstimate:
    xp = be.xp
    m = int(y.shape[0])
    slope, icpt, tstat, r2 = (be.empty(m, xp.float64) for _ in range(4))
    be.launch(_kernels().ROLLING_OLS, m, xp.ascontiguousarray(y), xp.ascontiguousarray(x), np.int64(w),
              slope, icpt, tstat, r2)
    return LambdaEstimate(slope, icpt, tstat, r2, x)


def kyle_lambda(mid_changes: Any, signed_volume: Any, window: int, *,
                backend: str | Backend | None = None) -> LambdaEstimate:
    """Kyle's lambda: rolling OLS slope of mid-price changes on signed order flow, with intercept.

    Over the last ``window`` buckets j = k-window+1 .. k (causal: bucket k itself and
    earlier ones)::

        dmid_j = a + lambda * q_j + e_j,     q_j = buy_lots_j - sell_lots_j

        lambda = Sxy / Sxx,  a = mean(dmid) - lambda * mean(q)
        t      = lambda / sqrt(SSR / (window - 2) / Sxx),     R^2 = Sxy^2 / (Sxx * Syy)

    (S: centred sums of squares and cross-products.)  All outputs are NaN for
    ``k < window - 1``, where the window holds a NaN, or where ``q`` is constant in the
    window; ``t`` and ``R^2`` are NaN where ``dmid`` is constant.  Each output row
    recomputes its window (O(window) per row, m * window in all).

    Parameters
    ----------
    mid_changes : float array (m,)
        Mid change per bucket (:func:`mid_changes`; ticks for a BookFrame mid).
    signed_volume : numeric array (m,)
        Signed order flow per bucket (``TakerPressure.signed_lots``).
    window : int
        Buckets per regression, >= 3 (one residual degree of freedom for the t-stat).
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    LambdaEstimate
        ``slope`` (lambda, units of ``mid_changes`` per unit of ``signed_volume``),
        ``intercept``, ``t_stat``, ``r2`` and the regressor ``x``; float64 (m,).

    Raises
    ------
    SchemaError
        Inputs not 1-D numeric or of unequal length, ``window`` < 3.

    References
    ----------
    Kyle, A. S. (1985). Continuous auctions and insider trading. *Econometrica* 53(6),
    1315-1335.  Estimation as in Hasbrouck, J. (2009), *Journal of Finance* 64(3),
    1445-1477, and Goyenko, R. Y., Holden, C. W. and Trzcinka, C. A. (2009). Do liquidity
    measures measure liquidity? *Journal of Financial Economics* 92(2), 153-181.

    Examples
    --------
    >>> import numpy as np
    >>> est = kyle_lambda(np.array([1.0, 3.0, 2.0, 4.0]), np.array([0, 2, 1, 3]), 3, backend="cpu")
    >>> est.slope.tolist(), est.intercept.tolist()
    ([nan, nan, 1.0, 1.0], [nan, nan, 1.0, 1.0])
    """
    fn = "kyle_lambda"
    be = _backend(backend)
    y = _vector(mid_changes, "mid_changes", fn, be, "f")
    x = _vector(signed_volume, "signed_volume", fn, be, "f", int(y.shape[0]))
    return _rolling_ols(y, x, _window(window, fn, 3), be)


def hasbrouck_lambda(returns: Any, events: Any, grid_ns: Any, window: int, *, signs: Any = None,
                     book: BookFrame | None = None, prints: str = "auto", instrument: Instrument | None = None,
                     backend: str | Backend | None = None) -> LambdaEstimate:
    """Hasbrouck's lambda: rolling OLS of returns on signed square-root dollar volume, with intercept.

    ::

        S_k = sum_{prints i in bucket k} sign_i * sqrt(price_i * size_i)     (quote currency)
        r_j = a + lambda * S_j + e_j,      j = k-window+1 .. k

    The regression, its t-stat, R^2 and NaN rules are those of :func:`kyle_lambda`;
    ``S`` comes from :func:`taker_pressure` on the same ``grid_ns``.

    Parameters
    ----------
    returns : float array (m,)
        Returns (or mid changes) per bucket of ``grid_ns``, e.g. :func:`log_returns`.
    events : pyarrow.Table or mapping of arrays
        Schema events with the prints (see :func:`taker_pressure`).
    grid_ns : int64 array (m+1,)
        Bucket edges (ns).
    window : int
        Buckets per regression, >= 3.
    signs, book, prints
        As :func:`taker_pressure`.
    instrument : Instrument, optional
        Tick and lot size; required unless the events table carries it.
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    LambdaEstimate
        ``x`` is ``S`` (float64, m).

    Raises
    ------
    SchemaError
        No instrument known, ``returns`` not of length m, and the errors of
        :func:`taker_pressure` and :func:`kyle_lambda`.

    References
    ----------
    Hasbrouck, J. (2009). Trading costs and returns for U.S. equities: estimating effective
    costs from daily data. *Journal of Finance* 64(3), 1445-1477.  Goyenko, Holden and
    Trzcinka (2009), *Journal of Financial Economics* 92(2), 153-181.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuflow.schema import Instrument
    >>> ev = {"ts_local": np.array([1, 11, 21, 31], np.int64), "kind": np.full(4, 7, np.uint8),
    ...       "side": np.array([1, -1, 1, 1], np.int8), "price": np.array([100, 100, 400, 100]),
    ...       "qty": np.array([1, 4, 1, 9])}
    >>> inst = Instrument("v", "X", tick_size="1", lot_size="1")
    >>> est = hasbrouck_lambda(np.array([0.1, -0.2, 0.2, 0.3]), ev, np.arange(0, 41, 10), 3,
    ...                        instrument=inst, backend="cpu")
    >>> est.x.tolist()
    [10.0, -20.0, 20.0, 30.0]
    >>> np.round(est.slope, 6).tolist()
    [nan, nan, 0.01, 0.01]
    """
    fn = "hasbrouck_lambda"
    be = _backend(backend)
    w = _window(window, fn, 3)
    tp = taker_pressure(events, grid_ns, signs=signs, book=book, prints=prints, instrument=instrument,
                        backend=be)
    if tp.signed_sqrt_dollar is None:
        msg = (f"{fn}: no instrument known for the dollar volume sqrt(price * size); pass instrument= "
               "or an events table with gpuflow metadata")
        raise SchemaError(msg)
    m = int(tp.ts_local.shape[0])
    y = _vector(returns, "returns", fn, be, "f", m)
    return _rolling_ols(y, tp.signed_sqrt_dollar, w, be)
