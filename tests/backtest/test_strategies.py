"""The strategies on hand-built scenarios (orders and fills worked out by hand), sweep == exact parity,
and one run of each on the real Binance recordings (``slow``).

Orders are read with :func:`logged`: a wrapper strategy that calls a strategy's ``step`` and
appends every action it returns to its state vector.  The wrapper runs on the sweep engine
under the CUDA simulator (plain Python, no compile); the strategy itself runs on the exact
engine, and both must give the same fills.
"""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
from gpuflow.kernels import backtest as kb

from gpuflow.backtest import BacktestConfig, prepare_market, run
from gpuflow.backtest.engine import ConfigError, param_matrix
from gpuflow.backtest.strategies import STRATEGIES, get_strategy
from gpuflow.backtest.strategies import _common as cm
from gpuflow.schema import FLAG_EOM, KIND_SET, KIND_TRADE, Instrument, events_table

INS = Instrument("test", "X", "1", "1")
S, T = KIND_SET, KIND_TRADE
GTC, IOC, FOK, POST, MKT, CXL, CXL_ALL, MOD = 1, 2, 3, 4, 5, 6, 7, 8
NAMES = ["glft_mm", "grid_mm", "mean_reversion", "ofi_momentum", "liquidity_provision", "stat_arb",
         "model_driven", "stop_loss_overlay"]
LOG_MAX = 24


# ----------------------------------------------------------------------------- helpers
def table(rows, ins=INS, eom=None):
    """rows: (ts, kind, side, price, qty); every row ends its message unless ``eom`` says otherwise."""
    a = np.array(rows, dtype=np.int64)
    flags = np.full(len(rows), FLAG_EOM) if eom is None else np.where(np.asarray(eom), FLAG_EOM, 0)
    return events_table({"ts_local": a[:, 0], "kind": a[:, 1], "side": a[:, 2], "price": a[:, 3],
                         "qty": a[:, 4], "flags": flags}, ins)


def market(rows, signals=None, levels=3):
    return prepare_market(table(rows), levels=levels, signals=signals)


def _log_step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    n = inner_step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts)  # noqa: F821
    c = np.int64(state[LOG_BASE])  # noqa: F821
    for a in range(n):
        if c < LOG_MAX:
            j = LOG_BASE + 1 + c * 7  # noqa: F821
            state[j] = e
            for q in range(6):
                state[j + 1 + q] = acts[a, q]
            c += 1
    state[LOG_BASE] = c  # noqa: F821
    return n


def logged(strategy):
    """``strategy`` whose actions are appended to its state: (event, code, inst, side, price, qty, slot)."""
    base = max(int(strategy.STATE_SIZE), 1)
    g = {"np": np, "LOG_BASE": base, "LOG_MAX": LOG_MAX}
    step = types.FunctionType(_log_step.__code__, g, "step")
    return types.SimpleNamespace(NAME=f"logged_{strategy.NAME}", PARAMS=strategy.PARAMS,
                                 STATE_SIZE=base + 1 + 7 * LOG_MAX,
                                 CORES=(*strategy.CORES, ("inner_step", strategy.step)), step=step)


def actions_of(result, strategy, p=0):
    base = max(int(strategy.STATE_SIZE), 1)
    st = result.state[p]
    n = int(st[base])
    assert n < LOG_MAX, "action log full: make the scenario shorter"
    return [tuple(int(v) for v in st[base + 1 + 7 * i: base + 8 + 7 * i]) for i in range(n)]


def fills(r, p=0, inst=False):
    f = r.fills_of(p)
    if inst:
        return [(int(x[kb.F_EVENT]), int(x[kb.F_INST]), int(x[kb.F_SIDE]), int(x[kb.F_PRICE]), int(x[kb.F_QTY]),
                 int(x[kb.F_LIQ])) for x in f]
    return [(int(x[kb.F_EVENT]), int(x[kb.F_SIDE]), int(x[kb.F_PRICE]), int(x[kb.F_QTY]), int(x[kb.F_LIQ]))
            for x in f]


def both(name, params, mk, device_backend, **cfg):
    """Run ``name`` on the exact engine and its logged twin on the simulator; same fills; (exact, actions)."""
    st = get_strategy(name)
    c = BacktestConfig(levels=mk.levels, sample_ns=1_000, **cfg)
    ex = run(st, params, mk, c)
    lg = logged(st)
    sw = run(lg, params, mk, c, engine="sweep", backend=device_backend)
    np.testing.assert_array_equal(sw.fills, ex.fills)
    np.testing.assert_array_equal(sw.counters, ex.counters)
    np.testing.assert_array_equal(sw.account, ex.account)
    assert ex.counters[:, kb.N_BAD_ACTIONS].sum() == 0
    return ex, [actions_of(sw, st, p) for p in range(ex.params.shape[0])]


# ----------------------------------------------------------------------------- declarations and helpers
@pytest.mark.parametrize("name", NAMES)
def test_declared_parameter_space(name):
    st = get_strategy(name)
    assert STRATEGIES[name] == f"gpuflow.backtest.strategies.{name}" and st.NAME == name
    for k, (default, (lo, hi)) in st.PARAMS.items():
        assert lo <= default <= hi, k
    assert param_matrix(st, {}).shape == (1, len(st.PARAMS))
    assert st.STATE_SIZE >= 1 and callable(st.step)
    assert all(callable(c) for c in st.CORES)
    first = next(iter(st.PARAMS))
    with pytest.raises(ConfigError, match=f"parameter '{first}' of set 0"):
        param_matrix(st, {first: math.inf})


