"""gpuflow.backend: launcher checks and the NVVM optimisation-level switch."""
from __future__ import annotations

import os

import numpy as np
import pytest
from gpuflow.kernels.stream import STREAM_CHECKSUM
from numba import cuda

from gpuflow.backend import KernelPair, get_backend, nvvm_opt_level


def test_launcher_rejects_more_than_1024_threads_per_block(device_backend):
    x = np.arange(10, dtype=np.int64)
    out = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="2048 threads per block"):
        device_backend.launch(STREAM_CHECKSUM, 10, x, x, x, out, threads=2048)
    pair = KernelPair("t", STREAM_CHECKSUM.cuda, STREAM_CHECKSUM.cpu, threads=0)
    with pytest.raises(ValueError, match="0 threads per block"):
        device_backend.launch(pair, 10, x, x, x, out)
    get_backend("cpu").launch(pair, 10, x, x, x, out)  # the CPU twin has no blocks


def test_nvvm_opt_level_overrides_and_restores(monkeypatch):
    from numba.cuda.cudadrv import nvvm

    from gpuflow import backend

    seen = []
    monkeypatch.setattr(nvvm, "compile_ir", lambda ir, **o: seen.append(o.get("opt")))
    before = backend.NVVM_OVERRIDES.get(1, 0)
    with nvvm_opt_level(1):
        nvvm.compile_ir("ir", opt=3)
    nvvm.compile_ir("ir", opt=3)
    assert seen == [1, 3]
    assert backend.NVVM_OVERRIDES[1] == before + 1
    opts = []
    monkeypatch.setattr(nvvm, "compile_ir", lambda ir, **o: opts.append(o))
    with nvvm_opt_level(None, fma=False):
        nvvm.compile_ir("ir", opt=3)
    assert opts == [{"opt": 3, "fma": False}]
    with pytest.raises(ValueError, match="0..3"):
        with nvvm_opt_level(5):
            pass


def test_backtest_kernel_compiles_at_the_configured_level():
    from gpuflow.kernels.backtest import engine_pair

    from gpuflow import config
    from gpuflow.backtest.strategies import get_strategy

    pair = engine_pair(get_strategy("market_making"))
    assert pair.nvvm_opt == config.get_option("backtest_nvvm_opt") == 1
    assert pair.nvvm_fma is False  # float results as on the CPU: sweep == exact bit for bit


def test_backtest_kernel_is_compiled_without_link_time_optimisation(monkeypatch, fake_device_jit):
    """With nvJitLink installed (the GPU machines) numba-cuda links LTO-IR by default and nvJitLink then
    re-optimises the whole engine kernel at -O3, taking minutes; the engine kernel asks for lto=False
    (passed to cuda.jit only on a real device: the simulator's jit has no such option)."""
    from gpuflow.kernels import backtest as kbt

    from gpuflow import backend as gb
    from gpuflow.backtest.strategies import get_strategy

    seen = fake_device_jit
    kbt.engine_pair(get_strategy("market_making"))
    assert {"lto": False} in seen
    seen.clear()
    monkeypatch.setattr(gb, "simulator_enabled", lambda: True)
    monkeypatch.setattr(kbt, "_PAIRS", {})
    kbt.engine_pair(get_strategy("market_making"))
    assert all("lto" not in kw for kw in seen)
    if not gb.simulator_enabled():  # a real numba-cuda: the option reaches the dispatcher
        monkeypatch.undo()
        monkeypatch.setattr(kbt, "_PAIRS", {})
        assert kbt.engine_pair(get_strategy("market_making")).cuda.targetoptions["lto"] is False


def test_backtest_kernel_register_cap_reaches_the_jit(monkeypatch, fake_device_jit):
    """``backtest_max_registers`` (or engine_pair's argument) becomes cuda.jit's max_registers on a device, a
    separate kernel per cap; 0 passes no cap; the simulator's jit gets none."""
    from gpuflow.kernels import backtest as kbt

    from gpuflow import backend as gb
    from gpuflow import config
    from gpuflow.backtest.strategies import get_strategy

    seen = fake_device_jit
    mm = get_strategy("market_making")
    a = kbt.engine_pair(mm, max_registers=96)
    assert seen[-1].get("max_registers") == 96
    with config.config_context(backtest_max_registers=128):
        b = kbt.engine_pair(mm)
    assert seen[-1].get("max_registers") == 128
    c = kbt.engine_pair(mm, max_registers=0)
    assert "max_registers" not in seen[-1]
    assert len({id(a), id(b), id(c)}) == 3 and "regs 96" in a.name and "regs" not in c.name
    from gpuflow.errors import GpuflowError

    with pytest.raises(GpuflowError, match="backtest_max_registers"):
        config.set_option("backtest_max_registers", 100)
    monkeypatch.setattr(gb, "simulator_enabled", lambda: True)
    monkeypatch.setattr(kbt, "_PAIRS", {})
    kbt.engine_pair(mm, max_registers=96)
    assert "max_registers" not in seen[-1]


