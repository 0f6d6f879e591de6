"""Event blocks: the engines pass over a block of events at once when its summary shows that none of them can
touch a parameter set (``kernels.backtest.block_quiet``).  The summaries are checked against a hand-worked
block, and the engines with and without the skip against each other, event by event being the reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gpuflow.kernels import backtest as kb

from gpuflow.backtest import BacktestConfig, prepare_market, run
from gpuflow.backtest.strategies import get_strategy
from gpuflow.config import config_context
from gpuflow.schema import FLAG_EOM, KIND_SET, KIND_TRADE, Instrument, events_table

INS = Instrument("test", "X", "1", "1")
S, T = KIND_SET, KIND_TRADE
BIG = 1 << 62


def _market(rows, levels=2):
    a = np.array(rows, dtype=np.int64)
    ev = events_table({"ts_local": a[:, 0], "kind": a[:, 1], "side": a[:, 2], "price": a[:, 3], "qty": a[:, 4],
                       "flags": np.full(len(rows), FLAG_EOM)}, INS)
    return prepare_market(ev, levels=levels)


HAND = [(1, S, 1, 99, 5), (2, S, -1, 101, 4), (3, S, 1, 98, 2), (4, T, -1, 99, 1),   # block 0
        (5, T, 1, 101, 2), (6, S, -1, 102, 3), (7, S, -1, 102, 3), (8, S, 1, 99, 0)]  # block 1


def test_event_view_by_hand():
    # book rows after each set, levels = 2 (empty level: -BIG on the bid side, BIG on the ask side):
    #   e0: 99 | -;  e1: 99 | 101;  e2: 99,98 | 101;  e3, e4: trades (they keep the current row, so they change
    #   none);  e5: 99,98 | 101,102;  e6: repeats that set (a new row with the same levels: a change);
    #   e7: 98 | 101,102
    mk = _market(HAND)
    ev, vst = kb.event_view(mk.ts, mk.inst, mk.row, mk.kind, mk.side, mk.bid_price, mk.bid_qty, mk.ask_price,
                            mk.ask_qty)
    f = ev[kb.V_FLAGS]
    assert mk.row.tolist() == [0, 1, 2, 2, 2, 5, 6, 7]
    assert [int(x & kb.EV_ROW) != 0 for x in f] == [True, True, True, False, False, True, True, True]
    assert [int(x & kb.EV_TRADE) != 0 for x in f] == [False] * 3 + [True, True] + [False] * 3
    assert all(int(x & kb.EV_LAST) != 0 for x in f)  # one event per receive time
    assert ((f >> kb.EV_KIND_SHIFT) & 255).tolist() == [r[1] for r in HAND]
    assert (((f >> kb.EV_SIDE_SHIFT) & 3) - 1).tolist() == [r[2] for r in HAND]
    assert not (f & kb.EV_INST1).any()
    rowed = [0, 1, 2, 5, 6, 7]
    assert ev[kb.V_B0, rowed].tolist() == [99, 99, 99, 99, 99, 98]
    assert ev[kb.V_A0, rowed].tolist() == [BIG, 101, 101, 101, 101, 101]
    assert ev[kb.V_BD, rowed].tolist() == [-BIG, -BIG, 98, 98, 98, -BIG]
    assert ev[kb.V_AD, rowed].tolist() == [BIG, BIG, BIG, 102, 102, 102]
    # state after each event (row e + 1): current row of instrument 0 (instrument 1: none) and mid x 2 (0 until
    # both sides are present)
    assert vst[0].tolist() == [-1, -1, 0, 0]
    assert vst[:, kb.VS_ROW0].tolist() == [-1, 0, 1, 2, 2, 2, 5, 6, 7] and (vst[:, kb.VS_ROW1] == -1).all()
    assert vst[:, kb.VS_MID0].tolist() == [0, 0] + [200] * 6 + [199]
    # two events at one receive time: only the second is the last of it
    mk2 = _market([(1, S, 1, 99, 5), (1, S, -1, 101, 4), (2, S, 1, 98, 2)])
    ev2, _ = kb.event_view(mk2.ts, mk2.inst, mk2.row, mk2.kind, mk2.side, mk2.bid_price, mk2.bid_qty,
                           mk2.ask_price, mk2.ask_qty)
    assert [int(x & kb.EV_LAST) != 0 for x in ev2[kb.V_FLAGS]] == [False, True, True]
    # a side the flags word cannot hold is refused, naming what was expected
    from gpuflow.errors import SchemaError

    bad = mk2.side.copy()
    bad[1] = 2
    with pytest.raises(SchemaError, match="sides in -1..1"):
        kb.event_view(mk2.ts, mk2.inst, mk2.row, mk2.kind, bad, mk2.bid_price, mk2.bid_qty, mk2.ask_price,
                      mk2.ask_qty)


def test_event_block_summary_by_hand():
    # two blocks of 4 events (the rows of test_event_view_by_hand)
    mk = _market(HAND)
    tx = mk.ts - 1
    ev, _ = kb.event_view(mk.ts, mk.inst, mk.row, mk.kind, mk.side, mk.bid_price, mk.bid_qty, mk.ask_price,
                          mk.ask_qty)
    b = kb.event_blocks(mk.ts, tx, mk.price, ev, block=4)
    assert b.shape == (2, kb.NBLK)
    assert b[:, kb.B_TS].tolist() == [4, 8] and b[:, kb.B_TX].tolist() == [3, 7]
    # a sell trade at 99 reaches resting bids (passive bid); a buy trade at 101 resting asks
    assert b[:, kb.B_PB].tolist() == [99, BIG] and b[:, kb.B_PA].tolist() == [-BIG, 101]
    assert b[:, kb.B_MULTI].tolist() == [0, 0]
    # block 0 changes rows at events 0, 1, 2 (bids 99, 98; ask 101); block 1 at 5 and 6 (ask 102) and 7 (bid 99
    # gone)
    assert b[:, kb.B_BIDMAX].tolist() == [99, 99] and b[:, kb.B_ASKMIN].tolist() == [101, 102]
    assert b[0, kb.B_BIDBITS] == (1 << (99 & 63)) | (1 << (98 & 63)) and b[1, kb.B_BIDBITS] == 1 << (99 & 63)
    assert b[:, kb.B_ASKBITS].tolist() == [1 << (101 & 63), 1 << (102 & 63)]
    # row values: best bid / ask and 2nd bid / ask after each change (empty: -BIG / BIG)
    #   e0: 99 | -  -> b0 99, a0 BIG, bd -BIG, ad BIG;  e1: 99 | 101;  e2: 99,98 | 101 -> bd 98
    #   e5, e6: 99,98 | 101,102 -> ad 102;  e7: 98 | 101,102 -> b0 98, bd -BIG
    assert b[:, kb.B_BDMIN].tolist() == [-BIG, -BIG]
    assert b[:, kb.B_A0MIN].tolist() == [101, 101]
    assert b[:, kb.B_ADMAX].tolist() == [BIG, 102]
    assert b[:, kb.B_B0MAX].tolist() == [99, 99]


def test_event_block_levels_by_hand():
    # blocks of 2 at 2 levels: 4 blocks of 2, then one of 8 (all of HAND): its summary is the two blocks of 4
    # of test_event_block_summary_by_hand together (latest times, lowest / highest prices, bits OR-ed)
    mk = _market(HAND)
    tx = mk.ts - 1
    ev, _ = kb.event_view(mk.ts, mk.inst, mk.row, mk.kind, mk.side, mk.bid_price, mk.bid_qty, mk.ask_price,
                          mk.ask_qty)
    assert kb.skip_offsets(8, 2, 2) == [0, 4, 5] and kb.skip_offsets(8, 2, 3) == [0, 4, 5, 6]
    b = kb.event_blocks(mk.ts, tx, mk.price, ev, block=2, levels=2)
    assert b.shape == (5, kb.NBLK)
    assert b[:4, kb.B_TS].tolist() == [2, 4, 6, 8]
    top = b[4]
    assert top[kb.B_TS] == 8 and top[kb.B_TX] == 7
    assert top[kb.B_PB] == 99 and top[kb.B_PA] == 101 and top[kb.B_MULTI] == 0
    assert top[kb.B_BIDMAX] == 99 and top[kb.B_BIDBITS] == (1 << (99 & 63)) | (1 << (98 & 63))
    assert top[kb.B_ASKMIN] == 101 and top[kb.B_ASKBITS] == (1 << (101 & 63)) | (1 << (102 & 63))
    assert top[kb.B_BDMIN] == -BIG and top[kb.B_A0MIN] == 101 and top[kb.B_ADMAX] == BIG and top[kb.B_B0MAX] == 99
    # a third level (blocks of 32) holds the same one block; no more than three levels
    b3 = kb.event_blocks(mk.ts, tx, mk.price, ev, block=2, levels=3)
    np.testing.assert_array_equal(b3[:5], b)
    np.testing.assert_array_equal(b3[5], top)
    with pytest.raises(ValueError, match=r"levels must be in 1..3, got 4"):
        kb.event_blocks(mk.ts, tx, mk.price, ev, block=2, levels=4)


def _random_rows(rng, n):
    rows, t = [], 0
    for _ in range(n):
        t += int(rng.integers(0, 4))
        if rng.random() < 0.2:
            rows.append((t, T, int(rng.choice([-1, 1])), int(rng.integers(95, 106)), int(rng.integers(1, 8))))
        else:
            sd = int(rng.choice([-1, 1]))
            px = int(rng.integers(90, 100)) if sd > 0 else int(rng.integers(101, 111))
            rows.append((t, S, sd, px, int(rng.integers(0, 15))))
    return rows


def _same(a, b):
    for name in ("counters", "account", "equity2", "equity_fee", "fills", "state"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("seed,block,levels", [(1, 16, 1), (2, 16, 1), (3, 4, 1), (3, 64, 1), (1, 4, 3), (2, 4, 2),
                                               (3, 16, 3)])
def test_exact_engine_with_and_without_skips_random_markets(seed, block, levels):
    # 3,000 events, quotes from the touch to 6 ticks away (in and out of the 3 known levels), decisions every
    # 40 ns: many blocks pass a set's orders by, many do not
    mk = _market(_random_rows(np.random.default_rng(seed), 3000), levels=3)
    mm = get_strategy("market_making")
    sets = [{"half_spread_ticks": h, "order_lots": q, "max_position_lots": 8, "skew_ticks_per_lot": 0.25}
            for h in (0, 1, 3, 6) for q in (1, 4)]
    cfg = BacktestConfig(levels=3, sample_ns=97, entry_latency_ns=5, response_latency_ns=3, decision_interval_ns=40,
                         queue_model="probabilistic", partial_fills=True)
    with config_context(backtest_skip_block=0):
        ref = run(mm, sets, mk, cfg, engine="exact")
    with config_context(backtest_skip_block=block, backtest_skip_levels=levels):
        got = run(mm, sets, mk, cfg, engine="exact")
    assert (ref.counters[:, kb.N_FILLS] > 0).sum() >= 6
    _same(ref, got)


@pytest.mark.parametrize("level", [1, 2])
def test_coarse_block_summaries_are_read(monkeypatch, level):
    """The engine reads the coarser levels' summaries where they start (cfg's C_BOFF1 / C_BOFF2): with every
    block of one coarse level made quiet for any set (its times before the first event, no trade or book change
    in it), sets pass over whole stretches of events they should have walked, and their results change;
    intact, they equal the run without skipping (test above)."""
    from gpuflow.backtest.engine import MarketData

    mk = _market(_random_rows(np.random.default_rng(1), 3000), levels=3)
    mm = get_strategy("market_making")
    sets = [{"half_spread_ticks": h, "order_lots": 2, "max_position_lots": 8} for h in (0, 1, 3)]
    cfg = BacktestConfig(levels=3, sample_ns=97, entry_latency_ns=5, response_latency_ns=3, decision_interval_ns=40)
    with config_context(backtest_skip_block=4, backtest_skip_levels=3):
        ref = run(mm, sets, mk, cfg, engine="exact")
    real = MarketData.blocks

    def quiet_level(self, tx, key, size, be, levels=1):
        b = real(self, tx, key, size, be, levels).copy()
        offs = kb.skip_offsets(self.n_events, size, levels)
        rows = b[offs[level]:offs[level + 1]]
        rows[:, [kb.B_TS, kb.B_TX, kb.B_PA, kb.B_BIDMAX, kb.B_ADMAX, kb.B_B0MAX]] = -BIG
        rows[:, [kb.B_PB, kb.B_ASKMIN, kb.B_BDMIN, kb.B_A0MIN]] = BIG
        rows[:, [kb.B_MULTI, kb.B_BIDBITS, kb.B_ASKBITS]] = 0
        return b

    monkeypatch.setattr(MarketData, "blocks", quiet_level)
    with config_context(backtest_skip_block=4, backtest_skip_levels=3):
        bad = run(mm, sets, mk, cfg, engine="exact")
    assert ref.counters[:, kb.N_FILLS].sum() > 0
    assert not np.array_equal(ref.counters, bad.counters)


def test_exact_engine_with_and_without_skips_binance(shared_data: Path):
    """The bench's grid on the first 100,000 events of the USD-M recording: every fill the same."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "bench"))
    import argparse

    import bench_backtest_gpu as bb

    ns = argparse.Namespace(path=str(shared_data / "binance" / "usdm" / "btcusdt_20240808.gz"), max_events=100_000,
                            synthetic_events=0, seed=7)
    mk, _ = bb.load_market("binance", ns)
    cfg = bb._config(mk, bb.SETTINGS["decision_interval_ns"])
    grid = bb.param_grid(24, seed=7)
    mm = get_strategy("market_making")
    with config_context(backtest_skip_block=0):
        ref = run(mm, grid, mk, cfg, engine="exact")
    got = run(mm, grid, mk, cfg, engine="exact")
    assert ref.counters[:, kb.N_FILLS].sum() > 100
    _same(ref, got)


