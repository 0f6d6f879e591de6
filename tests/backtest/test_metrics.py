"""Backtest metrics on a hand-worked scripted scenario (every number derived in the comments)."""
from __future__ import annotations

import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpuflow.backtest import BacktestConfig, prepare_market, run
from gpuflow.backtest.engine import ConfigError
from gpuflow.backtest.metrics import YEAR_NS, MetricsTable, compute_metrics, currency_scales, equity_metrics
from gpuflow.backtest.strategies import get_strategy
from gpuflow.schema import FLAG_EOM, KIND_SET, KIND_TRADE, Instrument, events_table

S, T = KIND_SET, KIND_TRADE
SCRIPT = get_strategy("scripted")
MKT, GTC = 5, 1
# tick 0.5, lot 0.1: one tick x lot is worth 0.05 of the quote currency, a half-tick x lot 0.025,
# one fee unit (tick x lot x 1e-6) 5e-8
INS = Instrument("test", "X", "0.5", "0.1")

# (ts, kind, side, price, qty)
ROWS = [
    (0, S, 1, 99, 10), (1, S, 1, 98, 20), (2, S, -1, 101, 5), (3, S, -1, 102, 7),  # 99 x 101
    (4, S, 1, 97, 5),     # e4: our market buy (sent at e3) fills before it: 4 @ 101, taker
    (12, S, 1, 100, 5),   # bid 100
    (15, S, -1, 101, 0),  # ask 101 gone: 100 x 102; e6 sends a GTC sell 4 @ 102 (joins behind 7)
    (16, S, 1, 100, 6),
    (25, T, 1, 103, 1),   # a buy at 103 trades through our 102 ask: 4 @ 102, maker
    (35, S, 1, 101, 3),   # 101 x 102; e9 sends a market sell 2
    (36, S, -1, 102, 9),  # it fills before e10: 2 @ 101 (taker); e10 sends a market buy 2
    (37, S, 1, 100, 1),   # it fills before e11: 2 @ 102 (taker); e11 sends a market buy 3
    (72, S, 1, 101, 4),   # it fills before e12: 3 @ 102 (taker); the position stays open: +3
]
ACTIONS = {3: (MKT, 1, 0, 4, 0), 6: (GTC, -1, 102, 4, 0), 9: (MKT, -1, 0, 2, 0), 10: (MKT, 1, 0, 2, 0),
           11: (MKT, 1, 0, 3, 0)}
CFG = {"levels": 3, "sample_ns": 10, "maker_fee_bps": -1, "taker_fee_bps": 5}  # -100 / +500 ppm


def scenario(scales=(1.0,), record_fills=True, **cfg):
    a = np.array(ROWS, dtype=np.int64)
    ev = events_table({"ts_local": a[:, 0], "kind": a[:, 1], "side": a[:, 2], "price": a[:, 3], "qty": a[:, 4],
                       "flags": np.full(len(ROWS), FLAG_EOM)}, INS)
    sig = np.zeros((len(ROWS), 5))
    for i, act in ACTIONS.items():
        sig[i] = act
    mk = prepare_market(ev, levels=3, signals=sig)
    return run(SCRIPT, [{"scale_qty": s} for s in scales], mk, BacktestConfig(**{**CFG, **cfg}),
               record_fills=record_fills)


