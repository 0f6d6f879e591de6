"""gpuflow.features.liquidity: hand-worked cases, CUDA-twin vs CPU-twin parity, causality, real-data oracles."""
from __future__ import annotations

import gzip
import math
from dataclasses import fields

import numpy as np
import pytest

from gpuflow.backend import get_backend
from gpuflow.book import rebuild_book
from gpuflow.errors import SchemaError
from gpuflow.features.liquidity import hidden_liquidity, icebergs, latency_stats, lead_lag, quote_stuffing
from gpuflow.schema import (
    EVENT_DTYPES,
    FLAG_AUCTION,
    FLAG_EOM,
    FLAG_HIDDEN,
    FLAG_TS_EXCH_MISSING,
    KIND_ADD,
    KIND_BBO,
    KIND_CANCEL,
    KIND_CLEAR,
    KIND_DELETE,
    KIND_DIFF,
    KIND_EXECUTE,
    KIND_SET,
    KIND_SNAPSHOT,
    KIND_TRADE,
)

NAN = math.nan
A, X, C, D, T, S = KIND_ADD, KIND_EXECUTE, KIND_CANCEL, KIND_DELETE, KIND_TRADE, KIND_SET


def _ev(rows, cols=("ts_local", "kind", "side", "price", "qty", "order_id", "flags"), eom=True):
    """Event columns (host numpy, schema dtypes) from tuples; missing trailing fields are 0."""
    a = np.array([tuple(r) + (0,) * (len(cols) - len(r)) for r in rows], dtype=np.int64).reshape(-1, len(cols))
    ev = {c: a[:, j].astype(EVENT_DTYPES[c]) for j, c in enumerate(cols)}
    if eom:
        ev["flags"] = ev["flags"] | np.uint16(FLAG_EOM)
    ev.setdefault("ts_exch", ev["ts_local"].copy())
    return ev


def _h(a):
    return a if not hasattr(a, "shape") or isinstance(a, np.ndarray) else get_backend("cpu").to_host(a)


def _assert_same(res_a, res_b, rtol=1e-9):
    """Every field of two result objects: integer/bool arrays equal, float arrays close (NaN == NaN)."""
    ha, hb = res_a.to_host(), res_b.to_host()
    for f in fields(ha):
        if f.name == "backend":
            continue
        a, b = getattr(ha, f.name), getattr(hb, f.name)
        if isinstance(a, np.ndarray):
            assert a.shape == b.shape, f.name
            if a.dtype.kind == "f":
                np.testing.assert_allclose(b, a, rtol=rtol, atol=0, equal_nan=True, err_msg=f.name)
            else:
                np.testing.assert_array_equal(b, a, err_msg=f.name)
        elif isinstance(a, float) and math.isnan(a):
            assert math.isnan(b), f.name
        else:
            assert a == b or (isinstance(a, float) and math.isclose(a, b, rel_tol=rtol)), f.name


# ============================================================================ hidden liquidity
def test_hidden_liquidity_l3_hand_worked():
    ev = _ev([
        (1, A, 1, 100, 5, 1),                       # 0  add
        (3, X, 1, 100, 3, 1),                       # 1  visible execution: traded 3
        (4, T, -1, 100, 2, 0, FLAG_HIDDEN),         # 2  hidden execution: hidden 2, traded 2
        (9, T, 0, 100, 50, 0, FLAG_AUCTION),        # 3  auction cross: ignored
        (12, T, 1, 101, 4, 0, FLAG_HIDDEN),         # 4  hidden 4
        (15, X, -1, 101, 6, 7),                     # 5  traded 6
        (25, T, 1, 101, 7),                         # 6  print of an execution (Databento T): not counted
    ])
    h = hidden_liquidity(ev, grid_ns=10, backend="cpu")
    assert h.mode == "l3"
    assert h.ts_local.tolist() == [10, 20, 30]
    assert h.hidden_lots.tolist() == [2, 4, 0]
    assert h.hidden_count.tolist() == [1, 1, 0]
    assert h.traded_lots.tolist() == [5, 10, 0]
    np.testing.assert_array_equal(h.hidden_share, [0.4, 0.4, NAN])
    assert h.unresolved_count.tolist() == [0, 0, 0]
    assert h.event_hidden_lots.tolist() == [0, 0, 2, 0, 4, 0, 0]


def _l2_hidden_case():
    return _ev([
        (1, S, 1, 99, 4),          # 0  bid 99 x4
        (2, S, -1, 101, 3),        # 1  ask 101 x3
        (3, S, -1, 102, 5),        # 2  ask 102 x5
        (4, T, 1, 101, 5),         # 3  buy 5 at 101 against 3 displayed: hidden 2
        (5, T, -1, 100, 2),        # 4  sell 2 at 100, inside the spread (no bid >= 100): hidden 2
        (6, T, 1, 102, 6),         # 5  buy at 102: both frame levels are <= 102, a third could be: unresolved
        (7, T, -1, 99, 4),         # 6  sell 4 at 99 against 4 (next bid level empty): hidden 0
        (8, T, 0, 101, 1),         # 7  unknown aggressor: unresolved
        (12, S, -1, 101, 0),       # 8  ask 101 removed
        (13, T, 1, 102, 1),        # 9  buy 1 at 102 against 5 (then the empty level): hidden 0
    ])


