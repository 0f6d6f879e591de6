"""Performance metrics of backtest runs, one row per parameter set (shared by both engines and live).

:func:`compute_metrics` turns a :class:`~gpuflow.backtest.engine.BacktestResult` (exact or sweep
engine: the same integer accounting) into a :class:`MetricsTable`.  Units and conversions:

* The engine accounts in integers per instrument ``m``: position (lots), cash (ticks x lots),
  fees (ticks x lots x 1e-6) and equity samples ``2 * cash + pos * (bid + ask)`` (half-ticks x
  lots).  One tick x lot is worth ``tick_size * lot_size`` units of the quote currency; these
  scale factors are computed exactly with :class:`decimal.Decimal` from the instrument's decimal
  strings and converted to float64 once, so every currency amount is one integer times one
  float (a single rounding).
* Currency amounts of several instruments are added: they must share a quote currency
  (e.g. BTCUSDT futures and spot, both in USDT).
* PnL is net of fees unless named ``_gross``: ``pnl = pnl_realized + pnl_unrealized - fees``.
  Realized PnL matches fills first-in first-out per instrument; unrealized PnL marks the
  open lots at the last mid the engine saw (its end-of-run equity sample).

Returns, Sharpe and Sortino.  Market making starts flat with no invested capital, so returns
are PnL increments of the net equity curve ``E_k`` (currency, sampled every ``sample_ns``
from the first event ``t0``; ``E_{-1} = 0`` at ``t0``) over a fixed ``capital``::

    r_k      = (E_k - E_{k-1}) / capital                     k = 0 .. K-1
    Sharpe   = mean(r) / std(r, ddof=1) * sqrt(A)
    Sortino  = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(A)   (target 0, Sortino & Price 1994)
    A        = periods_per_year = 365 * 86400e9 / sample_ns  (24/7 crypto markets; pass e.g.
               252 * 23400e9 / sample_ns for a US equity session)

Both ratios are independent of ``capital`` (it scales mean and deviation alike); ``capital``
only sets the scale of ``turnover`` and ``max_drawdown_frac``.  They are NaN when undefined
(fewer than 2 samples, or zero deviation).  The last sample is the end state and may cover
less than ``sample_ns``.

References: W. F. Sharpe, "The Sharpe ratio", J. Portfolio Management 21(1), 1994;
F. A. Sortino and L. N. Price, "Performance measurement in a downside risk framework",
J. Investing 3(3), 1994.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from numba import njit, prange

from gpuflow.backtest.engine import BacktestResult, ConfigError

__all__ = ["YEAR_NS", "MetricsTable", "compute_metrics", "currency_scales", "equity_metrics"]

#: nanoseconds in a 365-day year (the default annualisation of a 24/7 market)
YEAR_NS = 365 * 86_400 * 1_000_000_000


def currency_scales(instruments: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quote-currency value of the engine's integer units, per instrument (exact decimals -> float64).

    Returns
    -------
    tick_lot, half_tick_lot, fee_unit : float64 arrays (n_instruments,), host
        Currency per tick x lot (cash, realized PnL), per half-tick x lot (equity samples) and per
        tick x lot x 1e-6 (fees): ``tick_size * lot_size``, half of it, and it times ``1e-6``,
        each computed with :class:`decimal.Decimal` and rounded to float64 once.
    """
    tl, half, fee = [], [], []
    for ins in instruments:
        d = Decimal(str(ins.tick_size)) * Decimal(str(ins.lot_size))
        tl.append(float(d))
        half.append(float(d / 2))
        fee.append(float(d / Decimal(1_000_000)))
    return np.array(tl, np.float64), np.array(half, np.float64), np.array(fee, np.float64)


