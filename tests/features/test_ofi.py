"""Order-flow imbalance features: hand-worked books, fused == separate (random and real Binance streams),
CUDA twin == CPU twin, chunk continuation, causality, errors."""
from __future__ import annotations

import numpy as np
import pytest

from gpuflow.backend import get_backend
from gpuflow.book import rebuild_book
from gpuflow.errors import SchemaError
from gpuflow.features.ofi import ofi, ofi_bucketed, spread_adjusted_ofi, vwofi
from gpuflow.schema import EMPTY_ASK_PRICE as EA
from gpuflow.schema import EMPTY_BID_PRICE as EB
from gpuflow.schema import (
    FLAG_EOM,
    KIND_ADD,
    KIND_CANCEL,
    KIND_CLEAR,
    KIND_DELETE,
    KIND_EXECUTE,
    KIND_SET,
    KIND_TRADE,
    events_table,
)

S, T, C = KIND_SET, KIND_TRADE, KIND_CLEAR
NAN = np.nan
RTOL = {np.float64: 1e-12}
COLS = ("bid_price", "bid_qty", "ask_price", "ask_qty")


def _l2(rows, ts=None):
    """rows: (kind, side, price, qty, eom)"""
    a = np.array(rows, dtype=np.int64)
    ts = np.arange(len(rows), dtype=np.int64) * 10 if ts is None else np.asarray(ts, dtype=np.int64)
    return events_table({"ts_local": ts, "kind": a[:, 0], "side": a[:, 1], "price": a[:, 2], "qty": a[:, 3],
                         "flags": np.where(a[:, 4] == 1, FLAG_EOM, 0)})


# A 5-observation, 2-level stream (the observation after event 3 is mid-message, so rows are events 0,1,2,4,5,6).
#   ev0 bid 100x5            -> r0  bids 100x5               asks -
#   ev1 ask 103x2            -> r1  bids 100x5               asks 103x2
#   ev2 bid 101x1            -> r2  bids 101x1 100x5         asks 103x2
#   ev3 ask 102x4 (no EOM)
#   ev4 bid 101 removed      -> r3  bids 100x5               asks 102x4 103x2
#   ev5 trade                -> r4  unchanged
#   ev6 ask 103x9            -> r5  bids 100x5               asks 102x4 103x9
HAND = _l2([(S, 1, 100, 5, 1), (S, -1, 103, 2, 1), (S, 1, 101, 1, 1), (S, -1, 102, 4, 0), (S, 1, 101, 0, 1),
            (T, 1, 102, 1, 1), (S, -1, 103, 9, 1)])
# e_m = 1{Pb>=Pb'}qb - 1{Pb<=Pb'}qb' - 1{Pa<=Pa'}qa + 1{Pa>=Pa'}qa'   (primes: the previous row; EB/EA, 0 if empty)
# level 1:
#   r0: bid 100x5 vs EB: +5;               ask EA vs EA: -0 + 0                  ->  5
#   r1: bid same: +5 - 5;                  ask 103x2 vs EA: -2                   -> -2
#   r2: bid 101x1 vs 100x5: +1;            ask same: -2 + 2                      ->  1
#   r3: bid 100x5 vs 101x1: -1;            ask 102x4 vs 103x2: -4                -> -5
#   r4: unchanged                                                                ->  0
#   r5: unchanged at level 1                                                     ->  0
# level 2:
#   r0: bid EB vs EB; ask EA vs EA                                               ->  0
#   r1: same                                                                     ->  0
#   r2: bid 100x5 vs EB: +5;               ask EA vs EA                          ->  5
#   r3: bid EB vs 100x5: -5;               ask 103x2 vs EA: -2                   -> -7
#   r4: unchanged                                                                ->  0
#   r5: ask 103x9 vs 103x2: -9 + 2                                               -> -7
HAND_OFI = [[5, 0], [-2, 0], [1, 5], [-5, -7], [0, 0], [0, -7]]
# level-1 spread per row: -, 3, 2, 2, 2, 2  -> spread-adjusted level 1: NaN, -2/3, 1/2, -5/2, 0, 0
# depth per row (2 levels, both sides): 5, 7, 8, 11, 11, 18 -> Qbar = depth / 4
# vwofi (equal weights 1/2): (e1 + e2) / 2 / Qbar = 2 (e1 + e2) / depth:
#   10/5 = 2, -4/7, 12/8 = 1.5, -24/11, 0, -14/18 = -7/9