def test_hidden_liquidity_l2_hand_worked():
    ev = _l2_hidden_case()
    frame = rebuild_book(ev, levels=2, every=1, backend="cpu")
    h = hidden_liquidity(ev, frame, grid_ns=np.array([0, 10, 20]), backend="cpu")
    assert h.mode == "l2"
    assert h.ts_local.tolist() == [10, 20]
    assert h.hidden_lots.tolist() == [4, 0]
    assert h.hidden_count.tolist() == [2, 0]
    assert h.traded_lots.tolist() == [18, 1]
    assert h.unresolved_count.tolist() == [2, 0]
    np.testing.assert_allclose(h.hidden_share, [4 / 18, 0.0], rtol=1e-15)
    assert h.event_hidden_lots.tolist() == [0, 0, 0, 2, 2, 0, 0, 0, 0, 0]
    # without a frame, the function rebuilds one with `levels` levels
    _assert_same(h, hidden_liquidity(ev, grid_ns=np.array([0, 10, 20]), levels=2, backend="cpu"))
    # with 3 levels the buy at 102 is resolved: 3 + 5 displayed >= 6, no hidden lots
    h3 = hidden_liquidity(ev, grid_ns=np.array([0, 10, 20]), levels=3, backend="cpu")
    assert h3.unresolved_count.tolist() == [1, 0] and h3.hidden_lots.tolist() == [4, 0]


def test_hidden_liquidity_l2_empty_passive_side_is_unresolved():
    ev = _ev([(1, S, 1, 99, 1), (2, T, 1, 100, 3), (3, S, -1, 100, 1), (4, T, 1, 100, 3)])
    h = hidden_liquidity(ev, grid_ns=10, backend="cpu")
    assert h.unresolved_count.tolist() == [1]
    assert h.hidden_lots.tolist() == [2] and h.event_hidden_lots.tolist() == [0, 0, 0, 2]


def test_hidden_liquidity_buckets_and_empty():
    ev = _ev([(10, T, 1, 5, 1, 0, FLAG_HIDDEN), (20, A, 1, 5, 1, 1), (21, T, 1, 5, 2, 0, FLAG_HIDDEN)])
    h = hidden_liquidity(ev, grid_ns=10, backend="cpu")
    # an event exactly on an edge closes that bucket: (0, 10], (10, 20], (20, 30]
    assert h.ts_local.tolist() == [10, 20, 30] and h.hidden_lots.tolist() == [1, 0, 2]
    e = _ev([])
    h0 = hidden_liquidity(e, grid_ns=10, backend="cpu", mode="l3")
    assert h0.ts_local.size == 0 and h0.hidden_lots.size == 0 and h0.event_hidden_lots.size == 0


# ============================================================================ icebergs
def _l2_iceberg_case():
    return _ev([
        (0, S, -1, 100, 5),        # 0  ask 100 shows 5 (peak 5)
        (1, S, 1, 99, 8),          # 1  noise: bid level
        (10, T, 1, 100, 3),        # 2  buy 3: 3 < 5
        (12, S, -1, 100, 2),       # 3  level shows 2 (peak stays 5)
        (14, T, -1, 99, 2),        # 4  noise: sell into the bid, 2 < 8
        (15, T, 1, 100, 2),        # 5  buy 2 >= 2 since the last set: traded through, chain 5 starts
        (16, S, -1, 100, 0),       # 6  the emptied level: keep waiting
        (20, S, -1, 100, 5),       # 7  refill 1 (|5 - 5| <= 0.5), executed 3 + 2 = 5
        (30, T, 1, 100, 5),        # 8  traded through again
        (35, S, -1, 100, 5),       # 9  refill 2: executed 10 -> reported with k = 2
        (40, T, 1, 100, 6),        # 10 traded through (6 >= 5)
        (100, S, -1, 100, 5),      # 11 60 > dt = 50 after the fill: the chain ends, plain set
        (110, T, 1, 100, 5),       # 12 traded through: chain 12 starts
        (120, S, -1, 100, 5),      # 13 refill 1 of chain 12: executed 6 + 5 = 11 (no empty level in between)
        (130, S, -1, 101, 4),      # 14 noise: another ask level
    ])


def test_icebergs_l2_hand_worked():
    ev = _l2_iceberg_case()
    d = icebergs(ev, dt_ns=50, k=2, backend="cpu")
    assert d.mode == "l2"
    assert d.index.tolist() == [9]
    assert d.ts_local.tolist() == [35]
    assert d.side.tolist() == [-1] and d.price.tolist() == [100]
    assert d.refills.tolist() == [2] and d.executed_lots.tolist() == [10] and d.chain.tolist() == [5]
    d1 = icebergs(ev, dt_ns=50, k=1, backend="cpu")
    assert d1.index.tolist() == [7, 9, 13]
    assert d1.refills.tolist() == [1, 2, 1]
    assert d1.executed_lots.tolist() == [5, 10, 11]
    assert d1.chain.tolist() == [5, 5, 12]
    # a refill to 4 (|4 - 5| = 1 > 0.1 * 5) is not a refill; with size_tol 0.25 it is
    ev2 = _ev([(0, S, -1, 100, 5), (1, T, 1, 100, 5), (2, S, -1, 100, 4)])
    assert icebergs(ev2, dt_ns=50, k=1, backend="cpu").index.size == 0
    assert icebergs(ev2, dt_ns=50, k=1, size_tol=0.25, backend="cpu").index.tolist() == [2]


