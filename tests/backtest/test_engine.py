"""The fill model on hand-built scenarios (expected fills written out), and sweep == exact parity."""
from __future__ import annotations

import numpy as np
import pytest

from gpuflow.backtest import BacktestConfig, prepare_market, run
from gpuflow.backtest.engine import ConfigError
from gpuflow.backtest.strategies import get_strategy
from gpuflow.kernels import backtest as kb
from gpuflow.schema import FLAG_EOM, KIND_SET, KIND_TRADE, Instrument, events_table

INS = Instrument("test", "X", "1", "1")
S, T = KIND_SET, KIND_TRADE
SCRIPT = get_strategy("scripted")
GTC, IOC, FOK, POST, MKT, CXL, CXL_ALL = 1, 2, 3, 4, 5, 6, 7


def market(rows, actions, levels=3):
    """rows: (ts, kind, side, price, qty); actions: {row index: (code, side, price, qty, slot)}."""
    a = np.array(rows, dtype=np.int64)
    ev = events_table({"ts_local": a[:, 0], "kind": a[:, 1], "side": a[:, 2], "price": a[:, 3], "qty": a[:, 4],
                       "flags": np.full(len(rows), FLAG_EOM)}, INS)
    sig = np.zeros((len(rows), 5))
    for i, act in actions.items():
        sig[i] = act
    return prepare_market(ev, levels=levels, signals=sig)


BOOK = [(0, S, 1, 99, 10), (1, S, 1, 98, 20), (2, S, -1, 101, 5), (3, S, -1, 102, 7)]


def go(rows, actions, **cfg):
    c = BacktestConfig(levels=3, sample_ns=1000, **cfg)
    return run(SCRIPT, {}, market(rows, actions), c)


def fills(r):
    f = r.fills_of(0)
    return [(int(x[kb.F_EVENT]), int(x[kb.F_SIDE]), int(x[kb.F_PRICE]), int(x[kb.F_QTY]), int(x[kb.F_LIQ]))
            for x in f]


def test_resting_bid_fills_when_trades_pass_its_queue():
    # bid 4 lots at 99 joins behind 10; sells of 6 and 6 at 99 pass the queue by 2 -> partial fill of 2
    rows = BOOK + [(10, T, -1, 99, 6), (11, T, -1, 99, 6), (12, T, -1, 99, 5)]
    r = go(rows, {3: (GTC, 1, 99, 4, 0)})
    assert fills(r) == [(5, 1, 99, 2, 1), (6, 1, 99, 2, 1)]
    r = go(rows, {3: (GTC, 1, 99, 4, 0)}, partial_fills=False)
    assert fills(r) == [(5, 1, 99, 4, 1)]
    assert r.counters[0, kb.N_MAKER] == 1 and r.account[0, 0, 0] == 4 and r.account[0, 0, 1] == -396


def test_only_the_recorded_part_of_the_fills_buffer_comes_back():
    # a buffer of max_fills (100,000) per set is allocated; the result keeps columns up to the most fills any
    # set recorded (two here), and a run with no fill returns none
    rows = BOOK + [(10, T, -1, 99, 6), (11, T, -1, 99, 6), (12, T, -1, 99, 5)]
    assert go(rows, {3: (GTC, 1, 99, 4, 0)}).fills.shape == (1, 2, kb.NFILL)
    assert go(rows, {3: (GTC, 1, 90, 4, 0)}).fills.shape == (1, 0, kb.NFILL)


def test_trade_through_and_crossing_fill_whole_order():
    rows = BOOK + [(10, T, -1, 97, 1)]  # a sell at 97 trades through our 99 bid
    assert fills(go(rows, {3: (GTC, 1, 99, 4, 0)})) == [(4, 1, 99, 4, 1)]
    rows = BOOK + [(10, S, -1, 99, 3)]  # the ask comes down to our bid
    assert fills(go(rows, {3: (GTC, 1, 99, 4, 0)})) == [(4, 1, 99, 4, 1)]


