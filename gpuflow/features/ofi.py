"""Order-flow imbalance (OFI) of book rows: per level, per clock bucket, depth- and spread-normalised.

OFI measures the net flow of size into the bid minus the ask between two
observations of the book.  For level m between consecutive rows i-1 and i of a
:class:`gpuflow.book.BookFrame` (Cont, Kukanov and Stoikov 2014, eq. 2, applied to
each of the top levels as the multi-level OFI of Xu, Gould and Howison 2019)::

    e_m(i) = 1{Pb_m(i) >= Pb_m(i-1)} qb_m(i) - 1{Pb_m(i) <= Pb_m(i-1)} qb_m(i-1)
           - 1{Pa_m(i) <= Pa_m(i-1)} qa_m(i) + 1{Pa_m(i) >= Pa_m(i-1)} qa_m(i-1)

(ticks and lots; a missing level has price EMPTY_BID/ASK_PRICE and size 0).  This
is the formula that :func:`gpuflow.book.rebuild_book` fuses into its replay
(``ofi=True``), so for a frame with one row per observation::

    ofi(rebuild_book(ev, every=0)) == rebuild_book(ev, every=0, ofi=True).ofi

Row 0 is compared with ``prev``: the empty book unless given (pass the last row
of the previous chunk to continue a stream).  Every value at row i uses rows i-1
and i only, so it is known at ``ts_local[i]``.  The kernels are in
:mod:`gpuflow.kernels.features_ofi`.

References
----------
R. Cont, A. Kukanov and S. Stoikov, "The price impact of order book events",
Journal of Financial Econometrics 12(1), 2014.
K. Xu, M. D. Gould and S. D. Howison, "Multi-level order-flow imbalance in a limit
order book", Market Microstructure and Liquidity 4(3&4), 2018 (arXiv:1907.06230).
R. Cont, M. Cucuringu and C. Zhang, "Cross-impact of order flow imbalance in equity
markets", Quantitative Finance, 2023 (arXiv:2112.13213).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuflow.backend import Backend
from gpuflow.errors import SchemaError
from gpuflow.features.book import Array, _book_columns, _check_levels, _on
from gpuflow.schema import EMPTY_ASK_PRICE, EMPTY_BID_PRICE

if TYPE_CHECKING:  # pragma: no cover
    from gpuflow.book import BookFrame

__all__ = ["ofi", "ofi_bucketed", "spread_adjusted_ofi", "vwofi"]

Frame = Any  # BookFrame or a mapping of its columns


def _kernels() -> Any:
    from gpuflow.kernels import features_ofi as ko

    return ko


def _levels_arg(levels: Any, n_levels: int, fname: str) -> int:
    return n_levels if levels is None else _check_levels(levels, n_levels, fname)


def _prev_book(prev: Any, levels: int, be: Backend, fname: str) -> list[Array]:
    """The book before row 0 as four int64 (levels,) arrays: the empty book, or the last row of ``prev``."""
    if prev is None:
        return [be.asarray(np.full(levels, v, np.int64)) for v in (EMPTY_BID_PRICE, 0, EMPTY_ASK_PRICE, 0)]
    out = []
    for name in ("bid_price", "bid_qty", "ask_price", "ask_qty"):
        v = prev.get(name) if isinstance(prev, Mapping) else getattr(prev, name, None)
        if v is None:
            msg = (f"{fname}: prev lacks {name!r}; expected a BookFrame (its last row is used) or a mapping "
                   "with bid_price, bid_qty, ask_price, ask_qty (one row (levels,) or rows (k, levels))")
            raise SchemaError(msg)
        a = _on(be, v)
        if a.ndim == 2:
            if a.shape[0] == 0:
                msg = (f"{fname}: prev has no rows ({name!r} shape {tuple(a.shape)}); pass prev=None for the "
                       "empty book")
                raise SchemaError(msg)
            a = a[-1]
        if a.ndim != 1 or a.shape[0] < levels:
            msg = (f"{fname}: prev {name!r} must be a book row with at least {levels} levels, "
                   f"got shape {tuple(a.shape)}")
            raise SchemaError(msg)
        if a.dtype.kind not in "iu":
            msg = f"{fname}: prev {name!r} must hold int64 ticks / lots, got dtype {a.dtype}"
            raise SchemaError(msg)
        out.append(be.xp.ascontiguousarray(a[:levels].astype(be.xp.int64)))
    return out


def ofi(frame: BookFrame | Mapping[str, Any], levels: int = 1, *, prev: Frame | None = None,
        backend: str | Backend | None = None) -> Array:
    """Order-flow imbalance ``e_m`` between consecutive rows, for levels m = 1..``levels``.

    ::

        e_m(i) = 1{Pb_m(i) >= Pb_m(i-1)} qb_m(i) - 1{Pb_m(i) <= Pb_m(i-1)} qb_m(i-1)
               - 1{Pa_m(i) <= Pa_m(i-1)} qa_m(i) + 1{Pa_m(i) >= Pa_m(i-1)} qa_m(i-1)

    Row -1 is ``prev`` (default: the empty book, as in the fused replay).  Column 0 is
    the best-level OFI of Cont, Kukanov and Stoikov (2014); the columns together are
    the multi-level OFI vector of Xu, Gould and Howison (2019).  OFI over a longer
    interval is the sum of ``e`` over its rows (:func:`ofi_bucketed`).

    Parameters
    ----------
    frame : BookFrame or mapping
        ``bid_price``, ``bid_qty``, ``ask_price``, ``ask_qty``: int64 ticks / lots of shape (n, N),
        on the backend's device; one row per observation of a consistent book (``every=0``).
    levels : int
        Levels to compute (1..N).
    prev : BookFrame or mapping, optional
        The book before row 0: its last row (``(levels,)`` or ``(k, >= levels)`` int64 arrays).
        Pass the previous chunk's frame to continue a stream chunk by chunk.
    backend : {"cpu", "gpu", None} or Backend
        Default: the frame's backend.

    Returns
    -------
    int64 array (n, levels), on the backend's device
        Lots.

    Raises
    ------
    SchemaError
        The frame (or ``prev``) is not int64 book columns, or ``levels`` is outside 1..N.

    See Also
    --------
    gpuflow.book.rebuild_book : ``ofi=True`` computes the same values inside the replay.
    gpuflow.kernels.features_ofi.ofi_e : the scalar core.

    References
    ----------
    Cont, Kukanov and Stoikov (2014); Xu, Gould and Howison (2019): see the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuflow.schema import EMPTY_BID_PRICE as EB, EMPTY_ASK_PRICE as EA
    >>> f = {"bid_price": np.array([[100], [101], [100]]), "bid_qty": np.array([[5], [1], [5]]),
    ...      "ask_price": np.array([[EA], [103], [102]]), "ask_qty": np.array([[0], [2], [4]])}
    >>> ofi(f, backend="cpu")[:, 0].tolist()   # +5 (bid appears); +1 -2 (better bid, ask appears); -1 -4
    [5, -1, -5]
    """
    ko = _kernels()
    be, (bp, bq, ap, aq) = _book_columns(frame, "ofi", backend)
    k = _check_levels(levels, bp.shape[1], "ofi")
    pv = _prev_book(prev, k, be, "ofi")
    out = be.empty((bp.shape[0], k), be.xp.int64)
    be.launch(ko.OFI, bp.shape[0], np.int64(k), bp, bq, ap, aq, *pv, out)
    return out


def _row_times(frame: Any, ts_local: Any, n: int, be: Backend, fname: str) -> Array:
    """The time each row became known: the running maximum of ``ts_local`` (int64 ns, backend array)."""
    if ts_local is None:
        ts_local = frame.get("ts_local") if isinstance(frame, Mapping) else getattr(frame, "ts_local", None)
    if ts_local is None:
        msg = f"{fname}: the frame has no ts_local; pass ts_local= (int64 ns, one per row)"
        raise SchemaError(msg)
    ts = _on(be, ts_local)
    if ts.ndim != 1 or ts.shape[0] != n:
        msg = f"{fname}: ts_local must have shape ({n},) like the frame's rows, got {tuple(ts.shape)}"
        raise SchemaError(msg)
    if ts.dtype.kind not in "iu":
        msg = f"{fname}: ts_local must be int64 ns, got dtype {ts.dtype}"
        raise SchemaError(msg)
    ts = ts.astype(be.xp.int64, copy=False)
    if n > 1 and bool((ts[1:] < ts[:-1]).any()):
        # A replay can apply rows out of arrival order (a Binance snapshot arrives after the diffs
        # replayed behind it): such a row is only known once every row before it has arrived.
        # cupy has no maximum.accumulate; this happens once per call and only for such replays.
        h = np.maximum.accumulate(be.to_host(ts))
        ts = be.asarray(h)
    return ts


def ofi_bucketed(frame: BookFrame | Mapping[str, Any], grid_ns: Any, levels: int = 1, *,
                 prev: Frame | None = None, ts_local: Any = None,
                 backend: str | Backend | None = None) -> Array:
    """OFI summed over clock buckets: one row per grid time t, the flow of the rows known in (t_prev, t].

    ::

        k(i)          = max(ts_local[0..i])          (when row i is known; = ts_local[i] in time order)
        OFI_m(t_0)    = sum_{i : k(i) <= t_0} e_m(i)
        OFI_m(t_j)    = sum_{i : t_{j-1} < k(i) <= t_j} e_m(i)

    so the value at grid time t uses only rows with ``ts_local <= t``; rows after the last grid
    time are not counted.  For a frame of every observation this equals the fused
    ``rebuild_book(ev, grid_ns=grid, ofi=True).ofi`` (for events in ``ts_local`` order).

    Parameters
    ----------
    frame : BookFrame or mapping
        int64 (n, N) book columns with ``ts_local`` (see :func:`ofi`), one row per observation.
    grid_ns : int64 array (G,)
        Bucket end times (ns, ts_local clock), non-decreasing; host or device.
    levels : int
        Levels (1..N).
    prev : BookFrame or mapping, optional
        The book before row 0 (see :func:`ofi`).
    ts_local : int64 array (n,), optional
        Row times, overriding the frame's.
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    int64 array (G, levels), on the backend's device
        Lots per bucket.

    Raises
    ------
    SchemaError
        Bad frame, no ``ts_local``, ``grid_ns`` not 1-D integer or not non-decreasing, bad ``levels``.

    References
    ----------
    Cont, Kukanov and Stoikov (2014): OFI over an interval is the sum of ``e`` over its events.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuflow.schema import EMPTY_ASK_PRICE as EA
    >>> f = {"bid_price": np.array([[100], [101], [100]]), "bid_qty": np.array([[5], [1], [5]]),
    ...      "ask_price": np.array([[EA], [103], [102]]), "ask_qty": np.array([[0], [2], [4]]),
    ...      "ts_local": np.array([10, 20, 30])}
    >>> ofi_bucketed(f, np.array([5, 20, 40]), backend="cpu")[:, 0].tolist()   # [], [5 - 1], [-5]
    [0, 4, -5]
    """
    ko = _kernels()
    be, (bp, bq, ap, aq) = _book_columns(frame, "ofi_bucketed", backend)
    n = bp.shape[0]
    k = _check_levels(levels, bp.shape[1], "ofi_bucketed")
    xp = be.xp
    grid = _on(be, grid_ns)
    if grid.ndim != 1 or grid.dtype.kind not in "iu":
        msg = (f"ofi_bucketed: grid_ns must be a 1-D int64 array of ns times, got shape {tuple(grid.shape)} "
               f"dtype {grid.dtype}")
        raise SchemaError(msg)
    grid = grid.astype(xp.int64, copy=False)
    if grid.shape[0] > 1 and bool((grid[1:] < grid[:-1]).any()):
        msg = "ofi_bucketed: grid_ns must be non-decreasing (bucket end times)"
        raise SchemaError(msg)
    ts = _row_times(frame, ts_local, n, be, "ofi_bucketed")
    pv = _prev_book(prev, k, be, "ofi_bucketed")
    g = int(grid.shape[0])
    # bounds[j + 1]: rows known by grid[j] (k(i) is non-decreasing, so the rows of a bucket are contiguous)
    bounds = xp.zeros(g + 1, dtype=xp.int64)
    bounds[1:] = xp.searchsorted(ts, grid, side="right")
    out = be.empty((g, k), xp.int64)
    be.launch(ko.OFI_BUCKETED, g, np.int64(k), bounds, bp, bq, ap, aq, *pv, out)
    return out


def vwofi(frame: BookFrame | Mapping[str, Any], levels: int | None = None, *,
          weights: Sequence[float] | Any = None, prev: Frame | None = None,
          backend: str | Backend | None = None) -> Array:
    """Depth-normalised, level-weighted multi-level OFI, one value per row (dimensionless).

    ::

        Qbar(i)  = (1 / (2M)) * sum_{m=1..M} (qb_m(i) + qa_m(i))     average depth per level and side (lots)
        w_m      = weights_m / sum_k |weights_k|                      (default: 1/M each)
        vwofi(i) = sum_{m=1..M} w_m * e_m(i) / Qbar(i)                NaN when Qbar(i) == 0

    ``M = levels``.  Dividing by the depth makes OFI comparable across calm and busy
    books and across instruments; weighting the levels combines them into one signal.
    This follows Cont, Cucuringu and Zhang (2023), who scale each level's OFI by the
    average depth of the first M levels over the interval and combine the levels with
    weights of unit l1 norm (their "integrated OFI" takes the weights from the first
    principal component; pass such weights here).  Here the interval is one row, so
    ``Qbar`` is the depth of the current row.

    With equal weights the value is ``2 * sum_m e_m / sum_m (qb_m + qa_m)``, computed exactly
    (an integer sum, one division), so the GPU and CPU give the same bits; with other weights the
    GPU may fuse multiply-adds, and the two agree to about 1e-16 of ``sum_m |w_m e_m| / Qbar``.

    Parameters
    ----------
    frame : BookFrame or mapping
        int64 (n, N) book columns (see :func:`ofi`).
    levels : int, optional
        M (1..N); default N.
    weights : sequence of float (M,), host, optional
        Level weights, normalised to unit l1 norm; default equal weights.
    prev : BookFrame or mapping, optional
        The book before row 0 (see :func:`ofi`).
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    float64 array (n,), on the backend's device

    Raises
    ------
    SchemaError
        Bad frame or ``levels``; ``weights`` not M finite numbers with a non-zero sum of magnitudes.

    References
    ----------
    R. Cont, M. Cucuringu and C. Zhang, "Cross-impact of order flow imbalance in equity markets",
    Quantitative Finance, 2023 (arXiv:2112.13213).

    Examples
    --------
    >>> import numpy as np
    >>> f = {"bid_price": np.array([[100, 99]]), "bid_qty": np.array([[4, 2]]),
    ...      "ask_price": np.array([[101, 102]]), "ask_qty": np.array([[2, 4]])}
    >>> # from the empty book: e = (4 - 2, 2 - 4) = (2, -2); Qbar = 12 / 4 = 3
    >>> vwofi(f, weights=[3, 1], backend="cpu").tolist()   # (0.75 * 2 + 0.25 * -2) / 3
    [0.3333333333333333]
    """
    ko = _kernels()
    be, (bp, bq, ap, aq) = _book_columns(frame, "vwofi", backend)
    k = _levels_arg(levels, bp.shape[1], "vwofi")
    if weights is None:
        w = np.full(k, 1.0 / k)
        uniform = True
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)  # a few host numbers
        if w.shape[0] != k or not np.isfinite(w).all() or np.abs(w).sum() == 0:
            msg = (f"vwofi: weights must be {k} finite numbers (one per level) with a non-zero sum of "
                   f"magnitudes, got {w.tolist()}")
            raise SchemaError(msg)
        w = w / np.abs(w).sum()
        uniform = bool((w == w[0]).all() and w[0] > 0)  # equal weights: the exact integer path
    pv = _prev_book(prev, k, be, "vwofi")
    out = be.empty(bp.shape[0], be.xp.float64)
    be.launch(ko.VWOFI, bp.shape[0], np.int64(k), uniform, be.asarray(w), bp, bq, ap, aq, *pv, out)
    return out


def spread_adjusted_ofi(frame: BookFrame | Mapping[str, Any], levels: int = 1, *, prev: Frame | None = None,
                        backend: str | Backend | None = None) -> Array:
    """OFI divided by the current level-1 spread in ticks (lots per tick of spread).

    ::

        s(i)     = Pa_1(i) - Pb_1(i)                        ticks, at the current row
        sofi_m(i) = e_m(i) / s(i)                           NaN when a side is empty or s(i) <= 0

    A common normalisation: the same flow carries more information when the spread
    is tight than when it is wide (there is no single canonical reference for this
    exact form; the spread is taken at row i, the later of the two books ``e`` compares,
    so the value is known at ``ts_local[i]``).

    Parameters
    ----------
    frame : BookFrame or mapping
        int64 (n, N) book columns (see :func:`ofi`).
    levels : int
        Levels (1..N); every level is divided by the level-1 spread.
    prev : BookFrame or mapping, optional
        The book before row 0 (see :func:`ofi`).
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    float64 array (n, levels), on the backend's device

    Raises
    ------
    SchemaError
        Bad frame, ``prev`` or ``levels``.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuflow.schema import EMPTY_ASK_PRICE as EA
    >>> f = {"bid_price": np.array([[100], [101], [100]]), "bid_qty": np.array([[5], [1], [5]]),
    ...      "ask_price": np.array([[EA], [103], [102]]), "ask_qty": np.array([[0], [2], [4]])}
    >>> spread_adjusted_ofi(f, backend="cpu")[:, 0].tolist()   # e = 5, -1, -5; spread = -, 2, 2
    [nan, -0.5, -2.5]
    """
    ko = _kernels()
    be, (bp, bq, ap, aq) = _book_columns(frame, "spread_adjusted_ofi", backend)
    k = _check_levels(levels, bp.shape[1], "spread_adjusted_ofi")
    pv = _prev_book(prev, k, be, "spread_adjusted_ofi")
    out = be.empty((bp.shape[0], k), be.xp.float64)
    be.launch(ko.SPREAD_ADJUSTED_OFI, bp.shape[0], np.int64(k), bp, bq, ap, aq, *pv, out)
    return out