def test_icebergs_l2_level_removed_or_cleared_ends_chain():
    ev = _ev([
        (0, S, 1, 100, 5), (1, T, -1, 100, 5), (2, S, 1, 100, 5),     # bid chain: refill 1 at row 2
        (3, S, 1, 100, 0),                                           # removed without a trade: chain ends
        (4, S, 1, 100, 5), (5, T, -1, 100, 5), (6, S, 1, 100, 5),     # new chain: refill 1 at row 6
        (7, T, -1, 100, 5), (8, KIND_CLEAR, 1, 0, 0),                # traded through, then the bid side clears
        (9, KIND_SNAPSHOT, 1, 100, 5),                               # snapshot level, not a refill
    ])
    d = icebergs(ev, dt_ns=50, k=1, backend="cpu")
    assert d.index.tolist() == [2, 6] and d.refills.tolist() == [1, 1] and d.chain.tolist() == [1, 5]


def _l3_iceberg_case():
    return _ev([
        (0, A, 1, 100, 10, 1),     # 0  tip order 1
        (1, A, 1, 100, 10, 2),     # 1  another trader, same size
        (5, X, 1, 100, 4, 1),      # 2  partial execution
        (6, X, 1, 100, 6, 1),      # 3  order 1 emptied: chain 3 starts, executed 10
        (6, A, 1, 100, 7, 3),      # 4  an add of another size: ignored
        (7, A, 1, 100, 10, 4),     # 5  refill 1: order 4 is the tip
        (9, X, 1, 100, 10, 2),     # 6  order 2 emptied, not the tip: ignored
        (20, X, 1, 100, 10, 4),    # 7  tip emptied: executed 20, armed
        (21, A, 1, 100, 10, 5),    # 8  refill 2
        (30, X, 1, 100, 10, 5),    # 9  tip emptied: armed at 30
        (40, A, 1, 100, 10, 6),    # 10 40 - 30 > dt = 5: the chain has ended
        (50, D, 1, 100, 10, 6),    # 11
        (60, X, 1, 100, 5, 99),    # 12 an order added before the data: size unknown, never emptying
        (61, A, 1, 100, 5, 100),   # 13
        (70, A, -1, 101, 5, 7),    # 14 ask 101: order 7
        (71, X, -1, 101, 5, 7),    # 15 emptied: chain 15
        (72, A, -1, 101, 5, 8),    # 16 refill 1
        (73, C, -1, 101, 5, 8),    # 17 the tip cancelled to 0: the chain ends
        (74, A, -1, 101, 5, 9),    # 18 not armed: nothing
    ])


def test_icebergs_l3_hand_worked():
    ev = _l3_iceberg_case()
    d = icebergs(ev, dt_ns=5, k=1, backend="cpu")
    assert d.mode == "l3"
    assert d.index.tolist() == [5, 8, 16]
    assert d.ts_local.tolist() == [7, 21, 72]
    assert d.side.tolist() == [1, 1, -1] and d.price.tolist() == [100, 100, 101]
    assert d.refills.tolist() == [1, 2, 1]
    assert d.executed_lots.tolist() == [10, 20, 5]
    assert d.chain.tolist() == [3, 3, 15]
    d2 = icebergs(ev, dt_ns=5, k=2, backend="cpu")
    assert d2.index.tolist() == [8] and d2.refills.tolist() == [2]
    # with dt 10 the add at 40 is a refill too (40 - 30 = 10)
    assert icebergs(ev, dt_ns=10, k=3, backend="cpu").index.tolist() == [10]


# ============================================================================ quote stuffing
def _quote_case():
    rows = [(1, A), (2, C), (3, X),                            # (0, 10]:  3 messages, 1 cancel, 1 trade
            (11, A), (12, D), (13, D)]                         # (10, 20]: 3 messages, 2 cancels, 0 trades
    rows += [(21 + j, C) for j in range(6)] + [(29, X), (30, T, 1, 0, 0, 0, FLAG_HIDDEN)]   # (20, 30]: 8
    ev = _ev(rows)                                             # (30, 40]: nothing
    ev2 = _ev([(45, A), (46, A)], eom=False)                   # (40, 50]: one message of 2 rows
    ev2["flags"][1] |= FLAG_EOM
    return {c: np.concatenate([ev[c], ev2[c]]) for c in ev}