def test_market_order_walks_levels_and_pays_taker_fee():
    rows = BOOK + [(10, S, 1, 97, 1)]
    r = go(rows, {3: (MKT, 1, 0, 9, 0)}, taker_fee_bps=5, maker_fee_bps=-1)
    assert fills(r) == [(4, 1, 101, 5, 2), (4, 1, 102, 4, 2)]
    # cash = -(5*101 + 4*102) = -913; fee = 913 * 500 ppm
    # pos, cash, fee (whole ticks x lots, then millionths), lots, notional: 913 * 500 / 1e6 = 0.4565
    assert r.account[0, 0].tolist() == [9, -913, 0, 9, 913, 456_500]


def test_ioc_fok_post_only():
    rows = BOOK + [(10, S, 1, 97, 1)]
    assert fills(go(rows, {3: (IOC, 1, 101, 9, 0)})) == [(4, 1, 101, 5, 2)]  # rest cancelled
    r = go(rows, {3: (FOK, 1, 101, 9, 0)})
    assert fills(r) == [] and r.counters[0, kb.N_REJECTS] == 1
    assert fills(go(rows, {3: (FOK, 1, 102, 9, 0)})) == [(4, 1, 101, 5, 2), (4, 1, 102, 4, 2)]
    r = go(rows, {3: (POST, 1, 101, 1, 0)})
    assert fills(r) == [] and r.counters[0, kb.N_REJECTS] == 1


def test_latency_order_and_cancel():
    # order sent at ts 3 with 5 ns entry latency arrives at 8: the sell at 6 cannot fill it, the one at 9 can
    rows = BOOK + [(6, T, -1, 97, 1), (9, T, -1, 97, 1)]
    assert fills(go(rows, {3: (GTC, 1, 99, 4, 0)}, entry_latency_ns=5)) == [(5, 1, 99, 4, 1)]
    # the order (sent at 3) arrives at 8; a cancel sent at 6 reaches the exchange at 11: the trade at 9
    # still fills the order, one at 12 would not
    rows = BOOK + [(6, S, 1, 90, 1), (9, T, -1, 97, 1), (12, T, -1, 97, 1)]
    r = go(rows, {3: (GTC, 1, 99, 4, 0), 4: (CXL, 0, 0, 0, 0)}, entry_latency_ns=5)
    assert fills(r) == [(5, 1, 99, 4, 1)]
    rows = BOOK + [(6, S, 1, 90, 1), (12, T, -1, 97, 1)]
    r = go(rows, {3: (GTC, 1, 99, 4, 0), 4: (CXL, 0, 0, 0, 0)}, entry_latency_ns=5)
    assert fills(r) == [] and r.counters[0, kb.N_CANCELS] == 1


def test_queue_models():
    # we join behind 10 at 99; the level drops to 4 (cancels, no trade), then a sell of 5 at 99
    rows = BOOK + [(10, S, 1, 99, 4), (11, T, -1, 99, 5)]
    # risk-averse: queue ahead becomes min(10, 4) = 4 -> 1 lot filled
    assert fills(go(rows, {3: (GTC, 1, 99, 4, 0)})) == [(5, 1, 99, 1, 1)]
    # probabilistic: front 10, back 0 -> all 6 cancelled lots were ahead: 4 ahead, same fill here
    assert fills(go(rows, {3: (GTC, 1, 99, 4, 0)}, queue_model="probabilistic")) == [(5, 1, 99, 1, 1)]
    # with size behind us (level grows to 20 after we join, then drops to 14): risk-averse keeps 10 ahead,
    # probabilistic removes 6 * 10 // (10 + 10) = 3 -> 7 ahead; a sell of 9 fills 0 vs 2
    rows = BOOK + [(10, S, 1, 99, 20), (11, S, 1, 99, 14), (12, T, -1, 99, 9)]
    assert fills(go(rows, {3: (GTC, 1, 99, 4, 0)})) == []
    assert fills(go(rows, {3: (GTC, 1, 99, 4, 0)}, queue_model="probabilistic")) == [(6, 1, 99, 2, 1)]


