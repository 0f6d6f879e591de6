"""Exceptions and warnings raised by gpuflow.

Every error message names the source (file), the field and the row or line where
that makes sense, says what was expected and what was found, and gives the fix
when there is one.  Build the message in ``msg`` and raise one of these.
"""
from __future__ import annotations

__all__ = [
    "GpuflowError",
    "SchemaError",
    "ParseError",
    "FormatError",
    "LookAheadError",
    "BackendUnavailableError",
    "StoreError",
    "SyncError",
    "PerformanceWarning",
]


class GpuflowError(Exception):
    """Base class of every gpuflow exception."""


class SchemaError(GpuflowError, ValueError):
    """Data does not match the schema: wrong column, dtype, off-grid price, bad value."""


class ParseError(SchemaError):
    """A source file could not be parsed (malformed line, truncated file, bad field)."""


class FormatError(ParseError):
    """A file was given to the reader of another format."""


class LookAheadError(GpuflowError, ValueError):
    """A computation would use information from after its timestamp."""


class BackendUnavailableError(GpuflowError, RuntimeError):
    """The requested compute backend (GPU) is not available."""


class StoreError(GpuflowError, OSError):
    """The Parquet store is missing, inconsistent or could not be written."""


class SyncError(GpuflowError, ValueError):
    """A feed's update ids do not chain (gap) and no resync is possible."""


class PerformanceWarning(UserWarning):
    """Work runs on a slower path than requested or expected (for example CPU fallback)."""