def test_deterministic_log_exp_match_libm():
    for u in [1e-9, 1e-4, 0.05, 0.1, 0.5, 1.0, 2.0, 10.0, 1e3, 1e6, 1e9, -0.5, -0.9]:
        assert cm.det_log1p(u) == pytest.approx(math.log1p(u), rel=2e-15, abs=1e-18)
    for x in [-20.0, -1.0, 0.0, 1e-6, 0.3, 0.5, 1.0, 1.0986, 2.7, 10.0, 21.7]:
        assert cm.det_exp(x) == pytest.approx(math.exp(x), rel=1e-14)


def test_state_int64_round_trip_and_book_helpers():
    st = np.zeros(2)
    for v in [0, 1, -1, 1_723_161_234_567_890_123, -(1 << 62), (1 << 62) + 12345]:
        cm.set_i64(st, 0, np.int64(v))
        assert cm.get_i64(st, 0) == v
    bp = np.array([[99, 98, 97]])
    bq = np.array([[10, 20, 0]])
    ap = np.array([[101, 102, 103]])
    aq = np.array([[5, 7, 9]])
    assert cm.book_ok(bp, bq, ap, aq, 0) and not cm.book_ok(bp, bq, ap, aq, -1)
    assert cm.micro_of(bp, bq, ap, aq, 0) == (99 * 5 + 101 * 10) / 15
    assert cm.depth_of(bq, 0, 3, 3) == 30 and cm.depth_of(aq, 0, 2, 3) == 12 and cm.depth_of(aq, 0, 9, 3) == 21
    assert cm.imbalance_of(bq, aq, 0, 2, 3) == (30 - 12) / 42
    assert cm.ceil_i64(2.0) == 2 and cm.ceil_i64(2.25) == 3 and cm.ceil_i64(-2.5) == -2
    # order view: slot 0 live bid, slot 1 bid being cancelled, slot 2 live ask of instrument 1
    orders = np.zeros((4, kb.NCOL), np.int64)
    orders[:, kb.O_CANCEL] = -1
    orders[0, [kb.O_STATE, kb.O_SIDE, kb.O_PRICE]] = (1, 1, 99)
    orders[1, [kb.O_STATE, kb.O_SIDE, kb.O_PRICE, kb.O_CANCEL]] = (1, 1, 98, 7)
    orders[2, [kb.O_STATE, kb.O_SIDE, kb.O_PRICE, kb.O_INST]] = (1, -1, 101, 1)
    assert cm.find_order(orders, 0, 1) == 0 and cm.find_order(orders, 0, -1) == -1
    assert cm.find_order_at(orders, 0, 1, 98) == -1 and cm.find_order_at(orders, 1, -1, 101) == 2
    assert cm.count_live(orders, 0) == 1 and cm.count_live(orders, -1) == 2
    assert cm.count_cancelling(orders, 0, 1) == 1 and cm.count_cancelling(orders, 0, -1) == 0
    assert cm.count_cancelling(orders, 0, 0) == 1 and cm.count_cancelling(orders, 1, 0) == 0


def test_zscore_update_by_hand():
    st = np.zeros(3)
    assert cm.zscore_update(st, 0, 100.0, 2.0) == 0.0 and st.tolist() == [100.0, 0.0, 1.0]
    assert cm.zscore_update(st, 0, 100.5, 2.0) == 0.0  # no variance yet
    assert st.tolist() == [100.25, 512.0 ** 2 / 2, 2.0]  # d = 0.5 -> D = 512
    z = cm.zscore_update(st, 0, 100.0, 2.0)  # d = -0.25: z = -256 / sqrt(131072)
    assert z == pytest.approx(-1 / math.sqrt(2), rel=1e-15)
    assert st.tolist() == [100.125, 131072 + (65536 - 131072) / 2, 3.0]


# ----------------------------------------------------------------------------- glft_mm
GLFT = {"gamma": 1.0, "kappa": 1.0, "arrival_a": 2.0, "sigma0": 1.0, "order_lots": 1, "max_position_lots": 1,
        "requote_ticks": 1}