# four levels a side, three known to the engine (levels=3): the fourth (bid 96, ask 104) is out of view
BOOK4 = [(0, S, 1, 99, 10), (1, S, 1, 98, 20), (2, S, 1, 97, 5), (3, S, 1, 96, 8),
         (4, S, -1, 101, 5), (5, S, -1, 102, 7), (6, S, -1, 103, 4), (7, S, -1, 104, 6)]


def test_orders_out_of_view_join_the_queue_when_their_level_comes_into_view():
    bid, ask = {7: (GTC, 1, 96, 4, 0)}, {7: (GTC, -1, 104, 4, 0)}
    # our bid at 96 lies beyond the 3 known levels: its queue is unknown, a sell at 96 cannot fill it
    assert fills(go(BOOK4 + [(10, S, 1, 98, 25), (11, T, -1, 96, 9)], bid)) == []
    # 99 empties, 96 becomes the third level: we join behind its 8 lots; a sell of 9 passes them by 1
    assert fills(go(BOOK4 + [(10, S, 1, 98, 25), (11, S, 1, 99, 0), (12, T, -1, 96, 9)], bid)) == [
        (10, 1, 96, 1, 1)]
    # the same on the ask side
    assert fills(go(BOOK4 + [(10, S, -1, 102, 9), (11, T, 1, 104, 7)], ask)) == []
    assert fills(go(BOOK4 + [(10, S, -1, 101, 0), (11, T, 1, 104, 7)], ask)) == [(9, -1, 104, 1, 1)]
    # out of view and still crossed: the best ask comes down to our bid (a crossed feed) -> filled whole
    assert fills(go(BOOK4 + [(10, S, -1, 96, 3)], bid)) == [(8, 1, 96, 4, 1)]
    assert fills(go(BOOK4 + [(10, S, 1, 104, 3)], ask)) == [(8, -1, 104, 4, 1)]


def test_bad_config_and_params_name_the_field():
    with pytest.raises(ConfigError, match="unknown parameter.*'nope'"):
        run(SCRIPT, {"nope": 1}, market(BOOK, {}), BacktestConfig(levels=3))
    with pytest.raises(ConfigError, match="maker_fee_bps"):
        BacktestConfig(maker_fee_bps="0.001").vector()
    with pytest.raises(ConfigError, match="unknown engine setting"):
        BacktestConfig.from_dict({"latency": 1})
    # a NaN decision is counted, not silently ignored
    r = go(BOOK, {2: (np.nan, 0, 0, 0, 0)})
    assert r.counters[0, kb.N_NAN_ACTIONS] == 1
    # an order with zero size is refused and counted
    r = go(BOOK, {2: (GTC, 1, 99, 0, 0)})
    assert r.counters[0, kb.N_BAD_ACTIONS] == 1 and r.counters[0, kb.N_ORDERS] == 0


def _random_market(rng, n=300):
    rows = []
    t = 0
    for i in range(n):
        t += int(rng.integers(1, 5))
        if rng.random() < 0.25:
            rows.append((t, T, int(rng.choice([-1, 1])), int(rng.integers(95, 106)), int(rng.integers(1, 8))))
        else:
            sd = int(rng.choice([-1, 1]))
            rows.append((t, S, sd, int(rng.integers(94, 100)) if sd > 0 else int(rng.integers(101, 107)),
                         int(rng.integers(0, 15))))
    return rows


