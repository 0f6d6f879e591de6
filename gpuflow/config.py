"""Options with defaults, descriptions and validators (in the style of cuDF's options.py).

Defaults come from ``GPUFLOW_*`` environment variables where set.  Use
:func:`set_option` to change an option for the process and :func:`config_context`
to change it inside a ``with`` block (restored in ``finally``, as sklearn does).

Examples
--------
>>> from gpuflow import config
>>> with config.config_context(progress=False):
...     config.get_option("progress")
False
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from gpuflow.errors import GpuflowError

__all__ = ["get_option", "set_option", "config_context", "describe_options", "OPTIONS"]


@dataclass(frozen=True)
class _Option:
    name: str
    default: Any
    description: str
    validator: Callable[[Any], None]
    env: str


OPTIONS: dict[str, _Option] = {}
_local = threading.local()


def _state() -> dict[str, Any]:
    if not hasattr(_local, "values"):
        _local.values = {}
    return _local.values


def _register_option(name: str, default: Any, description: str, validator: Callable[[Any], None],
                     parse: Callable[[str], Any] = str) -> None:
    env = "GPUFLOW_" + name.upper()
    raw = os.environ.get(env)
    value = default
    if raw is not None and raw != "":
        value = parse(raw)
        try:
            validator(value)
        except ValueError as exc:
            msg = f"environment variable {env}={raw!r}: {exc}"
            raise GpuflowError(msg) from None
    OPTIONS[name] = _Option(name, value, description, validator, env)


def _choice(*allowed: Any) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in allowed:
            msg = f"expected one of {allowed}, got {value!r}"
            raise ValueError(msg)
    return check


def _positive_int(value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        msg = f"expected a positive integer, got {value!r}"
        raise ValueError(msg)


def _parse_bool(raw: str) -> bool:
    return raw.strip().lower() not in ("0", "false", "no", "off")


_register_option("backend", None, "Compute backend: None (auto: GPU if present), 'cpu' or 'gpu'.",
                 _choice(None, "cpu", "gpu"), parse=lambda s: s.strip().lower())
_register_option("progress", True, "Show progress bars on long work (to stderr).",
                 _choice(True, False), parse=_parse_bool)
_register_option("chunk_events", 1 << 16,
                 "Events per chunk in chunked GPU book replay (each chunk is replayed by one thread).",
                 _positive_int, parse=int)
def _parse_auto_int(s: str) -> str | int:
    """An option value that is 'auto' or an integer."""
    return "auto" if s.strip().lower() == "auto" else int(s)


_register_option("book_replay_max_registers", 0,
                 "Registers per thread the GPU book replay (one thread per chunk) may use (0: as ptxas chooses; "
                 "sm_90, 5 levels: 128 with int32 level sizes, 16 warps per SM, and 155-160 with int64 sizes, 12 "
                 "warps); fewer allow more warps per SM at the cost of spilled values (ptxas sm_90, int32 sizes: 112 "
                 "registers spill 4-72 B per thread, 96 spill 150-210 B). Same results either way.",
                 _choice(0, 96, 112, 128, 168), parse=int)
_register_option("backtest_nvvm_opt", 1,
                 "NVVM optimisation level (0-3) for the backtest sweep kernel's compile: 3 takes minutes, 1 seconds.",
                 _choice(0, 1, 2, 3), parse=int)
_register_option("backtest_event_tile", 0,
                 "Events a block of the GPU sweep engine stages in shared memory at a time (0: every thread "
                 "reads the events from global memory). Same results either way.",
                 _choice(0, 16, 32, 64, 128, 256, 512), parse=int)
_register_option("backtest_block_threads", 32,
                 "Threads (parameter sets) per block of the GPU sweep engine. At the engine's register count (130 on "
                 "sm_90) blocks of 32 fit 15 warps per SM and blocks of 64 fit 14, and a small sweep spreads over "
                 "twice as many SMs (H200, 2026-11-27: 32 threads 2-4 % faster at 10,000 and 100,000 sets). Same "
                 "results either way.",
                 _choice(32, 64, 128, 256), parse=int)
_register_option("backtest_max_registers", 0,
                 "Registers per thread the GPU sweep engine's kernel may use (0, the default: as the device's "
                 "toolchain chooses: 128 for market making on the H200, 2026-11-27, which allows 16 blocks of 32 "
                 "threads per SM); fewer allow more warps per SM (80: 25 blocks of 32) at the cost of spills to "
                 "thread-local memory. 'auto': 80 when that runs the sweep in fewer waves of blocks than the uncapped "
                 "kernel would, else none. Measured on the H200 (USD-M recording, market making, 2026-11-27 16:20 "
                 "UTC) every cap lost: 100,000 sets 0.448 s uncapped, 0.493 s at 96, 0.519 s at 80 (one wave); "
                 "30,000 sets 0.320 / 0.368 / 0.395 s. A capped kernel is a second compile (10 s once per "
                 "process). Same results either way.",
                 _choice("auto", 0, 64, 80, 96, 128, 168),
                 parse=_parse_auto_int)
_register_option("backtest_skip_block", "auto",
                 "Backtest engines: events per block (0: no skipping) of the summaries that let a parameter set pass "
                 "over a whole block at once when none of its events can touch the set's orders, timers or "
                 "decisions; 'auto': 16 for 8 sets or more (the summaries cost about 10 ns per event once per market). "
                 "With GPU event tiles a tile must hold whole blocks. A GPU skips a block only when the whole warp "
                 "can (1.26-1.29x faster on the H200 at 1,000-100,000 sets of market making; threads of a warp "
                 "that skipped apart ran 3.6x slower on the H100). Same results either way.",
                 _choice("auto", 0, 4, 8, 16, 32, 64, 128),
                 parse=_parse_auto_int)
_register_option("backtest_skip_levels", 1,
                 "Backtest engines: levels of event-block summaries (1..3), each level's blocks 4 times the "
                 "last's, from backtest_skip_block events up. At an event that starts a coarse block a parameter "
                 "set asks that block first and passes it over when it is quiet, else the finer blocks in it, "
                 "and walks only the finest blocks that are not: the events walked are those of the finest "
                 "blocks, for fewer checks (a quiet coarse block is one check instead of 4 or 16). Same results "
                 "either way.",
                 _choice(1, 2, 3), parse=int)
_register_option("backtest_sort_sets", True,
                 "Sweep engine on a GPU: run parameter sets in sorted order so that a warp's threads hold similar "
                 "sets (less divergence); results are returned in the caller's order.",
                 _choice(True, False), parse=_parse_bool)


def _lookup(name: str) -> _Option:
    try:
        return OPTIONS[name]
    except KeyError:
        msg = f"unknown gpuflow option {name!r}; known options: {sorted(OPTIONS)}"
        raise GpuflowError(msg) from None


def get_option(name: str) -> Any:
    """Return the current value of option ``name``."""
    opt = _lookup(name)
    return _state().get(name, opt.default)


def set_option(name: str, value: Any) -> None:
    """Set option ``name`` for this thread after validating ``value``."""
    opt = _lookup(name)
    try:
        opt.validator(value)
    except ValueError as exc:
        msg = f"option {name!r}: {exc}"
        raise GpuflowError(msg) from None
    _state()[name] = value


@contextlib.contextmanager
def config_context(**options: Any) -> Iterator[None]:
    """Set options inside a ``with`` block and restore the previous values on exit."""
    state = _state()
    missing = object()
    old = {k: state.get(k, missing) for k in options}
    try:
        for k, v in options.items():
            set_option(k, v)
        yield
    finally:
        for k, v in old.items():
            if v is missing:
                state.pop(k, None)
            else:
                state[k] = v


def describe_options() -> str:
    """Return a human-readable table of options, values and descriptions."""
    lines = []
    for name, opt in sorted(OPTIONS.items()):
        lines.append(f"{name:14s} = {get_option(name)!r:10s}  ({opt.env}) {opt.description}")
    return "\n".join(lines)
