"""A streaming pass over events: the memory-bandwidth ceiling for any per-event kernel.

``checksum[b] = sum(price[i] ^ qty[i] + ts_local[i])`` over the events of block
``b`` (int64 wrap-around).  The GPU twin reads every event exactly once with a
grid-stride loop and adds one partial sum per thread with an atomic; the CPU twin
is the same loop.  Benchmarks compare book kernels with this pass.
"""
from __future__ import annotations

import numpy as np
from gpuflow.backend import KernelPair, Twins, cuda

__all__ = ["STREAM_CHECKSUM", "event_term"]


def event_term(ts_local, price, qty):  # pragma: no cover - jitted
    """Scalar core: one event's contribution (int64, wraps on overflow)."""
    return (price ^ qty) + ts_local


def stream_checksum_cuda(ts_local, price, qty, out):  # pragma: no cover - device code
    """GPU twin of :func:`stream_checksum_cpu`; ``out``: int64[1], zeroed by the caller."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    acc = np.int64(0)
    for i in range(start, price.size, stride):
        acc += event_term(ts_local[i], price[i], qty[i])
    cuda.atomic.add(out, 0, acc)


def stream_checksum_cpu(ts_local, price, qty, out):  # pragma: no cover - jitted
    """CPU twin: ``out[0] += sum(event_term(...))`` over all events."""
    acc = np.int64(0)
    for i in range(price.size):
        acc += event_term(ts_local[i], price[i], qty[i])
    out[0] += acc


_TW = Twins(event_term, inline=True)
STREAM_CHECKSUM = KernelPair("stream_checksum", _TW.cuda(stream_checksum_cuda),
                             _TW.cpu(stream_checksum_cpu, cache=True), threads=256)
