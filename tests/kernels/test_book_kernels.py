"""Each kernel of gpuflow.kernels.book against its njit twin (CUDA simulator in CI, the GPU with GPUFLOW_TEST_GPU=1)."""
from __future__ import annotations

import numpy as np
import pytest

from gpuflow.backend import get_backend
from gpuflow.kernels import book as kb
from gpuflow.schema import FLAG_EOM, FLAG_HIDDEN, KIND_ADD, KIND_CANCEL, KIND_CLEAR, KIND_EXECUTE, KIND_SET, KIND_TRADE


def _both(device_backend, pair, n, make_args, outputs):
    """Run ``pair`` on the CPU and the CUDA backend with fresh copies of the same arguments; compare outputs."""
    res = []
    for be in (get_backend("cpu"), device_backend):
        args = [be.asarray(a.copy()) if isinstance(a, np.ndarray) else a for a in make_args()]
        be.launch(pair, n, *args)
        be.synchronize()
        res.append([be.to_host(args[i]) for i in outputs])
    for k, (a, b) in enumerate(zip(*res)):
        np.testing.assert_array_equal(b, a, err_msg=f"{pair.name} output {outputs[k]}")
    return res[0]


def _events(rng, n):
    kind = rng.choice(np.array([KIND_SET, KIND_ADD, KIND_CANCEL, KIND_EXECUTE, KIND_TRADE, KIND_CLEAR], np.uint8), n)
    side = rng.choice(np.array([-1, 1], np.int8), n)
    price = rng.integers(90, 110, n).astype(np.int64)
    qty = rng.integers(0, 9, n).astype(np.int64)
    flags = np.where(rng.random(n) < 0.5, FLAG_EOM, 0).astype(np.uint16)
    flags[rng.random(n) < 0.1] |= FLAG_HIDDEN
    return kind, side, price, qty, flags


@pytest.mark.parametrize("emit_mode", [0, 1, 2, 3])
def test_prepare(rng, device_backend, emit_mode):
    from gpuflow.book import _OP_OF_KIND, _SIGN_OF_KIND, _init_tables

    _init_tables()
    n = 300
    kind, side, price, qty, flags = _events(rng, n)
    emit = (rng.random(n) < 0.3).astype(np.uint8)
    big = 1 << 62

    def args():
        return [kind, side, price, qty, flags, np.int64(emit_mode), np.int64(3), emit, _OP_OF_KIND, _SIGN_OF_KIND,
                np.zeros(n, np.uint8), np.zeros(n, np.int64), np.zeros(n, np.uint8),
                np.array([big, -big, big, -big, 0, 0, 0], np.int64)]

    o_kind, o_qty, o_flags, mm = _both(device_backend, kb.PREPARE, 64, args, [10, 11, 12, 13])
    # hand checks on the CPU result: hidden executions are no-ops, cancels are negative
    assert (o_kind[(kind == KIND_EXECUTE) & ((flags & FLAG_HIDDEN) != 0)] == kb.OP_NONE).all()
    assert (o_qty[kind == KIND_CANCEL] == -qty[kind == KIND_CANCEL]).all()
    assert mm[4] == int(((o_flags & kb.F_EMIT) != 0).sum())
    book = (o_kind == kb.OP_SET) | (o_kind == kb.OP_ADD)
    assert mm[5] == int((o_kind == kb.OP_ADD).sum()) > 0
    assert mm[6] == int(np.abs(o_qty[book]).max()) > 0


def test_chunk_bounds(rng, device_backend):
    n, L = 200, 16
    flags = np.where(rng.random(n) < 0.3, kb.F_OBSERVE, 0).astype(np.uint8)
    C = (n + L - 1) // L
    (bounds,) = _both(device_backend, kb.CHUNK_BOUNDS, C + 1,
                      lambda: [np.int64(L), np.int64(n), flags, np.zeros(C + 1, np.int64)], [3])
    assert bounds[0] == 0 and bounds[-1] == n and (np.diff(bounds) >= 0).all()
    for c in range(1, C):
        assert bounds[c] == 0 or flags[bounds[c] - 1] & kb.F_OBSERVE


