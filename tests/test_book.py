"""Book rebuild: hand-worked streams, a pure-Python oracle, and CPU == CUDA (simulator) parity."""
from __future__ import annotations

import numpy as np
import pytest

from gpuflow.book import rebuild_book, top_of_book
from gpuflow.schema import (EMPTY_ASK_PRICE as EA, EMPTY_BID_PRICE as EB, FLAG_EOM, KIND_ADD, KIND_CANCEL,
                            KIND_CLEAR, KIND_DELETE, KIND_EXECUTE, KIND_MODIFY, KIND_SET, KIND_TRADE,
                            events_table)

S, T, C = KIND_SET, KIND_TRADE, KIND_CLEAR


def _l2(rows):
    """rows: (kind, side, price, qty, eom)"""
    a = np.array(rows, dtype=np.int64)
    return events_table({"ts_local": np.arange(len(rows), dtype=np.int64) * 10, "kind": a[:, 0],
                         "side": a[:, 1], "price": a[:, 2], "qty": a[:, 3],
                         "flags": np.where(a[:, 4] == 1, FLAG_EOM, 0)})


SIX = _l2([
    (S, +1, 100, 5, 1),   # bid 100x5
    (S, -1, 103, 2, 1),   # ask 103x2
    (S, +1, 101, 1, 1),   # new best bid 101x1
    (S, -1, 102, 4, 0),   # ask 102x4 (message continues)
    (S, +1, 101, 0, 1),   # bid 101 removed -> best 100
    (T, +1, 102, 1, 1),   # trade: book unchanged
])


def test_six_event_l2_top_of_book_hand_worked():
    f = rebuild_book(SIX, levels=2).to_host()
    assert f.bid_price.tolist() == [[100, EB], [100, EB], [101, 100], [101, 100], [100, EB], [100, EB]]
    assert f.bid_qty.tolist() == [[5, 0], [5, 0], [1, 5], [1, 5], [5, 0], [5, 0]]
    assert f.ask_price.tolist() == [[EA, EA], [103, EA], [103, EA], [102, 103], [102, 103], [102, 103]]
    assert f.ask_qty.tolist() == [[0, 0], [2, 0], [2, 0], [4, 2], [4, 2], [4, 2]]
    assert f.ts_local.tolist() == [0, 10, 20, 30, 40, 50]
    assert f.final_book["price"].tolist() == [100, 102, 103]


def test_ofi_hand_worked():
    # observations after rows 0,1,2,4,5 (row 3 is mid-message)
    f = rebuild_book(SIX, levels=1, ofi=True, every=0).to_host()
    assert f.index.tolist() == [0, 1, 2, 4, 5]
    # e = 1{Pb>=Pb'}qb - 1{Pb<=Pb'}qb' - 1{Pa<=Pa'}qa + 1{Pa>=Pa'}qa'
    # row0: bid appears (100 > EB): +5; asks both empty: EA<=EA and >=: -0 + 0      -> 5
    # row1: bid same: +5-5 = 0; ask appears 103 < EA: -2                              -> -2
    # row2: bid 101 > 100: +1; ask same: -2+2                                        -> 1
    # row4: bid 100 < 101: -1; ask 102 < 103: -4                                     -> -5
    # row5: unchanged                                                                -> 0
    assert f.ofi[:, 0].tolist() == [5, -2, 1, -5, 0]


def test_every_k_and_grid():
    f = rebuild_book(SIX, levels=1, every=2).to_host()
    assert f.index.tolist() == [1, 3, 5]
    assert f.bid_price[:, 0].tolist() == [100, 101, 100]
    g = rebuild_book(SIX, levels=1, grid_ns=np.array([-5, 0, 25, 26, 1000])).to_host()
    assert g.bid_price[:, 0].tolist() == [EB, 100, 101, 101, 100]
    assert g.ask_price[:, 0].tolist() == [EA, EA, 103, 103, 102]
    assert g.ts_local.tolist() == [-5, 0, 25, 26, 1000]


def test_clear_and_snapshot():
    ev = _l2([(S, 1, 10, 1, 1), (S, -1, 12, 1, 1), (C, 0, 0, 0, 0), (S, 1, 9, 3, 1), (S, -1, 11, 2, 1)])
    f = rebuild_book(ev, levels=1).to_host()
    assert f.bid_price[:, 0].tolist() == [10, 10, EB, 9, 9]
    assert f.ask_price[:, 0].tolist() == [EA, 12, EA, EA, 11]