def _frame(ev=HAND, levels=2, **kw):
    return rebuild_book(ev, levels=levels, every=0, backend="cpu", **kw)


def test_hand_worked_frame():
    f = _frame()
    assert f.index.tolist() == [0, 1, 2, 4, 5, 6]
    assert f.bid_price.tolist() == [[100, EB], [100, EB], [101, 100], [100, EB], [100, EB], [100, EB]]
    assert f.ask_price.tolist() == [[EA, EA], [103, EA], [103, EA], [102, 103], [102, 103], [102, 103]]
    assert f.ask_qty.tolist() == [[0, 0], [2, 0], [2, 0], [4, 2], [4, 2], [4, 9]]


def test_hand_worked_ofi():
    f = _frame()
    assert ofi(f, levels=2).tolist() == HAND_OFI
    assert ofi(f).tolist() == [[r[0]] for r in HAND_OFI]
    assert ofi(f).dtype == np.int64


def test_hand_worked_spread_adjusted_and_vwofi():
    f = _frame()
    got = spread_adjusted_ofi(f)
    assert got.shape == (6, 1)
    np.testing.assert_allclose(got[:, 0], [NAN, -2 / 3, 0.5, -2.5, 0.0, 0.0], rtol=1e-15, equal_nan=True)
    np.testing.assert_allclose(spread_adjusted_ofi(f, 2)[:, 1], [NAN, 0.0, 2.5, -3.5, 0.0, -3.5], rtol=1e-15,
                               equal_nan=True)
    np.testing.assert_allclose(vwofi(f), [2.0, -4 / 7, 1.5, -24 / 11, 0.0, -7 / 9], rtol=1e-15)
    # weights are normalised to unit l1 norm: (3, 1) -> (.75, .25); level 1 alone is e1 / (depth1 / 2)
    np.testing.assert_allclose(vwofi(f, weights=[3, 1]), 4 * (0.75 * np.array([5, -2, 1, -5, 0, 0])
                                                              + 0.25 * np.array([0, 0, 5, -7, 0, -7]))
                               / np.array([5, 7, 8, 11, 11, 18]), rtol=1e-15)
    np.testing.assert_array_equal(vwofi(f, weights=[2, 2]), vwofi(f))  # equal weights: the exact path
    np.testing.assert_allclose(vwofi(f, 1), [2 * 5 / 5, -2 * 2 / 7, 2 * 1 / 3, -2 * 5 / 9, 0, 0], rtol=1e-15)


def test_empty_books_give_nan_not_garbage():
    # a cleared book: no depth (vwofi NaN), no spread (spread-adjusted NaN); a locked book: spread 0 -> NaN
    ev = _l2([(S, 1, 100, 2, 1), (S, -1, 101, 3, 1), (C, 0, 0, 0, 1), (S, 1, 100, 1, 1), (S, -1, 100, 1, 1)])
    f = _frame(ev, levels=1)
    assert ofi(f)[:, 0].tolist() == [2, -3, -2 + 3, 1, -1]
    assert np.isnan(vwofi(f)[2])
    s = spread_adjusted_ofi(f)[:, 0]
    assert np.isnan(s[[0, 2, 3, 4]]).all() and s[1] == -3.0


def test_prev_continues_a_stream():
    f = _frame()
    full = ofi(f, 2)
    head = {k: getattr(f, k)[:3] for k in COLS}
    tail = {k: getattr(f, k)[3:] for k in COLS}
    assert ofi(tail, 2, prev=head).tolist() == full[3:].tolist()
    assert ofi(tail, 2, prev={k: v[-1] for k, v in head.items()}).tolist() == full[3:].tolist()
    np.testing.assert_array_equal(vwofi(tail, prev=head), vwofi(f)[3:])
    np.testing.assert_array_equal(spread_adjusted_ofi(tail, 2, prev=head), spread_adjusted_ofi(f, 2)[3:])
    # a whole BookFrame as prev: its last row (the fused replay's init= continues the same way)
    ev = HAND.slice(0, 3), HAND.slice(3)
    f1 = rebuild_book(ev[0], levels=2, every=0, backend="cpu")
    f2 = rebuild_book(ev[1], levels=2, every=0, backend="cpu", init=f1.final_book, ofi=True)
    assert ofi(f2, 2, prev=f1).tolist() == f2.ofi.tolist() == full[3:].tolist()


