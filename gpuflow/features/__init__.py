"""Microstructure features computed from book frames and events, on the GPU with exact CPU twins.

One module per family; every function documents its formula and a reference, takes a
:class:`gpuflow.book.BookFrame` (top-N levels after events) and/or event columns, runs through
``gpuflow.backend`` (numba.cuda kernel or its njit twin) and returns arrays on the backend's device.
Feature rows are stamped with ``ts_local``: a value at time t only uses events with ``ts_local <= t``.

Modules: :mod:`~gpuflow.features.book` (spread, mid, microprice, depth imbalance),
:mod:`~gpuflow.features.ofi` (order-flow imbalance family), :mod:`~gpuflow.features.flow`
(trade sign, taker pressure, returns, realized volatility, Kyle's and Hasbrouck's lambda),
:mod:`~gpuflow.features.liquidity` (hidden liquidity, icebergs, quote stuffing, latency, lead-lag).
"""
from __future__ import annotations

__all__: list[str] = []