# Hand-worked account (ticks x lots; fee units = ticks x lots x 1e-6):
#   buy  4 @ 101 taker: cash -404,       fee 404 * 500 = 202000
#   sell 4 @ 102 maker: cash -404 + 408 = 4, fee 202000 + 408 * -100 = 161200   round trip +1 x 4 = +4 (win)
#   sell 2 @ 101 taker: cash 4 + 202 = 206,  fee 161200 + 202 * 500 = 262200
#   buy  2 @ 102 taker: cash 206 - 204 = 2,  fee 262200 + 204 * 500 = 364200    round trip -1 x 2 = -2 (loss)
#   buy  3 @ 102 taker: cash 2 - 306 = -304, fee 364200 + 306 * 500 = 517200    open: +3 @ 102
# End mid = (101 + 102) / 2 = 101.5 ticks.
#   realized   = (4 - 2) * 0.05                    = 0.1
#   unrealized = 3 * (101.5 - 102) * 0.05          = -0.075
#   gross      = 0.1 - 0.075                       = 0.025   (= (2 * -304 + 3 * 203) * 0.025 = 1 * 0.025)
#   fees       = 517200 * 5e-8                     = 0.02586
#   pnl        = 0.025 - 0.02586                   = -0.00086
# Equity samples every 10 ns from t0 = 0 (each taken before the event that passes its time; the
# last one, at 80, is the end state), net = eq2 * 0.025 - fee * 5e-8:
#   10: pos 4, cash -404, mid2 200: eq2 = -808 + 800 = -8  -> -0.2   - 0.0101  = -0.2101
#   20: pos 4, cash -404, mid2 202: eq2 = 0                -> 0      - 0.0101  = -0.0101
#   30: pos 0, cash 4:              eq2 = 8                -> 0.2    - 0.00806 = 0.19194
#   40 .. 80: the last market buy, sent at 37 with no latency, reached the exchange at 37 (before the
#             sample at 40, which books it first): pos 3, cash -304, mid2 203:
#             eq2 = -608 + 609 = 1  -> 0.025  - 0.02586 = -0.00086
EQUITY = [-0.2101, -0.0101, 0.19194, -0.00086, -0.00086, -0.00086, -0.00086, -0.00086]
# PnL increments from E_{-1} = 0
INCR = [-0.2101, 0.2, 0.20204, -0.1928, 0.0, 0.0, 0.0, 0.0]


def test_currency_scales_are_exact_decimals():
    tl, half, fee = currency_scales([INS, Instrument("b", "BTCUSDT", "0.10", "0.001")])
    assert tl.tolist() == [0.05, 0.0001] and half.tolist() == [0.025, 0.00005]
    assert fee.tolist() == [5e-8, 1e-10]


def test_hand_worked_pnl_fees_and_trades():
    mt = compute_metrics(scenario(), capital=100)
    assert mt["pnl_realized"][0] == pytest.approx(0.1, abs=1e-12)
    assert mt["pnl_unrealized"][0] == pytest.approx(-0.075, abs=1e-12)
    assert mt["pnl_gross"][0] == pytest.approx(0.025, abs=1e-12)
    assert mt["fees"][0] == pytest.approx(0.02586, abs=1e-12)
    assert mt["pnl"][0] == pytest.approx(-0.00086, abs=1e-12)
    np.testing.assert_allclose(mt.equity[0], EQUITY, atol=1e-12)
    ts, eq = mt.equity_curve(0)
    assert ts.tolist() == [10, 20, 30, 40, 50, 60, 70, 80] and eq.tolist() == mt.equity[0].tolist()
    # closed trades (FIFO): +0.2 (4 lots x 1 tick) and -0.1 (2 lots x 1 tick); the last buy only opens
    assert (mt["n_round_trips"][0], mt["n_wins"][0], mt["n_losses"][0]) == (2, 1, 1)
    assert mt["win_rate"][0] == 0.5
    assert mt["win_loss_ratio"][0] == pytest.approx(0.2 / 0.1)
    # notional = (404 + 408 + 202 + 204 + 306) * 0.05 = 1524 * 0.05 = 76.2; turnover = 76.2 / 100
    assert mt["notional"][0] == pytest.approx(76.2)
    assert mt["turnover"][0] == pytest.approx(0.762)
    # 5 orders, each filled: fill ratio 1; 15 lots filled, 4 maker + 11 taker
    assert (mt["n_orders"][0], mt["n_filled_orders"][0], mt["fill_ratio"][0]) == (5, 5, 1.0)
    assert (mt["filled_lots"][0], mt["maker_lots"][0], mt["taker_lots"][0]) == (15, 4, 11)
    assert (mt["n_maker_fills"][0], mt["n_taker_fills"][0], mt["fills_complete"][0]) == (1, 4, True)
    assert (mt["position_lots_0"][0], mt["max_abs_position_lots"][0]) == (3, 4)