@pytest.mark.parametrize("tile", [0, 16])
def test_sweep_engine_equals_exact_engine(device_backend, tile):
    # one seed only: the CUDA simulator runs each thread's loop in Python.  tile 16: the GPU kernel walks
    # the events through shared-memory tiles of 16 (160 events: 10 tiles), its block's last threads past
    # the last set (8 sets, 32 threads per block under the simulator)
    from gpuflow.config import config_context

    mm = get_strategy("market_making")
    a = np.array(_random_market(np.random.default_rng(5), n=160), dtype=np.int64)
    a[:, 0] //= 2  # some events share a receive time: the strategy decides after the last of them
    ev = events_table({"ts_local": a[:, 0], "kind": a[:, 1], "side": a[:, 2], "price": a[:, 3], "qty": a[:, 4],
                       "flags": np.full(len(a), FLAG_EOM)}, INS)
    mk = prepare_market(ev, levels=3)
    sets = [{"half_spread_ticks": h, "order_lots": q, "max_position_lots": 6, "skew_ticks_per_lot": sk}
            for h in (0, 2) for q in (1, 3) for sk in (0.0, 0.5)]
    cfg = BacktestConfig(levels=3, sample_ns=50, entry_latency_ns=3, response_latency_ns=2, maker_fee_bps=-0.25,
                         taker_fee_bps=5, decision_interval_ns=7, queue_model="probabilistic")
    ex = run(mm, sets, mk, cfg, engine="exact")
    with config_context(backtest_event_tile=tile):
        sw = run(mm, sets[::-1], mk, cfg, engine="sweep", backend=device_backend)  # run sorted, returned as given
    assert ex.counters[:, kb.N_FILLS].sum() > 0
    np.testing.assert_array_equal(sw.params, np.asarray(ex.params)[::-1])
    np.testing.assert_array_equal(sw.counters[::-1], ex.counters)
    np.testing.assert_array_equal(sw.account[::-1], ex.account)
    np.testing.assert_array_equal(sw.equity2[::-1], ex.equity2)
    np.testing.assert_array_equal(sw.fills[::-1], ex.fills)
    np.testing.assert_array_equal(sw.state[::-1], ex.state)


@pytest.mark.parametrize("engine,tile", [("exact", 0), ("sweep", 0), ("sweep", 16)])
def test_strategy_decides_after_the_last_event_of_a_receive_time(engine, tile, device_backend):
    # events 4 and 5 share receive time 10: the strategy decides once, after event 5, so an action written
    # at event 4 is never read; one at event 5 sends the bid, which the sell through 99 at ts 12 fills
    from gpuflow.config import config_context

    rows = BOOK + [(10, T, -1, 97, 1), (10, S, 1, 90, 1), (12, T, -1, 97, 1)]
    c = BacktestConfig(levels=3, sample_ns=1000)
    be = device_backend if engine == "sweep" else None
    with config_context(backtest_event_tile=tile):
        early = run(SCRIPT, {}, market(rows, {4: (GTC, 1, 99, 4, 0)}), c, engine=engine, backend=be)
        late = run(SCRIPT, {}, market(rows, {5: (GTC, 1, 99, 4, 0)}), c, engine=engine, backend=be)
    assert fills(early) == [] and early.counters[0, kb.N_ORDERS] == 0
    assert fills(late) == [(6, 1, 99, 4, 1)]


class _Watcher:
    """A test strategy: sends one bid at event 3 and records what it sees of it at each decision."""

    NAME = "test_watcher"
    PARAMS = {"unused": (0.0, (0.0, 1.0))}
    STATE_SIZE = 4
    CORES = ()

    @staticmethod
    def step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
        live = 0
        for k in range(orders.shape[0]):
            if orders[k, 0] != 0:
                live += 1
        if live > 0:
            state[0] = t  # last decision that still saw the order live
        state[1] = seen[0]
        if e == 3:
            acts[0, 0] = 1
            acts[0, 2] = 1
            acts[0, 3] = 99
            acts[0, 4] = 4
            return 1
        return 0


def test_strategy_sees_its_orders_only_after_the_response_latency():
    """No look-ahead through the order table: a fill is reported after the response latency."""
    rows = BOOK + [(10, T, -1, 97, 1), (12, S, 1, 90, 1), (30, S, 1, 91, 1)]
    # the bid sent at ts 3 rests; the trade through at ts 10 fills it; the report reaches the strategy at 25
    r = run(_Watcher, {}, market(rows, {}), BacktestConfig(levels=3, sample_ns=1000, response_latency_ns=15))
    assert fills(r) == [(4, 1, 99, 4, 1)]
    assert r.account[0, 0, 0] == 4 and r.counters[0, kb.ORDERED_LOTS] == 4
    # decisions at ts 10 and 12 still see the order live and no position; the one at 30 sees the fill
    assert r.state[0, 0] == 12 and r.state[0, 1] == 4