def test_hand_worked_bucketed():
    f = _frame()  # rows at ts 0, 10, 20, 40, 50, 60
    grid = np.array([-1, 10, 10, 45, 100])
    # buckets: (-inf,-1] none; (-1,10] r0 r1; (10,10] none; (10,45] r2 r3; (45,100] r4 r5
    assert ofi_bucketed(f, grid, 2).tolist() == [[0, 0], [3, 0], [0, 0], [-4, -2], [0, -7]]
    assert ofi_bucketed(f, grid[:0], 2).shape == (0, 2)
    # a row replayed before earlier-stamped rows (a snapshot applied after buffered diffs) counts once known
    fr = {k: getattr(f, k) for k in COLS}
    fr["ts_local"] = np.array([0, 30, 20, 40, 50, 60])  # row 2 is only known at 30, with row 1
    assert ofi_bucketed(fr, np.array([25, 30]), 2).tolist() == [[5, 0], [-1, 5]]


def _random_l2(rng, n):
    side = rng.choice(np.array([-1, 1]), n)
    price = np.where(side > 0, rng.integers(95, 101, n), rng.integers(100, 106, n))
    kind = rng.choice(np.array([S, S, S, S, T, C]), n)
    return events_table({"ts_local": np.cumsum(rng.integers(0, 3, n)), "kind": kind, "side": side,
                         "price": price, "qty": rng.integers(0, 6, n),
                         "flags": np.where(rng.random(n) < 0.6, FLAG_EOM, 0)})


def _random_l3(rng, n):
    rows, live = [], {}
    for i in range(n):
        if live and rng.random() < 0.5:
            oid = list(live)[rng.integers(len(live))]
            s, p, q = live[oid]
            k = rng.choice(np.array([KIND_CANCEL, KIND_EXECUTE, KIND_DELETE]))
            d = q if k == KIND_DELETE else int(rng.integers(1, q + 1))
            if d >= q:
                del live[oid]
            else:
                live[oid] = (s, p, q - d)
            rows.append((k, s, p, d, oid))
        else:
            s = int(rng.choice([-1, 1]))
            p = int(rng.integers(95, 101) if s > 0 else rng.integers(100, 106))
            q = int(rng.integers(1, 6))
            live[i + 1] = (s, p, q)
            rows.append((KIND_ADD, s, p, q, i + 1))
    a = np.array(rows, dtype=np.int64)
    return events_table({"ts_local": np.arange(n, dtype=np.int64), "kind": a[:, 0], "side": a[:, 1],
                         "price": a[:, 2], "qty": a[:, 3], "order_id": a[:, 4].astype(np.uint64),
                         "flags": np.where(rng.random(n) < 0.7, FLAG_EOM, 0)})


@pytest.mark.parametrize("n", [1, 50, 400])
def test_separate_equals_fused_on_random_streams(n, rng):
    for ev in (_random_l2(rng, n), _random_l3(rng, n)):
        fused = rebuild_book(ev, levels=4, every=0, ofi=True, backend="cpu")
        assert ofi(fused, 4).tolist() == fused.ofi.tolist()
        assert ofi(fused, 2).tolist() == fused.ofi[:, :2].tolist()
        ts = ev.column("ts_local").to_numpy()
        grid = np.unique(rng.integers(ts[0] - 2, ts[-1] + 3, 12))
        g = rebuild_book(ev, levels=4, grid_ns=grid, ofi=True, backend="cpu")
        assert ofi_bucketed(fused, grid, 4).tolist() == g.ofi.tolist()


def _binance(shared_data, rel):
    from gpuflow.io.binance import read_binance
    from gpuflow.sync import synced_events

    ev, info = synced_events(read_binance(shared_data / "binance" / rel / "btcusdt_20240808.gz").tables[0])
    assert info.gaps == 0
    return ev


@pytest.mark.parametrize("rel", ["usdm", "spot"])
def test_separate_equals_fused_on_binance(shared_data, rel):
    ev = _binance(shared_data, rel)
    fused = rebuild_book(ev, levels=5, every=0, ofi=True, backend="cpu")
    assert fused.bid_price.shape[0] > 40_000
    sep = ofi(fused, 5)
    np.testing.assert_array_equal(sep, fused.ofi)
    assert (sep != 0).any(axis=0).all()  # every level saw flow
    # buckets of 1 s: the per-row values summed by the time each row became known
    ts = fused.ts_local
    known = np.maximum.accumulate(ts)
    assert (known != ts).any()  # the synced replay applies the snapshot after diffs stamped later
    grid = np.arange(ts[0] - ts[0] % 10**9, known[-1] + 10**9, 10**9)
    rows = np.searchsorted(known, grid, side="right")
    csum = np.vstack([np.zeros((1, 5), np.int64), np.cumsum(sep, axis=0)])
    expect = np.diff(np.vstack([np.zeros((1, 5), np.int64), csum[rows]]), axis=0)
    np.testing.assert_array_equal(ofi_bucketed(fused, grid, 5), expect)
    # the normalised forms are finite wherever the book has both sides
    both = (fused.bid_price[:, 0] != EB) & (fused.ask_price[:, 0] != EA)
    assert both.sum() > 40_000 and both[-1]
    assert (np.isnan(vwofi(fused)) == (fused.bid_qty.sum(1) + fused.ask_qty.sum(1) == 0)).all()
    assert np.isfinite(spread_adjusted_ofi(fused, 5)[both]).all()  # never locked or crossed when observed