def test_glft_mm_quotes_skew_and_requotes(device_backend):
    # gamma = kappa = 1, A = 2: c1 = ln 2, c2 = sqrt(1 / (2*1*2) * 2^2) = 1; sigma fixed at sigma0 = 1:
    # h2 = ceil(2 ln 2 + 1) = 3 half-ticks; skew k2 = trunc(2 q) half-ticks.
    # q = 0, mid2 = 200: bid = (200 - 3) // 2 = 98, ask = ceil(203 / 2) = 102
    rows = [(0, S, 1, 99, 10),   # e0 one-sided: nothing
            (1, S, -1, 101, 5),  # e1 -> post bid 98 (slot 0), ask 102 (slot 1)
            (2, S, 1, 98, 4),    # e2 orders arrive (new levels: queue 0); quotes unchanged
            (3, S, 1, 99, 0),    # e3 mid2 199: bid (199-3)//2 = 98 kept, ask ceil(202/2) = 101: move slot 1 (-> 2)
            (4, T, -1, 98, 5),   # e4 sell at 98 fills our bid (queue 0); not reported yet: nothing
            (5, S, -1, 101, 6),  # e5 told q = 1 = max: no bid; ask = ceil((199 + 3 - 2) / 2) = 100: move (-> 0)
            (6, T, 1, 100, 1),   # e6 buy at 100 fills our ask at the new level (queue 0)
            (7, S, 1, 97, 1)]    # e7 told q = 0: bid 98, ask 101 again
    ex, acts = both("glft_mm", dict(GLFT, vol_window=0), market(rows), device_backend)
    assert acts[0] == [(1, POST, 0, 1, 98, 1, 0), (1, POST, 0, -1, 102, 1, 0),
                       (3, MOD, 0, -1, 101, 1, 1),
                       (5, MOD, 0, -1, 100, 1, 2),
                       (7, POST, 0, 1, 98, 1, 0), (7, POST, 0, -1, 101, 1, 0)]
    assert fills(ex) == [(4, 1, 98, 1, 1), (6, -1, 100, 1, 1)]
    assert ex.counters[0, kb.N_ORDERS] == 6 and ex.counters[0, kb.N_CANCELS] == 2
    assert ex.account[0, 0, :2].tolist() == [0, 2]
    # constants: 2 c1 and c2^2
    assert ex.state[0, 1] == pytest.approx(2 * math.log(2), rel=1e-15) and ex.state[0, 2] == pytest.approx(1.0)


def test_glft_mm_waits_for_cancel_reports(device_backend):
    # entry latency 5 ns: a side whose cancel is not yet confirmed is left alone; sigma fixed at sigma0 = 1
    rows = [(0, S, 1, 99, 10), (0, S, -1, 101, 5),  # e1 post bid 98 (slot 0), ask 102 (slot 1); arrive at 5
            (1, S, -1, 103, 5),                      # e2 quotes unchanged
            (10, S, 1, 100, 3),                      # e3 mid2 201: bid 99: move slot 0 (cancel at 15; new slot 2)
            (12, S, -1, 101, 0),                     # e4 mid2 203: bid 100 but slot 0's cancel is unconfirmed:
                                                     #    wait; ask 103: move slot 1 (new slot 3)
            (20, S, -1, 104, 1)]                     # e5 reports in: move the bid (slot 2) to 100 (new slot 0)
    ex, acts = both("glft_mm", dict(GLFT, vol_window=0), market(rows), device_backend, entry_latency_ns=5)
    assert acts[0] == [(1, POST, 0, 1, 98, 1, 0), (1, POST, 0, -1, 102, 1, 0), (3, MOD, 0, 1, 99, 1, 0),
                       (4, MOD, 0, -1, 103, 1, 1), (5, MOD, 0, 1, 100, 1, 2)]
    assert ex.counters[0, kb.N_REJECTS] == 0 and fills(ex) == []


def test_glft_mm_online_volatility():
    # EWMA weight 1/2 of squared mid2 changes and elapsed ns (first sample sets them):
    # e2: d = +1, dt = 1 s -> D2 = 1, DT = 1e9;  e3: d = -1, dt = 2 s -> D2 = 1, DT = 1.5e9
    # sigma^2 = 1 / 1.5e9 * 2.5e8 = 1/6 tick^2/s
    s = 1_000_000_000
    rows = [(0, S, 1, 99, 10), (0, S, -1, 101, 5), (s, S, 1, 100, 3), (3 * s, S, 1, 100, 0)]
    ex = run(get_strategy("glft_mm"), dict(GLFT, vol_window=2), market(rows), BacktestConfig(levels=3))
    st = ex.state[0]
    # state: init, 2 c1, c2^2, mid2, t (2 slots), EWMA dmid2^2, EWMA dt, samples
    assert st[6] == 1.0 and st[7] == 1.5e9 and st[8] == 2.0
    assert cm.get_i64(st, 4) == 3 * s and st[3] == 200.0