def _l3(rows):
    """rows: (kind, side, price, qty, order_id)"""
    a = np.array(rows, dtype=np.int64)
    return events_table({"ts_local": np.arange(len(rows), dtype=np.int64), "kind": a[:, 0], "side": a[:, 1],
                         "price": a[:, 2], "qty": a[:, 3], "order_id": a[:, 4].astype(np.uint64),
                         "flags": np.full(len(rows), FLAG_EOM)})


def test_l3_hand_worked_with_modify():
    ev = _l3([
        (KIND_ADD, 1, 100, 5, 1),
        (KIND_ADD, 1, 100, 3, 2),      # level 100: 8
        (KIND_ADD, -1, 105, 4, 3),
        (KIND_EXECUTE, 1, 100, 2, 1),  # level 100: 6
        (KIND_MODIFY, 1, 101, 3, 2),   # order 2 moves 100 -> 101: 100: 3, 101: 3
        (KIND_CANCEL, -1, 105, 1, 3),  # 105: 3
        (KIND_DELETE, 1, 100, 3, 1),   # 100 gone
    ])
    f = rebuild_book(ev, levels=2).to_host()
    assert f.bid_price.tolist() == [[100, EB], [100, EB], [100, EB], [100, EB], [101, 100], [101, 100], [101, EB]]
    assert f.bid_qty.tolist() == [[5, 0], [8, 0], [8, 0], [6, 0], [3, 3], [3, 3], [3, 0]]
    assert f.ask_qty[:, 0].tolist() == [0, 0, 4, 4, 4, 3, 3]


# ---------------------------------------------------------------- oracle + parity on random streams
def _random_l2(rng, n, width=12):
    kind = np.where(rng.random(n) < 0.05, KIND_TRADE, KIND_SET)
    kind[rng.random(n) < 0.01] = KIND_CLEAR
    side = rng.choice([-1, 1], n)
    mid = 50
    price = np.where(side > 0, mid - rng.integers(0, width, n), mid + 1 + rng.integers(0, width, n))
    qty = np.where(rng.random(n) < 0.3, 0, rng.integers(1, 9, n))
    side[kind == KIND_CLEAR] = rng.choice([-1, 0, 1], int((kind == KIND_CLEAR).sum()))
    eom = rng.random(n) < 0.6
    eom[-1] = True
    return events_table({"ts_local": np.arange(n, dtype=np.int64), "kind": kind, "side": side, "price": price,
                         "qty": qty, "flags": np.where(eom, FLAG_EOM, 0)})


def _oracle(table, levels):
    """Plain-Python replay: dict per side, top levels after every row, OFI over FLAG_EOM observations."""
    book = {1: {}, -1: {}}
    rows = []
    prev = None
    acc = [0] * levels
    ofi_rows = []
    cols = {c: table.column(c).to_pylist() for c in ("kind", "side", "price", "qty", "flags")}
    for k, s, p, q, fl in zip(cols["kind"], cols["side"], cols["price"], cols["qty"], cols["flags"]):
        if k == KIND_SET:
            if q > 0:
                book[s][p] = q
            else:
                book[s].pop(p, None)
        elif k == KIND_CLEAR:
            for sd in (1, -1):
                if s == 0 or s == sd:
                    book[sd].clear()
        bids = sorted(book[1].items(), reverse=True)[:levels]
        asks = sorted(book[-1].items())[:levels]
        bids += [(EB, 0)] * (levels - len(bids))
        asks += [(EA, 0)] * (levels - len(asks))
        cur = (bids, asks)
        if fl & FLAG_EOM:
            if prev is None:
                prev = ([(EB, 0)] * levels, [(EA, 0)] * levels)
            for m in range(levels):
                (bp, bq), (ap, aq) = cur[0][m], cur[1][m]
                (pbp, pbq), (pap, paq) = prev[0][m], prev[1][m]
                acc[m] += (bq if bp >= pbp else 0) - (pbq if bp <= pbp else 0) \
                    - (aq if ap <= pap else 0) + (paq if ap >= pap else 0)
            prev = cur
        rows.append(cur)
        ofi_rows.append(list(acc))
        acc = [0] * levels
    return rows, ofi_rows


@pytest.mark.parametrize("n", [1, 40, 300])
def test_cpu_replay_matches_python_oracle(n, rng):
    ev = _random_l2(rng, n)
    f = rebuild_book(ev, levels=3, ofi=True).to_host()
    rows, ofi_rows = _oracle(ev, 3)
    assert f.bid_price.tolist() == [[p for p, _ in r[0]] for r in rows]
    assert f.bid_qty.tolist() == [[q for _, q in r[0]] for r in rows]
    assert f.ask_price.tolist() == [[p for p, _ in r[1]] for r in rows]
    assert f.ask_qty.tolist() == [[q for _, q in r[1]] for r in rows]
    assert f.ofi.tolist() == ofi_rows