def test_quote_stuffing_l3_hand_worked():
    q = quote_stuffing(_quote_case(), 10, k=2.0, median_windows=2, backend="cpu")
    assert q.mode == "l3" and q.window_ns == 10
    assert q.ts_local.tolist() == [10, 20, 30, 40, 50]
    assert q.messages.tolist() == [3, 3, 8, 0, 1]
    assert q.rows.tolist() == [3, 3, 8, 0, 2]
    np.testing.assert_array_equal(q.rate_per_s, [3e8, 3e8, 8e8, 0.0, 1e8])          # 10 ns windows
    np.testing.assert_array_equal(q.median_rate_per_s, [NAN, 3e8, 3e8, 5.5e8, 4e8])  # median of the 2 before
    assert q.burst.tolist() == [False, False, True, False, False]                     # 8 > 2 * 3
    assert q.cancels.tolist() == [1, 2, 6, 0, 0]
    assert q.trades.tolist() == [1, 0, 2, 0, 0]
    np.testing.assert_array_equal(q.cancel_to_trade, [1.0, NAN, 3.0, NAN, NAN])
    r = quote_stuffing(_quote_case(), 10, k=2.0, median_windows=2, unit="rows", backend="cpu")
    np.testing.assert_array_equal(r.rate_per_s, [3e8, 3e8, 8e8, 0.0, 2e8])


def test_quote_stuffing_l2_counts():
    ev = _ev([(1, S, 1, 5, 0), (2, KIND_SNAPSHOT, 1, 5, 0), (3, S, 1, 5, 3), (4, T, 1, 5, 1),
              (5, T, 0, 5, 9, 0, FLAG_AUCTION), (6, KIND_BBO, 1, 5, 0)])
    q = quote_stuffing(ev, 1_000_000_000, backend="cpu")
    assert q.mode == "l2"
    assert q.messages.tolist() == [6] and q.cancels.tolist() == [1] and q.trades.tolist() == [1]
    assert q.rate_per_s.tolist() == [6.0] and q.burst.tolist() == [False]


# ============================================================================ latency
def _latency_case():
    M = FLAG_TS_EXCH_MISSING
    cols = ("ts_local", "ts_exch", "kind", "side", "price", "qty", "order_id", "flags")
    return _ev([
        (100, 90, KIND_DIFF), (100, 90, S, 1), (100, 90, S, -1, 0, 0, 0, FLAG_EOM),   # one diff message: 10
        (110, 130, KIND_BBO, 1), (110, 130, KIND_BBO, -1, 0, 0, 0, FLAG_EOM),          # bookTicker: -20
        (115, 115, KIND_BBO, 1, 0, 0, 0, M), (115, 115, KIND_BBO, -1, 0, 0, 0, M | FLAG_EOM),  # no E
        (120, 100, T, 1, 0, 0, 0, FLAG_EOM), (130, 125, T, 1, 0, 0, 0, FLAG_EOM),
        (140, 139, T, 1, 0, 0, 0, FLAG_EOM),
    ], cols=cols, eom=False)


def test_latency_stats_hand_worked():
    s = latency_stats(_latency_case(), percentiles=(0, 25, 50, 100), backend="cpu")
    assert s.names == ["trade", "bbo", "diff"] and s.group.tolist() == [T, KIND_BBO, KIND_DIFF]
    assert s.count.tolist() == [3, 1, 1]
    assert s.min_ns.tolist() == [1, -20, 10] and s.max_ns.tolist() == [20, -20, 10]
    np.testing.assert_allclose(s.mean_ns, [26 / 3, -20.0, 10.0], rtol=1e-15)
    # trade latencies sorted: 1, 5, 20; p25: h = 0.5 -> 1 + 0.5 * 4 = 3
    np.testing.assert_array_equal(s.percentiles_ns, [[1.0, 3.0, 5.0, 20.0], [-20.0] * 4, [10.0] * 4])
    assert s.missing_ts_exch == 1
    df = s.to_pandas()
    assert df["name"].tolist() == ["trade", "bbo", "diff"] and df["p50_ns"].tolist() == [5.0, -20.0, 10.0]


def test_latency_stats_rows_and_all():
    r = latency_stats(_latency_case(), unit="rows", percentiles=(50,), backend="cpu")
    assert r.names == ["set", "trade", "bbo", "diff"] and r.count.tolist() == [2, 3, 2, 1]
    assert r.missing_ts_exch == 2
    a = latency_stats(_latency_case(), by=None, percentiles=(50,), backend="cpu")
    assert a.names == ["all"] and a.count.tolist() == [5] and a.percentiles_ns.tolist() == [[5.0]]


# ============================================================================ lead-lag
def test_lead_lag_hand_worked():
    ts_a = np.arange(0, 100, 10)
    x_a = np.array([0, 1, 1, 1, 2, 2, 2, 3, 3, 3], float)   # returns 1 0 0 1 0 0 1 0 0
    ts_b = np.array([0, 5, 11, 47, 58, 71, 90])               # irregular: on the grid x_b = 0 0 1 1 1 2 2 2 3 3
    x_b = np.array([0, 0, 1, 2, 2, 3, 3], float)              # returns 0 1 0 0 1 0 0 1 0 (a one step later)
    r = lead_lag(ts_a, x_a, ts_b, x_b, np.array([-10, 0, 10]), returns="diff", backend="cpu")
    assert r.grid_ns == 10 and r.t0_ns == 0 and r.n_returns == 9
    assert r.pairs.tolist() == [8, 9, 8]
    # lag 0: cov = 0 - 9 (1/3)(1/3) = -1, var = 3 - 1 = 2 each -> -1/2; lag -10: -0.75 / sqrt(1.5 * 1.875)
    np.testing.assert_allclose(r.corr, [-1 / math.sqrt(5), -0.5, 1.0], rtol=1e-12)
    assert r.best_lag_ns == 10 and r.best_corr == pytest.approx(1.0)
    # log returns of a positive series, and the same series against itself: best lag 0
    s = lead_lag(ts_a, x_a + 1, ts_a, x_a + 1, [-10, 0, 10], backend="cpu")
    assert s.best_lag_ns == 0 and s.best_corr == pytest.approx(1.0)


