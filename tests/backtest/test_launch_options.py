"""The sweep kernel's launch options: blocks per SM and the automatic register cap, worked out by hand."""
from __future__ import annotations

import types

import pytest
from gpuflow.kernels import backtest as kb

from gpuflow import backend as gb
from gpuflow.backtest import engine as eng
from gpuflow.config import config_context


def test_blocks_per_sm_by_hand():
    # 65,536 registers per SM, allocated in units of 8 per thread; at most 32 blocks and 2,048 threads
    assert kb.blocks_per_sm(130, 64) == 7  # 136 x 64 = 8,704 registers per block: 7.5
    assert kb.blocks_per_sm(130, 32) == 15  # 4,352 per block: 15.06
    assert kb.blocks_per_sm(128, 64) == 8
    assert kb.blocks_per_sm(80, 64) == 12  # 5,120: 12.8
    assert kb.blocks_per_sm(80, 32) == 25  # 2,560: 25.6
    assert kb.blocks_per_sm(16, 32) == 32  # the block limit
    assert kb.blocks_per_sm(16, 256) == 8  # the thread limit


@pytest.mark.parametrize("n_sets,threads,want", [
    (10_000, 64, 0),  # 157 blocks: one wave either way (924 uncapped, 1,584 capped on 132 SMs)
    (100_000, 64, 80),  # 1,563 blocks: two waves uncapped, one capped
    (60_000, 32, 0),  # 1,875 blocks: one wave of 1,980 uncapped
    (100_000, 32, 80),  # 3,125 blocks: two waves uncapped, one of 3,300 capped
    (1_000_000, 64, 80),  # 15,625 blocks: 17 waves uncapped, 10 capped
    (1, 32, 0),
])
def test_auto_register_cap_saves_a_wave(n_sets, threads, want):
    assert kb.auto_register_cap(n_sets, threads, 132) == want


def test_register_cap_option(monkeypatch):
    gpu = types.SimpleNamespace(uses_cuda=True)
    cpu = types.SimpleNamespace(uses_cuda=False)
    monkeypatch.setattr(gb, "device_sm_count", lambda: 132)
    monkeypatch.setattr(gb, "simulator_enabled", lambda: False)
    with config_context(backtest_max_registers="auto", backtest_block_threads=32):
        assert eng._register_cap(100_000, gpu) == 80
        assert eng._register_cap(10_000, gpu) == 0
        assert eng._register_cap(100_000, cpu) == 0  # the CPU twin has no registers to cap
    with config_context(backtest_max_registers=96):
        assert eng._register_cap(10_000, gpu) == 96
    with config_context(backtest_max_registers=0):
        assert eng._register_cap(100_000, gpu) == 0
    monkeypatch.setattr(gb, "simulator_enabled", lambda: True)
    with config_context(backtest_max_registers="auto"):
        assert eng._register_cap(100_000, gpu) == 0  # the simulator compiles nothing
    # the option's 'auto' means no cap where a kernel is built without the engine's choice
    from gpuflow.backtest.strategies import get_strategy

    mm = get_strategy("market_making")
    with config_context(backtest_max_registers="auto"):
        assert kb.engine_pair(mm).name == "backtest[market_making]"
    with config_context(backtest_max_registers=80, backtest_block_threads=64):
        assert kb.engine_pair(mm).name == "backtest[market_making][regs 80][threads 64]"