@pytest.mark.parametrize(("chunk", "every", "layout"), [(2, 1, (False, False)), (5, 1, (True, True)),
                                                      (16, 1, (True, False)), (3, 3, (False, True)),
                                                      (4, 7, (True, True)), (5, 0, (False, False)),
                                                      (5, 1, (True, False, True)), (7, 1, (False, True, True)),
                                                      (3, 3, (True, False, True)), (2, 1, (True, False, 2)),
                                                      (3, 1, (False, True, 2)), (4, 7, (True, False, 2)),
                                                      (5, 1, (True, False, 2, True)), (3, 3, (False, True, 0, True)),
                                                      (4, 0, (True, True, 1, True))])
def test_chunked_cuda_rebuild_equals_cpu_twin(chunk, every, layout, rng, device_backend):
    ev = _random_l2(rng, 120)
    cpu = rebuild_book(ev, levels=3, ofi=True, every=every, backend="cpu").to_host()
    gpu = rebuild_book(ev, levels=3, ofi=True, every=every, backend=device_backend, chunk=chunk,
                       layout=layout).to_host()
    for a in ("index", "bid_price", "bid_qty", "ask_price", "ask_qty", "ofi"):
        np.testing.assert_array_equal(getattr(gpu, a), getattr(cpu, a), err_msg=a)
    assert gpu.stats["chunks"] > 1
    # level sets only (L2): int32 level sizes when asked for
    assert gpu.stats["level_size_dtype"] == ("int32" if len(layout) > 3 else "int64")
    for k in ("side", "price", "qty"):
        np.testing.assert_array_equal(gpu.final_book[k], cpu.final_book[k])
        assert gpu.final_book[k].dtype == cpu.final_book[k].dtype


@pytest.mark.parametrize("levels", [1, 3, 7, 16, 17, 20])
@pytest.mark.parametrize("ofi", [True, False])
def test_staged_rows_equal_cpu_twin(levels, ofi, rng, device_backend):
    """Row output mode 2 (rows staged in shared memory, written out by the warp): more than one block of
    32 chunks, a partly idle last block, chunks of different lengths, several rows per write-out.  Up to 20
    levels: rows of more levels than two fit in a lane's stage are staged one at a time (17-20 levels overflowed
    the stage of 16 values before 2026-11-27)."""
    ev = _random_l2(rng, 300)
    cpu = rebuild_book(ev, levels=levels, ofi=ofi, every=1, backend="cpu").to_host()
    gpu = rebuild_book(ev, levels=levels, ofi=ofi, every=1, backend=device_backend, chunk=4,
                       layout=(True, False, 2)).to_host()
    assert gpu.stats["chunks"] > 32 and gpu.stats["chunks"] % 32 != 0
    for a in ("index", "bid_price", "bid_qty", "ask_price", "ask_qty"):
        np.testing.assert_array_equal(getattr(gpu, a), getattr(cpu, a), err_msg=a)
    if ofi:
        np.testing.assert_array_equal(gpu.ofi, cpu.ofi)


def test_int32_level_sizes_only_where_they_fit(rng, device_backend):
    """A level set of 2**31 lots (or an initial level that large) keeps int64 level sizes; 2**31 - 1 fits."""
    for big, dtype in ((2**31 - 1, "int32"), (2**31, "int64")):
        ev = _random_l2(rng, 120).to_pydict()
        ev["qty"][40] = big
        ev["kind"][40] = KIND_SET
        t = events_table({k: np.asarray(v) for k, v in ev.items()})
        cpu = rebuild_book(t, levels=3, ofi=True, backend="cpu").to_host()
        gpu = rebuild_book(t, levels=3, ofi=True, backend=device_backend, chunk=5,
                           layout=(True, False, 0, True)).to_host()
        assert gpu.stats["level_size_dtype"] == dtype
        for a in ("bid_price", "bid_qty", "ask_price", "ask_qty", "ofi"):
            np.testing.assert_array_equal(getattr(gpu, a), getattr(cpu, a), err_msg=a)
    init = {"side": np.array([1], np.int8), "price": np.array([45]), "qty": np.array([2**31])}
    gpu = rebuild_book(_random_l2(rng, 60), levels=2, backend=device_backend, chunk=5, init=init,
                       layout=(True, False, 0, True))
    assert gpu.stats["level_size_dtype"] == "int64"