@pytest.mark.parametrize("tile,threads,block,levels", [(0, 64, 16, 1), (32, 32, 16, 1), (0, 32, 4, 3), (64, 32, 4, 3)])
def test_sweep_engine_with_skips_equals_exact_without(device_backend, tile, threads, block, levels):
    # the GPU kernel skips a block when the whole warp can (the simulator, without warp votes, per thread:
    # threads of one block at different events); with tiles of 32 events (400 events: 12 whole tiles and a
    # partial one) block by block inside each tile; blocks of 64 or 32 threads on a device (the simulator
    # runs at most 32)
    mk = _market(_random_rows(np.random.default_rng(9), 400), levels=3)
    mm = get_strategy("market_making")
    sets = [{"half_spread_ticks": h, "order_lots": 2, "max_position_lots": 6, "skew_ticks_per_lot": 0.0}
            for h in (0, 2, 5)]
    cfg = BacktestConfig(levels=3, sample_ns=61, entry_latency_ns=4, response_latency_ns=2, decision_interval_ns=30)
    with config_context(backtest_skip_block=0):
        ref = run(mm, sets, mk, cfg, engine="exact")
    with config_context(backtest_skip_block=block, backtest_skip_levels=levels, backtest_event_tile=tile,
                        backtest_block_threads=threads):
        got = run(mm, sets, mk, cfg, engine="sweep", backend=device_backend)
        assert kb.engine_pair(mm).threads == threads
    assert ref.counters[:, kb.N_FILLS].sum() > 0
    _same(ref, got)