def test_lead_lag_constant_series_gives_nan():
    ts = np.arange(0, 100, 10)
    r = lead_lag(ts, np.ones(10), ts, np.arange(1.0, 11.0), [0, 10], backend="cpu")
    assert np.isnan(r.corr).all() and r.best_lag_ns is None and math.isnan(r.best_corr)


# ============================================================================ errors
def test_errors_name_the_argument():
    ev = _l2_hidden_case()
    with pytest.raises(SchemaError, match=r"hidden_liquidity: argument 'events' lacks column\(s\) \['flags'\]"):
        hidden_liquidity({k: v for k, v in ev.items() if k != "flags"}, backend="cpu")
    with pytest.raises(SchemaError, match="argument 'events': expected a pyarrow Table or a mapping"):
        quote_stuffing([1, 2], 10, backend="cpu")
    bad = dict(ev, ts_local=ev["ts_local"][::-1].copy())
    with pytest.raises(SchemaError, match=r"'ts_local' is not sorted: row 1 \(12\) is before row 0 \(13\)"):
        icebergs(bad, backend="cpu")
    with pytest.raises(SchemaError, match="column 'price': expected dtype int64 .*found float64"):
        hidden_liquidity(dict(ev, price=ev["price"].astype(float)), backend="cpu")
    with pytest.raises(SchemaError, match=r"argument 'mode': expected one of \['auto', 'l2', 'l3'\], found 'L4'"):
        hidden_liquidity(ev, mode="L4", backend="cpu")
    with pytest.raises(SchemaError, match="argument 'grid_ns': expected a positive integer, found 0"):
        hidden_liquidity(ev, grid_ns=0, backend="cpu")
    with pytest.raises(SchemaError, match="argument 'grid_ns': edges must increase strictly; edge 2"):
        hidden_liquidity(ev, grid_ns=np.array([0, 5, 5]), backend="cpu")
    frame = rebuild_book({k: v[:4] for k, v in ev.items()}, levels=2, backend="cpu")
    with pytest.raises(SchemaError, match=r"argument 'frame': expected one book row per event \(10 rows"):
        hidden_liquidity(ev, frame, backend="cpu")
    with pytest.raises(SchemaError, match="argument 'k': expected a positive integer, found 0"):
        icebergs(ev, k=0, backend="cpu")
    with pytest.raises(SchemaError, match=r"argument 'size_tol': expected a relative tolerance in \[0, 1\)"):
        icebergs(ev, size_tol=1.5, backend="cpu")
    with pytest.raises(SchemaError, match="argument 'median_windows': expected at most 256 windows, found 300"):
        quote_stuffing(ev, 10, median_windows=300, backend="cpu")
    with pytest.raises(SchemaError, match="unit='messages' counts rows with FLAG_EOM, but none of the 2 events"):
        quote_stuffing(_ev([(1, S), (2, S)], eom=False), 10, backend="cpu")
    with pytest.raises(SchemaError, match="latency_stats: argument 'events' lacks column"):
        latency_stats({k: v for k, v in ev.items() if k != "ts_exch"}, backend="cpu")
    with pytest.raises(SchemaError, match=r"argument 'percentiles': expected levels in \[0, 100\]"):
        latency_stats(ev, percentiles=(50, 101), backend="cpu")


def test_lead_lag_errors():
    ts = np.arange(0, 100, 10)
    x = np.arange(1.0, 11.0)
    with pytest.raises(SchemaError, match="argument 'lags_ns': every lag must be a multiple of grid_ns=10; found 15"):
        lead_lag(ts, x, ts, x, [0, 10, 15], grid_ns=10, backend="cpu")
    with pytest.raises(SchemaError, match=r"argument 'x_b': expected finite positive values \(log returns\), "
                                          r"found 0.0 at row 0; pass returns='diff'"):
        lead_lag(ts, x, ts, x - 1, [10], backend="cpu")
    with pytest.raises(SchemaError, match="the series overlap on 9 grid returns of 10 ns, expected at least 12"):
        lead_lag(ts, x, ts, x, [-100, 10], backend="cpu")
    with pytest.raises(SchemaError, match="argument 'ts_b': timestamps must be sorted; row 1 is before row 0"):
        lead_lag(ts, x, ts[::-1], x, [10], backend="cpu")
    with pytest.raises(SchemaError, match="argument 'grid_ns': needed when every lag is 0"):
        lead_lag(ts, x, ts, x, [0], backend="cpu")
    with pytest.raises(SchemaError, match="argument 'returns': expected 'log' or 'diff', found 'pct'"):
        lead_lag(ts, x, ts, x, [10], returns="pct", backend="cpu")