def _random_frame(rng, n, levels):
    bp = 100 - np.cumsum(rng.integers(0, 3, (n, levels)), axis=1)
    ap = 99 + np.cumsum(rng.integers(1, 3, (n, levels)), axis=1)
    ap -= (rng.random(n) < 0.15)[:, None] * rng.integers(0, 4, (n, 1))
    bq = rng.integers(1, 9, (n, levels))
    aq = rng.integers(1, 9, (n, levels))
    lev = np.arange(levels)
    bmiss = lev[None, :] >= rng.integers(0, levels + 1, n)[:, None]
    amiss = lev[None, :] >= rng.integers(0, levels + 1, n)[:, None]
    bp[bmiss], bq[bmiss] = EB, 0
    ap[amiss], aq[amiss] = EA, 0
    f = {"bid_price": bp, "bid_qty": bq, "ask_price": ap, "ask_qty": aq}
    f = {k: v.astype(np.int64) for k, v in f.items()}
    f["ts_local"] = np.cumsum(rng.integers(0, 4, n)).astype(np.int64)
    return f


@pytest.mark.parametrize("n", [0, 1, 45])
def test_cuda_twin_equals_cpu_twin(n, rng, device_backend):
    levels = 3
    f = _random_frame(rng, n, levels)
    prev = {k: v[0] for k, v in _random_frame(rng, 1, levels).items()}
    cpu, dev = get_backend("cpu"), device_backend
    fd = {k: dev.asarray(v) for k, v in f.items()}
    grid = np.unique(rng.integers(-2, 4 * n + 3, 9))
    for k in (1, levels):
        for p in (None, prev):
            a, b = ofi(f, k, prev=p, backend=cpu), ofi(fd, k, prev=p, backend=dev)
            np.testing.assert_array_equal(dev.to_host(b), a)
            a = ofi_bucketed(f, grid, k, prev=p, backend=cpu)
            b = ofi_bucketed(fd, dev.asarray(grid), k, prev=p, backend=dev)
            np.testing.assert_array_equal(dev.to_host(b), a)
            for fn in (vwofi, spread_adjusted_ofi):
                a, b = fn(f, k, prev=p, backend=cpu), fn(fd, k, prev=p, backend=dev)
                np.testing.assert_allclose(dev.to_host(b), a, rtol=RTOL[np.float64], atol=0, equal_nan=True)
    # general weights: the GPU may fuse w_m * e_m into multiply-adds, so a sum that cancels to ~0 agrees to
    # ~1e-16 of its terms' magnitude sum_m |w_m e_m| / Qbar, not of itself (equal weights take an exact path)
    w = np.array([0.5, -0.2, 0.3])
    a, b = vwofi(f, weights=w, backend=cpu), dev.to_host(vwofi(fd, weights=w, backend=dev))
    e = np.abs(ofi(f, levels, backend=cpu)).astype(np.float64)
    depth = (f["bid_qty"] + f["ask_qty"]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (e @ np.abs(w)) * 2 * levels / depth
    np.testing.assert_array_equal(np.isnan(b), np.isnan(a))
    ok = ~np.isnan(a)
    assert (np.abs(b[ok] - a[ok]) <= RTOL[np.float64] * scale[ok]).all()


def test_fused_equals_separate_on_the_device_backend(rng, device_backend):
    ev = _random_l2(rng, 120)
    fd = rebuild_book(ev, levels=3, every=0, ofi=True, backend=device_backend, chunk=8)
    assert fd.stats["chunks"] > 1
    np.testing.assert_array_equal(device_backend.to_host(ofi(fd, 3)), device_backend.to_host(fd.ofi))


def _features(f, grid):
    return {"ofi": ofi(f, 3, backend="cpu"), "bucketed": ofi_bucketed(f, grid, 3, backend="cpu"),
            "vwofi": vwofi(f, backend="cpu"), "sofi": spread_adjusted_ofi(f, 3, backend="cpu")}


def _assert_causal(rng, n, t):
    """Rewriting book rows after t changes no value at rows <= t, nor any bucket ending before row t+1."""
    f = _random_frame(rng, n, 3)
    ts = f["ts_local"]
    ts[t + 1:] = np.maximum(ts[t + 1:], ts[t] + 1)  # rows after t arrive strictly later (in both frames)
    other = _random_frame(rng, n, 3)
    alt = {k: np.concatenate([v[:t + 1], other[k][t + 1:]]) for k, v in f.items()}
    alt["ts_local"][t + 1:] = np.maximum.accumulate(np.maximum(alt["ts_local"][t + 1:], ts[t] + 1))
    grid = np.unique(np.concatenate([rng.integers(-1, ts[-1] + 2, 6), [ts[t]]]))
    a, b = _features(f, grid), _features(alt, grid)
    for k in ("ofi", "vwofi", "sofi"):
        np.testing.assert_array_equal(b[k][:t + 1], a[k][:t + 1], err_msg=k)
    known = grid <= ts[t]  # buckets that end before any later row is known
    np.testing.assert_array_equal(b["bucketed"][known], a["bucketed"][known])
    # at the event level: editing events after event t leaves OFI of rows observed by then unchanged
    ev = _random_l2(rng, n)
    alt_ev = _random_l2(rng, n)
    cols = ("ts_local", "kind", "side", "price", "qty", "flags")
    mixed = events_table({c: np.concatenate([ev.column(c).to_numpy()[:t + 1], alt_ev.column(c).to_numpy()[t + 1:]])
                          for c in cols})
    f0 = rebuild_book(ev, levels=3, every=0, backend="cpu")
    f1 = rebuild_book(mixed, levels=3, every=0, backend="cpu")
    k0 = int((f0.index <= t).sum())
    assert int((f1.index <= t).sum()) == k0
    np.testing.assert_array_equal(ofi(f1, 3)[:k0], ofi(f0, 3)[:k0])


def test_no_look_ahead(rng):
    for t in (0, 5, 33, 59):
        _assert_causal(rng, 60, t)


@pytest.mark.hypothesis
def test_no_look_ahead_property():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 80), frac=st.floats(0, 1))
    def check(seed, n, frac):
        _assert_causal(np.random.default_rng(seed), n, min(int(frac * n), n - 1))

    check()