def test_fees_do_not_overflow_where_notional_times_rate_would():
    # notional 1e12 ticks x 1e4 lots = 1e16; 50 bp = 5000 ppm: the product 5e19 exceeds int64,
    # the fee 1e16 * 5000 / 1e6 = 5e13 ticks x lots does not
    big = 10**12
    rows = [(0, S, 1, big - 1, 10**6), (1, S, -1, big, 10**6), (5, S, 1, big - 2, 1)]
    r = go(rows, {1: (MKT, 1, 0, 10**4, 0)}, taker_fee_bps=50)
    assert fills(r) == [(2, 1, big, 10**4, 2)]
    assert r.account[0, 0, kb.ACC_FEE] == 5 * 10**13 and r.account[0, 0, kb.ACC_FEE_REM] == 0


def test_feed_latency_from_the_data():
    # events carry their exchange time; latency = ts_local - ts_exch: 0 for the book, 5 for the trade
    rows = BOOK + [(12, T, -1, 97, 1), (20, S, 1, 90, 1)]
    a = np.array(rows, dtype=np.int64)
    ts_exch = a[:, 0].copy()
    ts_exch[4] = 7  # the trade received at 12 happened at the exchange at 7
    ev = events_table({"ts_local": a[:, 0], "ts_exch": ts_exch, "kind": a[:, 1], "side": a[:, 2],
                       "price": a[:, 3], "qty": a[:, 4], "flags": np.full(len(rows), FLAG_EOM)}, INS)
    sig = np.zeros((len(rows), 5))
    sig[3] = (GTC, 1, 99, 4, 0)  # bid sent at ts 3 with 6 ns entry latency: at the exchange from 9
    mk = prepare_market(ev, levels=3, signals=sig)
    base = {"levels": 3, "sample_ns": 1000, "entry_latency_ns": 6}
    # constant latency 0: the trade is at 12 >= 9 and fills the bid
    assert fills(run(SCRIPT, {}, mk, BacktestConfig(**base))) == [(4, 1, 99, 4, 1)]
    # per-event latency from the data: the trade was at 7 < 9, before the bid arrived: no fill
    r = run(SCRIPT, {}, mk, BacktestConfig(**base, feed_latency_ns="data"))
    assert fills(r) == []
    with pytest.raises(ConfigError, match="feed_latency_ns"):
        BacktestConfig(feed_latency_ns="sometimes").vector()


def test_device_arrays_are_cached_per_market_not_shared_with_its_copies(device_backend):
    """MarketData.on caches device copies; a dataclasses.replace copy (a window, new signals) must get its
    own (a shared cache made a window's sweep run on the parent's arrays, and new signals go unseen)."""
    import dataclasses

    m = market(BOOK + [(4, T, -1, 99, 3)], {4: (GTC, 1, 99, 1, 0)})
    d = m.on(device_backend)
    assert m.on(device_backend) is d  # copied once
    sig2 = np.ones_like(m.signals)
    m2 = dataclasses.replace(m, signals=sig2)
    np.testing.assert_array_equal(device_backend.to_host(m2.on(device_backend)["signals"]), sig2)
    win = dataclasses.replace(m, ts=m.ts[:2], row=m.row[:2], inst=m.inst[:2], kind=m.kind[:2], side=m.side[:2],
                              price=m.price[:2], qty=m.qty[:2], signals=m.signals[:2])
    assert device_backend.to_host(win.on(device_backend)["ts"]).size == 2
    assert device_backend.to_host(m.on(device_backend)["ts"]).size == m.n_events
    # the event view likewise: a window gets its own; a copy with other signals (same events) keeps the view
    # but gets its own device arrays
    ev, _ = m.view(device_backend)
    assert m.view(device_backend)[0] is ev
    assert device_backend.to_host(win.view(device_backend)[0]).shape[1] == 2
    m3 = m.with_signals(sig2, ["s"])
    assert m3.view(device_backend)[0] is ev and m3.signal_names == ["s"]
    np.testing.assert_array_equal(device_backend.to_host(m3.on(device_backend)["signals"]), sig2)


