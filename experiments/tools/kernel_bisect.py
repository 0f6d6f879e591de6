"""Which kernel launch of a GPU run first differs from its CPU twin on the same inputs.

Every kernel of gpuflow has a CPU twin (numba njit) that must leave the same outputs.  When a whole run's
results differ between the GPU and the CPU, this tool finds the launch that makes them differ: it wraps
``Backend.launch`` so that each launch's array arguments are copied to the host before and after the kernel
runs, runs the pair's CPU twin on the copies taken before, and compares every array argument afterwards.  It
reports each launch (kernel, work items, the arguments that differ, the first differing positions and
values) and, with ``--save-dir``, writes the inputs and GPU outputs of every launch that differs to
``<dir>/<n>_<kernel>.npz`` (``in_<i>`` / ``gpu_<i>`` / ``cpu_<i>`` per array argument, ``scalar_<i>`` per
scalar), so the launch can be run again here, under the CUDA simulator or the CPU twin, without a GPU.

    python experiments/tools/kernel_bisect.py book --events 2e6 --seed 6 --replay warp --every 1
    python experiments/tools/kernel_bisect.py book-test --seed 7 --levels 7 --every 4 --chunk 5 --save-dir /tmp/kb

``book`` runs :func:`gpuflow.book.rebuild_book` on the synthetic stream of ``tests/test_book_gpu.py``;
``book-test`` on the random L2 stream of ``tests/test_book_warp.py::test_warp_replay_equals_cpu_twin``.  Run
it with the ``gpu`` backend on a device (the default), or with ``NUMBA_ENABLE_CUDASIM=1`` to check the tool.
It prints one JSON object; exit code 0 when no launch differs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Self

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _host(be: Any, a: Any) -> Any:
    """A host copy of an array argument (scalars as they are)."""
    if isinstance(a, np.ndarray):
        return a.copy()
    if hasattr(a, "__cuda_array_interface__"):
        return np.array(be.to_host(a), copy=True)
    return a


def _first_diffs(g: np.ndarray, c: np.ndarray, limit: int = 8) -> dict[str, Any]:
    if g.shape != c.shape:
        return {"shape_gpu": list(g.shape), "shape_cpu": list(c.shape)}
    bad = np.argwhere(g != c)
    return {"count": int(bad.shape[0]), "shape": list(g.shape),
            "first": [{"at": [int(x) for x in ix], "gpu": g[tuple(ix)].item(), "cpu": c[tuple(ix)].item()}
                      for ix in bad[:limit]]}


#: array arguments that are scratch, not outputs (kernel name prefix -> argument positions): the warp kernels'
#: exchange ``xch``, which only the simulator writes
SCRATCH = {"book.summarise_warp": (0,), "book.replay_warp": (0,)}


def _scratch(name: str) -> tuple[int, ...]:
    return next((v for k, v in SCRATCH.items() if name.startswith(k)), ())


class Bisect:
    """Wraps ``be.launch``: each launch is checked against its CPU twin on the same inputs (``log``)."""

    def __init__(self, be: Any, save_dir: str | None = None) -> None:
        self.be = be
        self.save_dir = Path(save_dir) if save_dir else None
        self.log: list[dict[str, Any]] = []
        self._orig = be.launch

    def __enter__(self) -> Self:
        object.__setattr__(self.be, "launch", self._launch)  # the backend is a frozen dataclass
        return self

    def __exit__(self, *exc: object) -> None:
        object.__delattr__(self.be, "launch")

    def _launch(self, pair: Any, n: int, *args: Any, threads: int | None = None) -> None:
        be = self.be
        before = [_host(be, a) for a in args]
        self._orig(pair, n, *args, threads=threads)
        be.synchronize()
        after = [_host(be, a) for a in args]
        twin = [b.copy() if isinstance(b, np.ndarray) else b for b in before]
        pair.cpu(*twin)
        diffs = {}
        skip = _scratch(pair.name)
        for i, (g, c) in enumerate(zip(after, twin)):
            if i in skip or not isinstance(g, np.ndarray):
                continue
            if g.shape != c.shape or not np.array_equal(g, c, equal_nan=True):
                diffs[str(i)] = _first_diffs(g, c)
        rec = {"launch": len(self.log), "kernel": pair.name, "n": int(n), "threads": threads, "differs": bool(diffs),
               "diffs": diffs}
        if diffs and self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            arrays = {}
            for i, (b, g, c) in enumerate(zip(before, after, twin)):
                if isinstance(b, np.ndarray):
                    arrays[f"in_{i}"] = b
                    arrays[f"gpu_{i}"] = g
                    arrays[f"cpu_{i}"] = c
                else:
                    arrays[f"scalar_{i}"] = np.asarray(b)
            path = self.save_dir / f"{rec['launch']}_{pair.name.replace('/', '_')}.npz"
            np.savez_compressed(path, **arrays)
            rec["saved"] = str(path)
        self.log.append(rec)


def _book_test_events(seed: int) -> Any:
    """The stream of tests/test_book_warp.py::test_warp_replay_equals_cpu_twin for ``global_random_seed``."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_book_warp import warp_twin_stream  # the test's own stream, on purpose

    return warp_twin_stream(np.random.default_rng(seed))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("case", choices=("book", "book-test"))
    ap.add_argument("--events", type=float, default=2e6)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=None)
    ap.add_argument("--warps", type=int, default=None)
    ap.add_argument("--replay", default="warp", choices=("thread", "warp"))
    ap.add_argument("--backend", default="gpu")
    ap.add_argument("--save-dir", default=None)
    args = ap.parse_args(argv)

    from gpuflow.backend import get_backend
    from gpuflow.book import rebuild_book

    be = get_backend(args.backend)
    if args.case == "book":
        sys.path.insert(0, str(REPO / "tests"))
        from test_book_gpu import _stream  # the GPU tests' stream, on purpose

        ev = _stream(int(args.events), seed=args.seed)
    else:
        ev = _book_test_events(args.seed)
    cpu = rebuild_book(ev, levels=args.levels, ofi=True, every=args.every, backend="cpu")
    with Bisect(be, args.save_dir) as bis:
        gpu = rebuild_book(ev, levels=args.levels, ofi=True, every=args.every, backend=be, chunk=args.chunk,
                           replay=args.replay, warps=args.warps).to_host()
    rows = {a: _first_diffs(np.asarray(getattr(gpu, a)), np.asarray(getattr(cpu, a)), 4)
            for a in ("index", "bid_price", "bid_qty", "ask_price", "ask_qty", "ofi")}
    rows = {a: d for a, d in rows.items() if d.get("count", 1)}
    bad = [r for r in bis.log if r["differs"]]
    res = {"case": vars(args), "backend": be.name, "stats": {k: v for k, v in gpu.stats.items() if k != "phase_s"},
           "rows_differ": rows, "launches": bis.log, "first_differing_launch": bad[0] if bad else None,
           "simulator": os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"}
    print(json.dumps(res, default=str))
    return 1 if bad or rows else 0


if __name__ == "__main__":
    raise SystemExit(main())
