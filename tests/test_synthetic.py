"""Tests of the zero-intelligence (Cont-Stoikov-Talreja) event generator.

The oracles are slow, obvious pure-Python replays written here: an L2 book as a
dict price -> lots per side, and an L3 book as a dict order_id -> (side, price,
lots) with a FIFO list per level.
"""

from __future__ import annotations

import json
import math
from collections import deque

import numpy as np
import pyarrow as pa
import pytest

from gpuflow.errors import GpuflowError
from gpuflow.schema import (
    EVENT_COLUMNS,
    EVENT_DTYPES,
    EVENTS,
    FLAG_EOM,
    FLAG_SNAPSHOT,
    FLAG_SNAPSHOT_BEGIN,
    FLAG_SNAPSHOT_END,
    KIND_ADD,
    KIND_CLEAR,
    KIND_DELETE,
    KIND_EXECUTE,
    KIND_SET,
    KIND_SNAPSHOT,
    KIND_TRADE,
    Instrument,
    instrument_of,
    validate,
)
from gpuflow.synthetic import (
    CST_THETAS,
    DEFAULT_START_NS,
    ParameterError,
    ZIGenerator,
    ZIParams,
    _exponential_draws,
    _xoshiro_draws,
    generate,
    generate_arrays,
    iter_chunks,
)

# Parameter sets the replays run on: the defaults, geometric sizes (orders tracked in l2 too),
# and a stressed book that keeps emptying (refill rule) and dropping far orders (window rule).
PARAMS = {
    "default": ZIParams(),
    "sizes": ZIParams(limit_size_mean=3.0, market_size_mean=6.0, initial_depth=3),
    "stress": ZIParams(
        n_levels=3,
        mu=4.0,
        lambdas=(1.0, 0.5, 0.25),
        thetas=(0.9, 0.6),
        max_distance=3,
        initial_depth=1,
        market_size_mean=2.5,
    ),
}


def _rows(cols):
    return list(
        zip(*(cols[c].tolist() for c in ("ts_exch", "kind", "side", "price", "qty", "order_id", "flags")))
    )


def _messages(cols):
    """Split rows into messages (lists of rows), dropping a trailing cut message."""
    msgs, cur = [], []
    for r in _rows(cols):
        cur.append(r)
        if r[6] & FLAG_EOM:
            msgs.append(cur)
            cur = []
    return msgs


class _L2Replay:
    """dict price -> lots per side; checks every row and the book after every message."""

    def __init__(self):
        self.book = {1: {}, -1: {}}

    def best(self, side):
        lv = self.book[side]
        return (max(lv) if side > 0 else min(lv)) if lv else None

    def apply(self, msg):
        for ts, kind, side, price, qty, oid, flags in msg:
            assert ts == msg[0][0], "one timestamp per message"
            assert oid == 0
            if kind == KIND_CLEAR:
                self.book = {1: {}, -1: {}}
            elif kind in (KIND_SET, KIND_SNAPSHOT):
                assert side in (1, -1)
                assert qty >= 0, f"negative level size {qty}"
                if qty:
                    self.book[side][price] = qty
                else:
                    assert price in self.book[side], "SET 0 of a level that is not there"
                    del self.book[side][price]
            elif kind == KIND_TRADE:
                assert side in (1, -1) and qty > 0
                rest = self.book[-side]
                assert price == self.best(-side), "trade away from the opposite best quote"
                assert qty <= rest[price]
            else:
                raise AssertionError(f"unexpected kind {kind} in an l2 stream")
        bb, ba = self.best(1), self.best(-1)
        assert bb is not None and ba is not None, "a side is empty after a message"
        assert bb < ba, f"crossed book: bid {bb} >= ask {ba}"

    def levels(self):
        return {(s, p): q for s in (1, -1) for p, q in self.book[s].items()}


