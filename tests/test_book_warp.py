"""The warp replay (``rebuild_book(replay="warp")``: one warp per group of chunks, every op applied by the
whole warp) against the CPU twin, the sequential replay, which test_book.py checks against a plain-Python
oracle.  Under the CUDA simulator (CI) the warp's shuffles and votes go through shared memory; with
GPUFLOW_TEST_GPU=1 the same tests run the hardware primitives.  Small streams: the simulator runs every
lane as a Python thread."""
from __future__ import annotations

import numpy as np
import pytest
from test_book import _l2, _l3, _random_l2

from gpuflow.book import rebuild_book
from gpuflow.schema import EMPTY_BID_PRICE as EB
from gpuflow.schema import (
    KIND_ADD,
    KIND_CANCEL,
    KIND_CLEAR,
    KIND_DELETE,
    KIND_EXECUTE,
    KIND_MODIFY,
    KIND_SET,
    events_table,
)

S, C = KIND_SET, KIND_CLEAR
FIELDS = ("index", "bid_price", "bid_qty", "ask_price", "ask_qty", "ofi")


@pytest.fixture(autouse=True)
def _fast_thread_switches():
    """The simulator's lanes are Python threads that meet at a barrier for every shuffle: with the GIL's
    default switch interval (5 ms) most of the time goes to waiting for turns (4.5 s -> 1.0 s on 60 ops)."""
    import sys

    old = sys.getswitchinterval()
    sys.setswitchinterval(5e-5)
    yield
    sys.setswitchinterval(old)


def _same(ev, device_backend, levels=3, every=1, **kw):
    cpu = rebuild_book(ev, levels=levels, ofi=True, every=every, backend="cpu").to_host()
    gpu = rebuild_book(ev, levels=levels, ofi=True, every=every, backend=device_backend, replay="warp",
                       **kw).to_host()
    for a in FIELDS:
        np.testing.assert_array_equal(getattr(gpu, a), getattr(cpu, a), err_msg=a)
    for k in ("side", "price", "qty"):
        np.testing.assert_array_equal(gpu.final_book[k], cpu.final_book[k], err_msg=k)
    for k in ("negative_level_ops", "first_negative_level_row", "crossed_messages", "first_crossed_row"):
        assert gpu.stats[k] == cpu.stats[k], k
    assert gpu.stats["replay"] == "warp"
    return gpu


def warp_twin_stream(rng):
    """A book wider than a warp's 32 levels per step, level sets, trades, clears of either or both sides (also
    the stream of experiments/tools/kernel_bisect.py's ``book-test`` case)."""
    ev = _random_l2(rng, 70, width=45).to_pydict()
    for i, sd in ((20, 1), (41, 0), (55, -1)):
        ev["kind"][i], ev["side"][i] = C, sd
    return events_table({k: np.asarray(v) for k, v in ev.items()})


@pytest.mark.parametrize(("levels", "every", "chunk"), [(3, 1, 3), (1, 0, 2), (7, 4, 5)])
def test_warp_replay_equals_cpu_twin(levels, every, chunk, rng, device_backend):
    g = _same(warp_twin_stream(rng), device_backend, levels, every, chunk=chunk)
    # more than one chunk, each summarised and replayed by one warp from the scan's start book
    assert g.stats["chunks"] > 1


def test_next_level_found_beyond_a_warp_of_empty_levels(device_backend):
    # top list of 2: removing the best bid must find the level 60 ticks below the second one (two steps of
    # 32 levels), and the same on the ask side; then the new levels re-enter the lists
    rows = [(S, 1, 100, 5, 1), (S, 1, 99, 4, 1), (S, 1, 39, 3, 1), (S, -1, 101, 2, 1), (S, -1, 102, 6, 1),
            (S, -1, 170, 9, 1), (S, 1, 100, 0, 1), (S, -1, 101, 0, 1), (S, 1, 99, 0, 1), (S, -1, 102, 0, 1),
            (S, 1, 70, 1, 1), (S, -1, 150, 1, 1), (S, 1, 39, 0, 0), (S, -1, 170, 0, 1)]
    g = _same(_l2(rows), device_backend, levels=2, chunk=3, warps=2)
    assert g.bid_price[6].tolist() == [99, 39] and g.ask_price[7].tolist() == [102, 170]
    assert g.bid_price[8].tolist() == [39, EB] and g.ask_qty[9].tolist() == [9, 0]