# ----------------------------------------------------------------------------- grid_mm
def test_grid_mm_levels_refill_position_limit_and_recenter(device_backend):
    p = {"levels": 2, "step_ticks": 1, "recenter_ticks": 1, "order_lots": 1, "max_position_lots": 2}
    rows = [(0, S, 1, 99, 10),    # e0
            (1, S, -1, 101, 5),   # e1 anchor 200: bids 99, 98; asks 101, 102 (slots 0..3)
            (2, S, 1, 98, 20),    # e2 all on the grid: nothing
            (3, T, 1, 101, 6),    # e3 buy of 6 passes our ask's queue of 5: 1 lot filled (reported at e4)
            (4, S, 1, 100, 2),    # e4 told pos -1: re-post ask 101 (slot 1); mid2 201 within 2 of 200
            (5, T, 1, 101, 6),    # e5 it joins behind 5 and is filled again
            (6, S, -1, 104, 4),   # e6 told pos -2 = -max: cancel the ask at 102 (slot 3)
            (7, S, -1, 101, 0),   # e7 mid2 = 204 > 200 + 2: anchor 204 -> bids 101, 100: cancel 99, 98, post
            (8, T, -1, 100, 3),   # e8 sell at 100: through our 101 bid (whole), passes 100's queue of 2 by 1
            (9, S, 1, 97, 5)]     # e9 told pos 0: the whole grid around 204 (asks 103, 104; best bid 100)
    ex, acts = both("grid_mm", p, market(rows), device_backend)
    assert acts[0] == [(1, POST, 0, 1, 99, 1, 0), (1, POST, 0, -1, 101, 1, 0), (1, POST, 0, 1, 98, 1, 0),
                       (1, POST, 0, -1, 102, 1, 0),
                       (4, POST, 0, -1, 101, 1, 0),
                       (6, CXL, 0, 0, 0, 0, 3),
                       (7, CXL, 0, 0, 0, 0, 0), (7, CXL, 0, 0, 0, 0, 2), (7, POST, 0, 1, 101, 1, 0),
                       (7, POST, 0, 1, 100, 1, 0),
                       (9, POST, 0, 1, 101, 1, 0), (9, POST, 0, -1, 103, 1, 0), (9, POST, 0, 1, 100, 1, 0),
                       (9, POST, 0, -1, 104, 1, 0)]
    assert fills(ex) == [(3, -1, 101, 1, 1), (5, -1, 101, 1, 1), (8, 1, 101, 1, 1), (8, 1, 100, 1, 1)]
    assert ex.counters[0, kb.N_ORDERS] == 11 and ex.counters[0, kb.N_CANCELS] == 3
    assert ex.account[0, 0, :2].tolist() == [0, 1]
    assert ex.state[0, 1] == 204.0


# ----------------------------------------------------------------------------- mean_reversion
def test_mean_reversion_enters_on_z_and_exits_on_reversion(device_backend):
    p = {"window": 2, "entry_z": 2, "exit_z": 0.5, "warmup": 3, "use_micro": 0, "order_lots": 1,
         "max_position_lots": 1}
    # mids and z (EWMA weight 1/2, see test_zscore_update_by_hand for the first three):
    # e1 100 | e2 100.5 | e3 100 (z -0.71) | e4 100 (z -0.41, flat: nothing) | e5 102: m 100.0625,
    # v 57344 -> z = 1984 / sqrt(57344) = 8.29 > 2: sell 1 IOC at the bid 99 | e6 filled, z 0.70: hold |
    # e7 mid 101.5, m 101.515625 -> z = -0.013: |z| < 0.5, pos -1: buy 1 IOC at the ask 104 | e8 filled
    rows = [(0, S, 1, 99, 10), (1, S, -1, 101, 10), (2, S, 1, 100, 10), (3, S, 1, 100, 0), (4, S, -1, 105, 10),
            (5, S, -1, 101, 0), (6, S, 1, 98, 5), (7, S, -1, 104, 3), (8, T, 1, 104, 1)]
    ex, acts = both("mean_reversion", p, market(rows), device_backend)
    assert acts[0] == [(5, IOC, 0, -1, 99, 1, 0), (7, IOC, 0, 1, 104, 1, 0)]
    assert fills(ex) == [(6, -1, 99, 1, 2), (8, 1, 104, 1, 2)]
    assert ex.account[0, 0, :2].tolist() == [0, -5]
    assert ex.state[0, 2] == 8.0  # samples (e1..e8)


# ----------------------------------------------------------------------------- ofi_momentum
def test_ofi_momentum_entry_hold_time_and_reversal(device_backend):
    p = {"threshold": 5, "hold_ns": 3, "order_lots": 2, "aggress_ticks": 1}
    rows = [(0, S, 1, 99, 10), (1, S, -1, 101, 10), (2, S, 1, 98, 5), (3, S, -1, 102, 4), (4, S, 1, 97, 3),
            (5, S, 1, 96, 1), (6, T, 1, 101, 1), (7, T, 1, 101, 1), (8, T, 1, 101, 1), (9, T, 1, 101, 1),
            (10, T, 1, 101, 1)]
    sig = np.array([0, 0, 7, 7, 0, 0, -8, -8, -8, 6, 0], dtype=float)
    # e2 s=7: buy 2 IOC at ask+1=102 (fills 2 at 101, e3) | e4 held 2 < 3 | e5 held 3: sell 2 IOC at 98 (fills at 99)
    # e6 flat, s=-8: sell 2 at 98 (fills at 99, e7) | e9 short and s=6 > 5: reversal, buy 2 at 102 (fills at 101)
    ex, acts = both("ofi_momentum", p, market(rows, sig), device_backend)
    assert acts[0] == [(2, IOC, 0, 1, 102, 2, 0), (5, IOC, 0, -1, 98, 2, 0), (6, IOC, 0, -1, 98, 2, 0),
                       (9, IOC, 0, 1, 102, 2, 0)]
    assert fills(ex) == [(3, 1, 101, 2, 2), (6, -1, 99, 2, 2), (7, -1, 99, 2, 2), (10, 1, 101, 2, 2)]
    assert ex.account[0, 0, :2].tolist() == [0, -8]
    sig[4] = np.nan  # a NaN signal is a counted invalid decision
    ex = run(get_strategy("ofi_momentum"), p, market(rows, sig), BacktestConfig(levels=3))
    assert ex.counters[0, kb.N_NAN_ACTIONS] == 1