class _L3Replay:
    """dict order_id -> [side, price, lots] and a FIFO per level; checks every row."""

    def __init__(self):
        self.orders = {}
        self.queues = {}
        self.last_oid = 0

    def apply(self, msg):
        trade_left = 0
        for ts, kind, side, price, qty, oid, flags in msg:
            assert ts == msg[0][0]
            if kind == KIND_CLEAR:
                assert not self.orders
            elif kind == KIND_ADD:
                assert oid > self.last_oid, "order ids must be new and increasing"
                assert qty > 0 and side in (1, -1)
                self.last_oid = oid
                self.orders[oid] = [side, price, qty]
                self.queues.setdefault((side, price), deque()).append(oid)
            elif kind == KIND_DELETE:
                assert oid in self.orders, f"delete of unknown order {oid}"
                o = self.orders.pop(oid)
                assert (o[0], o[1], o[2]) == (side, price, qty), (
                    "delete must name side, price, remaining size"
                )
                q = self.queues[(side, price)]
                q.remove(oid)
                if not q:
                    del self.queues[(side, price)]
            elif kind == KIND_TRADE:
                assert trade_left == 0, "trade rows must be followed by their executions"
                assert qty > 0
                trade_left = qty
            elif kind == KIND_EXECUTE:
                assert oid in self.orders, f"execution of unknown order {oid}"
                o = self.orders[oid]
                assert (o[0], o[1]) == (side, price)
                q = self.queues[(side, price)]
                assert q[0] == oid, "executions must hit the head of the queue (FIFO)"
                assert 0 < qty <= o[2], f"execution of {qty} lots against {o[2]} resting"
                if trade_left:
                    trade_left -= qty
                    assert trade_left >= 0
                o[2] -= qty
                if o[2] == 0:
                    del self.orders[oid]
                    q.popleft()
                    if not q:
                        del self.queues[(side, price)]
            else:
                raise AssertionError(f"unexpected kind {kind} in an l3 stream")
        assert trade_left == 0
        lv = self.levels()
        bids = [p for s, p in lv if s > 0]
        asks = [p for s, p in lv if s < 0]
        assert bids and asks and max(bids) < min(asks)

    def levels(self):
        out = {}
        for side, price, qty in self.orders.values():
            out[(side, price)] = out.get((side, price), 0) + qty
        return out


# ---- the random number generators -----------------------------------------------------------------


def test_xoshiro_matches_reference_algorithm():
    mask = (1 << 64) - 1

    def rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & mask

    state = [0x0123456789ABCDEF, 0xFEDCBA9876543210, 0x0F1E2D3C4B5A6978, 0x8796A5B4C3D2E1F0]
    expected = []
    s = list(state)
    for _ in range(20):
        expected.append(rotl((s[1] * 5) & mask, 7) * 9 & mask)
        t = (s[1] << 17) & mask
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
    got = _xoshiro_draws(np.array(state, dtype=np.uint64), 20)
    assert [int(v) for v in got] == expected


