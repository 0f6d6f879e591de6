"""gpuflow: a GPU-first research framework for limit-order-book market data.

Importing gpuflow touches no device and imports neither cupy nor numba.cuda;
:mod:`gpuflow.backend` does that on first use.
"""
from __future__ import annotations

from gpuflow.errors import (BackendUnavailableError, FormatError, GpuflowError, LookAheadError,
                            ParseError, PerformanceWarning, SchemaError, StoreError, SyncError)

__version__ = "0.1.0"

__all__ = [
    "__version__", "GpuflowError", "SchemaError", "ParseError", "FormatError", "LookAheadError",
    "BackendUnavailableError", "StoreError", "SyncError", "PerformanceWarning",
]