def test_ofi_signal_rolling_window_by_hand():
    from gpuflow.backtest.strategies.ofi_momentum import ofi_signal

    rows = [(0, S, 1, 99, 10), (1, S, -1, 101, 5), (2, S, 1, 99, 12), (3, S, -1, 101, 3), (4, T, 1, 101, 1)]
    # best-level OFI per complete message: 0 (the first book), -5 (ask appears), +2, +2, 0
    # rolling sum over (t - 2, t]: 0, -5, -3, 4, 2
    assert ofi_signal(table(rows), 2).tolist() == [0, -5, -3, 4, 2]
    # e2 not the end of its message: books after e0, e1, e3 (+2 +2 = 4), e4; e2 sees e1's book, and at t=2
    # the window (0, 2] holds only e1's -5
    assert ofi_signal(table(rows, eom=[1, 1, 0, 1, 1]), 2).tolist() == [0, -5, -5, 4, 4]
    with pytest.raises(ConfigError, match="window_ns"):
        ofi_signal(table(rows), 0)


# ----------------------------------------------------------------------------- liquidity_provision
def test_liquidity_provision_quotes_favoured_side_and_cancels_on_flip(device_backend):
    p = {"depth_levels": 2, "entry_imbalance": 0.3, "exit_imbalance": 0.0, "order_lots": 1, "max_position_lots": 1}
    rows = [(0, S, 1, 99, 10),    # e0
            (1, S, -1, 101, 10),  # e1 I = 0
            (2, S, 1, 98, 20),    # e2 I = (30-10)/40 = 0.5 > 0.3: join the bid at 99
            (3, S, 1, 100, 5),    # e3 I = (15-10)/25 = 0.2 >= 0: keep, but the touch moved: move to 100
            (4, T, -1, 100, 6),   # e4 sell of 6 passes the queue of 5: bid filled (reported at e5)
            (5, S, -1, 101, 40),  # e5 I = (15-40)/55 = -0.45, pos 1: join the ask at 101
            (6, S, -1, 101, 10),  # e6 I = 0.2 > -0: imbalance flipped, cancel the ask
            (7, S, -1, 101, 50),  # e7 I = -0.54: join the ask again (queue 50)
            (8, T, 1, 101, 60)]   # e8 buy of 60 passes it: ask filled
    ex, acts = both("liquidity_provision", p, market(rows), device_backend)
    assert acts[0] == [(2, POST, 0, 1, 99, 1, 0), (3, MOD, 0, 1, 100, 1, 0), (5, POST, 0, -1, 101, 1, 0),
                       (6, CXL, 0, 0, 0, 0, 0), (7, POST, 0, -1, 101, 1, 0)]
    assert fills(ex) == [(4, 1, 100, 1, 1), (8, -1, 101, 1, 1)]
    assert ex.counters[0, kb.N_ORDERS] == 4 and ex.counters[0, kb.N_CANCELS] == 2
    assert ex.account[0, 0, :2].tolist() == [0, 1]


# ----------------------------------------------------------------------------- stat_arb
def _pair_market(a_rows, b_rows, signals=None):
    a = table(a_rows, Instrument("test", "A", "0.01", "1"))
    b = table(b_rows, Instrument("test", "B", "0.1", "1"))
    return prepare_market([a, b], levels=3, signals=signals)


def test_stat_arb_two_legs_on_basis_z(device_backend):
    from gpuflow.backtest.strategies.stat_arb import tick_ratio

    # basis = 10 * mid_B - mid_A (ticks of A); samples from t3 (both books):
    # t3 0 | t4 5 | t5 0 (z -0.71) | t6 0 (z -0.41) | t7 0 (z -0.27) | t8 15: z = 15040/sqrt(3072000) = 8.58 > 2:
    # sell 1 B IOC at its bid 999, buy 3 A IOC at its ask 10001 (fills at t9) | t10 basis 0, z -1.25: hold |
    # t11 z -0.55: hold | t12 z -0.34: |z| < 0.5, flatten: buy 1 B at 1001, sell 3 A at 9999 (fills at t13)
    a_rows = [(0, S, 1, 9999, 10), (1, S, -1, 10001, 10), (6, S, 1, 9990, 4), (9, S, -1, 10003, 2),
              (11, S, 1, 9999, 20), (13, T, 1, 10001, 1)]
    b_rows = [(2, S, 1, 999, 5), (3, S, -1, 1001, 5), (4, S, 1, 1000, 5), (5, S, 1, 1000, 0), (7, S, -1, 1004, 5),
              (8, S, -1, 1001, 0), (10, S, -1, 1001, 5), (12, S, 1, 999, 6)]
    mk = _pair_market(a_rows, b_rows)
    assert tick_ratio(mk) == 10.0
    p = {"tick_ratio": 10, "window": 2, "entry_z": 2, "exit_z": 0.5, "warmup": 3, "order_lots_0": 3,
         "order_lots_1": 1}
    ex, acts = both("stat_arb", p, mk, device_backend)
    assert acts[0] == [(8, IOC, 1, -1, 999, 1, 0), (8, IOC, 0, 1, 10001, 3, 0),
                       (12, IOC, 1, 1, 1001, 1, 0), (12, IOC, 0, -1, 9999, 3, 0)]
    assert fills(ex, inst=True) == [(9, 1, -1, 999, 1, 2), (9, 0, 1, 10001, 3, 2), (13, 1, 1, 1001, 1, 2),
                                    (13, 0, -1, 9999, 3, 2)]
    assert ex.account[0, :, :2].tolist() == [[0, -6], [0, -2]]
    with pytest.raises(ConfigError, match="2 instruments"):
        tick_ratio(market([(0, S, 1, 99, 1)]))