def test_hand_worked_returns_sharpe_sortino():
    mt = compute_metrics(scenario(), capital=100, periods_per_year=8)
    r = [x / 100 for x in INCR]  # returns on capital 100
    mean = -0.00086 / 100 / 8  # = sum(INCR) / capital / K
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / 7)  # ddof = 1
    down = math.sqrt((0.2101 ** 2 + 0.1928 ** 2) / 100 ** 2 / 8)  # negative returns only
    assert mt["mean_return"][0] == pytest.approx(-1.075e-6, rel=1e-12)
    assert mt["volatility"][0] == pytest.approx(sd, rel=1e-12)
    assert mt["sharpe"][0] == pytest.approx(mean / sd * math.sqrt(8), rel=1e-12)
    assert mt["sortino"][0] == pytest.approx(mean / down * math.sqrt(8), rel=1e-12)
    # default annualisation: a 365-day year of 10 ns samples; capital does not change the ratios
    mt2 = compute_metrics(scenario(), capital=7)
    assert mt2.periods_per_year == YEAR_NS / 10
    assert mt2["sharpe"][0] == pytest.approx(mean / sd * math.sqrt(YEAR_NS / 10), rel=1e-9)


def test_hand_worked_drawdown():
    mt = compute_metrics(scenario(), capital=100)
    # curve from (0, 0): peak 0 until 30; deepest trough -0.2101 at 10 -> drawdown 0.2101, recovered at
    # 30 (0.19194 >= 0): 30 ns from the peak at 0.  Then peak 0.19194 at 30, underwater to the end (80):
    # drawdown 0.19194 + 0.00086 = 0.1928 < 0.2101, lasting 80 - 30 = 50 ns (the longest).
    assert mt["max_drawdown"][0] == pytest.approx(0.2101, abs=1e-12)
    assert mt["max_drawdown_frac"][0] == pytest.approx(0.002101, abs=1e-12)
    assert mt["max_drawdown_duration_ns"][0] == 30
    assert mt["longest_drawdown_ns"][0] == 50


def test_equity_metrics_by_hand():
    # two curves, samples at 1, 2, 3, 4 s from t0 = 0
    ts = np.array([1, 2, 3, 4]) * 10**9
    eq = np.array([[1.0, 3.0, 2.0, 4.0],    # increments 1, 2, -1, 2
                   [0.0, 0.0, 0.0, 0.0]])  # flat: ratios undefined
    m = equity_metrics(eq, ts, 0, capital=2.0, periods_per_year=4)
    # returns 0.5, 1, -0.5, 1: mean 0.5; sample var = (0 + 0.25 + 1 + 0.25) / 3 = 0.5
    assert m["mean_return"][0] == 0.5
    assert m["sharpe"][0] == pytest.approx(0.5 / math.sqrt(0.5) * 2)
    # downside deviation sqrt(0.25 / 4) = 0.25 -> Sortino 0.5 / 0.25 * 2 = 4
    assert m["sortino"][0] == pytest.approx(4.0)
    # peak 3 at 2 s, trough 2 at 3 s, recovered at 4 s: drawdown 1 (0.5 of capital) over 2 s
    assert (m["max_drawdown"][0], m["max_drawdown_frac"][0]) == (1.0, 0.5)
    assert m["max_drawdown_duration_ns"][0] == 2 * 10**9 and m["longest_drawdown_ns"][0] == 2 * 10**9
    assert np.isnan(m["sharpe"][1]) and np.isnan(m["sortino"][1])
    assert (m["max_drawdown"][1], m["max_drawdown_duration_ns"][1]) == (0.0, 0)
    with pytest.raises(ConfigError, match="capital must be a positive"):
        equity_metrics(eq, ts, 0, capital=0)
    with pytest.raises(ConfigError, match=r"shape \(n_sets, 4\)"):
        equity_metrics(eq[:, :3], ts, 0)


