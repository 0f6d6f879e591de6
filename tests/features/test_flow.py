"""gpuflow.features.flow: hand-worked cases, causality, CUDA-twin vs CPU-twin parity, Binance USD-M smoke test."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from gpuflow.backend import get_backend
from gpuflow.book import BookFrame, rebuild_book
from gpuflow.errors import SchemaError
from gpuflow.features import flow
from gpuflow.features.flow import (
    clock_edges,
    hasbrouck_lambda,
    kyle_lambda,
    log_returns,
    mid_changes,
    realized_volatility,
    sample_mid,
    taker_pressure,
    trade_sign,
)
from gpuflow.schema import (
    FLAG_AUCTION,
    FLAG_EOM,
    FLAG_HIDDEN,
    KIND_EXECUTE,
    KIND_SET,
    KIND_TRADE,
    Instrument,
    events_table,
    instrument_of,
)

NAN = math.nan
INST = Instrument("test", "X", tick_size="0.01", lot_size="0.001")


def _events(rows, instrument=INST):
    """Events table from (ts_local, kind, side, price, qty[, flags]) tuples; every row ends a message."""
    a = np.array([r + (0,) * (6 - len(r)) for r in rows], dtype=np.int64).reshape(-1, 6)
    return events_table({"ts_local": a[:, 0], "kind": a[:, 1], "side": a[:, 2], "price": a[:, 3],
                         "qty": a[:, 4], "flags": a[:, 5] | FLAG_EOM}, instrument)


def _h(a):
    return np.asarray(a) if isinstance(a, np.ndarray) or a is None else a.get()


# ---- hand-worked cases ----------------------------------------------------------------------------


def test_trade_sign_lee_ready_hand_worked():
    T, S, E = KIND_TRADE, KIND_SET, KIND_EXECUTE
    ev = _events([
        (5, T, 0, 100, 1),          # 0  no book yet, first print: no quote, no tick -> 0
        (10, S, 1, 100, 5),         # 1  bid 100
        (10, S, -1, 104, 5),        # 2  ask 104: mid 102
        (20, T, 0, 103, 1),         # 3  quote rule: 103 > 102 -> +1
        (30, T, 0, 101, 1),         # 4  101 < 102 -> -1
        (40, S, -1, 102, 5),        # 5  ask 102: mid 101 from here on
        (40, T, 0, 102, 1),         # 6  same ns as the quote change: prevailing mid is still 102 -> at the mid,
                                    #    tick test: previous different print price 101 -> uptick +1
        (50, T, 0, 101, 1),         # 7  mid 101: at the mid, tick: 101 < 102 -> -1
        (60, T, 1, 90, 1),          # 8  side given (aggressor buy) -> +1 whatever the price
        (70, E, 1, 100, 1),         # 9  execution of a resting bid -> seller-initiated -1
        (75, E, -1, 102, 1, FLAG_HIDDEN),  # 10 execution of a resting (hidden) ask -> +1
        (80, T, 0, 105, 1, FLAG_AUCTION),  # 11 cross: no aggressor -> 0
        (90, T, 0, 101, 1),         # 12 at the mid (101), tick: 101 < 105 -> -1
        (95, T, 0, 101, 1),         # 13 at the mid, zero tick: last different price 105 -> zero-downtick -1
        (99, S, 1, 99, 5),          # 14 not a print -> 0
    ])
    book = rebuild_book(ev, levels=1, backend="cpu")
    s = trade_sign(ev, book, backend="cpu")
    assert s.dtype == np.int8
    assert s.tolist() == [0, 0, 0, 1, -1, 0, 1, -1, 1, -1, 1, 0, -1, -1, 0]
    # without a book only the tick test applies to unsided prints
    s = trade_sign(ev, backend="cpu")
    assert s.tolist() == [0, 0, 0, 1, -1, 0, 1, -1, 1, -1, 1, 0, -1, -1, 0]
    # a quote lag of 25 ns: the print at t=50 sees the book before t=25 (mid 102): 101 < 102 -> -1 as well,
    # the one at t=40 sees mid 102 (no change); the one at t=20 sees no quote at all: tick 103 > 100 -> +1
    s = trade_sign(ev, book, quote_lag_ns=25, backend="cpu")
    assert s.tolist() == [0, 0, 0, 1, -1, 0, 1, -1, 1, -1, 1, 0, -1, -1, 0]


def test_trade_sign_quote_rule_beats_tick_test():
    T, S = KIND_TRADE, KIND_SET
    ev = _events([(1, S, 1, 100, 5), (1, S, -1, 110, 5),   # mid 105
                  (2, T, 0, 104, 1),                       # quote rule -1 (a tick test would have nothing)
                  (3, T, 0, 106, 1),                       # quote rule +1 (tick would say +1 too)
                  (4, S, 1, 108, 5),                       # mid 109
                  (5, T, 0, 108, 1)])                      # quote rule -1, although a tick test says uptick +1
    book = rebuild_book(ev, levels=1, backend="cpu")
    assert trade_sign(ev, book, backend="cpu").tolist() == [0, 0, -1, 1, 0, -1]
    assert trade_sign(ev, backend="cpu").tolist() == [0, 0, 0, 1, 0, 1]


def test_trade_sign_prints_modes():
    T, E = KIND_TRADE, KIND_EXECUTE
    # Databento prints a trade twice: the aggressor's trade row and the resting orders' fill rows
    ev = _events([(1, T, 1, 100, 3), (1, E, -1, 100, 1), (1, E, -1, 100, 2)],
                 INST.with_(source="databento"))
    assert trade_sign(ev, backend="cpu").tolist() == [1, 0, 0]                    # auto -> trade rows only
    assert trade_sign(ev, prints="all", backend="cpu").tolist() == [1, 1, 1]
    assert trade_sign(ev, prints="execute", backend="cpu").tolist() == [0, 1, 1]
    tp = taker_pressure(ev, [0, 1], backend="cpu")
    assert tp.buy_lots.tolist() == [3] and tp.n_trades.tolist() == [1]
    # LOBSTER: visible executions + hidden executions (trade rows) + crosses; "auto" keeps them all
    ev = _events([(1, E, 1, 100, 2), (2, T, 1, 101, 4, FLAG_HIDDEN), (3, T, 0, 100, 9, FLAG_AUCTION)],
                 INST.with_(source="lobster"))
    assert trade_sign(ev, backend="cpu").tolist() == [-1, 1, 0]
    assert trade_sign(ev, prints="execute", backend="cpu").tolist() == [-1, 1, 0]
    assert trade_sign(ev, prints="trade", backend="cpu").tolist() == [0, 1, 0]


def test_taker_pressure_hand_worked():
    T, S, E = KIND_TRADE, KIND_SET, KIND_EXECUTE
    inst = Instrument("test", "X", tick_size="0.5", lot_size="0.01")
    ev = _events([
        (0, T, 1, 200, 1000),       # on the first edge: belongs to the bucket before the grid, not counted
        (3, T, 1, 200, 400),        # bucket 0: buy 400 lots; sqrt(100.0 * 4.0) = 20
        (10, T, -1, 100, 200),      # bucket 0 (right-closed at 10): sell 200; -sqrt(50.0 * 2.0) = -10
        (11, S, 1, 99, 7),          # not a print
        (15, E, 1, 162, 100),       # bucket 1: execution of a resting bid = taker sell 100; -sqrt(81 * 1) = -9
        (18, T, 0, 200, 50, FLAG_AUCTION),  # bucket 1: cross, unsigned 50 lots
        (31, T, 1, 200, 999),       # after the last edge: not counted
    ], inst)
    tp = taker_pressure(ev, np.array([0, 10, 20, 30]), backend="cpu")
    assert tp.ts_local.tolist() == [10, 20, 30]
    assert tp.n_trades.tolist() == [2, 2, 0]
    assert tp.buy_lots.tolist() == [400, 0, 0]
    assert tp.sell_lots.tolist() == [200, 100, 0]
    assert tp.unsigned_lots.tolist() == [0, 50, 0]
    assert tp.signed_lots.tolist() == [200, -100, 0]
    np.testing.assert_allclose(tp.imbalance, [1 / 3, -1.0, NAN], rtol=1e-15)
    np.testing.assert_allclose(tp.signed_sqrt_dollar, [10.0, -9.0, 0.0], rtol=1e-14, atol=1e-14)
    # without an instrument there is no dollar volume
    cols = {c: ev.column(c).to_numpy() for c in ("ts_local", "kind", "side", "price", "qty", "flags")}
    tp = taker_pressure(cols, np.array([0, 10, 20, 30]), backend="cpu")
    assert tp.signed_sqrt_dollar is None and tp.buy_lots.tolist() == [400, 0, 0]
    # precomputed signs override the inferred ones
    signs = -trade_sign(ev, backend="cpu")
    tp = taker_pressure(ev, np.array([0, 10, 20, 30]), signs=signs, backend="cpu")
    assert tp.buy_lots.tolist() == [200, 100, 0] and tp.sell_lots.tolist() == [400, 0, 0]


def test_clock_edges():
    assert clock_edges(1000, 2500, 1000, backend="cpu").tolist() == [0, 1000, 2000, 3000]
    assert clock_edges(1001, 3000, 1000, backend="cpu").tolist() == [1000, 2000, 3000]
    assert clock_edges(5, 5, 10, backend="cpu").tolist() == [0, 10]


def test_sample_mid_and_log_returns_hand_worked():
    S = KIND_SET
    ev = _events([(10, S, 1, 100, 1), (10, S, -1, 101, 1),   # mid 100.5
                  (25, S, -1, 101, 0),                       # ask side empty for a moment: NaN
                  (25, S, -1, 103, 1),                       # mid 101.5
                  (25, S, 1, 102, 1),                        # mid 102.5 (same ns: the last row wins)
                  (40, S, -1, 103, 0)])                      # ask side empty: NaN
    book = rebuild_book(ev, levels=1, backend="cpu")
    grid = np.array([0, 10, 20, 30, 40])
    np.testing.assert_array_equal(sample_mid(book, grid, backend="cpu"), [NAN, 100.5, 100.5, 102.5, NAN])
    r = log_returns(book, grid, backend="cpu")
    np.testing.assert_allclose(r, [NAN, 0.0, math.log(102.5 / 100.5), NAN], rtol=1e-15)
    np.testing.assert_array_equal(mid_changes(book, grid, backend="cpu"), [NAN, 0.0, 2.0, NAN])
    # a mid array with its own timestamps
    mid = np.array([100.0, 101.0, 99.0])
    ts = np.array([1, 2, 2])
    np.testing.assert_array_equal(sample_mid(mid, [0, 1, 2, 3], ts_local=ts, backend="cpu"),
                                  [NAN, 100.0, 99.0, 99.0])


def test_realized_volatility_hand_worked():
    r = np.array([0.01, -0.02, 0.02, NAN, 0.03, 0.04])
    rv = realized_volatility(r, 2, backend="cpu")
    # sqrt(1e-4 + 4e-4), sqrt(4e-4 + 4e-4); NaN in windows holding r_3; sqrt(9e-4 + 16e-4) = 0.05
    np.testing.assert_allclose(rv, [NAN, math.sqrt(5e-4), math.sqrt(8e-4), NAN, NAN, 0.05], rtol=1e-14)
    rv = realized_volatility(r, 1, backend="cpu")
    np.testing.assert_allclose(rv, [0.01, 0.02, 0.02, NAN, 0.03, 0.04], rtol=1e-14)
    # annualised: 1-second returns of a 24/7 market, 2-bucket windows: sqrt(31_536_000 / 2 * 25e-4)
    rv = realized_volatility(r, 2, periods_per_year=365 * 86400, backend="cpu")
    assert rv[-1] == pytest.approx(math.sqrt(365 * 86400 / 2 * 25e-4), rel=1e-14)


# A 6-bucket regression solved by hand:
#   q  = [1, -1, 2, 0, 3, -2]   mean 0.5      dq   = [0.5, -1.5, 1.5, -0.5, 2.5, -2.5]
#   dm = [2, -1, 3, 1, 4, -3]   mean 1        ddm  = [1, -2, 2, 0, 3, -4]
#   Sxx = 17.5, Sxy = 24, Syy = 34
#   lambda = 24 / 17.5 = 48/35, intercept = 1 - 48/35 * 0.5 = 11/35
#   SSR = Syy - lambda * Sxy = 34 - 1152/35 = 38/35,  se = sqrt(38/35 / 4 / 17.5),  R^2 = 24^2 / (17.5 * 34) = 576/595
Q6 = np.array([1, -1, 2, 0, 3, -2])
DM6 = np.array([2.0, -1.0, 3.0, 1.0, 4.0, -3.0])
SLOPE6, ICPT6, R2_6 = 48 / 35, 11 / 35, 576 / 595
T6 = (48 / 35) / math.sqrt(38 / 35 / 4 / 17.5)


def test_kyle_lambda_hand_worked():
    est = kyle_lambda(DM6, Q6, 6, backend="cpu")
    np.testing.assert_allclose(est.slope, [NAN] * 5 + [SLOPE6], rtol=1e-14)
    np.testing.assert_allclose(est.intercept, [NAN] * 5 + [ICPT6], rtol=1e-14)
    np.testing.assert_allclose(est.t_stat, [NAN] * 5 + [T6], rtol=1e-13)
    np.testing.assert_allclose(est.r2, [NAN] * 5 + [R2_6], rtol=1e-14)
    assert est.t_stat[-1] == pytest.approx(11.0119, abs=1e-4)
    # window 3 over the same data, last window: q = [0, 3, -2], dm = [1, 4, -3]:
    #   mean q 1/3, mean dm 2/3; Sxx = 1/9 + 64/9 + 49/9 = 38/3; Sxy = (-1/3)(1/3) + (8/3)(10/3) + (-7/3)(-11/3) = 52/3
    est3 = kyle_lambda(DM6, Q6, 3, backend="cpu")
    assert np.isnan(est3.slope[:2]).all()
    assert est3.slope[5] == pytest.approx(52 / 38, rel=1e-14)
    assert est3.intercept[5] == pytest.approx(2 / 3 - 52 / 38 / 3, rel=1e-14)


def test_kyle_lambda_nan_rules():
    dm = DM6.copy()
    dm[0] = NAN
    est = kyle_lambda(dm, Q6, 3, backend="cpu")
    assert np.isnan(est.slope[:3]).all() and np.isfinite(est.slope[3:]).all()  # rows 0..2 see the NaN
    # constant regressor in the window: no slope
    est = kyle_lambda(DM6, [1, 1, 1, 2, 2, 2], 3, backend="cpu")
    assert np.isnan(est.slope[[2, 5]]).all() and np.isfinite(est.slope[[3, 4]]).all()
    # constant response: slope 0, t and R^2 undefined
    est = kyle_lambda(np.ones(6), Q6, 3, backend="cpu")
    assert (est.slope[2:] == 0).all() and np.isnan(est.t_stat).all() and np.isnan(est.r2).all()
    # perfect fit: infinite t-stat of the slope's sign
    est = kyle_lambda(-2.0 * Q6, Q6, 4, backend="cpu")
    np.testing.assert_allclose(est.slope[3:], -2.0, rtol=1e-15)
    assert (est.t_stat[3:] == -np.inf).all() or (np.abs(est.t_stat[3:]) > 1e12).all()
    # window longer than the data: all NaN
    assert np.isnan(kyle_lambda(DM6, Q6, 7, backend="cpu").slope).all()


def test_hasbrouck_lambda_hand_worked():
    T = KIND_TRADE
    # tick 0.01, lot 0.001: 10000 ticks = 100.0, 1000 lots = 1.0; sqrt(100 * 1) = 10, sqrt(400 * 1) = 20, ...
    ev = _events([(5, T, 1, 10000, 1000),                          # bucket 0: +10
                  (15, T, -1, 10000, 1000),                        # bucket 1: -10
                  (25, T, 1, 40000, 1000),                         # bucket 2: +20
                  (32, T, 1, 10000, 1000), (38, T, -1, 10000, 1000),  # bucket 3: +10 - 10 = 0
                  (45, T, 1, 90000, 1000),                         # bucket 4: +30
                  (55, T, -1, 10000, 4000)])                       # bucket 5: -sqrt(100 * 4) = -20
    grid = np.arange(0, 61, 10)
    tp = taker_pressure(ev, grid, backend="cpu")
    np.testing.assert_allclose(tp.signed_sqrt_dollar, 10.0 * Q6, rtol=1e-14, atol=1e-12)
    est = hasbrouck_lambda(DM6, ev, grid, 6, backend="cpu")
    np.testing.assert_allclose(est.x, 10.0 * Q6, rtol=1e-14, atol=1e-12)
    np.testing.assert_allclose(est.slope, [NAN] * 5 + [SLOPE6 / 10], rtol=1e-13)
    np.testing.assert_allclose(est.intercept, [NAN] * 5 + [ICPT6], rtol=1e-13)
    np.testing.assert_allclose(est.t_stat, [NAN] * 5 + [T6], rtol=1e-12)
    np.testing.assert_allclose(est.r2, [NAN] * 5 + [R2_6], rtol=1e-13)


def test_empty_and_edge_inputs():
    T, S = KIND_TRADE, KIND_SET
    ev = _events([(1, S, 1, 100, 1)])  # no prints at all
    assert trade_sign(ev, backend="cpu").tolist() == [0]
    tp = taker_pressure(ev, [0, 10], backend="cpu")
    assert tp.n_trades.tolist() == [0] and np.isnan(tp.imbalance).all()
    ev = _events([])
    assert trade_sign(ev, backend="cpu").shape == (0,)
    assert taker_pressure(ev, [0, 10, 20], backend="cpu").buy_lots.tolist() == [0, 0]
    assert realized_volatility(np.zeros(0), 3, backend="cpu").shape == (0,)
    assert kyle_lambda(np.zeros(0), np.zeros(0), 3, backend="cpu").slope.shape == (0,)
    ev = _events([(1, T, 1, 100, 1)])
    assert trade_sign(ev, backend="cpu").tolist() == [1]


def test_errors():
    ev = _events([(1, KIND_TRADE, 1, 100, 1)])
    with pytest.raises(SchemaError, match=r"taker_pressure: grid_ns must be strictly increasing; row 2 holds 10 "
                                          r"after 10"):
        taker_pressure(ev, [0, 10, 10], backend="cpu")
    with pytest.raises(SchemaError, match="grid_ns must hold at least 2 bucket edges"):
        taker_pressure(ev, [0], backend="cpu")
    with pytest.raises(SchemaError, match="grid_ns must hold integers .* got dtype float64"):
        log_returns(np.ones(2), [0.0, 1.0], ts_local=[0, 1], backend="cpu")
    with pytest.raises(SchemaError, match=r"trade_sign: events lack column\(s\) \['side'\]"):
        trade_sign({"kind": np.array([7], np.uint8), "price": np.array([1])}, backend="cpu")
    with pytest.raises(SchemaError, match="events must be a pyarrow Table or a mapping"):
        trade_sign([1, 2], backend="cpu")
    with pytest.raises(SchemaError, match="events column 'price' has 2 rows, expected 1"):
        trade_sign({"kind": np.array([7], np.uint8), "side": np.array([1]), "price": np.array([1, 2])},
                   backend="cpu")
    with pytest.raises(SchemaError, match="prints must be one of"):
        trade_sign(ev, prints="fills", backend="cpu")
    with pytest.raises(SchemaError, match="kyle_lambda: window must be an integer number of buckets >= 3, got 2"):
        kyle_lambda(DM6, Q6, 2, backend="cpu")
    with pytest.raises(SchemaError, match="kyle_lambda: signed_volume has 5 rows, expected 6"):
        kyle_lambda(DM6, Q6[:5], 3, backend="cpu")
    with pytest.raises(SchemaError, match="realized_volatility: returns must be a 1-D array, got shape"):
        realized_volatility(np.ones((2, 2)), 2, backend="cpu")
    with pytest.raises(SchemaError, match="periods_per_year must be > 0"):
        realized_volatility(np.ones(3), 2, periods_per_year=0, backend="cpu")
    with pytest.raises(SchemaError, match="a mid array needs its ts_local"):
        sample_mid(np.ones(3), [0, 1], backend="cpu")
    with pytest.raises(SchemaError, match=r"sample_mid: ts_local must be sorted \(non-decreasing\); row 1 holds 0 "
                                          r"after 5"):
        sample_mid(np.ones(2), [0, 1], ts_local=[5, 0], backend="cpu")
    cols = {c: ev.column(c).to_numpy() for c in ("ts_local", "kind", "side", "price", "qty", "flags")}
    with pytest.raises(SchemaError, match="hasbrouck_lambda: no instrument known"):
        hasbrouck_lambda(np.zeros(3), cols, [0, 1, 2, 3], 3, backend="cpu")
    with pytest.raises(SchemaError, match="hasbrouck_lambda: returns has 2 rows, expected 3"):
        hasbrouck_lambda(np.zeros(2), ev, [0, 1, 2, 3], 3, backend="cpu")
    with pytest.raises(SchemaError, match="book must be a gpuflow.book.BookFrame"):
        trade_sign(ev, book={"bid": 1}, backend="cpu")
    with pytest.raises(SchemaError, match="clock_edges: bucket_ns must be > 0"):
        clock_edges(0, 10, 0, backend="cpu")
    unsorted = _events([(5, KIND_TRADE, 1, 100, 1), (3, KIND_TRADE, 1, 100, 1)])
    with pytest.raises(SchemaError, match="ts_local of the prints must be sorted"):
        taker_pressure(unsorted, [0, 10], backend="cpu")


def test_docstring_examples():
    res = doctest.testmod(flow, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


# ---- synthetic streams: causality and parity ------------------------------------------------------


def _stream(rng, n, t_max=1000):
    """A random L2 stream that never crosses (bids 90..99, asks 100..109) with trades and executions."""
    ts = np.sort(rng.integers(0, t_max, n))
    kind = rng.choice(np.array([KIND_SET, KIND_TRADE, KIND_EXECUTE]), n, p=[0.6, 0.3, 0.1])
    side = rng.choice(np.array([-1, 1]), n)
    price = np.where(side > 0, rng.integers(90, 100, n), rng.integers(100, 110, n))
    qty = rng.integers(0, 6, n)
    trade = kind == KIND_TRADE
    side[trade & (rng.random(n) < 0.5)] = 0  # half the trades have no side: Lee-Ready
    price[trade] = rng.integers(95, 105, int(trade.sum()))
    qty[kind != KIND_SET] += 1
    flags = np.where(trade & (rng.random(n) < 0.05), FLAG_AUCTION, 0)
    flags[kind == KIND_EXECUTE] = FLAG_HIDDEN  # hidden executions: prints that leave this L2 book alone
    return _events(list(zip(ts, kind, side, price, qty, flags)))


def _alter_after(ev, t, rng, mode):
    """Events equal to ``ev`` up to ts_local <= t; rows after t mutated, dropped or extended."""
    cols = {c: ev.column(c).to_numpy().copy() for c in ("ts_local", "kind", "side", "price", "qty", "flags")}
    late = cols["ts_local"] > t
    k = int(late.sum())
    if mode == "mutate" and k:
        cols["side"][late] = rng.choice(np.array([-1, 0, 1], np.int8), k)
        cols["price"][late] = rng.integers(80, 120, k)
        cols["qty"][late] = rng.integers(0, 50, k)
        cols["kind"][late] = rng.choice(np.array([KIND_SET, KIND_TRADE, KIND_EXECUTE], np.uint8), k)
    elif mode == "drop":
        cols = {c: v[~late] for c, v in cols.items()}
    elif mode == "append":
        extra = _stream(rng, 20, 500)
        for c in cols:
            v = extra.column(c).to_numpy()
            if c == "ts_local":
                v = v + max(t, int(cols["ts_local"].max(initial=t))) + 1
            cols[c] = np.concatenate([cols[c], v.astype(cols[c].dtype)])
    return events_table(cols, INST)


def _features(ev, grid, backend, book_backend=None):
    be = get_backend(backend) if isinstance(backend, str) else backend
    book = rebuild_book(ev, levels=1, backend=book_backend or be)
    s = trade_sign(ev, book, backend=be)
    tp = taker_pressure(ev, grid, signs=s, backend=be)
    r = log_returns(book, grid, backend=be)
    dm = mid_changes(book, grid, backend=be)
    kl = kyle_lambda(dm, tp.signed_lots, 5, backend=be)
    hl = hasbrouck_lambda(r, ev, grid, 4, signs=s, backend=be)
    out = {"sign": s, "n": tp.n_trades, "buy": tp.buy_lots, "sell": tp.sell_lots, "uns": tp.unsigned_lots,
           "imb": tp.imbalance, "ssdv": tp.signed_sqrt_dollar, "mid": sample_mid(book, grid, backend=be),
           "r": r, "rv": realized_volatility(r, 3, backend=be), "rv_ann": realized_volatility(r, 3,
                                                                                            periods_per_year=1e6,
                                                                                            backend=be),
           "dm": dm}
    for name, est in (("kyle", kl), ("hasb", hl)):
        for f in ("slope", "intercept", "t_stat", "r2"):
            out[f"{name}_{f}"] = getattr(est, f)
    return {k: be.to_host(v) for k, v in out.items()}


def _check_causal(ev, t, rng, mode, grid):
    before = _features(ev, grid, "cpu")
    after = _features(_alter_after(ev, t, rng, mode), grid, "cpu")
    n_rows = int((ev.column("ts_local").to_numpy() <= t).sum())
    n_buckets = int((grid[1:] <= t).sum())  # buckets that end at or before t
    np.testing.assert_array_equal(after["sign"][:n_rows], before["sign"][:n_rows])
    for k in before:
        if k == "sign":
            continue
        m = n_buckets + 1 if k == "mid" else n_buckets
        np.testing.assert_array_equal(after[k][:m], before[k][:m], err_msg=f"{k} changed at or before t={t}")
    return n_rows, n_buckets


@pytest.mark.parametrize("mode", ["mutate", "drop", "append"])
def test_causality(rng, mode):
    ev = _stream(rng, 400)
    grid = np.arange(-1, 1001, 25)
    t = 600
    n_rows, n_buckets = _check_causal(ev, t, rng, mode, grid)
    assert 0 < n_rows < ev.num_rows and n_buckets > 10


@pytest.mark.hypothesis
def test_causality_property():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
    @hypothesis.given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), t=st.integers(-5, 1005),
                      width=st.integers(1, 200), mode=st.sampled_from(["mutate", "drop", "append"]))
    def prop(seed, n, t, width, mode):
        rng = np.random.default_rng(seed)
        ev = _stream(rng, n)
        _check_causal(ev, t, rng, mode, np.arange(-width, 1000 + width, width))

    prop()


def _assert_parity(dev, cpu):
    for k in cpu:
        a, b = cpu[k], dev[k]
        if a.dtype.kind in "iu":
            np.testing.assert_array_equal(b, a, err_msg=k)
        else:
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-300, equal_nan=True, err_msg=k)


def test_cuda_twin_equals_cpu_twin(rng, device_backend):
    ev = _stream(rng, 150, 400)
    grid = np.arange(-1, 420, 15)
    cpu = _features(ev, grid, "cpu")
    dev = _features(ev, grid, device_backend)
    _assert_parity(dev, cpu)
    assert np.isfinite(cpu["kyle_slope"]).sum() > 5 and (cpu["sign"] != 0).sum() > 20


def test_cuda_twin_rolling_kernels(rng, device_backend):
    """Rolling OLS / RV on longer random series with NaNs, constant stretches and tiny variance."""
    m = 200
    x = rng.normal(size=m)
    y = 0.3 * x + rng.normal(scale=0.1, size=m)
    y[17] = NAN
    x[60:70] = 2.0
    y[100:110] = 1e-9 * rng.normal(size=10) + 5.0
    res = []
    for be in (get_backend("cpu"), device_backend):
        est = kyle_lambda(y, x, 8, backend=be)
        rv = realized_volatility(y - 5.0, 7, periods_per_year=252.0, backend=be)
        res.append({"slope": be.to_host(est.slope), "icpt": be.to_host(est.intercept),
                    "t": be.to_host(est.t_stat), "r2": be.to_host(est.r2), "rv": be.to_host(rv)})
    _assert_parity(res[1], res[0])


@pytest.mark.gpu
def test_cuda_twin_equals_cpu_twin_large(device_backend):
    rng = np.random.default_rng(3)
    ev = _stream(rng, 200_000, 10**9)
    grid = np.arange(-1, 10**9 + 10**6, 10**6)
    # the book comes from the CPU replay for both: this checks the feature kernels at scale
    _assert_parity(_features(ev, grid, device_backend, "cpu"), _features(ev, grid, "cpu"))


# ---- real data: Binance USD-M BTCUSDT -----------------------------------------------------------


@pytest.fixture(scope="module")
def binance_usdm(shared_data):
    from gpuflow.io.binance import read_binance
    from gpuflow.sync import synced_events

    table = read_binance(shared_data / "binance" / "usdm" / "btcusdt_20240808.gz").tables[0]
    ev, _ = synced_events(table)
    f = rebuild_book(ev, levels=1, every=0, backend="cpu")  # the synced book after every message
    # synced order moves the REST snapshot (and the diffs it bridges) before later rows: keep the rows after
    # the last step back in ts_local (the book is synced from there on)
    start = int(np.nonzero(np.diff(f.ts_local) < 0)[0][-1]) + 1
    book = BookFrame(f.index[start:], f.ts_local[start:], f.bid_price[start:], f.bid_qty[start:],
                     f.ask_price[start:], f.ask_qty[start:], None, f.backend)
    return table, book


def test_binance_usdm_real_data(binance_usdm):
    table, book = binance_usdm
    ts = table.column("ts_local").to_numpy()
    kind = table.column("kind").to_numpy()
    assert (book.bid_price[:, 0] < book.ask_price[:, 0]).all()
    grid = clock_edges(int(book.ts_local[0]), int(ts[-1]), 1_000_000_000, backend="cpu")  # 1-second buckets
    tp = taker_pressure(table, grid, backend="cpu")
    # oracle: plain numpy bucket sums of the trade rows (aggressor side given by the feed)
    tr = (kind == KIND_TRADE) & (ts > grid[0]) & (ts <= grid[-1])
    b = np.searchsorted(grid, ts[tr], side="left") - 1
    side = table.column("side").to_numpy()[tr]
    qty = table.column("qty").to_numpy()[tr]
    m = grid.size - 1
    np.testing.assert_array_equal(tp.buy_lots, np.bincount(b, np.where(side > 0, qty, 0), m).astype(np.int64))
    np.testing.assert_array_equal(tp.sell_lots, np.bincount(b, np.where(side < 0, qty, 0), m).astype(np.int64))
    price = instrument_of(table).price_of(table.column("price").to_numpy()[tr])
    ssdv = np.bincount(b, side * np.sqrt(price * qty * 0.001), m)
    np.testing.assert_allclose(tp.signed_sqrt_dollar, ssdv, rtol=1e-9)
    assert tp.unsigned_lots.sum() == 0
    dm = mid_changes(book, grid, backend="cpu")
    r = log_returns(book, grid, backend="cpu")
    assert np.isnan(dm[0]) and np.isfinite(dm[1:]).all()  # the first edge is before the first synced book
    # Observed (2024-08-08 23:54-24:00 UTC, 345 one-second buckets, window 60): 285 estimates, all > 0;
    # lambda mean 0.0055 ticks/lot (0.55 USDT per BTC of net taker flow), mean t 6.9, mean R^2 0.43.
    est = kyle_lambda(dm, tp.signed_lots, 60, backend="cpu")
    s = est.slope[np.isfinite(est.slope)]
    assert s.size == m - 60
    assert (s > 0).mean() > 0.9 and np.median(est.t_stat[np.isfinite(est.t_stat)]) > 2
    # Hasbrouck on log returns: also all 285 > 0, mean 2.3e-8 per sqrt(USDT), mean R^2 0.61
    h = hasbrouck_lambda(r, table, grid, 60, backend="cpu")
    hs = h.slope[np.isfinite(h.slope)]
    assert hs.size == m - 60 and (hs > 0).mean() > 0.9
    # realized volatility of 1-second log returns over a minute, annualised (24/7): observed median ~0.51
    rv = realized_volatility(r, 60, periods_per_year=365 * 86400, backend="cpu")
    assert 0.05 < np.nanmedian(rv) < 5.0
    # Lee-Ready against the feed's own aggressor flag: hide the side of every trade and infer it.
    # Observed accuracy 0.960 (quote rule + tick test), tick test alone 0.969 (Binance prints each fill
    # of an aggressive order at successive prices, which the tick test reads well).
    cols = {c: table.column(c).to_numpy() for c in ("ts_local", "kind", "side", "price", "qty", "flags")}
    true = trade_sign(cols, backend="cpu")
    cols["side"] = np.where(kind == KIND_TRADE, 0, cols["side"]).astype(np.int8)
    inferred = trade_sign(cols, book, backend="cpu")
    sel = (kind == KIND_TRADE) & (ts > book.ts_local[0])
    assert (inferred[sel] != 0).all()
    assert (inferred[sel] == true[sel]).mean() > 0.9
