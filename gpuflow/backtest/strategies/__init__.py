"""Strategies: small jitted step functions with a declared parameter space.

Each module defines ``NAME``, ``PARAMS`` (``{name: (default, (lo, hi))}``, in the order
of the params row), ``STATE_SIZE`` (float64 state kept between decisions),
``CORES`` (plain-Python helpers it calls) and ``step`` (see
:func:`gpuflow.kernels.backtest.engine_pair`), and optionally ``ACTION_ROWS``: the most action rows one
decision writes (default 8, all; the engine zeroes only these before each decision, which saves thread-local
memory traffic on a GPU, and counts rows returned past them as bad actions; see
:func:`gpuflow.kernels.backtest.action_rows`).  :func:`get_strategy` finds one by name.
"""
from __future__ import annotations

import importlib
from typing import Any

from gpuflow.errors import GpuflowError

__all__ = ["STRATEGIES", "get_strategy"]

STRATEGIES = {
    "market_making": "gpuflow.backtest.strategies.market_making",
    "scripted": "gpuflow.backtest.strategies.scripted",
    "glft_mm": "gpuflow.backtest.strategies.glft_mm",
    "grid_mm": "gpuflow.backtest.strategies.grid_mm",
    "mean_reversion": "gpuflow.backtest.strategies.mean_reversion",
    "ofi_momentum": "gpuflow.backtest.strategies.ofi_momentum",
    "liquidity_provision": "gpuflow.backtest.strategies.liquidity_provision",
    "stat_arb": "gpuflow.backtest.strategies.stat_arb",
    "model_driven": "gpuflow.backtest.strategies.model_driven",
    "stop_loss_overlay": "gpuflow.backtest.strategies.stop_loss_overlay",
    "twap": "gpuflow.backtest.strategies.twap",
    "vwap": "gpuflow.backtest.strategies.vwap",
    "pov": "gpuflow.backtest.strategies.pov",
}


def get_strategy(name: str) -> Any:
    """The strategy module called ``name`` (see :data:`STRATEGIES`)."""
    try:
        return importlib.import_module(STRATEGIES[name])
    except KeyError:
        msg = f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}"
        raise GpuflowError(msg) from None
