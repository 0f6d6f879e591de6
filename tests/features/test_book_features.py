"""Book-shape features: hand-worked frames, empty sides, CUDA twin == CPU twin, causality, errors."""
from __future__ import annotations

import numpy as np
import pytest

from gpuflow.backend import get_backend
from gpuflow.book import rebuild_book
from gpuflow.errors import SchemaError
from gpuflow.features.book import book_features, depth_imbalance, microprice, mid, spread, to_price
from gpuflow.schema import EMPTY_ASK_PRICE as EA
from gpuflow.schema import EMPTY_BID_PRICE as EB
from gpuflow.schema import FLAG_EOM, KIND_CLEAR, KIND_SET, Instrument, events_table

S, C = KIND_SET, KIND_CLEAR
NAN = np.nan
#: float outputs of the two twins agree within this relative tolerance (FMA contraction on a GPU may move
#: the last bit); integer outputs must be equal
RTOL = {np.float64: 1e-12}


def _l2(rows):
    """rows: (kind, side, price, qty); every event ends a message."""
    a = np.array(rows, dtype=np.int64)
    return events_table({"ts_local": np.arange(len(rows), dtype=np.int64) * 10, "kind": a[:, 0], "side": a[:, 1],
                         "price": a[:, 2], "qty": a[:, 3], "flags": np.full(len(rows), FLAG_EOM)})


# A 6-row book (levels=2).  Books after each event:
#   r0  bids 100x3            asks -                 one side empty
#   r1  bids 100x3            asks 102x1
#   r2  bids 100x3 99x5       asks 102x1
#   r3  bids 100x3 99x5       asks 102x1 103x7
#   r4  bids 100x3 99x5       asks 103x7             (102 removed)
#   r5  -                     -                      (clear)
HAND = _l2([(S, 1, 100, 3), (S, -1, 102, 1), (S, 1, 99, 5), (S, -1, 103, 7), (S, -1, 102, 0), (C, 0, 0, 0)])
# spread = Pa1 - Pb1:               NaN, 2, 2, 2, 3, NaN
# mid = (Pb1 + Pa1) / 2:            NaN, 101, 101, 101, 101.5, NaN
# microprice = Pb1 + s * qb/(qb+qa): NaN, 100 + 2*3/4 = 101.5 (r1..r3), 100 + 3*3/10 = 100.9, NaN
# imb(1) = (qb1 - qa1)/(qb1 + qa1): 3/3 = 1, 2/4 = .5, .5, .5, (3-7)/10 = -.4, 0/0 = NaN
# imb(2) over two levels:           3/3 = 1, 2/4 = .5, (8-1)/9 = 7/9, (8-8)/16 = 0, (8-7)/15 = 1/15, NaN
EXPECTED = {
    "spread_ticks": [NAN, 2.0, 2.0, 2.0, 3.0, NAN],
    "mid_ticks": [NAN, 101.0, 101.0, 101.0, 101.5, NAN],
    "microprice_ticks": [NAN, 101.5, 101.5, 101.5, 100.9, NAN],
    "depth_imbalance_1": [1.0, 0.5, 0.5, 0.5, -0.4, NAN],
    "depth_imbalance_2": [1.0, 0.5, 7 / 9, 0.0, 1 / 15, NAN],
}


def _frame():
    return rebuild_book(HAND, levels=2, backend="cpu")


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=1e-15,
                               atol=0, equal_nan=True)


def test_hand_worked_frame_is_what_the_comment_says():
    f = _frame()
    assert f.bid_price.tolist() == [[100, EB], [100, EB], [100, 99], [100, 99], [100, 99], [EB, EB]]
    assert f.ask_price.tolist() == [[EA, EA], [102, EA], [102, EA], [102, 103], [103, EA], [EA, EA]]
    assert f.bid_qty.tolist() == [[3, 0], [3, 0], [3, 5], [3, 5], [3, 5], [0, 0]]
    assert f.ask_qty.tolist() == [[0, 0], [1, 0], [1, 0], [1, 7], [7, 0], [0, 0]]


def test_hand_worked_single_features():
    f = _frame()
    _close(spread(f), EXPECTED["spread_ticks"])
    _close(mid(f), EXPECTED["mid_ticks"])
    _close(microprice(f), EXPECTED["microprice_ticks"])
    _close(depth_imbalance(f), EXPECTED["depth_imbalance_1"])
    _close(depth_imbalance(f, levels=2), EXPECTED["depth_imbalance_2"])