# ----------------------------------------------------------------------------- model_driven
def test_model_driven_proportional_and_fixed_sizing(device_backend):
    rows = [(0, S, 1, 99, 10), (1, S, -1, 101, 10)] + [(t, T, 1, 101, 1) for t in range(2, 10)]
    sig = np.array([0, 0.2, 1.2, 1.2, 3.0, np.nan, -0.7, 0.1, 0.1, 0.1])
    prop = {"threshold": 0.5, "sizing": 1, "lots_per_unit": 2, "max_position_lots": 3, "flat_inside": 1}
    fixed = dict(prop, sizing=0, order_lots=1)
    ex, acts = both("model_driven", [prop, fixed], market(rows, sig), device_backend)
    # (each IOC fills at the next event and is reported there: zero latency)
    # proportional: targets trunc(2 x): e2 2 -> buy 2 | e4 6 -> 3: buy 1 | e5 NaN | e6 -1: sell 4 | e7 0: buy 1
    assert acts[0] == [(2, IOC, 0, 1, 101, 2, 0), (4, IOC, 0, 1, 101, 1, 0), (6, IOC, 0, -1, 99, 4, 0),
                       (7, IOC, 0, 1, 101, 1, 0)]
    assert fills(ex, 0) == [(3, 1, 101, 2, 2), (5, 1, 101, 1, 2), (7, -1, 99, 4, 2), (8, 1, 101, 1, 2)]
    assert ex.account[0, 0, :2].tolist() == [0, -8]
    # fixed: targets +-1: e2 buy 1 | e4 already 1 | e6 -1: sell 2 | e7 0: buy 1
    assert acts[1] == [(2, IOC, 0, 1, 101, 1, 0), (6, IOC, 0, -1, 99, 2, 0), (7, IOC, 0, 1, 101, 1, 0)]
    assert ex.counters[:, kb.N_NAN_ACTIONS].tolist() == [1, 1]


# ----------------------------------------------------------------------------- stop_loss_overlay
def test_stop_loss_overlay_exits_when_our_side_thins(device_backend):
    rows = [(0, S, 1, 99, 10),   # e0
            (1, S, -1, 101, 10),  # e1 B 10 A 10: first sample
            (2, S, 1, 98, 10),   # e2 B 20; script +1: market buy 1
            (3, S, -1, 102, 10),  # e3 filled at 101; Eb = 15 -> 17.5
            (4, S, 1, 99, 4),    # e4 told long; B = 14 >= 0.5 * 17.5; I = (14-20)/34 = -0.18
            (5, S, 1, 98, 2),    # e5 B = 6 < 0.5 * 15.75: stop, market sell
            (6, T, 1, 101, 1)]   # e6 sold at 99
    sig = np.zeros(len(rows))
    sig[2] = 1
    depth = {"depth_levels": 2, "depth_window": 2, "collapse_frac": 0.5, "imbalance_stop": -1, "warmup": 2}
    imb = dict(depth, collapse_frac=0.0, imbalance_stop=-0.1)  # I < -0.1 at e4: sell there (filled at e5)
    off = dict(depth, collapse_frac=0.0)
    ex, acts = both("stop_loss_overlay", [depth, imb, off], market(rows, sig), device_backend)
    assert acts[0] == [(2, MKT, 0, 1, 0, 1, 0), (5, MKT, 0, -1, 0, 1, 0)]
    assert fills(ex, 0) == [(3, 1, 101, 1, 2), (6, -1, 99, 1, 2)]
    assert acts[1] == [(2, MKT, 0, 1, 0, 1, 0), (4, MKT, 0, -1, 0, 1, 0)]
    assert fills(ex, 1) == [(3, 1, 101, 1, 2), (5, -1, 99, 1, 2)]
    assert acts[2] == [(2, MKT, 0, 1, 0, 1, 0)] and ex.account[2, 0, 0] == 1


# ----------------------------------------------------------------------------- parity
def _random_rows(rng, n, lo=95, hi=106, t0=0):
    rows = []
    t = t0
    mid = (lo + hi) // 2
    for _ in range(n):
        t += int(rng.integers(1, 5))
        if rng.random() < 0.25:
            rows.append((t, T, int(rng.choice([-1, 1])), int(rng.integers(lo, hi + 1)), int(rng.integers(1, 8))))
        else:
            sd = int(rng.choice([-1, 1]))
            rows.append((t, S, sd, int(rng.integers(lo - 1, mid)) if sd > 0 else int(rng.integers(mid + 1, hi + 2)),
                         int(rng.integers(0, 15))))
    return rows