@njit(cache=True)
def _fifo(fills, nfill, n_inst, scale, max_id):  # pragma: no cover - jitted
    """FIFO round trips of every parameter set's fills (host post-processing, one pass per set).

    A closing fill (one that reduces the position of its instrument) is matched against the
    oldest open lots; its realized PnL is ``sum(side_open * (price_close - price_open) * lots)``
    over the matched lots (ticks x lots).  Each closing fill is one closed trade (a fill that
    flips the position closes the old side and opens the new one with its remainder).
    """
    P = fills.shape[0]
    F = fills.shape[1]
    realized = np.zeros((P, n_inst), np.int64)
    notional = np.zeros((P, n_inst), np.int64)
    n_win = np.zeros(P, np.int64)
    n_loss = np.zeros(P, np.int64)
    win_sum = np.zeros(P, np.float64)
    loss_sum = np.zeros(P, np.float64)
    n_filled_orders = np.zeros(P, np.int64)
    q_px = np.zeros((n_inst, max(F, 1)), np.int64)
    q_qty = np.zeros((n_inst, max(F, 1)), np.int64)
    head = np.zeros(n_inst, np.int64)
    tail = np.zeros(n_inst, np.int64)
    pos = np.zeros(n_inst, np.int64)
    seen_id = np.zeros(max_id + 1, np.bool_)
    for p in range(P):
        head[:] = 0
        tail[:] = 0
        pos[:] = 0
        for i in range(nfill[p]):
            seen_id[fills[p, i, 8]] = False
        for i in range(nfill[p]):
            m = fills[p, i, 2]
            s = fills[p, i, 3]
            px = fills[p, i, 4]
            left = fills[p, i, 5]
            oid = fills[p, i, 8]
            if not seen_id[oid]:
                seen_id[oid] = True
                n_filled_orders[p] += 1
            notional[p, m] += px * left
            pnl = np.int64(0)
            closed = False
            while left > 0 and pos[m] * s < 0:  # the fill reduces the position
                h = head[m]
                x = q_qty[m, h] if q_qty[m, h] < left else left
                # the open lots have the sign of the position, the closing fill the opposite
                pnl += (px - q_px[m, h]) * x * (-s)
                q_qty[m, h] -= x
                if q_qty[m, h] == 0:
                    head[m] += 1
                left -= x
                pos[m] += s * x
                closed = True
            if closed:
                realized[p, m] += pnl
                if pnl > 0:
                    n_win[p] += 1
                    win_sum[p] += pnl * scale[m]
                elif pnl < 0:
                    n_loss[p] += 1
                    loss_sum[p] -= pnl * scale[m]
            if left > 0:
                q_px[m, tail[m]] = px
                q_qty[m, tail[m]] = left
                tail[m] += 1
                pos[m] += s * left
    return realized, notional, n_win, n_loss, win_sum, loss_sum, n_filled_orders


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` with NaN where ``b == 0`` (undefined ratios), without floating-point warnings."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=b != 0)
    return out


@njit(parallel=True, cache=True)
def _equity_stats(eq, tt, capital, f_out, i_out):  # pragma: no cover - jitted
    """Per row p of ``eq`` (n_sets, K): ``f_out[p]`` = mean return, volatility (ddof 1), downside deviation,
    max drawdown; ``i_out[p]`` = max drawdown duration, longest drawdown (ns).  ``tt`` (K + 1,): t0, then the
    sample times; the curve starts at (t0, 0).  One pass for the drawdowns, two for the moments, no
    temporaries, sets in parallel (what :func:`equity_metrics` documents)."""
    P, K = eq.shape
    for p in prange(P):
        s = 0.0
        prev = 0.0
        for k in range(K):
            s += (eq[p, k] - prev) / capital
            prev = eq[p, k]
        mean = s / K if K > 0 else np.nan
        ss = 0.0
        sd = 0.0
        prev = 0.0
        for k in range(K):
            r = (eq[p, k] - prev) / capital
            prev = eq[p, k]
            ss += (r - mean) * (r - mean)
            if r < 0.0:
                sd += r * r
        f_out[p, 0] = mean
        f_out[p, 1] = np.sqrt(ss / (K - 1)) if K >= 2 else np.nan
        f_out[p, 2] = np.sqrt(sd / K) if K >= 2 else np.nan
        # drawdowns on the curve with its start (index 0 = t0, equity 0); sample k is index k + 1
        peak = 0.0
        pk = 0  # index of the last sample at the peak
        max_dd = 0.0
        trough_pk = 0  # the peak index before the deepest trough (its first occurrence)
        rec = K  # first index after that trough back at the peak (K: never)
        pending = False
        longest = 0
        for k in range(1, K + 1):
            e = eq[p, k - 1]
            if e >= peak:
                peak = e
                pk = k
                if pending:
                    rec = k
                    pending = False
                continue
            dd = peak - e
            span = tt[min(k + 1, K)] - tt[pk]  # to the next sample, or the last one
            longest = max(longest, span)
            if dd > max_dd:
                max_dd = dd
                trough_pk = pk
                rec = K
                pending = True
        f_out[p, 3] = max_dd
        i_out[p, 0] = tt[rec] - tt[trough_pk] if max_dd > 0 else 0
        i_out[p, 1] = longest


def equity_metrics(equity: np.ndarray, sample_ts: np.ndarray, t0: int, *, capital: float = 1.0,
                   periods_per_year: float | None = None) -> dict[str, np.ndarray]:
    """Return, risk and drawdown statistics of net equity curves (one jitted pass per row, rows in parallel).

    Parameters
    ----------
    equity : float64 array (n_sets, K), host
        Net equity (currency; 0 at ``t0``) at each sample time.
    sample_ts : int64 array (K,), ns, host
        Sample times, evenly spaced ``sample_ns`` apart; ``t0 = sample_ts[0] - sample_ns``.
    t0 : int
        Start of the curve (ns), where equity is 0.
    capital : float
        Returns are equity increments divided by this (currency).
    periods_per_year : float, optional
        Annualisation factor A; default ``YEAR_NS / sample_ns``.

    Returns
    -------
    dict of float64 / int64 arrays (n_sets,)
        ``mean_return``, ``volatility`` (per sample), ``sharpe``, ``sortino`` (annualised, see the
        module docstring), ``max_drawdown`` (currency, >= 0), ``max_drawdown_frac`` (of capital),
        ``max_drawdown_duration_ns`` (from the peak before the deepest trough to the first sample
        back at or above that peak, or to the last sample when it never recovers; 0 without a
        drawdown) and ``longest_drawdown_ns`` (the longest such peak-to-recovery span of any
        drawdown).
    """
    eq = np.asarray(equity, np.float64)
    ts = np.asarray(sample_ts, np.int64)
    if eq.ndim != 2 or eq.shape[1] != ts.size:
        msg = f"equity_metrics: equity must have shape (n_sets, {ts.size}) to match sample_ts, got {eq.shape}"
        raise ConfigError(msg)
    if not capital > 0:
        msg = f"equity_metrics: capital must be a positive amount of the quote currency, got {capital!r}"
        raise ConfigError(msg)
    P, K = eq.shape
    sample_ns = int(ts[1] - ts[0]) if K > 1 else int(ts[0] - t0) if K == 1 else 0
    if periods_per_year is None:
        periods_per_year = YEAR_NS / sample_ns if sample_ns > 0 else np.nan
    ann = np.sqrt(periods_per_year)
    tt = np.concatenate([[np.int64(t0)], ts]).astype(np.int64)
    f = np.empty((P, 4))
    i = np.empty((P, 2), np.int64)
    _equity_stats(np.ascontiguousarray(eq), tt, float(capital), f, i)
    mean, vol, down, max_dd = f[:, 0], f[:, 1], f[:, 2], f[:, 3]
    dur, longest = i[:, 0], i[:, 1]
    sharpe = _safe_div(mean, np.where(np.isnan(vol), 0.0, vol)) * ann
    sortino = _safe_div(mean, np.where(np.isnan(down), 0.0, down)) * ann
    return {"mean_return": mean, "volatility": vol, "sharpe": sharpe, "sortino": sortino,
            "max_drawdown": max_dd, "max_drawdown_frac": max_dd / capital,
            "max_drawdown_duration_ns": dur, "longest_drawdown_ns": longest}


@dataclass
class MetricsTable:
    """Metrics of every parameter set of a run (host arrays), see :func:`compute_metrics`.

    Attributes
    ----------
    strategy : str
    param_names : list of str
    params : float64 array (n_sets, n_params)
    columns : dict of str -> array (n_sets,)
        One value per parameter set and metric, in table order.
    sample_ts : int64 array (K,), ns
        Times of the equity samples (the last one is the end state).
    equity : float64 array (n_sets, K)
        Net equity curve (quote currency, fees deducted; 0 at the first event).
    capital : float
    periods_per_year : float
    meta : dict of str -> str
        Run settings written into the table's schema metadata.
    """

    strategy: str
    param_names: list[str]
    params: np.ndarray
    columns: dict[str, np.ndarray]
    sample_ts: np.ndarray
    equity: np.ndarray
    capital: float
    periods_per_year: float
    meta: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.columns[name]
        except KeyError:
            msg = f"MetricsTable: no metric {name!r}; known: {list(self.columns)}"
            raise KeyError(msg) from None

    def __len__(self) -> int:
        return int(self.params.shape[0])

    def equity_curve(self, p: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(sample times in ns, net equity in currency) of parameter set ``p``."""
        return self.sample_ts, self.equity[p]

    def to_table(self) -> pa.Table:
        """One row per parameter set: ``set``, the parameters, then the metrics.

        A parameter whose name is also a metric's is written as ``param_<name>``.  The run
        settings (strategy, engine, capital, annualisation, sampling) are in the schema metadata
        under ``gpuflow.metrics.*``.
        """
        cols: dict[str, Any] = {"set": np.arange(len(self), dtype=np.int64)}
        for j, k in enumerate(self.param_names):
            name = f"param_{k}" if k in self.columns or k == "set" else k
            cols[name] = self.params[:, j]
        cols.update(self.columns)
        t = pa.table(cols)
        meta = {f"gpuflow.metrics.{k}": str(v) for k, v in
                {"strategy": self.strategy, "capital": self.capital, "periods_per_year": self.periods_per_year,
                 **self.meta}.items()}
        return t.replace_schema_metadata(meta)

    def write_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_table` to ``path`` atomically (a temporary file in the same folder, then
        :func:`os.replace`): readers see the old file or the new one, never a partial one."""
        import pyarrow.parquet as pq

        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(self.to_table(), tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def compute_metrics(result: BacktestResult, *, capital: float = 1.0, periods_per_year: float | None = None,
                    expected_fills: Any = None, ordered_lots: Any = None) -> MetricsTable:
    """Metrics of every parameter set of a backtest run (vectorised over sets).

    Parameters
    ----------
    result : BacktestResult
        From :func:`gpuflow.backtest.engine.run` (exact or sweep engine).
    capital : float
        Quote-currency amount that returns, turnover and drawdown fractions are relative to
        (default 1: turnover is then the traded notional).  Sharpe and Sortino do not depend on it.
    periods_per_year : float, optional
        Annualisation factor of the per-sample returns (default ``YEAR_NS / sample_ns``).
    expected_fills : float array-like (n_sets,) or scalar, optional
        Lots each parameter set expected to be filled (e.g. a strategy's own intent: an execution
        algorithm's parent size, or the fills a queue model predicted when quoting).  Adds
        ``expected_fill_lots``, ``fill_gap_lots = filled_lots - expected_fill_lots`` and
        ``fill_realisation = filled_lots / expected_fill_lots``.
    ordered_lots : float array-like (n_sets,) or scalar, optional
        Overrides the engine's count of ordered lots (``ORDERED_LOTS``) in ``fill_ratio_lots``.
        Lots sent in orders, when the caller knows it: adds ``fill_ratio_lots = filled_lots /
        ordered_lots``.

    Returns
    -------
    MetricsTable
        Columns, per parameter set (currency = the instruments' quote currency):

        * ``pnl`` (net), ``pnl_gross``, ``pnl_realized`` (FIFO, gross of fees), ``pnl_unrealized``
          (open lots at the last mid), ``fees`` (paid; negative = rebates earned);
        * ``mean_return``, ``volatility``, ``sharpe``, ``sortino``, ``max_drawdown``,
          ``max_drawdown_frac``, ``max_drawdown_duration_ns``, ``longest_drawdown_ns``
          (:func:`equity_metrics`);
        * ``n_round_trips``, ``n_wins``, ``n_losses``, ``win_rate = n_wins / (n_wins + n_losses)``,
          ``win_loss_ratio`` (mean win / mean loss, the payoff ratio): closed trades are closing
          fills matched FIFO, PnL gross of fees; trades with zero PnL count as neither;
        * ``notional`` (traded, currency), ``turnover = notional / capital``;
        * ``n_orders``, ``n_filled_orders`` (orders with at least one fill), ``fill_ratio =
          n_filled_orders / n_orders``, ``filled_lots``, ``maker_lots``, ``taker_lots``,
          ``n_fills``, ``n_maker_fills``, ``n_taker_fills``, ``n_cancels``, ``n_rejects``,
          ``n_bad_actions``, ``n_nan_actions``, ``n_decisions``, ``fills_dropped``,
          ``fills_complete`` (all fills recorded: FIFO-based columns are NaN otherwise),
          ``max_abs_position_lots``, ``position_lots_<m>`` (end position of instrument m);
        * the ``expected_fills`` / ``ordered_lots`` columns above when given.

    Raises
    ------
    ConfigError
        ``capital`` is not positive, or ``expected_fills`` / ``ordered_lots`` do not broadcast to
        one value per parameter set.

    Examples
    --------
    >>> from gpuflow.backtest.metrics import compute_metrics  # doctest: +SKIP
    >>> compute_metrics(run(...), capital=10_000).to_table()  # doctest: +SKIP
    """
    from gpuflow.kernels import backtest as kb

    if not (isinstance(capital, (int, float, np.integer, np.floating)) and capital > 0 and np.isfinite(capital)):
        msg = f"compute_metrics: capital must be a positive finite amount of the quote currency, got {capital!r}"
        raise ConfigError(msg)
    capital = float(capital)
    P = int(result.params.shape[0])
    M = len(result.instruments)
    tick_lot, half_tl, fee_unit = currency_scales(result.instruments)
    cnt = np.asarray(result.counters, np.int64)
    acct = np.asarray(result.account, np.int64)
    eq2 = np.asarray(result.equity2, np.int64)
    eqf = np.asarray(result.equity_fee, np.int64)
    sample_ts = np.asarray(result.sample_ts, np.int64)
    sample_ns = int(result.config.sample_ns)
    t0 = int(sample_ts[0]) - sample_ns if sample_ts.size else 0
    if periods_per_year is None:
        periods_per_year = YEAR_NS / sample_ns
    # net equity curve (currency): mark-to-mid equity less the fees paid so far
    # sampled fees: whole ticks x lots and the remainder in millionths (the engine keeps them apart)
    eqr = np.asarray(result.equity_fee_rem, np.int64)
    equity = (eq2 * half_tl).sum(axis=2) - (eqf * tick_lot).sum(axis=2) - (eqr * fee_unit).sum(axis=2)
    cols: dict[str, np.ndarray] = {}
    fees = (acct[:, :, kb.ACC_FEE] * tick_lot + acct[:, :, kb.ACC_FEE_REM] * fee_unit).sum(axis=1)
    gross = (eq2[:, -1, :] * half_tl).sum(axis=1) if sample_ts.size else np.zeros(P)
    # FIFO round trips from the recorded fills
    n_fills = cnt[:, kb.N_FILLS]
    nrec = np.minimum(n_fills, result.fills.shape[1])
    complete = (nrec == n_fills) & (cnt[:, kb.N_FILLS_DROPPED] == 0)
    fl = np.ascontiguousarray(result.fills, dtype=np.int64)
    max_id = int(fl[:, :, kb.F_ORDER].max()) if fl.size else 0
    realized_i, notional_i, n_win, n_loss, win_sum, loss_sum, n_filled_orders = _fifo(
        fl, nrec.astype(np.int64), M, tick_lot, max_id)
    nan = np.where(complete, 1.0, np.nan)
    realized = (realized_i * tick_lot).sum(axis=1) * nan
    # traded notional from the engine's own account (exact even when fills were not all recorded)
    notional = (acct[:, :, kb.ACC_NOTIONAL] * tick_lot).sum(axis=1)
    del notional_i
    cols["pnl"] = gross - fees
    cols["pnl_gross"] = gross
    cols["pnl_realized"] = realized
    cols["pnl_unrealized"] = gross - realized
    cols["fees"] = fees
    cols.update(equity_metrics(equity, sample_ts, t0, capital=capital, periods_per_year=periods_per_year))
    n_rt = (n_win + n_loss).astype(np.float64)
    cols["n_round_trips"] = n_rt * nan
    cols["n_wins"] = n_win * nan
    cols["n_losses"] = n_loss * nan
    cols["win_rate"] = _safe_div(n_win, n_rt) * nan
    cols["win_loss_ratio"] = _safe_div(_safe_div(win_sum, n_win), _safe_div(loss_sum, n_loss)) * nan
    cols["notional"] = notional
    cols["turnover"] = notional / capital
    filled = cnt[:, kb.MAKER_LOTS] + cnt[:, kb.TAKER_LOTS]
    cols["n_orders"] = cnt[:, kb.N_ORDERS]
    cols["n_filled_orders"] = n_filled_orders * nan
    cols["fill_ratio"] = _safe_div(n_filled_orders, cnt[:, kb.N_ORDERS]) * nan
    cols["filled_lots"] = filled
    cols["maker_lots"] = cnt[:, kb.MAKER_LOTS]
    cols["taker_lots"] = cnt[:, kb.TAKER_LOTS]
    cols["n_fills"] = n_fills
    cols["n_maker_fills"] = cnt[:, kb.N_MAKER]
    cols["n_taker_fills"] = cnt[:, kb.N_TAKER]
    cols["n_cancels"] = cnt[:, kb.N_CANCELS]
    cols["n_rejects"] = cnt[:, kb.N_REJECTS]
    cols["n_bad_actions"] = cnt[:, kb.N_BAD_ACTIONS]
    cols["n_nan_actions"] = cnt[:, kb.N_NAN_ACTIONS]
    cols["n_decisions"] = cnt[:, kb.N_DECISIONS]
    cols["fills_dropped"] = cnt[:, kb.N_FILLS_DROPPED]
    cols["fills_complete"] = complete
    cols["max_abs_position_lots"] = cnt[:, kb.MAX_ABS_POS]
    for m in range(M):
        cols[f"position_lots_{m}"] = acct[:, m, 0]
    if expected_fills is not None:
        exp = _per_set(expected_fills, P, "expected_fills")
        cols["expected_fill_lots"] = exp
        cols["fill_gap_lots"] = filled - exp
        cols["fill_realisation"] = _safe_div(filled, exp)
    ordered = cnt[:, kb.ORDERED_LOTS] if ordered_lots is None else _per_set(ordered_lots, P, "ordered_lots")
    cols["ordered_lots"] = ordered
    cols["fill_ratio_lots"] = _safe_div(filled, ordered)
    meta = {"engine": result.engine, "backend": result.backend, "sample_ns": str(sample_ns),
            "instruments": ",".join(f"{i.venue}:{i.symbol}" for i in result.instruments)}
    return MetricsTable(result.strategy, list(result.param_names), np.asarray(result.params), cols, sample_ts,
                        equity, capital, float(periods_per_year), meta)


def _per_set(value: Any, n: int, name: str) -> np.ndarray:
    """``value`` as a float64 array with one entry per parameter set."""
    a = np.asarray(value, dtype=np.float64)
    try:
        out = np.broadcast_to(a, (n,)).astype(np.float64)
    except ValueError:
        msg = f"compute_metrics: {name} must be a scalar or have one value per parameter set ({n}), got shape {a.shape}"
        raise ConfigError(msg) from None
    if not np.isfinite(out).all():
        msg = f"compute_metrics: {name} row {int(np.nonzero(~np.isfinite(out))[0][0])} is not finite"
        raise ConfigError(msg)
    return out
