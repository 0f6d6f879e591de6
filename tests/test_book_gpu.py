"""Book rebuild on a real GPU at full size (marker ``gpu``; run with GPUFLOW_TEST_GPU=1 pytest -m gpu)."""
from __future__ import annotations

import numpy as np
import pytest

from gpuflow.book import rebuild_book
from gpuflow.schema import FLAG_EOM, KIND_CLEAR, KIND_SET, KIND_TRADE

pytestmark = pytest.mark.gpu


def _stream(n, seed):
    rng = np.random.default_rng(seed)
    kind = np.where(rng.random(n) < 0.05, KIND_TRADE, KIND_SET).astype(np.uint8)
    kind[rng.random(n) < 1e-5] = KIND_CLEAR
    side = rng.choice(np.array([-1, 1], np.int8), n)
    mid = np.cumsum(rng.integers(-1, 2, n)) // 64 + 1_000_000
    price = np.where(side > 0, mid - rng.integers(0, 30, n), mid + 1 + rng.integers(0, 30, n)).astype(np.int64)
    qty = np.where(rng.random(n) < 0.3, 0, rng.integers(1, 50, n)).astype(np.int64)
    flags = np.where(rng.random(n) < 0.5, FLAG_EOM, 0).astype(np.uint16)
    return {"ts_local": np.arange(n, dtype=np.int64), "kind": kind, "side": side, "price": price, "qty": qty,
            "flags": flags}


@pytest.mark.parametrize("layout", [(False, False), (True, True), (True, False, 1), (True, False, 2),
                                    (True, False, 2, True)])
@pytest.mark.parametrize("chunk", [None, 64, 4096])
@pytest.mark.parametrize("every", [1, 0, 100])
def test_gpu_equals_cpu_large(chunk, every, layout):
    ev = _stream(2_000_000, seed=5)
    cpu = rebuild_book(ev, levels=5, ofi=True, every=every, backend="cpu")
    gpu = rebuild_book(ev, levels=5, ofi=True, every=every, backend="gpu", chunk=chunk, layout=layout).to_host()
    for a in ("index", "bid_price", "bid_qty", "ask_price", "ask_qty", "ofi"):
        np.testing.assert_array_equal(getattr(gpu, a), getattr(cpu, a), err_msg=a)
    for k in ("side", "price", "qty"):
        np.testing.assert_array_equal(gpu.final_book[k], cpu.final_book[k])


@pytest.mark.parametrize("warps", [None, 7])
@pytest.mark.parametrize("chunk", [None, 64, 4096])
@pytest.mark.parametrize("every", [1, 0, 100])
def test_gpu_warp_replay_equals_cpu_large(chunk, every, warps):
    """The warp replay with the hardware shuffles and votes (the simulator runs them through shared memory)."""
    ev = _stream(2_000_000, seed=6)
    cpu = rebuild_book(ev, levels=5, ofi=True, every=every, backend="cpu")
    gpu = rebuild_book(ev, levels=5, ofi=True, every=every, backend="gpu", chunk=chunk, replay="warp",
                       warps=warps).to_host()
    assert gpu.stats["replay"] == "warp"
    for a in ("index", "bid_price", "bid_qty", "ask_price", "ask_qty", "ofi"):
        np.testing.assert_array_equal(getattr(gpu, a), getattr(cpu, a), err_msg=a)
    for k in ("side", "price", "qty"):
        np.testing.assert_array_equal(gpu.final_book[k], cpu.final_book[k])
