"""Backtesting: the exact event-driven engine and the GPU sweep engine (one core, see
:mod:`gpuflow.kernels.backtest`), strategies, execution algorithms and metrics."""
from __future__ import annotations

from gpuflow.backtest.engine import BacktestConfig, BacktestResult, MarketData, prepare_market, run

__all__ = ["BacktestConfig", "BacktestResult", "MarketData", "prepare_market", "run"]