def test_book_replay_register_cap_reaches_the_jit(monkeypatch, fake_device_jit):
    """``book_replay_max_registers`` (or replay_pair's argument) becomes cuda.jit's max_registers for the thread
    replay on a device, a separate kernel per cap (plain and staged); 0, the default, passes none."""
    from gpuflow.kernels import book as kbk

    from gpuflow import config
    from gpuflow.errors import GpuflowError

    seen = fake_device_jit
    monkeypatch.setattr(kbk, "_REPLAY", {})
    assert config.get_option("book_replay_max_registers") == 0
    a = kbk.replay_pair(5)
    assert "max_registers" not in seen[-1] and "regs" not in a.name
    with config.config_context(book_replay_max_registers=112):
        b = kbk.replay_pair(5)
        s = kbk.replay_pair(5, staged=True)
    assert seen[-2].get("max_registers") == 112 and seen[-1].get("max_registers") == 112
    c = kbk.replay_pair(5, registers=96)
    assert seen[-1].get("max_registers") == 96
    assert len({id(a), id(b), id(s), id(c)}) == 4 and "regs 112" in b.name and "staged" in s.name
    assert kbk.replay_pair(5, registers=112) is b
    with pytest.raises(GpuflowError, match="book_replay_max_registers"):
        config.set_option("book_replay_max_registers", 100)


def test_backtest_kernel_inlines_every_core_on_a_device(monkeypatch, fake_device_jit):
    """On a device every core of the engine kernel is compiled with forceinline (NVVM's alwaysinline): at -O1
    some stayed calls in the sm_90 SASS, each saving and restoring live registers through local memory; the
    simulator's jit gets no such option.  Twins refuses a forceinline name that is not one of its cores."""
    from gpuflow.kernels import backtest as kbt

    from gpuflow import backend as gb
    from gpuflow.backend import Twins
    from gpuflow.backtest.strategies import get_strategy

    seen = fake_device_jit
    kbt.engine_pair(get_strategy("market_making"))
    dev = [kw for kw in seen if kw.get("device")]
    assert len(dev) >= 20 and all(kw.get("forceinline") is True for kw in dev)
    seen.clear()
    monkeypatch.setattr(gb, "simulator_enabled", lambda: True)
    monkeypatch.setattr(kbt, "_PAIRS", {})
    kbt.engine_pair(get_strategy("market_making"))
    assert all("forceinline" not in kw for kw in seen)

    def one(x):
        return x + 1

    with pytest.raises(ValueError, match="forceinline names no core"):
        Twins(one, forceinline=["two"])


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1", reason="simulator only")
def test_simulator_local_arrays_start_as_garbage_not_zeros():
    """conftest makes the simulator's thread-local arrays uninitialised-looking, as on a GPU."""

    @cuda.jit
    def k(out):
        a = cuda.local.array(3, dtype=np.int64)
        out[0] = a[1]

    o = np.zeros(1, np.int64)
    k[1, 1](o)
    assert o[0] != 0


def test_simulator_shared_arrays_are_one_array_per_block_when_threads_start_together():
    """The simulator's cuda.shared.array, called by 32 threads released at once, gives them one array.

    Unlocked (numba-cuda 0.30.4) about 1 in 13 such blocks got two arrays (200 blocks: 15, CPU box,
    2026-11-27); gpuflow.backend puts the lookup under a lock when the simulator is on."""
    import sys
    import threading

    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    from gpuflow.backend import _lock_simulator_shared_arrays

    _lock_simulator_shared_arrays()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the unlocked race then shows
    split = 0
    try:
        for _ in range(300):
            sh = FakeCUDAShared(0)
            got: list = [None] * 32
            gate = threading.Barrier(32)

            def lane(i: int, sh=sh, got=got, gate=gate) -> None:
                gate.wait()
                got[i] = sh.array((32, 5, 16), np.int64)

            ts = [threading.Thread(target=lane, args=(i,)) for i in range(32)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            split += len({id(g) for g in got}) > 1
            other = sh.array((4,), np.int64)  # another line: another array
            assert other is not got[0] and other.shape == (4,)
    finally:
        sys.setswitchinterval(old)
    assert split == 0