def test_sets_are_vectorised():
    # two parameter sets in one call give what each gives alone (scale_qty 2 doubles every order, so
    # the market buy of 8 walks two levels: the sets differ)
    both = compute_metrics(scenario(scales=(1.0, 2.0)), capital=100)
    assert both["pnl"][0] != both["pnl"][1]
    for i, s in enumerate((1.0, 2.0)):
        single = compute_metrics(scenario(scales=(s,)), capital=100)
        for k, v in single.columns.items():
            np.testing.assert_array_equal(both[k][i:i + 1], v, err_msg=k)
        np.testing.assert_array_equal(both.equity[i:i + 1], single.equity)


def test_expected_fills_and_ordered_lots():
    # the script meant to trade 4 + 4 + 2 + 2 + 3 = 15 lots and sent orders for the same lots
    mt = compute_metrics(scenario(scales=(1.0, 2.0)), expected_fills=[15, 40], ordered_lots=[15, 30])
    assert mt["expected_fill_lots"].tolist() == [15, 40]
    assert mt["fill_gap_lots"].tolist() == [0, -10]  # 30 filled of 40 expected
    assert mt["fill_realisation"].tolist() == [1.0, 0.75]
    assert mt["fill_ratio_lots"].tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="expected_fills must be a scalar or have one value per parameter set"):
        compute_metrics(scenario(), expected_fills=[1, 2, 3])


def test_unrecorded_fills_leave_fifo_metrics_undefined():
    r = scenario()
    full = compute_metrics(r)
    r2 = scenario(record_fills=False)
    mt = compute_metrics(r2)
    assert not mt["fills_complete"][0]
    assert np.isnan(mt["pnl_realized"][0]) and np.isnan(mt["win_rate"][0])
    # what the account and the equity samples give is still there (notional is counted by the engine)
    for k in ("pnl", "fees", "sharpe", "max_drawdown", "filled_lots", "notional", "turnover"):
        assert mt[k][0] == full[k][0], k


def test_table_and_atomic_parquet(tmp_path):
    mt = compute_metrics(scenario(scales=(1.0, 2.0)), capital=100)
    t = mt.to_table()
    assert t.num_rows == 2 and t.column_names[:3] == ["set", "scale_qty", "pnl"]
    assert t.column("scale_qty").to_pylist() == [1.0, 2.0]
    assert t.schema.metadata[b"gpuflow.metrics.strategy"] == b"scripted"
    assert t.schema.metadata[b"gpuflow.metrics.capital"] == b"100.0"
    path = tmp_path / "metrics.parquet"
    path.write_bytes(b"old")
    assert mt.write_parquet(path) == path
    back = pq.read_table(path)
    assert back.equals(t) and back.schema.metadata == t.schema.metadata
    assert os.listdir(tmp_path) == ["metrics.parquet"]  # no temporary file left behind
    # a failed write leaves the old file and no temporary file
    bad = MetricsTable("x", [], np.zeros((1, 0)), {"a": np.array([object()])}, np.zeros(1, np.int64),
                       np.zeros((1, 1)), 1.0, 1.0)
    with pytest.raises(pa.ArrowInvalid):
        bad.write_parquet(path)
    assert pq.read_table(path).equals(t) and os.listdir(tmp_path) == ["metrics.parquet"]
    with pytest.raises(KeyError, match="no metric 'nope'"):
        mt["nope"]


def test_capital_must_be_positive():
    with pytest.raises(ConfigError, match="capital must be a positive finite amount"):
        compute_metrics(scenario(), capital=-1)