def test_chunked_grid_equals_cpu(rng, device_backend):
    ev = _random_l2(rng, 150)
    grid = np.sort(rng.integers(-5, 160, 40))
    cpu = rebuild_book(ev, levels=2, ofi=True, grid_ns=grid, backend="cpu").to_host()
    gpu = rebuild_book(ev, levels=2, ofi=True, grid_ns=grid, backend=device_backend, chunk=6).to_host()
    for a in ("index", "bid_price", "bid_qty", "ask_price", "ask_qty", "ofi"):
        np.testing.assert_array_equal(getattr(gpu, a), getattr(cpu, a), err_msg=a)


def test_chunked_l3_equals_cpu(rng, device_backend):
    ev = _l3([(KIND_ADD, 1, 100, 5, 1), (KIND_ADD, -1, 104, 2, 2), (KIND_ADD, 1, 101, 1, 3),
              (KIND_CANCEL, 1, 100, 2, 1), (KIND_EXECUTE, -1, 104, 2, 2), (KIND_ADD, -1, 103, 7, 4),
              (KIND_DELETE, 1, 101, 1, 3), (KIND_ADD, 1, 102, 2, 5)])
    cpu = rebuild_book(ev, levels=2, ofi=True, backend="cpu").to_host()
    gpu = rebuild_book(ev, levels=2, ofi=True, backend=device_backend, chunk=2).to_host()
    for a in ("bid_price", "bid_qty", "ask_price", "ask_qty", "ofi"):
        np.testing.assert_array_equal(getattr(gpu, a), getattr(cpu, a), err_msg=a)
    # size changes (ADD ops) can sum past any bound: int32 level sizes are not used even when asked for
    gpu = rebuild_book(ev, levels=2, ofi=True, backend=device_backend, chunk=2,
                       layout=(True, False, 0, True)).to_host()
    assert gpu.stats["level_size_dtype"] == "int64"
    np.testing.assert_array_equal(gpu.bid_qty, cpu.bid_qty)


def test_top_of_book_and_causality(rng):
    ev = _random_l2(rng, 200)
    tob = top_of_book(ev)
    # altering events after row t never changes outputs at or before t
    t = 120
    altered = _random_l2(np.random.default_rng(999), 200)
    import pyarrow as pa
    mixed = pa.concat_tables([ev.slice(0, t + 1), altered.slice(t + 1)])
    tob2 = top_of_book(mixed)
    for k in tob:
        np.testing.assert_array_equal(tob[k][: t + 1], tob2[k][: t + 1])


def test_bad_input_is_reported_with_its_row(device_backend):
    # a delete of an order never seen (no initial book): the level goes below zero -> counted, shown empty
    ev = _l3([(KIND_ADD, 1, 100, 5, 1), (KIND_DELETE, 1, 101, 3, 99), (KIND_ADD, -1, 103, 2, 2)])
    f = rebuild_book(ev, levels=1)
    assert f.stats["negative_level_ops"] == 1 and f.stats["first_negative_level_row"] == 1
    assert f.to_host().bid_price[:, 0].tolist() == [100, 100, 100]
    # a diff that leaves the book crossed: counted with its first row, in both twins
    l2 = _l2([(S, 1, 100, 5, 1), (S, -1, 101, 2, 1), (S, 1, 102, 1, 1), (S, 1, 102, 0, 1)])
    for be in ("cpu", device_backend):
        g = rebuild_book(l2, levels=1, backend=be, chunk=2)
        assert g.stats["crossed_messages"] == 1 and g.stats["first_crossed_row"] == 2
        assert g.stats["negative_level_ops"] == 0 and g.stats["first_negative_level_row"] is None


def test_stream_without_message_ends_equals_cpu(device_backend):
    """No row carries FLAG_EOM (every chunk boundary walks back to the start): the whole stream is one
    chunk's replay; the GPU path must still launch and agree (regression: a helper saw
    CUDA_ERROR_INVALID_VALUE at the replay launch on such a 2,000+ event stream)."""
    rng = np.random.default_rng(5)
    n = 2500
    side = rng.choice(np.array([-1, 1]), n)
    price = np.where(side > 0, rng.integers(90, 100, n), rng.integers(100, 110, n))
    ev = events_table({"ts_local": np.sort(rng.integers(0, 1000, n)), "kind": np.full(n, KIND_SET),
                       "side": side, "price": price, "qty": rng.integers(0, 6, n), "flags": np.zeros(n)})
    cpu = rebuild_book(ev, levels=5, ofi=True, backend="cpu").to_host()
    gpu = rebuild_book(ev, levels=5, ofi=True, backend=device_backend).to_host()
    for a in ("index", "bid_price", "bid_qty", "ask_price", "ask_qty", "ofi"):
        np.testing.assert_array_equal(getattr(gpu, a), getattr(cpu, a), err_msg=a)