def test_ziggurat_exponential_distribution(global_random_seed):
    n = 400_000
    s = np.random.SeedSequence(global_random_seed).generate_state(4, dtype=np.uint64)
    e = _exponential_draws(s, n)
    assert e.min() >= 0
    assert abs(e.mean() - 1.0) < 5 / math.sqrt(n)
    for q in (0.01, 0.1, 0.5, 1.0, 2.0, 4.0, 7.0, 7.7, 9.0):  # 7.7: the ziggurat's tail starts there
        p = math.exp(-q)
        assert abs((e > q).mean() - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-6, q


# ---- determinism, chunks, schema ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["l2", "l3"])
def test_same_seed_same_stream(mode, global_random_seed):
    a = generate(5000, seed=global_random_seed, mode=mode)
    b = generate(5000, seed=global_random_seed, mode=mode)
    assert a.equals(b, check_metadata=True)
    c = generate(5000, seed=global_random_seed + 1000, mode=mode)
    assert not a.equals(c)


@pytest.mark.parametrize("mode", ["l2", "l3"])
@pytest.mark.parametrize("params", ["default", "sizes", "stress"])
@pytest.mark.parametrize("chunk", [1, 7, 333, 4096])
def test_chunks_concatenate_to_the_whole(mode, params, chunk):
    n = 12_345
    whole = generate(n, seed=3, mode=mode, params=PARAMS[params])
    parts = list(iter_chunks(n, chunk, seed=3, mode=mode, params=PARAMS[params]))
    assert [p.num_rows for p in parts] == [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
    assert pa.concat_tables(parts).equals(whole, check_metadata=True)


@pytest.mark.parametrize("mode", ["l2", "l3"])
def test_uneven_takes_continue_the_stream(mode, rng):
    n = 20_000
    whole = generate_arrays(n, seed=11, mode=mode, params=PARAMS["sizes"])
    g = ZIGenerator(seed=11, mode=mode, params=PARAMS["sizes"])
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(min(rng.integers(0, 3000), n - sum(sizes))))
    parts = [g.take_arrays(k) for k in sizes]
    for c in EVENT_COLUMNS:
        np.testing.assert_array_equal(np.concatenate([p[c] for p in parts]), whole[c])
    # a checkpoint copy continues exactly as the original
    g2 = ZIGenerator(seed=11, mode=mode, params=PARAMS["sizes"])
    g2.take_arrays(5000)
    snap = g2.state.copy()
    tail = g2.take_arrays(3000)
    g2.state = snap
    np.testing.assert_array_equal(g2.take_arrays(3000)["qty"], tail["qty"])


def test_array_chunks_and_metadata_reproduce_the_run():
    p = ZIParams(n_levels=np.int64(6), mu=np.float32(0.5), thetas=[0.6, 0.4], limit_size_mean=2.0)
    whole = generate(4000, seed=np.int64(8), mode="l3", params=p, latency_ns=7)
    parts = list(iter_chunks(4000, 999, seed=8, mode="l3", params=p, latency_ns=7, arrays=True))
    for c in EVENT_COLUMNS:
        np.testing.assert_array_equal(np.concatenate([q[c] for q in parts]), whole.column(c).to_numpy())
    # the settings stored in the table regenerate it
    meta = json.loads(whole.schema.metadata[b"gpuflow.synthetic"])
    assert meta["model"] == "cont-stoikov-talreja-2010" and meta["seed"] == 8
    again = generate(4000, seed=meta["seed"], mode=meta["mode"], params=ZIParams(**meta["params"]),
                     latency_ns=meta["latency_ns"], start_ns=meta["start_ns"])
    assert again.equals(whole, check_metadata=True)


def test_generate_is_a_prefix_of_a_longer_run():
    short = generate_arrays(777, seed=5, mode="l3")
    long = generate_arrays(5000, seed=5, mode="l3")
    for c in EVENT_COLUMNS:
        np.testing.assert_array_equal(short[c], long[c][:777])


@pytest.mark.parametrize("mode", ["l2", "l3"])
def test_table_follows_the_schema(mode):
    inst = Instrument(venue="sim", symbol="ABC", tick_size="0.5", lot_size="0.001", source="synthetic")
    t = generate(3000, seed=2, mode=mode, start_ns=10**18, instrument=inst, latency_ns=250)
    validate(t, source="synthetic")
    assert t.schema.equals(EVENTS)
    assert t.num_rows == 3000
    assert instrument_of(t) == inst
    a = {c: t.column(c).to_numpy() for c in EVENT_COLUMNS}
    np.testing.assert_array_equal(a["seq"], np.arange(3000))
    assert a["ts_exch"][0] == 10**18
    assert np.all(np.diff(a["ts_exch"]) >= 0)
    np.testing.assert_array_equal(a["ts_local"], a["ts_exch"] + 250)
    assert set(np.unique(a["side"]).tolist()) <= {-1, 0, 1}
    default = generate(10, seed=2, mode=mode)
    assert instrument_of(default) == Instrument(
        venue="synthetic", symbol="ZI", tick_size="0.01", lot_size="1", source="synthetic"
    )
    assert default.column("ts_exch")[0].as_py() == DEFAULT_START_NS == 1_704_067_200_000_000_000
    arrays = generate_arrays(10, seed=2, mode=mode)
    assert {c: a.dtype for c, a in arrays.items()} == EVENT_DTYPES


@pytest.mark.parametrize("mode", ["l2", "l3"])
def test_initial_book_is_a_flagged_snapshot(mode):
    p = ZIParams(n_levels=4, initial_depth=3, start_price_ticks=5000)
    a = generate_arrays(200, seed=0, mode=mode, params=p)
    n0 = 1 + (2 * 4 * 3 if mode == "l3" else 2 * 4)
    kind, flags = a["kind"], a["flags"]
    assert kind[0] == KIND_CLEAR and flags[0] == FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN
    assert np.all(kind[1:n0] == (KIND_ADD if mode == "l3" else KIND_SNAPSHOT))
    assert np.all(flags[1 : n0 - 1] == FLAG_SNAPSHOT)
    assert flags[n0 - 1] == FLAG_SNAPSHOT | FLAG_SNAPSHOT_END | FLAG_EOM
    assert not np.any(flags[n0:] & FLAG_SNAPSHOT)
    bids = sorted(set(a["price"][1:n0][a["side"][1:n0] == 1].tolist()))
    asks = sorted(set(a["price"][1:n0][a["side"][1:n0] == -1].tolist()))
    assert bids == [4997, 4998, 4999, 5000] and asks == [5001, 5002, 5003, 5004]


def test_empty_and_short_requests():
    t = generate(0, seed=1)
    assert t.num_rows == 0
    validate(t)
    # a request shorter than the initial snapshot returns its first rows
    assert generate(3, seed=1).column("kind").to_pylist() == [KIND_CLEAR, KIND_SNAPSHOT, KIND_SNAPSHOT]


def test_trades_off_drops_only_trade_rows():
    with_t = generate_arrays(20_000, seed=4, mode="l2")
    without = generate_arrays(20_000, seed=4, mode="l2", trades=False)
    keep = with_t["kind"] != KIND_TRADE
    m = int(keep.sum())
    for c in ("ts_exch", "kind", "side", "price", "qty"):
        np.testing.assert_array_equal(with_t[c][keep], without[c][:m])


# ---- replays: consistency of the streams --------------------------------------------------------


@pytest.mark.parametrize("params", ["default", "sizes", "stress"])
def test_l2_replay_never_crosses_or_goes_negative(params, global_random_seed):
    p = PARAMS[params]
    cols = generate_arrays(30_000, seed=global_random_seed, mode="l2", params=p)
    book = _L2Replay()
    for msg in _messages(cols):
        book.apply(msg)
        # window rule: every order within max_distance of the opposite quote
        bb, ba = book.best(1), book.best(-1)
        assert min(book.book[1]) >= ba - p.distance
        assert max(book.book[-1]) <= bb + p.distance


@pytest.mark.parametrize("params", ["default", "sizes", "stress"])
def test_l3_replay_is_consistent_and_matches_l2(params, global_random_seed):
    p = PARAMS[params]
    l3 = _messages(generate_arrays(40_000, seed=global_random_seed, mode="l3", params=p))
    l2 = _messages(generate_arrays(40_000, seed=global_random_seed, mode="l2", params=p))
    r3, r2 = _L3Replay(), _L2Replay()
    n = min(len(l3), len(l2))
    assert n > 1000
    for k in range(n):
        r3.apply(l3[k])
        r2.apply(l2[k])
        assert l3[k][0][0] == l2[k][0][0], f"message {k}: timestamps differ"
        assert r3.levels() == r2.levels(), f"message {k}: l3 levels differ from l2"


def test_refill_and_window_rules_fire_under_stress():
    p = PARAMS["stress"]
    msgs = _messages(generate_arrays(30_000, seed=1, mode="l2", params=p))
    book = _L2Replay()
    book.apply(msgs[0])
    refills = window = 0
    for msg in msgs[1:]:
        # a side that becomes empty inside a message was refilled by its last rows
        lv = {s: dict(book.book[s]) for s in (1, -1)}
        emptied = False
        for _, kind, side, price, qty, _, _ in msg:
            if kind == KIND_SET:
                lv[side][price] = qty
                if not qty:
                    del lv[side][price]
                emptied |= not lv[side]
        refills += emptied
        book.apply(msg)
        # window deletions: levels set to 0 farther than max_distance from the final opposite quote
        bb, ba = book.best(1), book.best(-1)
        window += sum(
            1
            for r in msg
            if r[1] == KIND_SET and r[4] == 0 and (ba - r[3] if r[2] > 0 else r[3] - bb) > p.distance
        )
    assert refills > 10
    assert window > 10


# ---- the model: rates and the arrival profile ---------------------------------------------------


def _classify(p: ZIParams, cols):
    """Replay an l2 stream (unit sizes); per message return the model's event probabilities
    in the state before it and the event that happened: (probs[6], event index, distance)."""
    lam = p.arrival_rates
    L = sum(lam)
    book = _L2Replay()
    msgs = _messages(cols)
    book.apply(msgs[0])
    out = []
    for msg in msgs[1:]:
        bb, ba = book.best(1), book.best(-1)
        cb = sum(p.theta(ba - px) * q for px, q in book.book[1].items())
        ca = sum(p.theta(px - bb) * q for px, q in book.book[-1].items())
        rate = 2 * p.mu + 2 * L + cb + ca
        probs = np.array([p.mu, p.mu, L, L, cb, ca]) / rate
        ts, kind, side, price, qty, _, _ = msg[0]
        dist = 0
        if kind == KIND_TRADE:
            ev = 0 if side > 0 else 1
        else:
            old = book.book[side].get(price, 0)
            if qty > old:
                ev = 2 if side > 0 else 3
                dist = ba - price if side > 0 else price - bb
            else:
                ev = 4 if side > 0 else 5
        out.append((probs, ev, dist, rate, ts))
        book.apply(msg)
    return out


def test_event_frequencies_match_the_rates(global_random_seed):
    """sum over messages of (indicator - model probability) is a martingale: its z-score is small."""
    p = ZIParams()
    out = _classify(p, generate_arrays(120_000, seed=global_random_seed, params=p))
    probs = np.array([o[0] for o in out])
    ev = np.array([o[1] for o in out])
    hits = np.stack([ev == k for k in range(6)], axis=1)
    dev = hits.sum(0) - probs.sum(0)
    sd = np.sqrt((probs * (1 - probs)).sum(0))
    assert np.all(np.abs(dev) < 5 * sd), dev / sd
    # limit orders, market orders and cancels all occur in a healthy mix
    share = hits.mean(0)
    assert share[:2].sum() > 0.02 and share[2:4].sum() > 0.3 and share[4:].sum() > 0.3, share
    # waiting times: (t_k - t_{k-1}) * R_k are Exp(1), so their sum is n +- sqrt(n)
    ts = np.array([o[4] for o in out], dtype=np.int64)
    rate = np.array([o[3] for o in out])
    dt = np.diff(ts) / p.time_unit_ns
    x = (dt * rate[1:]).sum()
    assert abs(x - len(dt)) < 5 * math.sqrt(len(dt))


def test_limit_order_distances_follow_the_power_law(global_random_seed):
    p = ZIParams()
    out = _classify(p, generate_arrays(150_000, seed=global_random_seed, params=p))
    d = np.array([o[2] for o in out if o[1] in (2, 3)])
    assert d.min() >= 1 and d.max() <= p.n_levels
    counts = np.bincount(d, minlength=p.n_levels + 1)[1:]
    lam = np.array(p.arrival_rates)
    expect = lam / lam.sum()
    n = len(d)
    assert np.all(np.abs(counts - n * expect) < 5 * np.sqrt(n * expect * (1 - expect)))
    # the profile decreases with the distance: compare distances 1-2 > 3-4 > ... (pairs are
    # far apart in expectation, so this holds without luck)
    pairs = counts.reshape(-1, 2).sum(1)
    assert np.all(np.diff(pairs) < 0), counts
    assert np.all(np.diff(lam) < 0)


@pytest.mark.slow
def test_limit_order_profile_decreases_at_every_distance():
    p = ZIParams()
    out = _classify(p, generate_arrays(1_500_000, seed=0, params=p))
    counts = np.bincount([o[2] for o in out if o[1] in (2, 3)], minlength=p.n_levels + 1)[1:]
    assert np.all(np.diff(counts) < 0), counts


@pytest.mark.parametrize("mode", ["l2", "l3"])
@pytest.mark.parametrize("params", ["default", "sizes", "stress"])
def test_incremental_cancel_rates_equal_a_full_recount(mode, params):
    """The core updates the per-side cancellation rates by the one order that came or went
    and recounts them only after the quotes move; check it against a recount after every message."""
    from gpuflow.synthetic import _S_A, _S_B, _S_DIRTY, _T_CA, _T_CB

    p = PARAMS[params]
    g = ZIGenerator(seed=9, mode=mode, params=p)
    checked = 0
    for _ in range(3000):
        g.take_arrays(1)
        st = g.state
        if len(st.carry[0]) or st.ist[_S_DIRTY]:
            continue  # mid-message, or the core will recount before the next event anyway
        W = len(st.n_orders)
        a, b = int(st.ist[_S_A]), int(st.ist[_S_B])
        cb = sum(p.theta(i) * st.n_orders[(a - i) % W] for i in range(1, p.distance + 1))
        ca = sum(p.theta(i) * st.n_orders[(b + i) % W] for i in range(1, p.distance + 1))
        assert st.fst[_T_CB] == pytest.approx(cb, rel=1e-9, abs=1e-9)
        assert st.fst[_T_CA] == pytest.approx(ca, rel=1e-9, abs=1e-9)
        checked += 1
    assert checked > 100


def test_default_parameters_are_cst_estimates():
    p = ZIParams()
    assert (p.k, p.alpha, p.mu, p.n_levels) == (1.92, 0.52, 0.94, 10)
    assert p.thetas == CST_THETAS == (0.71, 0.81, 0.68, 0.56, 0.47)
    assert p.theta(1) == 0.71 and p.theta(5) == 0.47 and p.theta(40) == 0.47
    assert p.arrival_rates[0] == pytest.approx(1.92) and p.arrival_rates[9] == pytest.approx(1.92 / 10**0.52)
    assert p.distance == 40


# ---- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_levels": 0}, r"'n_levels': expected an integer >= 1, got 0"),
        ({"n_levels": 2.5}, r"'n_levels'.*got 2.5"),
        ({"mu": -1.0}, r"'mu': expected a finite number >= 0.0, got -1.0"),
        ({"mu": float("nan")}, r"'mu'.*got nan"),
        ({"k": 0.0}, r"'k': expected a finite number > 0.0, got 0.0"),
        ({"thetas": ()}, r"'thetas'"),
        ({"thetas": (0.5, -0.1)}, r"'thetas\[1\]'.*got -0.1"),
        ({"lambdas": (1.0, 2.0)}, r"'lambdas': expected 10 non-negative rates"),
        ({"max_distance": 5}, r"'max_distance': expected an integer >= n_levels \(10\).*got 5"),
        ({"initial_depth": 0}, r"'initial_depth'"),
        ({"limit_size_mean": 0.5}, r"'limit_size_mean'.*got 0.5"),
        ({"time_unit_ns": 0}, r"'time_unit_ns'"),
        ({"start_price_ticks": 3}, r"'start_price_ticks'.*got 3"),
        ({"queue_capacity": 2}, r"'queue_capacity': expected an integer >= initial_depth \(5\), got 2"),
        ({"mu": 0.0, "lambdas": (0.0,) * 10}, r"nothing would ever happen"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        ZIParams(**kwargs)


def test_bad_arguments_raise():
    with pytest.raises(ParameterError, match=r"'mode': expected 'l2' or 'l3', got 'l4'"):
        generate(10, seed=0, mode="l4")
    with pytest.raises(ParameterError, match=r"'seed'.*got -1"):
        generate(10, seed=-1)
    with pytest.raises(ParameterError, match=r"'n_events'.*got -5"):
        generate(-5, seed=0)
    with pytest.raises(ParameterError, match=r"'chunk_events'.*got 0"):
        iter_chunks(10, 0, seed=0)
    with pytest.raises(ParameterError, match=r"'params'"):
        generate(10, seed=0, params={"mu": 1.0})
    assert issubclass(ParameterError, GpuflowError) and issubclass(ParameterError, ValueError)


def test_queue_overflow_raises_clearly():
    p = ZIParams(n_levels=1, lambdas=(50.0,), mu=0.0, thetas=(0.001,), initial_depth=1, queue_capacity=8)
    g = ZIGenerator(seed=0, mode="l3", params=p)
    with pytest.raises(GpuflowError, match=r"queue_capacity=8"):
        g.take_arrays(10_000)
    with pytest.raises(GpuflowError, match=r"failed earlier"):
        g.take_arrays(1)
    # l2 with unit sizes tracks no orders, so no capacity applies
    assert generate_arrays(10_000, seed=0, mode="l2", params=p)["qty"].max() > 8