def test_two_instruments_use_their_own_scales():
    # instrument 0: tick 0.5, lot 0.1 (0.05 per tick x lot); instrument 1: tick 0.01, lot 2 (0.02)
    ins1 = Instrument("test", "Y", "0.01", "2")
    t0 = events_table({"ts_local": np.array([0, 1, 10]), "kind": np.array([S, S, S]), "side": np.array([1, -1, 1]),
                       "price": np.array([99, 101, 100]), "qty": np.array([10, 10, 10]),
                       "flags": np.full(3, FLAG_EOM)}, INS)
    t1 = events_table({"ts_local": np.array([2, 3, 11]), "kind": np.array([S, S, S]), "side": np.array([1, -1, -1]),
                       "price": np.array([500, 510, 505]), "qty": np.array([10, 10, 10]),
                       "flags": np.full(3, FLAG_EOM)}, ins1)
    sig = np.zeros((6, 6))
    sig[3] = (MKT, 1, 0, 2, 0, 0)  # buy 2 of instrument 0 at 101
    sig[4] = (MKT, -1, 0, 3, 0, 1)  # sell 3 of instrument 1 at 500
    mk = prepare_market([t0, t1], levels=3, signals=sig)
    mt = compute_metrics(run(SCRIPT, {}, mk, BacktestConfig(levels=3, sample_ns=5)))
    # instrument 0: +2 @ 101, end mid (100 + 101) / 2 = 100.5: 2 * -0.5 * 0.05 = -0.05
    # instrument 1: -3 @ 500, end mid (500 + 505) / 2 = 502.5: -3 * 2.5 * 0.02 = -0.15
    assert mt["pnl"][0] == pytest.approx(-0.2, abs=1e-12)
    assert mt["pnl_unrealized"][0] == pytest.approx(-0.2, abs=1e-12) and mt["pnl_realized"][0] == 0
    # notional 2 * 101 * 0.05 + 3 * 500 * 0.02 = 10.1 + 30
    assert mt["notional"][0] == pytest.approx(40.1)
    assert (mt["position_lots_0"][0], mt["position_lots_1"][0]) == (2, -3)


def _equity_metrics_by_definition(eq, ts, t0, capital, ppy):
    """Plain Python, from the definitions in equity_metrics' docstring (the oracle of the jitted pass)."""
    out = []
    for row in eq:
        e = [0.0, *row]
        t = [t0, *ts]
        K = len(row)
        r = [(e[k] - e[k - 1]) / capital for k in range(1, K + 1)]
        mean = sum(r) / K if K else math.nan
        vol = math.sqrt(sum((x - mean) ** 2 for x in r) / (K - 1)) if K >= 2 else math.nan
        down = math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / K) if K >= 2 else math.nan
        peaks = [max(e[: k + 1]) for k in range(K + 1)]
        dd = [peaks[k] - e[k] for k in range(K + 1)]
        last_peak = [max(j for j in range(k + 1) if dd[j] == 0) for k in range(K + 1)]
        trough = dd.index(max(dd))
        rec = next((k for k in range(trough + 1, K + 1) if dd[k] == 0), K)
        dur = t[rec] - t[last_peak[trough]] if dd[trough] > 0 else 0
        longest = max([t[min(k + 1, K)] - t[last_peak[k]] for k in range(K + 1) if dd[k] > 0], default=0)
        sharpe = mean / vol * math.sqrt(ppy) if K >= 2 and vol != 0 else math.nan
        sortino = mean / down * math.sqrt(ppy) if K >= 2 and down != 0 else math.nan
        out.append((mean, vol, sharpe, sortino, dd[trough], dur, longest))
    return out


@pytest.mark.parametrize("K", [0, 1, 2, 3, 17, 300])
def test_equity_metrics_equal_their_definitions(K, rng):
    # integer steps: ties at the peak, flat stretches, recoveries exactly at the old peak, curves that never
    # recover; one flat curve and one that only rises
    steps = rng.integers(-3, 4, size=(40, K)).astype(np.float64)
    steps[0] = 0.0
    steps[1] = np.abs(steps[1])
    eq = np.cumsum(steps, axis=1) * 0.25
    ts = np.arange(1, K + 1, dtype=np.int64) * 7
    m = equity_metrics(eq, ts, 0, capital=3.0, periods_per_year=5.0)
    for p, (mean, vol, sharpe, sortino, mdd, dur, longest) in enumerate(_equity_metrics_by_definition(
            eq, ts.tolist(), 0, 3.0, 5.0)):
        for k, want in (("mean_return", mean), ("volatility", vol), ("sharpe", sharpe), ("sortino", sortino),
                        ("max_drawdown", mdd)):
            assert m[k][p] == pytest.approx(want, rel=1e-12, abs=1e-15, nan_ok=True), (k, p)
        assert (m["max_drawdown_duration_ns"][p], m["longest_drawdown_ns"][p]) == (dur, longest), p