def test_lane_31_in_the_warp_masks(device_backend):
    # the hardware returns a vote's or a match's lane mask as a signed int32 (lane 31 is the sign bit); the
    # simulator's primitives return it the same way.  Widened without masking, a mask holding lane 31 is
    # negative (wrong rows on an H200, 2026-11-27).  (a) A start book whose second level is 31 levels below the
    # best, one level per lane in the warp's first step of 32: the top list of 3 takes lanes 0 and 31, then the
    # next step's first level (bids 100, 69, 60 and asks 101, 132, 141).  (b) Ops 30 and 31 of a batch set the
    # same level: the summary keeps lane 31's size (the later one) for the next chunk's start book.
    rows = [(S, 1, 100, 5, 1), (S, 1, 69, 4, 1), (S, 1, 60, 3, 1), (S, -1, 101, 2, 1), (S, -1, 132, 6, 1),
            (S, -1, 141, 7, 1), (S, 1, 50, 1, 1), (S, -1, 150, 1, 1)]
    g = _same(_l2(rows), device_backend, levels=3, chunk=3)
    assert g.bid_price[6].tolist() == [100, 69, 60] and g.ask_price[7].tolist() == [101, 132, 141]
    rows = [(S, 1, 90 - i % 4, i + 1, 1) for i in range(30)] + [(S, -1, 101, 7, 1), (S, -1, 101, 9, 1)]
    rows += [(S, 1, 80, 1, 1), (S, -1, 120, 1, 1)]
    g = _same(_l2(rows), device_backend, levels=2, chunk=32)
    assert g.stats["chunks"] == 2 and g.ask_qty[33].tolist() == [9, 1]


def test_last_level_set_of_a_batch_wins_in_the_warp_summary(device_backend):
    # 40 level sets in one chunk's first batch of 32, the same few levels set again and again: the chunk's
    # summary must keep each level's last set, and the next chunk starts from it
    rows = [(S, 1, 100 - (i % 3), i + 1, 1) for i in range(40)] + [(S, -1, 101 + (i % 2), 50 + i, 1)
                                                                  for i in range(40)]
    g = _same(_l2(rows), device_backend, levels=3, chunk=20)
    assert g.stats["chunks"] == 4
    # bids 100 / 99 / 98 last set by rows 39 / 37 / 38 (sizes 40 / 38 / 39); asks 101 / 102 by rows 78 / 79
    assert g.bid_qty[39].tolist() == [40, 38, 39] and g.ask_qty[79].tolist() == [88, 89, 0]


def test_warp_replay_l3_size_changes_and_bad_rows(device_backend):
    # ADD ops (size changes) on the same level inside one batch of 32 ops, and a cancel of more than
    # the level holds: counted with its row, as in the sequential replay
    ev = _l3([(KIND_ADD, 1, 100, 5, 1), (KIND_ADD, -1, 104, 2, 2), (KIND_ADD, 1, 101, 1, 3),
              (KIND_CANCEL, 1, 100, 2, 1), (KIND_EXECUTE, -1, 104, 2, 2), (KIND_ADD, -1, 103, 7, 4),
              (KIND_DELETE, 1, 101, 1, 3), (KIND_ADD, 1, 102, 2, 5), (KIND_ADD, 1, 100, 4, 6),
              (KIND_DELETE, 1, 99, 3, 77), (KIND_ADD, 1, 100, 1, 7), (KIND_CANCEL, 1, 100, 8, 6)])
    g = _same(ev, device_backend, levels=2, chunk=2)
    assert g.stats["negative_level_ops"] == 1 and g.stats["first_negative_level_row"] == 9


def test_warp_replay_counts_crossed_books(device_backend):
    l2 = _l2([(S, 1, 100, 5, 1), (S, -1, 101, 2, 1), (S, 1, 102, 1, 1), (S, 1, 102, 0, 1), (S, -1, 99, 1, 1),
              (S, -1, 99, 0, 1)])
    g = _same(l2, device_backend, levels=1, chunk=2)
    assert g.stats["crossed_messages"] == 2 and g.stats["first_crossed_row"] == 2