def test_skip_block_option_auto(monkeypatch, fake_gpu):
    """'auto' (the default): blocks of 16 for 8 sets or more, none for fewer (the summaries would cost more
    than they save), on the CPU and on a GPU, with or without event tiles; the engine passes the block size to
    the kernels as its log2 (cfg[C_SKIP]) with the summaries.  A block that does not divide the GPU's event
    tile is refused, naming both options."""
    from gpuflow.backend import get_backend
    from gpuflow.backtest import engine as eng

    seen, cfgs = [], []
    real_launch = type(get_backend("cpu")).launch

    def spy(self, pair, n, *args):
        if pair.name.startswith("backtest"):
            seen.append((self.uses_cuda, int(args[14][kb.C_SKIP]), args[-1].shape[0]))
            cfgs.append(np.array(args[14]))
        return real_launch(self, pair, n, *args)

    mk = _market(_random_rows(np.random.default_rng(4), 100), levels=3)
    monkeypatch.setattr(type(get_backend("cpu")), "launch", spy)
    mm = get_strategy("market_making")
    cfg = BacktestConfig(levels=3, sample_ns=61, decision_interval_ns=30)
    eight = [{"half_spread_ticks": h} for h in range(8)]
    run(mm, eight, mk, cfg, engine="exact")
    assert seen[-1] == (False, 4, 7)  # 100 events: 7 blocks of 16
    run(mm, eight[:7], mk, cfg, engine="exact")
    assert seen[-1] == (False, 0, 0)
    with config_context(backtest_skip_block=0):
        run(mm, eight, mk, cfg, engine="exact")
    assert seen[-1] == (False, 0, 0)
    with config_context(backtest_skip_block=32):
        run(mm, {}, mk, cfg, engine="exact")
    assert seen[-1] == (False, 5, 4)

    monkeypatch.setattr(eng, "get_backend", lambda b=None: fake_gpu(spy))
    monkeypatch.setattr(eng, "Backend", fake_gpu)
    run(mm, eight, mk, cfg, engine="sweep", backend="fake")
    assert seen[-1] == (False, 4, 7)  # the fake GPU launches on the CPU twin underneath
    run(mm, eight[:7], mk, cfg, engine="sweep", backend="fake")
    assert seen[-1][1:] == (0, 0)
    with config_context(backtest_event_tile=16):
        run(mm, eight, mk, cfg, engine="sweep", backend="fake")
    assert seen[-1] == (False, 4, 7)
    with config_context(backtest_event_tile=16, backtest_skip_block=32), \
            pytest.raises(ValueError, match=r"backtest_skip_block=32 does not divide backtest_event_tile=16"):
        run(mm, eight, mk, cfg, engine="sweep", backend="fake")
    # levels: the coarsest block must divide the tile; the summaries of every level travel, with their offsets
    with config_context(backtest_event_tile=64, backtest_skip_block=8, backtest_skip_levels=3), \
            pytest.raises(ValueError, match=r"coarsest skip block \(128 events: backtest_skip_block=8, "
                                            r"backtest_skip_levels=3\) does not divide backtest_event_tile=64"):
        run(mm, eight, mk, cfg, engine="sweep", backend="fake")
    with config_context(backtest_skip_block=4, backtest_skip_levels=3):
        run(mm, eight, mk, cfg, engine="exact")
    assert seen[-1] == (False, 2, 25 + 7 + 2)  # 100 events: 25 blocks of 4, 7 of 16, 2 of 64
    assert cfgs[-1][[kb.C_SKIP_LEVELS, kb.C_BOFF1, kb.C_BOFF2]].tolist() == [3, 25, 32]


def test_gpu_kernel_votes_per_warp_the_simulator_and_cpu_per_set(monkeypatch, fake_device_jit):
    """On a device the kernel skips a block only when the whole warp can (cuda.all_sync over the active lanes);
    the simulator, which has no warp votes, and the CPU twin decide per set."""
    from gpuflow import backend as gb

    mm = get_strategy("market_making")
    for sim, want, want_any in ((False, kb.warp_all_cuda, kb.warp_any_cuda), (True, kb.warp_all_cpu, kb.warp_all_cpu)):
        monkeypatch.setattr(gb, "simulator_enabled", lambda s=sim: s)
        monkeypatch.setattr(kb, "simulator_enabled", lambda s=sim: s)
        monkeypatch.setattr(kb, "_PAIRS", {})
        pair = kb.engine_pair(mm)
        assert pair.cuda.__globals__["warp_all"].__code__ is want.__code__
        assert pair.cuda.__globals__["warp_any"].__code__ is want_any.__code__  # the re-vote after a set acted
        assert pair.cpu.py_func.__globals__["warp_all"].py_func.__code__ is kb.warp_all_cpu.__code__
        assert pair.cpu.py_func.__globals__["warp_any"].py_func.__code__ is kb.warp_all_cpu.__code__