PARITY = {
    # timestamps here are a few ns apart, so sigma is ~1e4 ticks/sqrt(s): a large A keeps the quotes near the touch
    "glft_mm": [{"gamma": g, "kappa": 0.5, "arrival_a": 1e8, "vol_window": vw, "sigma0": 1e4, "max_position_lots": 3,
                 "requote_ticks": rq} for g in (0.05, 1.0) for rq, vw in ((1, 20), (2, 0))],
    "grid_mm": [{"levels": lv, "step_ticks": s, "recenter_ticks": 1, "max_position_lots": 4}
                for lv in (2, 4) for s in (1, 2)],
    "mean_reversion": [{"window": 10, "warmup": 5, "entry_z": z, "exit_z": 0.2, "use_micro": u,
                        "max_position_lots": 2} for z in (0.5, 1.5) for u in (0, 1)],
    "ofi_momentum": [{"threshold": th, "hold_ns": 30, "order_lots": 2, "market_orders": m}
                     for th in (0.5, 1.5) for m in (0, 1)],
    "liquidity_provision": [{"depth_levels": d, "entry_imbalance": 0.2, "exit_imbalance": x}
                            for d in (1, 3) for x in (0.0, -0.2)],
    "model_driven": [{"signal_col": 1, "threshold": 0.3, "sizing": s, "lots_per_unit": 3, "max_position_lots": 4,
                      "flat_inside": f} for s in (0, 1) for f in (0, 1)],
    "stop_loss_overlay": [{"signal_col": 2, "depth_levels": d, "depth_window": 5, "collapse_frac": 0.6,
                           "imbalance_stop": i, "warmup": 3, "market_orders": 0, "aggress_ticks": 1}
                          for d in (1, 3) for i in (-1.0, -0.3)],
}


@pytest.mark.parametrize("name", list(PARITY))
def test_sweep_engine_equals_exact_engine(device_backend, name):
    # small on purpose: the CUDA simulator runs each thread's loop in Python; one strategy per test so that
    # a device run (one kernel compile per strategy) can spread them over processes
    rng = np.random.default_rng(11)
    rows = _random_rows(rng, 150)
    sig = np.column_stack([rng.normal(size=len(rows)), rng.normal(size=len(rows)),
                           rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], size=len(rows))])
    mk = market(rows, sig)
    cfg = BacktestConfig(levels=3, sample_ns=50, entry_latency_ns=3, response_latency_ns=2, maker_fee_bps=-0.25,
                         taker_fee_bps=5, decision_interval_ns=0, queue_model="probabilistic")
    sets = PARITY[name]
    st = get_strategy(name)
    ex = run(st, sets, mk, cfg, engine="exact")
    sw = run(st, sets, mk, cfg, engine="sweep", backend=device_backend)
    np.testing.assert_array_equal(sw.counters, ex.counters, err_msg=name)
    np.testing.assert_array_equal(sw.account, ex.account, err_msg=name)
    np.testing.assert_array_equal(sw.equity2, ex.equity2, err_msg=name)
    np.testing.assert_array_equal(sw.fills, ex.fills, err_msg=name)
    np.testing.assert_array_equal(sw.state, ex.state, err_msg=name)
    assert ex.counters[:, kb.N_BAD_ACTIONS].sum() == 0, name
    assert ex.counters[:, kb.N_FILLS].sum() > 0, name


def test_stat_arb_sweep_equals_exact(device_backend):
    rng = np.random.default_rng(3)
    a_rows = [(t, k, sd, p * 10, q) for t, k, sd, p, q in _random_rows(rng, 80, 995, 1006)]
    b_rows = [(t + 1, k, sd, p, q) for t, k, sd, p, q in _random_rows(rng, 80, 995, 1006)]
    mk = _pair_market(a_rows, b_rows)
    sets = [{"tick_ratio": 10, "window": 8, "warmup": 4, "entry_z": z, "exit_z": 0.3, "market_orders": m,
             "order_lots_0": 2} for z in (0.5, 1.5) for m in (0, 1)]
    cfg = BacktestConfig(levels=3, sample_ns=50, entry_latency_ns=2, response_latency_ns=1, taker_fee_bps=5)
    st = get_strategy("stat_arb")
    ex = run(st, sets, mk, cfg)
    sw = run(st, sets, mk, cfg, engine="sweep", backend=device_backend)
    for a in ("counters", "account", "equity2", "fills", "state"):
        np.testing.assert_array_equal(getattr(sw, a), getattr(ex, a), err_msg=a)
    assert ex.counters[:, kb.N_FILLS].sum() > 0
    # each set's equity samples are its own: the engines record them (sample, instrument, set) and return them
    # (set, sample, instrument); a set run alone (the oracle: one set, nothing to mix up) gives the same rows,
    # per instrument
    assert ex.equity2.shape == (4, ex.sample_ts.size, 2)
    assert len({r.tobytes() for r in ex.equity2}) > 1 and (ex.equity2[:, :, 0] != ex.equity2[:, :, 1]).any()
    for i, one in enumerate(sets):
        alone = run(st, [one], mk, cfg)
        for a in ("equity2", "equity_fee", "equity_fee_rem"):
            assert getattr(ex, a).flags.c_contiguous and getattr(sw, a).flags.c_contiguous
            np.testing.assert_array_equal(getattr(ex, a)[i], getattr(alone, a)[0], err_msg=f"{a}, set {i}")
            np.testing.assert_array_equal(getattr(sw, a)[i], getattr(alone, a)[0], err_msg=f"{a}, set {i}")