def test_warp_replay_compressed_price_axis_initial_book_and_int32_sizes(rng, device_backend):
    # prices far apart (a compressed price axis), an initial book, level sizes held as int32
    ev = _random_l2(rng, 40, width=8).to_pydict()
    ev["price"] = [p * 1000 for p in ev["price"]]
    t = events_table({k: np.asarray(v) for k, v in ev.items()})
    init = {"side": np.array([1, 1, -1], np.int8), "price": np.array([41_000, 30_000, 63_000]),
            "qty": np.array([3, 8, 2])}
    cpu = rebuild_book(t, levels=3, ofi=True, init=init, backend="cpu").to_host()
    gpu = rebuild_book(t, levels=3, ofi=True, init=init, backend=device_backend, chunk=3, replay="warp",
                       max_levels=64, layout=(True, False, 0, True)).to_host()
    assert gpu.stats["price_axis"] != "dense" and gpu.stats["level_size_dtype"] == "int32"
    for a in FIELDS:
        np.testing.assert_array_equal(getattr(gpu, a), getattr(cpu, a), err_msg=a)


def test_warp_replay_option_is_checked():
    with pytest.raises(ValueError, match="replay must be 'thread' or 'warp'"):
        rebuild_book(_l2([(S, 1, 100, 5, 1)]), replay="block")


def test_warp_replay_cpu_twin_equals_the_kernel(rng, device_backend):
    """The warp kernels' CPU twins (each chunk summarised, then replayed, op by op) run in the kernels'
    place, on the same inputs: the same rows (under the simulator, whose arrays are host arrays)."""
    from gpuflow.backend import Backend

    if device_backend.name != "cuda-sim":
        pytest.skip("runs the CPU twin on the simulator's host arrays")

    class TwinForWarp(Backend):
        def launch(self, pair, n, *args, threads=None):
            if pair.name.startswith(("book.replay_warp", "book.summarise_warp")):
                return pair.cpu(*args)
            return super().launch(pair, n, *args, threads=threads)

    ev = _random_l2(rng, 90, width=20)
    twin = TwinForWarp("cuda-sim", np)
    for every in (1, 5):
        cpu = rebuild_book(ev, levels=4, ofi=True, every=every, backend="cpu").to_host()
        tw = rebuild_book(ev, levels=4, ofi=True, every=every, backend=twin, chunk=4, replay="warp").to_host()
        assert tw.stats["chunks"] > 1
        for a in FIELDS:
            np.testing.assert_array_equal(getattr(tw, a), getattr(cpu, a), err_msg=a)


def test_auto_warps_fill_one_wave_of_the_capped_kernel(monkeypatch):
    from gpuflow.kernels import book as kb

    import gpuflow.backend as gb
    from gpuflow.backend import Backend
    from gpuflow.book import _auto_warps

    # 64 registers x 32 threads = 2,048 per one-warp block: 65,536 // 2,048 = 32 blocks per SM (also the most
    # blocks an SM takes); 132 SMs
    monkeypatch.setattr(gb, "device_sm_count", lambda: 132)
    assert kb.WARP_REPLAY_REGISTERS == 64
    assert _auto_warps(10**8, Backend("gpu", np)) == 4_224
    assert _auto_warps(1_000, Backend("gpu", np)) == 1_000  # never more chunks than ops
    assert _auto_warps(10**8, Backend("cuda-sim", np)) == 4  # four chunks under the simulator


def test_warp_replay_edges(device_backend):
    """Twenty levels (twenty of the 32 lanes hold list entries), no events, one event, a clock grid, and L3
    modifies (each expanded to two ops, a row only after the second)."""
    rng = np.random.default_rng(3)
    ev = _random_l2(rng, 50, width=30)
    _same(ev, device_backend, levels=20)
    _same(ev.slice(0, 0), device_backend)
    _same(ev.slice(0, 1), device_backend)
    grid = np.sort(rng.integers(-5, 60, 15))
    cpu = rebuild_book(ev, levels=2, ofi=True, grid_ns=grid, backend="cpu").to_host()
    gpu = rebuild_book(ev, levels=2, ofi=True, grid_ns=grid, backend=device_backend, replay="warp").to_host()
    for a in FIELDS:
        np.testing.assert_array_equal(getattr(gpu, a), getattr(cpu, a), err_msg=a)
    l3 = _l3([(KIND_ADD, 1, 100, 5, 1), (KIND_ADD, -1, 104, 2, 2), (KIND_MODIFY, 1, 101, 3, 1),
              (KIND_ADD, 1, 99, 1, 3), (KIND_MODIFY, -1, 103, 1, 2), (KIND_EXECUTE, 1, 101, 1, 1),
              (KIND_DELETE, 1, 99, 1, 3), (KIND_CANCEL, -1, 103, 1, 2)])
    _same(l3, device_backend, levels=2, chunk=2)
