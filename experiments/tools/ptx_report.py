"""Registers, stack and spills of gpuflow's CUDA kernels, measured without a GPU.

Runs a small book rebuild and a small sweep through a stand-in "gpu" backend whose launcher records
every kernel and its argument types (and runs the kernel's CPU twin so the pipeline goes on), then
compiles each recorded kernel to PTX for a chosen compute capability and reports ptxas's resource use::

    python experiments/tools/ptx_report.py                 # sm_90 (H100/H200)
    python experiments/tools/ptx_report.py --cc 8.0 --only replay

Needs libNVVM (a CUDA toolkit), NVRTC (``pip install nvidia-cuda-nvrtc``) and ``ptxas`` on PATH or in
$CUDA_HOME/bin; no driver or device.  Useful before spending device time: e.g. it showed the book
replay's top-N scratch in 440 B of thread-local memory, and 0 B after the scratch was made
register-resident.  The backtest kernel compiles at the NVVM level its KernelPair asks for.

``--link`` also times the whole first-launch compile with and without link-time optimisation (LTO,
numba-cuda's default wherever nvJitLink is installed, as on the GPU machines): it showed the backtest
engine kernel taking minutes to link with LTO, which is why that kernel is compiled with ``lto=False``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _fake_device(cc: tuple[int, int]) -> None:
    """Let numba-cuda compile for ``cc`` with no driver: it asks the current device only for its cc."""
    import numba.cuda.cudadrv.devices as devices
    import numba.cuda.dispatcher as dispatcher

    dev = types.SimpleNamespace(compute_capability=cc)
    dispatcher.get_current_device = lambda: dev
    devices.get_context = lambda *a, **k: types.SimpleNamespace(device=dev)


def record_launches(only: str = "") -> list[tuple[object, tuple]]:
    """Run the book rebuild (every layout) and a sweep of every strategy through a recording backend (with
    ``only``: just the runs that can launch a kernel whose name contains it)."""
    from gpuflow import backend as gb
    from gpuflow.book import rebuild_book
    from gpuflow.synthetic import generate_arrays

    seen: dict[tuple, tuple[object, tuple]] = {}

    def launch(self, pair, n, *args, threads=None):  # noqa: ANN001 - stand-in for Backend.launch
        from numba import typeof

        sig = tuple(typeof(a) for a in args)
        seen.setdefault((pair.name, sig), (pair, sig))
        pair.cpu(*args)

    # "cuda-sim": the CUDA code paths with numpy arrays and no device synchronisation
    fake = dataclasses.replace(gb.get_backend("cpu"), name="cuda-sim")
    orig = gb.Backend.launch
    gb.Backend.launch = launch
    try:
        ev = generate_arrays(20_000, seed=1, mode="l2")
        book_names = ("prepare", "chunk_bounds", "interleave", "summarise", "group", "row_best", "replay", "gather",
                      "summarise_warp", "replay_warp")
        if not only or any(only in n for n in book_names):
            for layout in ((True, False, 0), (True, False, 1), (True, False, 2), (False, True, 0),
                           (True, False, 2, True)):
                rebuild_book(ev, levels=5, ofi=True, backend=fake, chunk=512, layout=layout)
            rebuild_book(ev, levels=5, ofi=True, every=64, backend=fake, chunk=512)
            for lay in ((False, False, 0, True), (False, False, 0, False)):  # the warp path, int32 / int64 sizes
                rebuild_book(ev, levels=5, ofi=True, every=64, backend=fake, replay="warp", layout=lay)
        from gpuflow.backtest import BacktestConfig, prepare_market, run
        from gpuflow.backtest.strategies import STRATEGIES, get_strategy
        from gpuflow.synthetic import generate

        gb.Backend.launch = orig  # prepare_market on the real CPU backend
        market = prepare_market(generate(2_000, seed=1, mode="l2"), levels=5, backend="cpu")
        gb.Backend.launch = launch
        from gpuflow.config import config_context

        # no register cap: the automatic one asks the (absent) device for its SM count; ptxas's natural count
        with config_context(backtest_max_registers=0):
            for name in STRATEGIES:  # every strategy's engine kernel (default parameters)
                if only and only not in f"backtest[{name}]":
                    continue
                run(get_strategy(name), {}, market, BacktestConfig(levels=5), engine="sweep", backend=fake,
                    record_fills=False)
        with config_context(backtest_event_tile=128, backtest_max_registers=0):  # market making, event tiles
            if not only or only in "backtest[market_making][tile 128]":
                run(get_strategy("market_making"), {}, market, BacktestConfig(levels=5), engine="sweep",
                    backend=fake, record_fills=False)
        for tile, levels in ((0, 2), (0, 3), (128, 3)):  # market making, skip blocks at 2 and 3 levels
            name = "backtest[market_making]" + (f"[tile {tile}]" if tile else "") + f"[levels {levels}]"
            if only and only not in name:
                continue
            with config_context(backtest_event_tile=tile, backtest_max_registers=0, backtest_skip_block=4,
                                backtest_skip_levels=levels):
                run(get_strategy("market_making"), {}, market, BacktestConfig(levels=5), engine="sweep",
                    backend=fake, record_fills=False)
    finally:
        gb.Backend.launch = orig
    return list(seen.values())


def _entry_resources(log: str) -> tuple[str, str, str, str, str]:
    """(registers, stack bytes, spill store bytes, spill load bytes, static shared memory bytes) of the entry
    kernel in ptxas -v output (device functions that stayed calls get their own blocks)."""
    entry = re.search(r"Compiling entry function '([^']+)'", log).group(1)
    block = log[log.index(f"Function properties for {entry}"):]
    stack, sst, sld = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                                block).groups()
    regs = re.search(r"Used (\d+) registers", block).group(1)
    smem = re.search(r"Used \d+ registers,[^\n]*?(\d+) bytes smem", block)
    return regs, stack, sst, sld, smem.group(1) if smem else "0"


def _link_seconds(pair: object, sig: tuple, cc: tuple[int, int], lto: bool) -> float:
    """Seconds numba-cuda takes to type, lower, optimise and link ``pair``'s kernel to a cubin (the work of
    its first launch), with or without link-time optimisation."""
    from numba.cuda.dispatcher import _Kernel

    from gpuflow.backend import nvvm_opt_level

    opts = dict(pair.cuda.targetoptions, lto=lto)
    t = time.perf_counter()
    with nvvm_opt_level(pair.nvvm_opt, pair.nvvm_fma):
        _Kernel(pair.cuda.py_func, sig, **opts)._codelibrary.get_cubin(cc=(*cc, "a" if cc >= (9, 0) else ""))
    return time.perf_counter() - t


def _ptxas() -> str:
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    for cand in (shutil.which("ptxas"), os.path.join(home, "bin", "ptxas")):
        if cand and os.path.exists(cand):
            return cand
    raise SystemExit("ptxas not found (install a CUDA toolkit or set CUDA_HOME)")


def _keep(folder: Path, name: str, i: int, ptx: Path, cubin: Path) -> None:
    """Copy a kernel's PTX and cubin to ``folder`` as ``NN_name.ptx`` / ``.cubin`` and disassemble the cubin
    to ``.sass`` when nvdisasm is found (``pip install nvidia-cuda-nvdisasm`` puts one in the venv)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{i:02d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}"
    shutil.copyfile(ptx, stem.with_suffix(".ptx"))
    shutil.copyfile(cubin, stem.with_suffix(".cubin"))
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    venv_bin = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    cands = [shutil.which("nvdisasm"), os.path.join(home, "bin", "nvdisasm"),
             *map(str, venv_bin.glob("nvidia/cu*/bin/nvdisasm"))]
    tool = next((c for c in cands if c and os.path.exists(c)), None)
    if tool:
        sass = subprocess.run([tool, "-c", "-g", str(cubin)], capture_output=True, text=True, check=True).stdout
        stem.with_suffix(".sass").write_text(sass)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", default="9.0", help="compute capability, e.g. 9.0 (H100/H200) or 8.0 (A100)")
    ap.add_argument("--only", default="", help="report only kernels whose name contains this")
    ap.add_argument("--link", action="store_true",
                    help="also time numba-cuda's whole compile + link to a cubin with and without link-time "
                         "optimisation (needs nvJitLink: pip install nvidia-nvjitlink; what a first launch costs)")
    ap.add_argument("--maxrregcount", type=int, default=0,
                    help="pass ptxas a register cap (what the backtest_max_registers option asks of the device)")
    ap.add_argument("--keep", default="",
                    help="write each kernel's PTX and cubin, compiled with line info, (and its SASS, where nvdisasm "
                         "is on PATH, in $CUDA_HOME/bin or in the venv) to this folder, for reading the machine code")
    args = ap.parse_args(argv)
    cc = tuple(int(x) for x in args.cc.split("."))
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    _fake_device(cc)  # before any compile
    from numba import cuda

    from gpuflow.backend import nvvm_opt_level

    ptxas = _ptxas()
    arch = f"sm_{cc[0]}{cc[1]}"
    head = f"{'kernel':34s} {'regs':>5s} {'stack B':>8s} {'spill st/ld B':>14s} {'smem B':>7s} {'nvvm s':>7s}"
    print(head + (f" {'cubin s (lto)':>14s} {'cubin s (no lto)':>17s} {'kernel lto':>10s}" if args.link else ""))
    kept: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair, sig in record_launches(args.only):
            if args.only and args.only not in pair.name:
                continue
            t = time.perf_counter()
            with nvvm_opt_level(pair.nvvm_opt, pair.nvvm_fma):
                ptx, _ = cuda.compile_ptx(pair.cuda.py_func, sig, cc=cc, lineinfo=bool(args.keep))
            secs = time.perf_counter() - t
            src = Path(tmp) / "k.ptx"
            src.write_text(ptx)
            out = subprocess.run([ptxas, f"-arch={arch}", "-v", *(["-lineinfo"] if args.keep else []),
                                  *([f"-maxrregcount={args.maxrregcount}"] if args.maxrregcount else []), str(src),
                                  "-o", str(Path(tmp) / "k.cubin")],
                                 capture_output=True, text=True, check=True).stderr
            regs, stack, sst, sld, smem = _entry_resources(out)
            if args.keep:
                _keep(Path(args.keep), pair.name, len(kept), src, Path(tmp) / "k.cubin")
                kept.append(pair.name)
            line = f"{pair.name:34s} {regs:>5s} {stack:>8s} {sst + '/' + sld:>14s} {smem:>7s} {secs:7.1f}"
            if args.link:
                lto_s, plain_s = (_link_seconds(pair, sig, cc, lto) for lto in (True, False))
                line += f" {lto_s:14.1f} {plain_s:17.1f} {pair.cuda.targetoptions.get('lto')!s:>10s}"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