def test_errors_name_the_argument():
    f = _frame()
    with pytest.raises(SchemaError, match=r"ofi: levels must be in 1..2 .*got 3"):
        ofi(f, 3)
    with pytest.raises(SchemaError, match="ofi: frame lacks column 'ask_qty'"):
        ofi({k: getattr(f, k) for k in COLS[:3]})
    with pytest.raises(SchemaError, match="prev lacks 'bid_qty'"):
        ofi(f, prev={"bid_price": np.zeros(2, np.int64)})
    with pytest.raises(SchemaError, match=r"prev 'bid_price' must be a book row with at least 2 levels"):
        ofi(f, 2, prev={k: np.zeros(1, np.int64) for k in COLS})
    with pytest.raises(SchemaError, match="prev has no rows"):
        ofi(f, prev={k: np.zeros((0, 2), np.int64) for k in COLS})
    with pytest.raises(SchemaError, match="prev 'bid_price' must hold int64"):
        ofi(f, prev={k: np.zeros(2) for k in COLS})
    with pytest.raises(SchemaError, match="grid_ns must be non-decreasing"):
        ofi_bucketed(f, np.array([5, 1]))
    with pytest.raises(SchemaError, match="grid_ns must be a 1-D int64 array"):
        ofi_bucketed(f, np.array([0.5]))
    with pytest.raises(SchemaError, match="has no ts_local"):
        ofi_bucketed({k: getattr(f, k) for k in COLS}, np.array([1]))
    with pytest.raises(SchemaError, match=r"ts_local must have shape \(6,\)"):
        ofi_bucketed(f, np.array([1]), ts_local=np.zeros(2, np.int64))
    with pytest.raises(SchemaError, match="vwofi: weights must be 2 finite numbers"):
        vwofi(f, weights=[1.0])
    with pytest.raises(SchemaError, match="vwofi: weights must be 2 finite numbers"):
        vwofi(f, weights=[0.0, 0.0])
