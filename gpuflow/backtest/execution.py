"""Execution algorithms: parent orders, their signals (traded volume, volume profile) and their costs.

* :class:`ParentOrder` describes one parent order and gives the parameter set of the ``twap``,
  ``vwap`` and ``pov`` strategies (:mod:`gpuflow.backtest.strategies`);
* :func:`execution_signals` computes, causally, the per-event signals those strategies read (the
  step function sees book rows and signals, not the trade tape): the market's cumulative traded
  lots and the expected cumulative volume fraction of a profile;
* :func:`execution_report` measures what a run achieved: arrival price, average fill price,
  slippage, Perold's implementation shortfall and a square-root market-impact estimate.

Prices in reports are in the quote currency (ticks x ``tick_size``, exact decimal scale factors);
costs in basis points are positive when they cost money.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from gpuflow.backtest.engine import BacktestResult, ConfigError, MarketData
from gpuflow.schema import KIND_EXECUTE, KIND_TRADE

__all__ = [
    "IMPACT_Y",
    "SIGNAL_NAMES",
    "ParentOrder",
    "attach_signals",
    "execution_report",
    "execution_signals",
    "volume_profile",
]

#: columns of :func:`execution_signals`, in order
SIGNAL_NAMES = ("traded_lots", "volume_frac")
#: prefactor Y of the square-root impact law (order 1 on equity, futures and crypto markets:
#: Toth et al. 2011 report Y ~ 0.5-1; 1 is the conservative default)
IMPACT_Y = 1.0
_MODES = {"passive": 0, "ioc": 1}


@dataclass(frozen=True)
class ParentOrder:
    """A parent order to execute with an algorithm.

    Parameters
    ----------
    side : {1, -1}
        +1 buy, -1 sell.
    total_lots : int
        Parent size (lots of the instrument).
    start_ns, end_ns : int
        Execution window ``[start_ns, end_ns)`` in the ``ts_local`` clock (ns since the epoch).  The
        strategies receive them as float64 parameters, so they must be exactly representable as
        float64 (whole seconds since the epoch are; arbitrary ns around 2024 are not).
    interval_ns : int
        Slice length.
    mode : {"ioc", "passive"}
        ``"ioc"``: each child crosses the spread with an IOC limit at the opposite touch plus
        ``offset_ticks``; ``"passive"``: each child rests (GTC) at our own touch minus
        ``offset_ticks``, and is cancelled and replaced at the next slice.
    offset_ticks : int
    inst : int
        Instrument index in the market data (0 or 1).
    """

    side: int
    total_lots: int
    start_ns: int
    end_ns: int
    interval_ns: int
    mode: str = "ioc"
    offset_ticks: int = 0
    inst: int = 0

    def __post_init__(self) -> None:
        if self.side not in (1, -1):
            msg = f"ParentOrder.side: expected 1 (buy) or -1 (sell), got {self.side!r}"
            raise ConfigError(msg)
        if int(self.total_lots) != self.total_lots or self.total_lots <= 0:
            msg = f"ParentOrder.total_lots: expected a positive whole number of lots, got {self.total_lots!r}"
            raise ConfigError(msg)
        if self.mode not in _MODES:
            msg = f"ParentOrder.mode: expected one of {sorted(_MODES)}, got {self.mode!r}"
            raise ConfigError(msg)
        if not (isinstance(self.interval_ns, (int, np.integer)) and self.interval_ns > 0):
            msg = f"ParentOrder.interval_ns: expected a positive integer of ns, got {self.interval_ns!r}"
            raise ConfigError(msg)
        if not self.end_ns > self.start_ns:
            msg = f"ParentOrder: end_ns ({self.end_ns}) must be after start_ns ({self.start_ns})"
            raise ConfigError(msg)
        for name in ("start_ns", "end_ns", "interval_ns"):
            v = getattr(self, name)
            if int(np.float64(v)) != v:
                msg = (f"ParentOrder.{name}={v} is not exactly representable as a float64 strategy parameter "
                       f"(nearest {int(np.float64(v))}); round it, e.g. to whole seconds since the epoch")
                raise ConfigError(msg)
        if self.inst not in (0, 1):
            msg = f"ParentOrder.inst: expected instrument index 0 or 1, got {self.inst!r}"
            raise ConfigError(msg)

    @property
    def n_slices(self) -> int:
        """``ceil((end_ns - start_ns) / interval_ns)``."""
        return -(-(self.end_ns - self.start_ns) // self.interval_ns)

    def params(self, **extra: Any) -> dict[str, float]:
        """The parameter set of the ``twap`` / ``vwap`` / ``pov`` strategies (``extra``: e.g. ``rate=0.1``)."""
        d = {"side": float(self.side), "total_lots": float(self.total_lots), "start_ns": float(self.start_ns),
             "end_ns": float(self.end_ns), "interval_ns": float(self.interval_ns),
             "mode": float(_MODES[self.mode]), "offset_ticks": float(self.offset_ticks), "inst": float(self.inst)}
        d.update({k: float(v) for k, v in extra.items()})
        return d


def _traded(market: MarketData, inst: int, kinds: Sequence[int]) -> np.ndarray:
    """Traded lots of each event of instrument ``inst`` (0 for other events)."""
    is_trade = np.isin(market.kind, np.asarray(kinds, dtype=market.kind.dtype)) & (market.inst == inst)
    return np.where(is_trade, market.qty, 0).astype(np.int64)


def volume_profile(market: MarketData, start_ns: int, end_ns: int, *, buckets: int = 8, inst: int = 0,
                   kinds: Sequence[int] = (KIND_TRADE, KIND_EXECUTE)) -> np.ndarray:
    """Traded lots of ``market`` in ``buckets`` equal time buckets of ``[start_ns, end_ns)`` (int64, host).

    Use it on a *reference* session (e.g. the same hours of earlier days, shifted onto the parent's
    window) to build the weights of :func:`execution_signals` or the ``w0 .. w7`` parameters of the
    ``vwap`` strategy; the profile of the session being traded is look-ahead.
    """
    if not end_ns > start_ns or buckets < 1:
        msg = f"volume_profile: expected end_ns > start_ns and buckets >= 1, got {start_ns}, {end_ns}, {buckets}"
        raise ConfigError(msg)
    q = _traded(market, inst, kinds)
    ts = market.ts
    inside = (ts >= start_ns) & (ts < end_ns)
    b = ((ts[inside] - start_ns) * buckets) // (end_ns - start_ns)
    return np.bincount(b, weights=q[inside], minlength=buckets).astype(np.int64)


def _profile_frac(x: np.ndarray, span: int, weights: np.ndarray) -> np.ndarray:
    """Expected cumulative volume fraction at offsets ``x`` (ns, 0 .. span) of a bucketed profile.

    Bucket b covers ``[b * span // B, (b + 1) * span // B)`` (the same integer edges as the ``vwap``
    strategy's weights) and its volume is spread evenly in time: piecewise linear between edges.
    """
    B = weights.size
    edges = (np.arange(B + 1, dtype=np.int64) * span) // B
    cum = np.concatenate([[0.0], np.cumsum(weights, dtype=np.float64)]) / float(weights.sum())
    return np.interp(np.clip(x, 0, span).astype(np.float64), edges.astype(np.float64), cum)


def execution_signals(market: MarketData, parent: ParentOrder | None = None, *, profile: Any = None,
                      inst: int | None = None, kinds: Sequence[int] = (KIND_TRADE, KIND_EXECUTE)
                      ) -> tuple[np.ndarray, list[str]]:
    """Per-event signals for the execution strategies, computed causally on the host.

    Parameters
    ----------
    market : MarketData
    parent : ParentOrder, optional
        Window and slice grid of ``volume_frac``; default: the whole market, no slicing.
    profile : float array-like (B,), optional
        Expected traded volume (any scale) in B equal time buckets of the parent's window (e.g.
        :func:`volume_profile` of a reference session); default uniform.
    inst : int, optional
        Instrument whose trades count (default ``parent.inst``, else 0).
    kinds : sequence of int
        Event kinds that are trades (trade prints and L3 executions; a source that has both for the
        same trades would count them twice: pass one).

    Returns
    -------
    signals : float64 array (n_events, 2), host
        Column 0 ``traded_lots``: the market's cumulative traded lots of ``inst`` through event e
        (inclusive: the strategy deciding at e has seen e).  Column 1 ``volume_frac``: the expected
        cumulative fraction F of the window's volume due by the end of the slice containing
        ``ts[e]``: ``F(min(end, start + (floor((ts - start) / interval) + 1) * interval))``; 0 before
        the window, 1 after it.  (Without a parent: ``F(ts)`` over the market's span.)
    names : list of str
        :data:`SIGNAL_NAMES`.

    See Also
    --------
    attach_signals : put them into a MarketData.
    """
    m = (parent.inst if parent is not None else 0) if inst is None else inst
    traded = np.cumsum(_traded(market, m, kinds)).astype(np.float64)
    ts = market.ts.astype(np.int64)
    if parent is None:
        start = int(ts[0]) if ts.size else 0
        end = int(ts[-1]) + 1 if ts.size else 1
        interval = 0
    else:
        start, end, interval = parent.start_ns, parent.end_ns, parent.interval_ns
    span = end - start
    w = np.ones(8) if profile is None else np.asarray(profile, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        msg = f"execution_signals: profile must be a 1-D array of non-negative volumes with a positive sum, got {w!r}"
        raise ConfigError(msg)
    x = ts - start
    if interval > 0:
        x = np.minimum(((np.maximum(x, 0) // interval) + 1) * interval, span)
    frac = _profile_frac(x, span, w)
    frac = np.where(ts < start, 0.0, np.where(ts >= end, 1.0, frac))
    return np.column_stack([traded, frac]), list(SIGNAL_NAMES)


def attach_signals(market: MarketData, signals: np.ndarray, names: Sequence[str]) -> MarketData:
    """A copy of ``market`` with ``signals`` appended as columns (replacing the default all-zero column
    of a market built without signals).  Returns the new market; the column index of the first new
    column is ``len(market.signal_names)``."""
    sig = np.asarray(signals, dtype=np.float64)
    if sig.ndim == 1:
        sig = sig[:, None]
    if sig.shape[0] != market.n_events or sig.shape[1] != len(names):
        msg = (f"attach_signals: signals have shape {sig.shape}, expected ({market.n_events}, {len(names)}) "
               f"for names {list(names)}")
        raise ConfigError(msg)
    if market.signal_names:
        sig = np.concatenate([market.signals, sig], axis=1)
        names = [*market.signal_names, *names]
    return market.with_signals(np.ascontiguousarray(sig), names)


def _mid2(market: MarketData, inst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts, twice the mid in ticks, book row) at every event of ``inst`` with a two-sided book."""
    sel = market.inst == inst
    rows = market.row[sel]
    ok = (market.bid_qty[rows, 0] > 0) & (market.ask_qty[rows, 0] > 0)
    rows = rows[ok]
    return market.ts[sel][ok], market.bid_price[rows, 0] + market.ask_price[rows, 0], rows


def _at(ts: np.ndarray, t: int, what: str) -> int:
    """Index of the last entry of ``ts`` at or before ``t``."""
    i = int(np.searchsorted(ts, t, side="right")) - 1
    if i < 0:
        msg = f"execution_report: no two-sided book at or before the parent's {what} (t={t})"
        raise ConfigError(msg)
    return i


def _sigma_volume(ts: np.ndarray, mid2: np.ndarray, traded: int, sample_ns: int) -> tuple[float, float]:
    """Realised volatility of log mids sampled every ``sample_ns`` over the span, and its span's volume."""
    grid = np.arange(ts[0], ts[-1] + 1, sample_ns, dtype=np.int64)
    if grid.size < 3:
        return float("nan"), float(traded)
    mids = mid2[np.searchsorted(ts, grid, side="right") - 1].astype(np.float64)
    r = np.diff(np.log(mids))
    return float(np.sqrt(np.sum(r * r))), float(traded)


def execution_report(result: BacktestResult, market: MarketData, parent: ParentOrder, *,
                     sigma: float | None = None, volume: float | None = None, y: float = IMPACT_Y,
                     vol_sample_ns: int = 1_000_000_000) -> pa.Table:
    """Costs of a parent order's execution, one row per parameter set of ``result``.

    Parameters
    ----------
    result : BacktestResult
        A run of an execution strategy on ``market`` (all fills of ``parent.inst`` are the parent's;
        they must all be recorded).
    market : MarketData
    parent : ParentOrder
    sigma, volume : float, optional
        Volatility (of log returns) and traded lots over one common horizon H (e.g. a day).  Default:
        both measured over the market's whole span (in-sample): realised volatility of the mid
        sampled every ``vol_sample_ns`` and the span's traded lots.  The impact estimate does not
        depend on H when volatility grows as sqrt(H) and volume as H.
    y : float
        Prefactor Y of the square-root law (:data:`IMPACT_Y`).

    Returns
    -------
    pyarrow.Table
        One row per parameter set:

        * ``arrival_price``: mid at the parent's start (the last two-sided book at or before
          ``start_ns``), ``end_price``: mid at ``end_ns`` (or the last one before it);
        * ``filled_lots``, ``fill_frac = filled / total``, ``avg_price`` (lot-weighted, NaN without
          fills), ``n_fills``;
        * ``slippage_bps = side * (avg_price - arrival) / arrival * 1e4``;
        * implementation shortfall (Perold 1988): the paper portfolio trades ``Q = total_lots`` at
          the arrival price; the real one trades ``q_j`` at ``p_j`` and pays fees; the unfilled
          ``Q - sum q_j`` (negative when overfilled) is marked at the end price::

              execution_cost   = side * sum_j q_j (p_j - P0)
              opportunity_cost = side * (Q - sum_j q_j) (P_end - P0)
              shortfall        = execution_cost + opportunity_cost + fees        (currency)
              *_bps            = amount / (Q * P0) * 1e4

          as ``shortfall``, ``shortfall_bps``, ``execution_cost_bps``, ``opportunity_cost_bps``,
          ``fee_bps`` (``p_j``, ``P0``, ``P_end`` in ticks; ticks x lots are converted to currency with
          ``tick_size * lot_size``; ``fees`` are the run's fees on the parent's instrument);
        * ``visible_depth_lots``: lots on the side the parent takes (asks for a buy) over the known
          book levels at arrival; ``exceeds_depth = total_lots > visible_depth_lots``;
        * ``impact_model_bps = y * sigma * sqrt(Q / V) * 1e4``, the square-root law of market impact
          (Toth et al. 2011; Almgren et al. 2005 fit a similar concave law, exponent 3/5), and
          ``impact_bps``: the same when ``exceeds_depth``, else 0 (a parent that the visible book
          can absorb is costed by the fill simulation alone).  It is a model, not a simulation:
          the engine's fills do not move the market.  ``sigma`` and ``volume_lots`` give its inputs.

    References
    ----------
    A. F. Perold, "The implementation shortfall: paper versus reality", J. Portfolio Management
    14(3), 1988.  R. Almgren, C. Thum, E. Hauptmann, H. Li, "Direct estimation of equity market
    impact", Risk 18(7), 2005.  B. Toth, Y. Lemperiere, C. Deremble, J. de Lataillade, J. Kockelkoren,
    J.-P. Bouchaud, "Anomalous price impact and the critical nature of liquidity in financial
    markets", Phys. Rev. X 1, 021006, 2011.
    """
    from gpuflow.backtest.metrics import currency_scales
    from gpuflow.kernels import backtest as kb

    m = parent.inst
    if m >= len(market.instruments):
        msg = f"execution_report: parent.inst={m} but the market holds {len(market.instruments)} instrument(s)"
        raise ConfigError(msg)
    ins = market.instruments[m]
    tick = float(Decimal(str(ins.tick_size)))
    tick_lot, _, fee_unit = currency_scales(market.instruments)
    mts, mid2, mrows = _mid2(market, m)
    ia = _at(mts, parent.start_ns, "start")
    ie = _at(mts, parent.end_ns, "end")
    p0_t = mid2[ia] / 2.0  # ticks
    pe_t = mid2[ie] / 2.0
    arow = mrows[ia]
    depth = int((market.ask_qty[arow] if parent.side > 0 else market.bid_qty[arow]).clip(min=0).sum())
    if sigma is None or volume is None:
        s_est, v_est = _sigma_volume(mts, mid2, int(_traded(market, m, (KIND_TRADE, KIND_EXECUTE)).sum()),
                                     vol_sample_ns)
        sigma = s_est if sigma is None else sigma
        volume = v_est if volume is None else volume
    Q = parent.total_lots
    impact_model = y * sigma * np.sqrt(Q / volume) * 1e4 if volume > 0 else float("nan")
    P = int(result.params.shape[0])
    cols: dict[str, list[Any]] = {k: [] for k in (
        "set", "arrival_price", "end_price", "filled_lots", "fill_frac", "n_fills", "avg_price", "slippage_bps",
        "shortfall", "shortfall_bps", "execution_cost_bps", "opportunity_cost_bps", "fee_bps",
        "visible_depth_lots", "exceeds_depth", "impact_model_bps", "impact_bps", "sigma", "volume_lots")}
    for p in range(P):
        n_all = int(result.counters[p, kb.N_FILLS])
        f = result.fills_of(p)
        if f.shape[0] < n_all:
            msg = (f"execution_report: set {p} recorded {f.shape[0]} of its {n_all} fills; rerun with "
                   f"record_fills=True and BacktestConfig.max_fills >= {n_all}")
            raise ConfigError(msg)
        f = f[f[:, kb.F_INST] == m]
        q = f[:, kb.F_QTY].astype(np.int64)
        filled = int(q.sum())
        signed = int((f[:, kb.F_SIDE] * q).sum())
        notional_t = int((f[:, kb.F_PRICE] * q).sum())  # ticks x lots
        signed_notional_t = int((f[:, kb.F_SIDE] * f[:, kb.F_PRICE] * q).sum())
        avg_t = notional_t / filled if filled else float("nan")
        fees = float(result.account[p, m, kb.ACC_FEE] * tick_lot[m] + result.account[p, m, kb.ACC_FEE_REM] * fee_unit[m])
        # costs in ticks x lots, then currency (x tick x lot)
        exec_tl = signed_notional_t - signed * p0_t  # = side * sum q_j (p_j - P0) for fills on the parent's side
        opp_tl = parent.side * (Q - parent.side * signed) * (pe_t - p0_t)
        paper_tl = Q * p0_t
        exec_c = exec_tl * tick_lot[m]
        opp_c = opp_tl * tick_lot[m]
        paper_c = paper_tl * tick_lot[m]
        cols["set"].append(p)
        cols["arrival_price"].append(p0_t * tick)
        cols["end_price"].append(pe_t * tick)
        cols["filled_lots"].append(filled)
        cols["fill_frac"].append(filled / Q)
        cols["n_fills"].append(int(f.shape[0]))
        cols["avg_price"].append(avg_t * tick)
        cols["slippage_bps"].append(parent.side * (avg_t - p0_t) / p0_t * 1e4 if filled else float("nan"))
        cols["shortfall"].append(exec_c + opp_c + fees)
        cols["shortfall_bps"].append((exec_c + opp_c + fees) / paper_c * 1e4)
        cols["execution_cost_bps"].append(exec_c / paper_c * 1e4)
        cols["opportunity_cost_bps"].append(opp_c / paper_c * 1e4)
        cols["fee_bps"].append(fees / paper_c * 1e4)
        cols["visible_depth_lots"].append(depth)
        cols["exceeds_depth"].append(Q > depth)
        cols["impact_model_bps"].append(float(impact_model))
        cols["impact_bps"].append(float(impact_model) if Q > depth else 0.0)
        cols["sigma"].append(float(sigma))
        cols["volume_lots"].append(float(volume))
    t = pa.table(cols)
    return t.replace_schema_metadata({"gpuflow.execution.strategy": result.strategy,
                                      "gpuflow.execution.parent": repr(parent)})
