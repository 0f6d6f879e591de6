"""Book-shape features of top-N book rows: spread, mid, size-weighted mid, depth imbalance.

Each function takes a :class:`gpuflow.book.BookFrame` (or a mapping with its
``bid_price``, ``bid_qty``, ``ask_price``, ``ask_qty`` columns: int64 ticks / lots of
shape ``(n, N)``) and returns one float64 value per row, computed by the kernels of
:mod:`gpuflow.kernels.features_book` (a numba.cuda kernel on the GPU, its njit twin on
the CPU) on the frame's backend.  Every value of row i uses row i only, so a feature
stamped with the row's ``ts_local`` uses nothing after it.

Prices stay in ticks (floats, since a mid can fall between ticks); convert at the very
end with :func:`to_price` (``Instrument.price_of``).  Where a side of the book is empty
(level-1 price ``EMPTY_BID_PRICE`` / ``EMPTY_ASK_PRICE``) the price features are NaN:
the NaN is the mask, and ``xp.isnan`` recovers it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuflow.backend import Backend, get_backend
from gpuflow.errors import SchemaError

if TYPE_CHECKING:  # pragma: no cover
    from gpuflow.book import BookFrame
    from gpuflow.schema import Instrument

__all__ = ["book_features", "depth_imbalance", "microprice", "mid", "spread", "to_price"]

#: Book columns every feature of this package reads (int64, shape (n, N)).
_BOOK_COLUMNS = ("bid_price", "bid_qty", "ask_price", "ask_qty")
_UNITS = {"bid_price": "ticks", "bid_qty": "lots", "ask_price": "ticks", "ask_qty": "lots"}

Array = Any  # numpy.ndarray on the cpu / cuda-sim backends, cupy.ndarray on the gpu backend


def _kernels() -> Any:
    from gpuflow.kernels import features_book as kf

    return kf


def _backend_of(frame: Any, backend: str | Backend | None) -> Backend:
    if isinstance(backend, Backend):
        return backend
    if backend is None and getattr(frame, "backend", None) is not None:
        return frame.backend
    return get_backend(backend)


def _on(be: Backend, a: Any) -> Array:
    """``a`` as an array of backend ``be`` (a device array reaching the cpu backend is copied to the host)."""
    if be.xp is np and not isinstance(a, np.ndarray) and hasattr(a, "get"):
        a = a.get()
    return be.xp.asarray(a)


def _book_columns(frame: BookFrame | Mapping[str, Any], fname: str,
                  backend: str | Backend | None = None) -> tuple[Backend, list[Array]]:
    """Validate a book frame; return its backend and its four columns as C-contiguous int64 (n, N) arrays.

    Raises
    ------
    SchemaError
        A column is missing, not 2-D, not integer, or shaped unlike ``bid_price``.
    """
    be = _backend_of(frame, backend)
    cols = []
    shape = None
    for name in _BOOK_COLUMNS:
        if isinstance(frame, Mapping):
            if name not in frame:
                msg = (f"{fname}: frame lacks column {name!r}; expected a BookFrame or a mapping with "
                       f"{', '.join(_BOOK_COLUMNS)} (int64 arrays of shape (rows, levels))")
                raise SchemaError(msg)
            v = frame[name]
        else:
            v = getattr(frame, name, None)
            if v is None:
                msg = (f"{fname}: expected a BookFrame or a mapping with {', '.join(_BOOK_COLUMNS)}, "
                       f"got {type(frame).__name__}")
                raise SchemaError(msg)
        a = _on(be, v)
        if a.ndim != 2:
            msg = (f"{fname}: column {name!r} must be 2-D (rows, levels), got shape {tuple(a.shape)}; "
                   "a single level is a (rows, 1) array")
            raise SchemaError(msg)
        if a.dtype.kind not in "iu":
            msg = (f"{fname}: column {name!r} must hold int64 {_UNITS[name]}, got dtype {a.dtype}; "
                   "convert with round(x / tick_size) (or lot_size), or build the frame with rebuild_book")
            raise SchemaError(msg)
        if shape is None:
            shape = tuple(a.shape)
            if shape[1] < 1:
                msg = f"{fname}: the frame has no levels (shape {shape}); expected at least 1 level per side"
                raise SchemaError(msg)
        elif tuple(a.shape) != shape:
            msg = f"{fname}: column {name!r} has shape {tuple(a.shape)}, expected {shape} like 'bid_price'"
            raise SchemaError(msg)
        cols.append(be.xp.ascontiguousarray(a.astype(be.xp.int64, copy=False)))
    return be, cols


def _check_levels(levels: Any, n_levels: int, fname: str, arg: str = "levels") -> int:
    if isinstance(levels, (bool, np.bool_)) or not isinstance(levels, (int, np.integer)):
        msg = f"{fname}: {arg} must be an int in 1..{n_levels}, got {levels!r}"
        raise SchemaError(msg)
    if not 1 <= int(levels) <= n_levels:
        msg = f"{fname}: {arg} must be in 1..{n_levels} (the frame's levels per side), got {levels}"
        raise SchemaError(msg)
    return int(levels)


def spread(frame: BookFrame | Mapping[str, Any], *, backend: str | Backend | None = None) -> Array:
    """Level-1 bid-ask spread in ticks, one value per book row.

    ::

        spread_i = Pa_1(i) - Pb_1(i)        NaN when a side is empty

    Parameters
    ----------
    frame : BookFrame or mapping
        ``bid_price``, ``bid_qty``, ``ask_price``, ``ask_qty``: int64 ticks / lots of shape (n, N),
        on the backend's device.
    backend : {"cpu", "gpu", None} or Backend
        Default: the frame's backend (``get_backend()`` for a mapping).

    Returns
    -------
    float64 array (n,), on the backend's device
        Ticks.  NaN where the level-1 bid or ask is missing (``EMPTY_BID_PRICE`` /
        ``EMPTY_ASK_PRICE``); zero or negative on a locked or crossed row (e.g. mid-message).

    Raises
    ------
    SchemaError
        The frame is not a book frame of int64 (n, N) columns.

    See Also
    --------
    gpuflow.kernels.features_book.spread_at : the scalar core (CUDA kernel and njit twin).

    Examples
    --------
    >>> import numpy as np
    >>> from gpuflow.schema import EMPTY_ASK_PRICE
    >>> f = {"bid_price": np.array([[100], [100]]), "bid_qty": np.array([[3], [3]]),
    ...      "ask_price": np.array([[102], [EMPTY_ASK_PRICE]]), "ask_qty": np.array([[1], [0]])}
    >>> spread(f, backend="cpu").tolist()
    [2.0, nan]
    """
    kf = _kernels()
    be, (bp, _, ap, _) = _book_columns(frame, "spread", backend)
    out = be.empty(bp.shape[0], be.xp.float64)
    be.launch(kf.SPREAD, bp.shape[0], bp, ap, out)
    return out


def mid(frame: BookFrame | Mapping[str, Any], *, backend: str | Backend | None = None) -> Array:
    """Mid price in ticks, one value per book row.

    ::

        mid_i = (Pb_1(i) + Pa_1(i)) / 2        NaN when a side is empty

    Parameters
    ----------
    frame : BookFrame or mapping
        int64 (n, N) book columns (see :func:`spread`).
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    float64 array (n,), on the backend's device
        Ticks (a half tick when the spread is odd); NaN where a side is empty.

    Raises
    ------
    SchemaError
        The frame is not a book frame of int64 (n, N) columns.

    Examples
    --------
    >>> import numpy as np
    >>> f = {"bid_price": np.array([[100]]), "bid_qty": np.array([[3]]),
    ...      "ask_price": np.array([[103]]), "ask_qty": np.array([[1]])}
    >>> mid(f, backend="cpu").tolist()
    [101.5]
    """
    kf = _kernels()
    be, (bp, _, ap, _) = _book_columns(frame, "mid", backend)
    out = be.empty(bp.shape[0], be.xp.float64)
    be.launch(kf.MID, bp.shape[0], bp, ap, out)
    return out


def microprice(frame: BookFrame | Mapping[str, Any], *, backend: str | Backend | None = None) -> Array:
    """Size-weighted mid price at level 1 ("micro-price" in its common, weighted-mid sense), in ticks.

    ::

        I_i          = qb_1 / (qb_1 + qa_1)                       (queue imbalance)
        microprice_i = (Pa_1 * qb_1 + Pb_1 * qa_1) / (qb_1 + qa_1)
                     = Pb_1 + (Pa_1 - Pb_1) * I_i                 (computed in this form)

    A large bid queue pulls the price towards the ask.  Stoikov (2018) defines the
    micro-price proper as the limit of expected future mid prices given the imbalance
    and the spread (estimated from data); this size-weighted mid is the simple
    estimator he starts from (his "weighted mid-price").

    Parameters
    ----------
    frame : BookFrame or mapping
        int64 (n, N) book columns (see :func:`spread`).
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    float64 array (n,), on the backend's device
        Ticks; NaN where a side is empty or ``qb_1 + qa_1 == 0``.

    Raises
    ------
    SchemaError
        The frame is not a book frame of int64 (n, N) columns.

    References
    ----------
    S. Stoikov, "The micro-price: a high-frequency estimator of future prices",
    Quantitative Finance 18(12), 2018.

    Examples
    --------
    >>> import numpy as np
    >>> f = {"bid_price": np.array([[100]]), "bid_qty": np.array([[3]]),
    ...      "ask_price": np.array([[102]]), "ask_qty": np.array([[1]])}
    >>> microprice(f, backend="cpu").tolist()   # (102*3 + 100*1) / 4
    [101.5]
    """
    kf = _kernels()
    be, (bp, bq, ap, aq) = _book_columns(frame, "microprice", backend)
    out = be.empty(bp.shape[0], be.xp.float64)
    be.launch(kf.MICROPRICE, bp.shape[0], bp, bq, ap, aq, out)
    return out


def depth_imbalance(frame: BookFrame | Mapping[str, Any], levels: int = 1, *,
                    backend: str | Backend | None = None) -> Array:
    """Depth (volume) imbalance over the first ``levels`` levels of each side, in [-1, 1].

    ::

        B_i(k) = sum_{m=1..k} qb_m(i)        A_i(k) = sum_{m=1..k} qa_m(i)
        imb_i(k) = (B_i(k) - A_i(k)) / (B_i(k) + A_i(k))      NaN when B + A == 0

    ``k = 1`` is the queue imbalance at the best quotes; missing levels count as size 0,
    so a row with size on one side only gives +1 or -1.

    Parameters
    ----------
    frame : BookFrame or mapping
        int64 (n, N) book columns (see :func:`spread`).
    levels : int
        k, the levels per side summed (1..N).
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    float64 array (n,), on the backend's device

    Raises
    ------
    SchemaError
        The frame is not a book frame of int64 (n, N) columns, or ``levels`` is outside 1..N.

    References
    ----------
    C. Cao, O. Hansch and X. Wang, "The information content of an open limit-order book",
    Journal of Futures Markets 29(1), 2009 (imbalance of depth beyond the best quotes).
    A. Cartea, S. Jaimungal and J. Penalva, *Algorithmic and High-Frequency Trading*,
    Cambridge University Press, 2015 (volume imbalance at the touch).

    Examples
    --------
    >>> import numpy as np
    >>> f = {"bid_price": np.array([[100, 99]]), "bid_qty": np.array([[3, 5]]),
    ...      "ask_price": np.array([[102, 103]]), "ask_qty": np.array([[1, 7]])}
    >>> depth_imbalance(f, 1, backend="cpu").tolist(), depth_imbalance(f, 2, backend="cpu").tolist()
    ([0.5], [0.0])
    """
    kf = _kernels()
    be, (_, bq, _, aq) = _book_columns(frame, "depth_imbalance", backend)
    k = _check_levels(levels, bq.shape[1], "depth_imbalance")
    out = be.empty(bq.shape[0], be.xp.float64)
    be.launch(kf.DEPTH_IMBALANCE, bq.shape[0], np.int64(k), bq, aq, out)
    return out


def book_features(frame: BookFrame | Mapping[str, Any], *, imbalance_levels: Sequence[int] | None = None,
                  backend: str | Backend | None = None) -> dict[str, Array]:
    """Spread, mid, size-weighted mid and depth imbalances of every row, in one kernel launch.

    The values equal those of :func:`spread`, :func:`mid`, :func:`microprice` and
    :func:`depth_imbalance` (same scalar cores); one launch reads each row once.

    Parameters
    ----------
    frame : BookFrame or mapping
        int64 (n, N) book columns (see :func:`spread`).
    imbalance_levels : sequence of int, optional
        The k of each depth imbalance to compute (each in 1..N); default every k in 1..N.
    backend : {"cpu", "gpu", None} or Backend

    Returns
    -------
    dict of float64 arrays (n,), on the backend's device
        ``spread_ticks``, ``mid_ticks``, ``microprice_ticks`` and ``depth_imbalance_<k>``
        for each k, NaN where undefined (see each function).

    Raises
    ------
    SchemaError
        The frame is not a book frame of int64 (n, N) columns, or a k is outside 1..N.

    Examples
    --------
    >>> import numpy as np
    >>> f = {"bid_price": np.array([[100, 99]]), "bid_qty": np.array([[3, 5]]),
    ...      "ask_price": np.array([[102, 103]]), "ask_qty": np.array([[1, 7]])}
    >>> {k: v.tolist() for k, v in book_features(f, backend="cpu").items()}  # doctest: +NORMALIZE_WHITESPACE
    {'spread_ticks': [2.0], 'mid_ticks': [101.0], 'microprice_ticks': [101.5],
     'depth_imbalance_1': [0.5], 'depth_imbalance_2': [0.0]}
    """
    kf = _kernels()
    be, (bp, bq, ap, aq) = _book_columns(frame, "book_features", backend)
    n, n_lev = bp.shape
    ks_list = list(range(1, n_lev + 1)) if imbalance_levels is None else list(imbalance_levels)
    ks_list = [_check_levels(k, n_lev, "book_features", "imbalance_levels") for k in ks_list]
    xp = be.xp
    ks = be.asarray(np.asarray(ks_list, dtype=np.int64).reshape(-1))
    spread_ = be.empty(n, xp.float64)
    mid_ = be.empty(n, xp.float64)
    micro = be.empty(n, xp.float64)
    imb = be.empty((n, max(len(ks_list), 1)), xp.float64)  # a (n, 0) array would not launch under numba
    be.launch(kf.BOOK_FEATURES, n, bp, bq, ap, aq, ks, spread_, mid_, micro, imb)
    out = {"spread_ticks": spread_, "mid_ticks": mid_, "microprice_ticks": micro}
    for j, k in enumerate(ks_list):
        out[f"depth_imbalance_{k}"] = imb[:, j]
    return out


def to_price(ticks: Array, instrument: Instrument) -> Array:
    """Convert a feature in ticks (mid, microprice, spread) to prices: ``ticks * tick_size``.

    The same conversion as :meth:`gpuflow.schema.Instrument.price_of`, kept on the array's
    device (no host copy of device arrays); NaN stays NaN.

    Parameters
    ----------
    ticks : float64 or int64 array, host or device
    instrument : Instrument
        Gives ``tick_size`` (e.g. ``frame.instrument`` of a frame rebuilt from a table with metadata).

    Returns
    -------
    float64 array on the same device

    Examples
    --------
    >>> import numpy as np
    >>> from gpuflow.schema import Instrument
    >>> inst = Instrument("binance-futures", "BTCUSDT", tick_size="0.10", lot_size="0.001")
    >>> to_price(np.array([600001.5, np.nan]), inst).tolist()
    [60000.15, nan]
    >>> float(inst.price_of(600001.5))  # the host-side equivalent
    60000.15
    """
    if instrument is None:
        msg = "to_price: instrument is None; pass the frame's Instrument (frame.instrument) to get tick_size"
        raise SchemaError(msg)
    tick = float(instrument.price_of(1))
    if not hasattr(ticks, "astype"):
        ticks = np.asarray(ticks)
    return ticks.astype("float64", copy=False) * tick