def test_hand_worked_book_features_one_launch():
    out = book_features(_frame())
    assert list(out) == list(EXPECTED)
    for k, v in EXPECTED.items():
        _close(out[k], v)
    sub = book_features(_frame(), imbalance_levels=[2])
    assert list(sub) == ["spread_ticks", "mid_ticks", "microprice_ticks", "depth_imbalance_2"]
    _close(sub["depth_imbalance_2"], EXPECTED["depth_imbalance_2"])


def test_empty_sides_and_empty_frame():
    # NaN exactly where a side is missing, never an overflowed EMPTY_ASK - EMPTY_BID
    f = {"bid_price": np.array([[EB], [100], [EB]]), "bid_qty": np.array([[0], [2], [0]]),
         "ask_price": np.array([[101], [EA], [EA]]), "ask_qty": np.array([[4], [0], [0]])}
    for fn in (spread, mid, microprice):
        assert np.isnan(fn(f, backend="cpu")).all()
    _close(depth_imbalance(f, backend="cpu"), [-1.0, 1.0, NAN])
    # zero size at both best levels (only possible in hand-made arrays): the weighted mid is undefined
    z = {"bid_price": np.array([[100]]), "bid_qty": np.array([[0]]), "ask_price": np.array([[101]]),
         "ask_qty": np.array([[0]])}
    assert np.isnan(microprice(z, backend="cpu")).all()
    e = {k: np.zeros((0, 3), np.int64) for k in ("bid_price", "bid_qty", "ask_price", "ask_qty")}
    assert spread(e, backend="cpu").shape == (0,)
    out = book_features(e, backend="cpu")
    assert all(v.shape == (0,) for v in out.values()) and len(out) == 6


def test_to_price():
    inst = Instrument("binance-futures", "BTCUSDT", tick_size="0.10", lot_size="0.001")
    got = to_price(mid(_frame()), inst)
    _close(got, [NAN, 10.1, 10.1, 10.1, 10.15, NAN])
    with pytest.raises(SchemaError, match="instrument is None"):
        to_price(np.zeros(1), None)


def _random_frame(rng, n, levels):
    """Random top-N rows: decreasing bids below 100, increasing asks from 100, random empty tails, a few
    locked or crossed rows."""
    bp = 100 - np.cumsum(rng.integers(1, 3, (n, levels)), axis=1)
    ap = 99 + np.cumsum(rng.integers(1, 3, (n, levels)), axis=1)
    ap -= (rng.random(n) < 0.15)[:, None] * rng.integers(0, 4, (n, 1))
    bq = rng.integers(1, 9, (n, levels))
    aq = rng.integers(1, 9, (n, levels))
    lev = np.arange(levels)
    bmiss = lev[None, :] >= rng.integers(0, levels + 1, n)[:, None]
    amiss = lev[None, :] >= rng.integers(0, levels + 1, n)[:, None]
    bp[bmiss], bq[bmiss] = EB, 0
    ap[amiss], aq[amiss] = EA, 0
    return {"bid_price": bp.astype(np.int64), "bid_qty": bq.astype(np.int64), "ask_price": ap.astype(np.int64),
            "ask_qty": aq.astype(np.int64)}


def _on(be, frame):
    return {k: be.asarray(v) for k, v in frame.items()}


@pytest.mark.parametrize("n", [0, 1, 45])
def test_cuda_twin_equals_cpu_twin(n, rng, device_backend):
    levels = 4
    f = _random_frame(rng, n, levels)
    cpu, dev = get_backend("cpu"), device_backend
    fd = _on(dev, f)
    pairs = [(spread(f, backend=cpu), spread(fd, backend=dev)),
             (mid(f, backend=cpu), mid(fd, backend=dev)),
             (microprice(f, backend=cpu), microprice(fd, backend=dev))]
    for k in (1, 3, levels):
        pairs.append((depth_imbalance(f, k, backend=cpu), depth_imbalance(fd, k, backend=dev)))
    a = book_features(f, backend=cpu)
    b = book_features(fd, backend=dev)
    pairs += [(a[k], b[k]) for k in a]
    for x, y in pairs:
        x, y = cpu.to_host(x), dev.to_host(y)
        assert x.dtype == y.dtype == np.float64 and x.shape == y.shape == (n,)
        np.testing.assert_allclose(y, x, rtol=RTOL[np.float64], atol=0, equal_nan=True)
    # the one-launch dict equals the single features
    for k, fn in (("spread_ticks", spread), ("mid_ticks", mid), ("microprice_ticks", microprice)):
        np.testing.assert_array_equal(a[k], fn(f, backend=cpu))
    np.testing.assert_array_equal(a["depth_imbalance_3"], depth_imbalance(f, 3, backend=cpu))


