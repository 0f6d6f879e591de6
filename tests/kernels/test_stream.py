"""Parity of the streaming-checksum kernel and its CPU twin (the pattern every kernel follows)."""
from __future__ import annotations

import numpy as np
import pytest

from gpuflow.backend import get_backend
from gpuflow.kernels.stream import STREAM_CHECKSUM


def _run(backend_name, ts, px, qty):
    be = get_backend(backend_name)
    out = be.zeros(1, np.int64)
    be.launch(STREAM_CHECKSUM, min(px.size, 4096), be.asarray(ts), be.asarray(px), be.asarray(qty), out)
    be.synchronize()
    return int(be.to_host(out)[0])


def test_hand_worked():
    ts = np.array([10, 20, 30], dtype=np.int64)
    px = np.array([5, 6, 7], dtype=np.int64)
    qty = np.array([3, 3, 0], dtype=np.int64)
    # (5^3)+10 + (6^3)+20 + (7^0)+30 = 16 + 25 + 37
    assert _run("cpu", ts, px, qty) == 78


@pytest.mark.parametrize("n", [0, 1, 33, 1000])
def test_cuda_twin_equals_cpu_twin(n, rng, device_backend):
    ts = rng.integers(0, 2**50, n, dtype=np.int64)  # no int64 wrap: the simulator warns on it
    px = rng.integers(-(2**40), 2**40, n, dtype=np.int64)
    qty = rng.integers(0, 2**20, n, dtype=np.int64)
    assert _run(device_backend.name, ts, px, qty) == _run("cpu", ts, px, qty)
