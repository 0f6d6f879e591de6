"""Exact conversion of decimal text to integer ticks and lots (no float rounding).

The scalar core :func:`parse_steps` works on raw bytes, so compiled parsers (the
Binance scanner, the CSV readers) call it directly on the source buffer; the
vectorised :func:`to_steps` applies it to a pyarrow string array.

``value / step`` must be a whole number: ``"61800.20"`` with step ``"0.10"`` is
618002 ticks; ``"61800.25"`` is off the grid (status ``OFF_GRID``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from numba import njit

from gpuflow.schema import decimal_step

__all__ = ["OK", "SYNTAX", "OFF_GRID", "OVERFLOW", "EMPTY", "STATUS_TEXT", "parse_steps", "to_steps",
           "max_decimals", "finest_step"]

OK = 0
SYNTAX = 1
OFF_GRID = 2
OVERFLOW = 3
EMPTY = 4
STATUS_TEXT = {SYNTAX: "not a decimal number", OFF_GRID: "not a whole multiple of the step",
               OVERFLOW: "too many digits for int64", EMPTY: "empty or null"}

_POW10 = np.array([10 ** k for k in range(19)], dtype=np.int64)
_LIMIT = np.int64(10 ** 17)


@njit(cache=True, nogil=True)
def parse_steps(buf, start, end, step_mant, step_scale):  # pragma: no cover - jitted
    """Parse ``buf[start:end]`` (ASCII decimal, optional sign/exponent) as a count of steps.

    ``step = step_mant * 10**-step_scale``.  Returns ``(steps, status)``; status is
    OK, SYNTAX, OFF_GRID, OVERFLOW or EMPTY.  Surrounding quotes and spaces are skipped.
    """
    while start < end and (buf[start] == 32 or buf[start] == 34):
        start += 1
    while end > start and (buf[end - 1] == 32 or buf[end - 1] == 34 or buf[end - 1] == 13):
        end -= 1
    if start >= end:
        return np.int64(0), EMPTY
    neg = False
    c = buf[start]
    if c == 45:  # '-'
        neg = True
        start += 1
    elif c == 43:  # '+'
        start += 1
    mant = np.int64(0)
    scale = 0
    ndig = 0
    seen_dot = False
    i = start
    while i < end:
        c = buf[i]
        if 48 <= c <= 57:
            if mant >= _LIMIT:
                # Trailing zeros after the point do not add precision; anything else overflows.
                if seen_dot and c == 48:
                    i += 1
                    continue
                return np.int64(0), OVERFLOW
            mant = mant * 10 + (c - 48)
            ndig += 1
            if seen_dot:
                scale += 1
        elif c == 46 and not seen_dot:
            seen_dot = True
        elif c == 101 or c == 69:  # exponent
            break
        else:
            return np.int64(0), SYNTAX
        i += 1
    if ndig == 0:
        return np.int64(0), SYNTAX
    if i < end:  # exponent part
        i += 1
        eneg = False
        if i < end and (buf[i] == 45 or buf[i] == 43):
            eneg = buf[i] == 45
            i += 1
        if i >= end:
            return np.int64(0), SYNTAX
        e = 0
        while i < end:
            c = buf[i]
            if not (48 <= c <= 57):
                return np.int64(0), SYNTAX
            e = e * 10 + (c - 48)
            if e > 40:
                return np.int64(0), OVERFLOW
            i += 1
        scale = scale + e if eneg else scale - e
    # steps = mant * 10**(step_scale - scale) / step_mant
    shift = step_scale - scale
    while shift < 0 and mant % 10 == 0 and mant != 0:
        mant //= 10
        shift += 1
    if mant == 0:
        return np.int64(0), OK
    if shift < 0:
        return np.int64(0), OFF_GRID
    if shift > 18:
        return np.int64(0), OVERFLOW
    p = _POW10[shift]
    if mant > np.int64(9223372036854775807) // p:
        return np.int64(0), OVERFLOW
    num = mant * p
    if num % step_mant != 0:
        return np.int64(0), OFF_GRID
    v = num // step_mant
    return (-v if neg else v), OK


@njit(cache=True, nogil=True)
def _to_steps_buffers(data, offsets, valid, step_mant, step_scale, out, status):  # pragma: no cover
    for k in range(out.size):
        if not valid[k]:
            out[k] = 0
            status[k] = EMPTY
            continue
        v, s = parse_steps(data, offsets[k], offsets[k + 1], step_mant, step_scale)
        out[k] = v
        status[k] = s


@njit(cache=True, nogil=True)
def _max_decimals(data, offsets):  # pragma: no cover - jitted
    """Largest count of significant fraction digits (trailing zeros ignored)."""
    best = 0
    for k in range(offsets.size - 1):
        a = offsets[k]
        b = offsets[k + 1]
        dot = -1
        for i in range(a, b):
            if data[i] == 46:
                dot = i
                break
        if dot < 0:
            continue
        last = b - 1
        while last > dot and (data[last] == 48 or data[last] == 34 or data[last] == 32):
            last -= 1
        d = last - dot
        if d > best:
            best = d
    return best


def _string_buffers(arr: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (data bytes, offsets int64 of length n+1, valid bool) for a pyarrow string array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not isinstance(arr, pa.Array):
        arr = pa.array(np.asarray(arr, dtype=object), type=pa.string())
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(pa.string())
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
            or pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        arr = arr.cast(pa.string())
    n = len(arr)
    bufs = arr.buffers()
    odt = np.int64 if (pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=odt)[arr.offset: arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    valid = (np.ones(n, dtype=np.bool_) if arr.null_count == 0
             else np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_))
    return data, offsets, valid


def to_steps(values: Any, step: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert decimal strings to whole numbers of ``step`` exactly.

    Parameters
    ----------
    values : pyarrow string array (or sequence of str), host
    step : str
        Decimal step such as ``"0.01"``.

    Returns
    -------
    steps : ndarray[int64], host, shape (n,)
    status : ndarray[uint8], host, shape (n,)
        ``OK`` (0) or the reason the row could not be converted.

    Examples
    --------
    >>> to_steps(["61800.20", "61800.25", "x"], "0.10")[0].tolist()
    [618002, 0, 0]
    """
    data, offsets, valid = _string_buffers(values)
    mant, scale = decimal_step(step)
    n = offsets.size - 1
    out = np.empty(n, dtype=np.int64)
    status = np.empty(n, dtype=np.uint8)
    _to_steps_buffers(data, offsets, valid, np.int64(mant), scale, out, status)
    return out, status


def max_decimals(values: Any) -> int:
    """Largest number of significant fraction digits in decimal strings (for inferring a step)."""
    data, offsets, _ = _string_buffers(values)
    return int(_max_decimals(data, offsets))


def finest_step(values: Any) -> str:
    """The finest decimal step present, as a string: ``["1.5", "2.25"]`` -> ``"0.01"``."""
    d = max_decimals(values)
    return "1" if d == 0 else "0." + "0" * (d - 1) + "1"