def test_book_frame_on_the_device_backend(device_backend):
    # a frame rebuilt on the CUDA backend runs its features there (the frame's backend is the default)
    f = rebuild_book(HAND, levels=2, backend=device_backend)
    assert f.backend.name == device_backend.name
    out = book_features(f)
    for k, v in EXPECTED.items():
        _close(device_backend.to_host(out[k]), v)


def _assert_causal(frame, t, rng, levels):
    """Rewriting rows after t leaves every feature at rows <= t unchanged."""
    base = book_features(frame, backend="cpu")
    other = _random_frame(rng, frame["bid_price"].shape[0], levels)
    alt = {k: np.concatenate([v[:t + 1], other[k][t + 1:]]) for k, v in frame.items()}
    new = book_features(alt, backend="cpu")
    for k in base:
        np.testing.assert_array_equal(new[k][:t + 1], base[k][:t + 1], err_msg=k)


def _assert_causal_events(rng, n, t):
    """Changing events after event t leaves features of the rows observed at or before t unchanged."""
    ev = _random_events(rng, n)
    f0 = rebuild_book(ev, levels=3, every=0, backend="cpu")
    alt = _random_events(rng, n)
    mixed = events_table({c: np.concatenate([ev.column(c).to_numpy()[:t + 1], alt.column(c).to_numpy()[t + 1:]])
                          for c in ("ts_local", "kind", "side", "price", "qty", "flags")})
    f1 = rebuild_book(mixed, levels=3, every=0, backend="cpu")
    k0 = int((f0.index <= t).sum())
    assert int((f1.index <= t).sum()) == k0
    a, b = book_features(f0), book_features(f1)
    for k in a:
        np.testing.assert_array_equal(b[k][:k0], a[k][:k0], err_msg=k)


def _random_events(rng, n):
    side = rng.choice(np.array([-1, 1]), n)
    price = np.where(side > 0, rng.integers(95, 100, n), rng.integers(100, 105, n))
    kind = np.where(rng.random(n) < 0.03, KIND_CLEAR, KIND_SET)
    return events_table({"ts_local": np.arange(n, dtype=np.int64), "kind": kind, "side": side, "price": price,
                         "qty": rng.integers(0, 6, n),
                         "flags": np.where(rng.random(n) < 0.6, FLAG_EOM, 0)})


def test_no_look_ahead(rng):
    for t in (0, 7, 30, 58):
        _assert_causal(_random_frame(rng, 60, 3), t, rng, 3)
        _assert_causal_events(rng, 60, t)


@pytest.mark.hypothesis
def test_no_look_ahead_property():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 80), frac=st.floats(0, 1))
    def check(seed, n, frac):
        rng = np.random.default_rng(seed)
        t = min(int(frac * n), n - 1)
        _assert_causal(_random_frame(rng, n, 3), t, rng, 3)
        _assert_causal_events(rng, n, t)

    check()


@pytest.mark.parametrize(("frame", "match"), [
    ({"bid_price": np.zeros((2, 1), np.int64)}, "frame lacks column 'bid_qty'"),
    (dict.fromkeys(("bid_price", "bid_qty", "ask_price", "ask_qty"), np.zeros(3, np.int64)),
     r"column 'bid_price' must be 2-D \(rows, levels\), got shape \(3,\)"),
    ({"bid_price": np.zeros((2, 1)), "bid_qty": np.zeros((2, 1), np.int64),
      "ask_price": np.zeros((2, 1), np.int64), "ask_qty": np.zeros((2, 1), np.int64)},
     "column 'bid_price' must hold int64 ticks, got dtype float64"),
    ({"bid_price": np.zeros((2, 1), np.int64), "bid_qty": np.zeros((2, 1), np.int64),
      "ask_price": np.zeros((2, 1), np.int64), "ask_qty": np.zeros((3, 1), np.int64)},
     r"column 'ask_qty' has shape \(3, 1\), expected \(2, 1\)"),
    (dict.fromkeys(("bid_price", "bid_qty", "ask_price", "ask_qty"), np.zeros((2, 0), np.int64)), "no levels"),
    ([1, 2], "expected a BookFrame or a mapping"),
])
def test_bad_frames_raise_schema_error(frame, match):
    with pytest.raises(SchemaError, match=match):
        spread(frame, backend="cpu")


def test_bad_levels_raise_schema_error():
    f = _frame()
    with pytest.raises(SchemaError, match=r"depth_imbalance: levels must be in 1..2 .*got 3"):
        depth_imbalance(f, 3)
    with pytest.raises(SchemaError, match="levels must be an int"):
        depth_imbalance(f, 1.5)
    with pytest.raises(SchemaError, match=r"book_features: imbalance_levels must be in 1..2"):
        book_features(f, imbalance_levels=[1, 0])