def test_interleave_tiles(rng, device_backend):
    """Several tiles in both directions (chunks and ops), uneven chunks, an empty chunk: every slot holds
    op j of chunk c or padding."""
    C, n = 70, 2_100
    cuts = np.sort(rng.choice(np.arange(1, n), C - 2, replace=False))
    bounds = np.concatenate([[0], cuts, [cuts[-1]], [n]]).astype(np.int64)  # chunk C-2 is empty
    lens = np.diff(bounds)
    Lp = int(lens.max())
    side = rng.choice(np.array([-1, 0, 1], np.int8), n)
    price = rng.integers(-(1 << 40), 1 << 40, n).astype(np.int64)
    kind = rng.integers(0, 4, n).astype(np.uint8)
    qty = rng.integers(-(1 << 40), 1 << 40, n).astype(np.int64)
    flags = rng.integers(0, 4, n).astype(np.uint8)
    n_ct, n_jt = -(-C // kb.TILE), -(-Lp // kb.TILE)
    assert n_ct >= 3 and n_jt >= 2
    il = [np.full(Lp * C, 7, a.dtype) for a in (side, price, kind, qty, flags)]
    i_side, i_price, i_kind, i_qty, i_flags = _both(
        device_backend, kb.INTERLEAVE, n_ct * n_jt,
        lambda: [bounds, np.int64(C), np.int64(n_ct), side, price, kind, qty, flags, *[a.copy() for a in il]],
        [8, 9, 10, 11, 12])
    for c in range(C):
        j = np.arange(Lp)
        t = c + j * C
        real = j < lens[c]
        src = bounds[c] + j[real]
        for got, want in ((i_side, side), (i_price, price), (i_kind, kind), (i_qty, qty), (i_flags, flags)):
            np.testing.assert_array_equal(got[t[real]], want[src])
        assert (i_kind[t[~real]] == kb.OP_NONE).all() and (i_flags[t[~real]] == 0).all()
        assert (i_qty[t[~real]] == 0).all() and (i_side[t[~real]] == 0).all()


def test_summarise_and_scan(rng, device_backend):
    n, C, wb, wa = 240, 12, 7, 5
    kind = rng.choice(np.array([kb.OP_SET, kb.OP_ADD, kb.OP_NONE, kb.OP_CLEAR], np.uint8), n, p=[.5, .3, .15, .05])
    side = rng.choice(np.array([-1, 1], np.int8), n)
    side[kind == kb.OP_CLEAR] = rng.choice(np.array([-1, 0, 1], np.int8), int((kind == kb.OP_CLEAR).sum()))
    price = np.where(side > 0, 100 + rng.integers(0, wb, n), 200 + rng.integers(0, wa, n)).astype(np.int64)
    qty = rng.integers(-3, 9, n).astype(np.int64)
    # uneven chunks (as after moving boundaries to message ends): interleaving pads the short ones
    bounds = np.concatenate([[0], np.sort(rng.choice(np.arange(1, n), C - 1, replace=False)), [n]]).astype(np.int64)
    w = wb + wa
    dummy = np.zeros(1, np.int32)

    def sargs():
        return [bounds, np.int64(C), False, side, price, kind, qty, np.ones((C, w), np.int8),
                np.zeros((C, w), np.int64), np.int64(wb), np.int64(wa), np.int64(100), np.int64(200), False, dummy,
                dummy]

    sa, sb = _both(device_backend, kb.SUMMARISE, C, sargs, [7, 8])
    # the same ops interleaved (op j of chunk c at c + j*C) summarise to the same maps
    lens = np.diff(bounds)
    Lp = int(lens.max())
    il = [np.full(Lp * C, 7, a.dtype) for a in (side, price, kind, qty, kind)]  # garbage: every slot is written
    n_ct = -(-C // kb.TILE)  # the CUDA kernel moves tiles of TILE chunks x TILE ops
    (i_side, i_price, i_kind, i_qty, i_flags) = _both(
        device_backend, kb.INTERLEAVE, n_ct * -(-Lp // kb.TILE),
        lambda: [bounds, np.int64(C), np.int64(n_ct), side, price, kind, qty, kind, *[a.copy() for a in il]],
        [8, 9, 10, 11, 12])
    for c in range(C):
        for j in range(Lp):
            if j < lens[c]:
                assert i_price[c + j * C] == price[bounds[c] + j] and i_kind[c + j * C] == kind[bounds[c] + j]
            else:  # padding past the chunk's end
                assert i_kind[c + j * C] == kb.OP_NONE and i_flags[c + j * C] == 0 and i_qty[c + j * C] == 0

    def iargs():
        return [bounds, np.int64(C), True, i_side, i_price, i_kind, i_qty, np.ones((C, w), np.int8),
                np.zeros((C, w), np.int64), np.int64(wb), np.int64(wa), np.int64(100), np.int64(200), False, dummy,
                dummy]

    sa2, sb2 = _both(device_backend, kb.SUMMARISE, C, iargs, [7, 8])
    np.testing.assert_array_equal(sa2, sa)
    np.testing.assert_array_equal(sb2, sb)
    G = 4
    ga, gb = _both(device_backend, kb.GROUP_COMPOSE, G * w,
                   lambda: [np.int64(G), np.int64(C), sa, sb, np.zeros((G, w), np.int64), np.zeros((G, w), np.int64)],
                   [4, 5])
    init = rng.integers(0, 5, w).astype(np.int64)
    gstart, final = _both(device_backend, kb.GROUP_SCAN, w,
                          lambda: [np.int64(G), init, ga, gb, np.zeros((G, w), np.int64), np.zeros(w, np.int64)],
                          [4, 5])
    (starts,) = _both(device_backend, kb.GROUP_APPLY, G * w,
                      lambda: [np.int64(G), np.int64(C), sa, sb, gstart, np.zeros((C, w), np.int64), False], [5])
    (starts_t,) = _both(device_backend, kb.GROUP_APPLY, G * w,
                        lambda: [np.int64(G), np.int64(C), sa, sb, gstart, np.zeros((w, C), np.int64), True], [5])
    np.testing.assert_array_equal(starts_t.T, starts)
    # oracle: the level sizes at every chunk start by a plain sequential replay
    row = init.copy()
    for c in range(C):
        np.testing.assert_array_equal(starts[c], row, err_msg=f"chunk {c}")
        for i in range(bounds[c], bounds[c + 1]):
            s = side[i]
            if kind[i] == kb.OP_CLEAR:
                if s >= 0:
                    row[:wb] = 0
                if s <= 0:
                    row[wb:] = 0
            elif kind[i] in (kb.OP_SET, kb.OP_ADD):
                j = price[i] - 100 if s > 0 else wb + price[i] - 200
                row[j] = qty[i] if kind[i] == kb.OP_SET else row[j] + qty[i]
    np.testing.assert_array_equal(final, row)


def test_row_best(rng, device_backend):
    C, wb, wa = 9, 40, 33
    rows = np.where(rng.random((C, wb + wa)) < 0.1, rng.integers(1, 5, (C, wb + wa)), 0).astype(np.int64)
    rows[0] = 0  # an empty book
    (best,) = _both(device_backend, kb.ROW_BEST, C,
                    lambda: [rows, False, np.int64(wb), np.int64(wa), np.zeros((C, 4), np.int64)], [4])
    (best_t,) = _both(device_backend, kb.ROW_BEST, C,
                      lambda: [np.ascontiguousarray(rows.T), True, np.int64(wb), np.int64(wa),
                               np.zeros((C, 4), np.int64)], [4])
    np.testing.assert_array_equal(best_t, best)
    assert best[0].tolist() == [-1, wa, 0, 0]
    for c in range(1, C):
        nzb = np.nonzero(rows[c, :wb])[0]
        nza = np.nonzero(rows[c, wb:])[0]
        assert best[c, 0] == (nzb.max() if nzb.size else -1)
        assert best[c, 1] == (nza.min() if nza.size else wa)
        assert best[c, 2:].tolist() == [nzb.size, nza.size]


@pytest.mark.parametrize("ofi", [True, False])
def test_gather_rows_puts_slot_records_in_row_order(rng, device_backend, ofi):
    """Row k (op k of chunk c) comes from slot c + (k - bounds[c]) * C, fields laid out bp|bq|ap|aq|ofi."""
    n, C, nlev = 57, 6, 3
    bounds = np.concatenate([[0], np.sort(rng.choice(np.arange(0, n + 1), C - 1)), [n]]).astype(np.int64)
    lens = np.diff(bounds)
    Lp = int(lens.max())
    F = (5 if ofi else 4) * nlev
    rec = np.full((Lp * C, F), -99, np.int64)
    for c in range(C):
        for j in range(lens[c]):
            k = bounds[c] + j
            rec[c + j * C] = k * 100 + np.arange(F)  # row k's record: its own number in every field
    outs = [np.zeros((n, nlev), np.int64) for _ in range(5)]
    got = _both(device_backend, kb.GATHER_ROWS, n,
                lambda: [bounds, np.int64(C), np.int64(nlev), ofi, rec, *outs], [5, 6, 7, 8, 9])
    for a in range(5 if ofi else 4):
        np.testing.assert_array_equal(got[a], np.arange(n)[:, None] * 100 + a * nlev + np.arange(nlev))
    if not ofi:
        assert not got[4].any()


def test_stage_values_hold_whole_rows_and_fit_16_warps_per_sm():
    """The staged replay's shared buffer per lane and output array holds whole rows, as many as fit in 10
    values (one row when a row is longer); at 5 levels (two rows) a one-warp block's buffer, with its two
    per-lane counters, is 13,312 B, so 16 blocks fit in an H100/H200 SM's 228 KB (1 KB reserved per block)."""
    from gpuflow.kernels.book import stage_values

    assert [stage_values(n) for n in (1, 2, 3, 4, 5, 6, 7, 10, 11, 16, 20)] == [10, 10, 9, 8, 10, 6, 7, 10, 11, 16, 20]
    per_block = 32 * 5 * 8 * stage_values(5) + 2 * 32 * 8
    assert per_block == 13_312 and 228 * 1024 // (per_block + 1024) == 16