# ============================================================================ random streams
def _l2_events(rng, n):
    kind = rng.choice(np.array([S, T, KIND_BBO, KIND_CLEAR, KIND_SNAPSHOT], np.uint8), n, p=[.55, .3, .1, .02, .03])
    side = rng.choice(np.array([-1, 1], np.int8), n)
    price = np.where(side > 0, rng.integers(97, 100, n), rng.integers(100, 103, n)).astype(np.int64)
    tr = kind == T
    price[tr] = rng.integers(98, 102, int(tr.sum()))
    side[tr & (rng.random(n) < 0.05)] = 0
    qty = rng.choice(np.array([0, 2, 5, 5, 5, 6]), n).astype(np.int64)
    flags = np.where(rng.random(n) < 0.7, FLAG_EOM, 0).astype(np.uint16)
    flags[tr & (rng.random(n) < 0.05)] |= FLAG_AUCTION
    ts = np.cumsum(rng.integers(0, 6, n)).astype(np.int64)
    return {"ts_local": ts, "ts_exch": ts - rng.integers(-5, 20, n), "kind": kind, "side": side, "price": price,
            "qty": qty, "order_id": np.zeros(n, np.uint64), "flags": flags}


def _l3_events(rng, n):
    rows, live, nxt, t = [], {}, 1, 0
    for _ in range(n):
        t += int(rng.integers(0, 4))
        u = rng.random()
        if not live or u < 0.4:
            s = int(rng.choice([-1, 1]))
            p = int(rng.integers(100, 102)) if s < 0 else int(rng.integers(98, 100))
            q = int(rng.choice([5, 10]))
            live[nxt] = [s, p, q]
            rows.append((t, A, s, p, q, nxt, 0))
            nxt += 1
        elif u < 0.75:
            oid = int(rng.choice(list(live)))
            s, p, rem = live[oid]
            q = rem if rng.random() < 0.6 else max(1, rem // 2)
            rows.append((t, X, s, p, q, oid, 0))
            live[oid][2] -= q
            if live[oid][2] <= 0:
                del live[oid]
        elif u < 0.85:
            oid = int(rng.choice(list(live)))
            s, p, rem = live.pop(oid)
            rows.append((t, D if rng.random() < 0.5 else C, s, p, rem, oid, 0))
        elif u < 0.95:
            rows.append((t, T, int(rng.choice([-1, 1])), 100, int(rng.integers(1, 9)), 0, FLAG_HIDDEN))
        else:  # an order that rested before the data starts
            rows.append((t, X, 1, 99, 5, 10_000 + nxt, 0))
            nxt += 1
    ev = _ev(rows)
    ev["ts_exch"] = ev["ts_local"] - rng.integers(0, 9, len(rows))
    return ev


def _run_all(ev, be, l2_frame=None):
    out = [hidden_liquidity(ev, l2_frame, grid_ns=20, backend=be),
           icebergs(ev, dt_ns=15, k=1, backend=be),
           quote_stuffing(ev, 10, k=1.5, median_windows=4, backend=be),
           latency_stats(ev, backend=be)]
    ts = ev["ts_local"]
    x = 100.0 + np.cumsum(np.where(np.arange(ts.size) % 3 == 0, 1.0, -0.5))
    out.append(lead_lag(ts, x, ts, np.roll(x, 2), np.arange(-6, 7, 2), grid_ns=2, backend=be))
    return out


@pytest.mark.parametrize("layout", ["l2", "l3"])
def test_cuda_twin_equals_cpu_twin(layout, rng, device_backend):
    ev = _l2_events(rng, 160) if layout == "l2" else _l3_events(rng, 160)
    frame = rebuild_book(ev, levels=2, every=1, backend="cpu") if layout == "l2" else None
    cpu = _run_all(ev, get_backend("cpu"), frame)
    dev = _run_all(ev, device_backend, frame)
    for a, b in zip(cpu, dev):
        _assert_same(a, b)
    assert cpu[0].mode == layout


@pytest.mark.parametrize("layout", ["l2", "l3"])
def test_causal(layout, rng):
    """Values stamped at or before t are the same when every event after t is removed."""
    ev = _l2_events(rng, 400) if layout == "l2" else _l3_events(rng, 400)
    ts = ev["ts_local"]
    full = _run_all(ev, "cpu")
    for cut in (int(ts[ts.size // 3]), int(ts[2 * ts.size // 3])):
        keep = ts <= cut
        part = _run_all({c: v[keep] for c, v in ev.items()}, "cpu")
        for a, b in ((full[0], part[0]), (full[2], part[2])):  # bucketed: every bucket that ends by the cut
            nb = int((a.ts_local <= cut).sum())
            for f in fields(a):
                va, vb = getattr(a, f.name), getattr(b, f.name)
                if isinstance(va, np.ndarray) and f.name != "event_hidden_lots":
                    np.testing.assert_array_equal(vb[:nb], va[:nb], err_msg=f.name)
        np.testing.assert_array_equal(part[0].event_hidden_lots, full[0].event_hidden_lots[keep])
        fi, pi = full[1], part[1]                                          # icebergs: detections up to the cut
        sel = fi.ts_local <= cut
        for f in ("index", "ts_local", "side", "price", "refills", "executed_lots", "chain"):
            np.testing.assert_array_equal(getattr(pi, f), getattr(fi, f)[sel], err_msg=f)


def test_icebergs_found_in_random_l3(rng):
    """The random L3 stream re-adds same-size orders often: detections exist and obey the rule."""
    ev = _l3_events(rng, 600)
    d = icebergs(ev, dt_ns=15, k=1, backend="cpu")
    assert d.index.size > 0
    assert (ev["kind"][d.index] == A).all()
    assert (d.refills >= 1).all() and (d.executed_lots > 0).all() and (d.chain < d.index).all()
    assert (ev["kind"][d.chain] == X).all()


# ============================================================================ real data
def _lobster_raw(path):
    with gzip.open(path, "rt") as fh:
        a = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    return a[:, 1].astype(np.int64), a[:, 3].astype(np.int64)


@pytest.mark.parametrize("symbol", ["AAPL", "GOOG"])
def test_lobster_hidden_volume_matches_raw_type5(symbol, shared_data):
    from gpuflow.io.lobster import read_lobster

    path = shared_data / "lobster" / f"{symbol}_2012-06-21_34200000_57600000_message_1.csv.gz"
    typ, size = _lobster_raw(path)                                       # the oracle: the raw CSV
    ev = read_lobster(path).tables[0]
    h = hidden_liquidity(ev, grid_ns=60_000_000_000, backend="cpu")
    assert h.mode == "l3"
    assert int(h.hidden_lots.sum()) == int(size[typ == 5].sum())
    assert int(h.hidden_count.sum()) == int((typ == 5).sum())
    assert int(h.traded_lots.sum()) == int(size[(typ == 4) | (typ == 5)].sum())
    assert h.ts_local.size == 390                                      # 09:30-16:00 in minutes
    share = float(h.hidden_lots.sum() / h.traded_lots.sum())
    assert 0.2 < share < 0.5                                           # AAPL 0.352, GOOG 0.303 on this day
    q = quote_stuffing(ev, 1_000_000_000, backend="cpu")
    assert int(q.messages.sum()) == typ.size
    assert int(q.cancels.sum()) == int(((typ == 2) | (typ == 3)).sum())
    assert int(q.trades.sum()) == int(((typ == 4) | (typ == 5)).sum())
    d = icebergs(ev, k=3, backend="cpu")
    assert d.index.size > 0 and (d.refills >= 3).all()


def _binance_raw_latencies(path):
    """Independent oracle: local - exchange time (ns) per message, from the raw JSON lines."""
    import orjson

    out = {"diff": [], "bbo": [], "trade": [], "clear": []}
    missing = 0
    with gzip.open(path, "rb") as fh:
        for line in fh:
            local, _, raw = line.partition(b" ")
            msg = orjson.loads(raw)
            data = msg.get("data", msg)
            if "lastUpdateId" in data:
                group, key = "clear", "E"
            else:
                group, key = {"depthUpdate": ("diff", "E"), "trade": ("trade", "T")}.get(data.get("e"), ("bbo", "E"))
            if key in data:
                out[group].append(int(local) - int(data[key]) * 1_000_000)
            else:
                missing += 1
    return {g: np.array(v, dtype=np.int64) for g, v in out.items() if v}, missing


@pytest.mark.parametrize("name", ["usdm/btcusdt_20240808.gz", "spot/btcusdt_20240808.gz"])
def test_binance_latency_matches_numpy(name, shared_data):
    from gpuflow.io.binance import read_binance

    path = shared_data / "binance" / name
    oracle, missing = _binance_raw_latencies(path)
    ev = read_binance(path).tables[0]
    qs = (1, 5, 25, 50, 75, 95, 99)
    s = latency_stats(ev, percentiles=qs, backend="cpu")
    assert sorted(s.names) == sorted(oracle)
    assert s.missing_ts_exch == missing
    for j, g in enumerate(s.names):
        o = oracle[g]
        assert int(s.count[j]) == o.size
        assert int(s.min_ns[j]) == int(o.min()) and int(s.max_ns[j]) == int(o.max())
        np.testing.assert_allclose(s.mean_ns[j], o.mean(), rtol=1e-12)
        np.testing.assert_allclose(s.percentiles_ns[j], np.percentile(o, qs), rtol=0, atol=1e-3)
    # the recorder's clock is ~1.27 s behind the exchange: the streams' median latencies are about -1.27 s
    # (the futures REST snapshot, a reply to a request, shows -1.18 s)
    streams = [j for j, g in enumerate(s.names) if g in ("diff", "bbo", "trade")]
    med = s.percentiles_ns[streams, qs.index(50)]
    assert med.size >= 2 and ((med > -1.28e9) & (med < -1.26e9)).all()


def _bbo_mid(ev):
    c = {k: ev.column(k).to_numpy() for k in ("ts_local", "kind", "side", "price", "flags")}
    b = np.flatnonzero(c["kind"] == KIND_BBO)
    e = b[(c["flags"][b] & FLAG_EOM) != 0]                   # bookTicker: bid row then ask row (end of message)
    assert (c["side"][e] == -1).all() and (c["side"][e - 1] == 1).all()
    return c["ts_local"][e], (c["price"][e] + c["price"][e - 1]) / 2.0


def _numpy_lead_lag(ts_a, x_a, ts_b, x_b, lags, g):
    t0 = -(-max(ts_a[0], ts_b[0]) // g) * g
    n = (min(ts_a[-1], ts_b[-1]) - t0) // g
    grid = t0 + g * np.arange(n + 1)
    ra = np.diff(np.log(x_a[np.searchsorted(ts_a, grid, side="right") - 1]))
    rb = np.diff(np.log(x_b[np.searchsorted(ts_b, grid, side="right") - 1]))
    out = []
    for s in lags // g:
        a, b = (ra[:n - s], rb[s:]) if s >= 0 else (ra[-s:], rb[:n + s])
        out.append(np.corrcoef(a, b)[0, 1])
    return np.array(out)


def _trade_prices(ev):
    """Trade prices on the exchange clock (trade time T), sorted by it."""
    c = {k: ev.column(k).to_numpy() for k in ("ts_exch", "kind", "price")}
    i = np.flatnonzero(c["kind"] == KIND_TRADE)
    o = np.argsort(c["ts_exch"][i], kind="stable")
    return c["ts_exch"][i][o], c["price"][i][o].astype(np.float64)


def test_binance_futures_lead_spot(shared_data):
    """Futures vs spot BTCUSDT, 2024-08-08 23:54-24:00 UTC: what the two recordings show.

    * Trade prices on the exchange clock (each trade's T), 1 ms grid: the correlation peaks at +3 ms
      (0.15) inside a bump over +1..+6 ms while every negative lag is near 0 (|corr| < 0.03): spot
      trades follow futures trades by a few ms.
    * bookTicker mids on the receiver's clock (spot bookTicker has no exchange time), 5 ms grid: the
      maximum is an isolated spike at +40 ms (0.20, neighbours ~0.03) on top of a two-sided peak
      around 0 (-5 ms 0.14, 0 0.12, +10 ms 0.15).  On this clock a lead mixes price discovery with the
      two feeds' delivery delays, so only the sign is read from it here.
    """
    from gpuflow.io.binance import read_binance

    fut = read_binance(shared_data / "binance" / "usdm" / "btcusdt_20240808.gz").tables[0]
    spot = read_binance(shared_data / "binance" / "spot" / "btcusdt_20240808.gz").tables[0]
    (fe, fp), (se, sp) = _trade_prices(fut), _trade_prices(spot)
    g = 1_000_000
    lags = np.arange(-20, 21) * g
    r = lead_lag(fe, fp, se, sp, lags, backend="cpu")
    assert r.grid_ns == g
    np.testing.assert_allclose(r.corr, _numpy_lead_lag(fe, fp, se, sp, lags, g), rtol=1e-9)
    assert 1_000_000 <= r.best_lag_ns <= 6_000_000 and r.best_corr > 0.1           # futures lead by ms
    lead = r.corr[(lags >= 1_000_000) & (lags <= 6_000_000)]
    lag = r.corr[(lags <= -1_000_000) & (lags >= -6_000_000)]
    assert lead.sum() > 0.4 and np.abs(lag).max() < 0.05

    (tf, mf), (ts, ms) = _bbo_mid(fut), _bbo_mid(spot)
    g = 5_000_000
    lags = np.arange(-20, 21) * g
    r = lead_lag(tf, mf, ts, ms, lags, grid_ns=g, backend="cpu")
    np.testing.assert_allclose(r.corr, _numpy_lead_lag(tf, mf, ts, ms, lags, g), rtol=1e-9)
    assert r.best_lag_ns == 40_000_000 and 0.15 < r.best_corr < 0.3
    assert r.corr[lags == 40_000_000][0] > r.corr[lags == -40_000_000][0] + 0.1


@pytest.mark.gpu
def test_real_data_on_device(shared_data):
    """On a GPU (GPUFLOW_TEST_GPU=1 -m gpu): the real samples give the CPU twins' results."""
    from gpuflow.io.binance import read_binance
    from gpuflow.io.lobster import read_lobster

    dev = get_backend("gpu")
    ev = read_lobster(shared_data / "lobster" / "AAPL_2012-06-21_34200000_57600000_message_1.csv.gz").tables[0]
    for f in (lambda be: hidden_liquidity(ev, grid_ns=60_000_000_000, backend=be),
              lambda be: icebergs(ev, k=3, backend=be),
              lambda be: quote_stuffing(ev, 1_000_000_000, backend=be),
              lambda be: latency_stats(ev, backend=be)):
        _assert_same(f("cpu"), f(dev))
    fut = read_binance(shared_data / "binance" / "usdm" / "btcusdt_20240808.gz").tables[0]
    spot = read_binance(shared_data / "binance" / "spot" / "btcusdt_20240808.gz").tables[0]
    frame = rebuild_book(fut, levels=5, every=1, backend="cpu")
    for f in (lambda be: hidden_liquidity(fut, frame, grid_ns=10_000_000_000, backend=be),
              lambda be: icebergs(fut, dt_ns=1_000_000_000, k=1, backend=be),
              lambda be: quote_stuffing(fut, 1_000_000_000, backend=be),
              lambda be: latency_stats(fut, backend=be)):
        _assert_same(f("cpu"), f(dev))
    (tf, mf), (ts, ms) = _bbo_mid(fut), _bbo_mid(spot)
    lags = np.arange(-100, 101) * 1_000_000
    _assert_same(lead_lag(tf, mf, ts, ms, lags, backend="cpu"), lead_lag(tf, mf, ts, ms, lags, backend=dev))