@pytest.mark.parametrize("engine", ["exact", "sweep"])
def test_order_slots_and_notices_in_flight_are_reused_after_their_reports(engine, device_backend):
    # 16 GTC bids of 1 lot at 99 (the table's 16 slots), one per event; a sell at 97 trades through all of them at
    # once: 16 fill reports in flight together (response latency 5 ns), each freeing its slot when it reaches the
    # strategy.  16 more bids at 90 then take the 16 freed slots; a 17th while those rest is rejected (no slot).
    assert kb.MAX_ORDERS == 16
    far = [(10 + i, S, 1, 80, 1) for i in range(16)]  # far bid level sets: events to act at
    later = [(40 + i, S, 1, 80, 1) for i in range(17)]
    rows = BOOK + far + [(30, T, -1, 97, 100)] + later
    acts = {4 + i: (GTC, 1, 99, 1, 0) for i in range(16)}
    acts.update({21 + i: (GTC, 1, 90, 1, 0) for i in range(17)})
    cfg = BacktestConfig(levels=3, sample_ns=1000, entry_latency_ns=0, response_latency_ns=5, feed_latency_ns=0)
    be = device_backend if engine == "sweep" else None
    r = run(SCRIPT, {}, market(rows, acts), cfg, engine=engine, backend=be)
    c = r.counters[0]
    assert [int(x) for x in (c[kb.N_FILLS], c[kb.N_ORDERS], c[kb.N_REJECTS], c[kb.N_SLOTS],
                             c[kb.N_NOTICES_DROPPED])] == [16, 32, 1, 16, 0]
    assert fills(r) == [(20, 1, 99, 1, 1)] * 16
    assert r.account[0, 0, 0] == 16  # 16 lots bought
    # without the through trade the first 16 orders never free their slots: the 16 later ones are all rejected
    rows = BOOK + far + [(30, S, 1, 80, 1)] + later
    c = run(SCRIPT, {}, market(rows, acts), cfg, engine=engine, backend=be).counters[0]
    assert [int(x) for x in (c[kb.N_FILLS], c[kb.N_ORDERS], c[kb.N_REJECTS], c[kb.N_SLOTS])] == [0, 16, 17, 16]


class _Dev:
    """A stand-in for a device array (cupy's behaviour where it matters here): it refuses to become a numpy
    array implicitly, so a host array indexed with it fails as it does on a GPU."""

    def __init__(self, a):
        self.a = np.asarray(a)

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")

    def __getitem__(self, key):
        key = tuple(k.a if isinstance(k, _Dev) else k for k in key) if isinstance(key, tuple) else \
            key.a if isinstance(key, _Dev) else key
        return _Dev(self.a[key])

    def __lt__(self, other):
        return _Dev(self.a < (other.a if isinstance(other, _Dev) else other))


def _fake_device():
    import types

    xp = types.SimpleNamespace(arange=lambda *a, **k: _Dev(np.arange(*a, **k)))
    return types.SimpleNamespace(uses_cuda=True, xp=xp, asarray=lambda x: x if isinstance(x, _Dev) else _Dev(x),
                                 to_host=lambda d: d.a if isinstance(d, _Dev) else np.asarray(d))


def test_results_come_back_in_the_callers_order_from_device_and_host_arrays():
    # a sorted sweep's results: the counters are on the host already, the rest in device memory; each is
    # reordered where it is (a host array indexed with a device array failed on a GPU: cupy refuses)
    from gpuflow.backtest.engine import _CallerOrder

    order = np.array([2, 0, 3, 1])  # run row j holds the caller's set order[j]
    inv = np.argsort(order)
    run_rows = np.arange(4)[:, None] * 10 + np.arange(3)
    to_caller = _CallerOrder(inv, _fake_device())
    want = run_rows[inv]
    np.testing.assert_array_equal(to_caller(run_rows), want)  # a host array
    np.testing.assert_array_equal(to_caller(_Dev(run_rows)), want)  # a device array
    np.testing.assert_array_equal(_CallerOrder(None, _fake_device())(_Dev(run_rows)), run_rows)