# ----------------------------------------------------------------------------- real data
REAL = {  # name: (market, params); exact engine, 2 ms latencies, Binance VIP0 fees
    "glft_mm": ("usdm", {"max_position_lots": 5}),
    "grid_mm": ("usdm", {"levels": 3, "step_ticks": 2, "recenter_ticks": 4, "max_position_lots": 6}),
    "mean_reversion": ("usdm", {"aggress_ticks": 1}),
    "ofi_momentum": ("usdm", {"signal_col": 0, "threshold": 20_000, "hold_ns": 2e9, "aggress_ticks": 1}),
    "liquidity_provision": ("usdm", {}),
    "model_driven": ("usdm", {"signal_col": 1, "threshold": 0.4, "aggress_ticks": 1}),
    "stop_loss_overlay": ("usdm", {"signal_col": 2}),
    "stat_arb": ("pair", {"tick_ratio": 10, "order_lots_0": 100_000, "order_lots_1": 1, "aggress_ticks": 1}),
}


@pytest.fixture(scope="module")
def real_markets(shared_data):
    from gpuflow.backtest.strategies.ofi_momentum import ofi_signal
    from gpuflow.backtest.strategies.stat_arb import tick_ratio
    from gpuflow.io.binance import read_binance

    fut = read_binance(shared_data / "binance" / "usdm" / "btcusdt_20240808.gz").tables[0]
    spot = read_binance(shared_data / "binance" / "spot" / "btcusdt_20240808.gz").tables[0]
    base = prepare_market(fut, levels=5)
    r = base.row
    bp, bq, ap, aq = base.bid_price[r, 0], base.bid_qty[r, 0], base.ask_price[r, 0], base.ask_qty[r, 0]
    ok = (bq > 0) & (aq > 0) & (bp < ap)
    # signals: 0 = 1 s best-level OFI (lots); 1 = a causal "prediction": microprice - mid (ticks);
    # 2 = scripted entries for the stop-loss overlay: the sign of the 1 s OFI beyond 20 BTC (20000 lots)
    ofi = ofi_signal(fut, 1_000_000_000)
    micro = np.zeros(base.n_events)
    micro[ok] = (bp[ok] * aq[ok] + ap[ok] * bq[ok]) / (bq[ok] + aq[ok]) - (bp[ok] + ap[ok]) / 2
    entries = np.where(ofi > 20_000, 1.0, np.where(ofi < -20_000, -1.0, 0.0))
    usdm = prepare_market(fut, levels=5, signals=np.column_stack([ofi, micro, entries]),
                          signal_names=["ofi_1s", "micro_minus_mid", "ofi_entries"])
    pair = prepare_market([spot, fut], levels=5)
    assert tick_ratio(pair) == 10.0
    return {"usdm": usdm, "pair": pair}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_strategies_on_binance_usdm_recording(name, real_markets):
    which, params = REAL[name]
    mk = real_markets[which]
    cfg = BacktestConfig(levels=5, entry_latency_ns=2_000_000, response_latency_ns=2_000_000, maker_fee_bps=2,
                         taker_fee_bps=5, queue_model="probabilistic", sample_ns=1_000_000_000)
    st = get_strategy(name)
    r = run(st, params, mk, cfg)
    c = r.counters[0]
    m = r.metrics()
    print(f"\n{name}: fills {c[kb.N_FILLS]} (maker {c[kb.N_MAKER]}, taker {c[kb.N_TAKER]}), orders {c[kb.N_ORDERS]}, "
          f"cancels {c[kb.N_CANCELS]}, rejects {c[kb.N_REJECTS]}, max |pos| {c[kb.MAX_ABS_POS]}, end pos "
          f"{r.account[0, :, 0].tolist()}, pnl gross {m['pnl_gross'][0]:.4f} fees {m['fees'][0]:.4f} "
          f"net {m['pnl'][0]:.4f} USDT")
    assert 0 < c[kb.N_DECISIONS] <= mk.n_events  # one per complete message (decision_interval_ns = 0)
    assert c[kb.N_BAD_ACTIONS] == 0 and c[kb.N_NAN_ACTIONS] == 0
    assert c[kb.N_FILLS] > 0 and c[kb.N_FILLS_DROPPED] == 0 and c[kb.N_NOTICES_DROPPED] == 0
    assert np.isfinite(m["pnl"][0]) and np.isfinite(m["pnl_gross"][0])
    p = param_matrix(st, params)[0]
    names = list(st.PARAMS)
    if "max_position_lots" in names:
        lots = p[names.index("order_lots")]
        # makers: one order per side, plus one being cancelled that can still fill
        assert c[kb.MAX_ABS_POS] <= p[names.index("max_position_lots")] + 2 * lots