@pytest.mark.parametrize("sorted_sets", [False, True])
def test_recorded_fills_travel_packed_and_unpack_to_the_padded_rows(sorted_sets):
    # only the rows each set recorded come from the device; the host array equals the buffer's recorded columns
    # (unused rows zero), sets in the caller's order
    from gpuflow.backtest.engine import recorded_fills

    rng = np.random.default_rng(4)
    P, F = 7, 9
    nrec = np.array([3, 0, 9, 1, 5, 0, 2])
    buf = np.zeros((P, F, kb.NFILL), np.int64)
    for p in range(P):
        buf[p, :nrec[p]] = rng.integers(1, 1000, (nrec[p], kb.NFILL))
    order = rng.permutation(P) if sorted_sets else None
    want = buf[:, :nrec.max()] if order is None else buf[:, :nrec.max()][np.argsort(order)]
    got = recorded_fills(_Dev(buf), nrec, order, _fake_device())
    assert got.shape == (P, 9, kb.NFILL) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(recorded_fills(buf, nrec, None, get_backend_cpu()), buf[:, :9])
    empty = recorded_fills(_Dev(buf), np.zeros(P, np.int64), order, _fake_device())
    assert empty.shape == (P, 0, kb.NFILL)


def get_backend_cpu():
    from gpuflow.backend import get_backend

    return get_backend("cpu")


def _rows_step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    # the rows it may return start each decision zeroed: else no valid decision (counted as a NaN decision)
    for a in range(2):
        for c in range(6):
            if acts[a, c] != 0:
                return -1
    for a in range(3):  # three GTC bids, one row more than its ACTION_ROWS
        acts[a, 0] = 1
        acts[a, 1] = 0
        acts[a, 2] = 1
        acts[a, 3] = 95 + a
        acts[a, 4] = 1
    return 3


@pytest.mark.parametrize("engine", ["exact", "sweep"])
def test_action_rows_past_a_strategys_declared_rows_are_counted_not_applied(engine, device_backend):
    import types

    strat = types.SimpleNamespace(NAME="rows_test", PARAMS={"x": (0.0, (0.0, 1.0))}, STATE_SIZE=1, CORES=(),
                                  ACTION_ROWS=2, step=_rows_step)
    rows = BOOK + [(10 * i, S, 1, 99, 10) for i in range(1, 4)]  # decisions at 0, 10, 20, 30 (interval 10)
    cfg = BacktestConfig(levels=3, sample_ns=1000, decision_interval_ns=10)
    r = run(strat, [{"x": 0.0}, {"x": 1.0}], market(rows, {}), cfg, engine=engine,
            backend=device_backend if engine == "sweep" else None)
    d = r.counters[:, kb.N_DECISIONS]
    assert (d >= 3).all()
    assert (r.counters[:, kb.N_NAN_ACTIONS] == 0).all()  # the two rows were zero at every decision
    assert (r.counters[:, kb.N_ORDERS] == 2 * d).all()  # rows 0 and 1 applied ...
    assert (r.counters[:, kb.N_BAD_ACTIONS] == d).all()  # ... row 2 counted


def test_action_rows_must_fit_the_action_array():
    import types

    from gpuflow.kernels.backtest import MAX_ACTIONS, action_rows

    assert action_rows(types.SimpleNamespace()) == MAX_ACTIONS
    assert action_rows(get_strategy("market_making")) == 3
    for bad in (0, MAX_ACTIONS + 1):
        with pytest.raises(ValueError, match="ACTION_ROWS must be in 1..8"):
            action_rows(types.SimpleNamespace(NAME="s", ACTION_ROWS=bad))
