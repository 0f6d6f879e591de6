"""experiments/tools/kernel_bisect.py: the first kernel launch whose CUDA outputs differ from its CPU twin's."""
from __future__ import annotations

import json

import numpy as np
from numba import cuda, njit

from gpuflow.backend import KernelPair

SCRIPT = "experiments/tools/kernel_bisect.py"


@cuda.jit
def _add_cuda(x, k, out):  # pragma: no cover - device code
    i = cuda.grid(1)
    if i < x.size:
        out[i] = x[i] + k + (1 if i == 5 else 0)  # one wrong item: what the tool must find


@njit
def _add_cpu(x, k, out):  # pragma: no cover - jitted
    for i in range(x.size):
        out[i] = x[i] + k


def test_bisect_finds_the_launch_and_the_item_that_differ(device_backend, tmp_path, load_script):
    mod = load_script(SCRIPT)
    right = KernelPair("test.add_right", _add_cpu_as_cuda(), _add_cpu, threads=32)
    wrong = KernelPair("test.add_wrong", _add_cuda, _add_cpu, threads=32)
    be = device_backend
    x = be.to_device(np.arange(40, dtype=np.int64))
    out = be.zeros(40, np.int64)
    with mod.Bisect(be, str(tmp_path)) as bis:
        be.launch(right, 40, x, np.int64(3), out)
        be.launch(wrong, 40, x, np.int64(3), out)
    assert [r["differs"] for r in bis.log] == [False, True]
    d = bis.log[1]["diffs"]
    assert list(d) == ["2"]  # the output argument only
    assert d["2"]["count"] == 1 and d["2"]["first"] == [{"at": [5], "gpu": 9, "cpu": 8}]
    saved = np.load(bis.log[1]["saved"])
    assert saved["in_0"].tolist() == list(range(40)) and int(saved["scalar_1"]) == 3
    assert saved["gpu_2"][5] == 9 and saved["cpu_2"][5] == 8
    assert be.launch != bis._launch  # the backend's own launch is back


def _add_cpu_as_cuda():
    @cuda.jit
    def add(x, k, out):  # pragma: no cover - device code
        i = cuda.grid(1)
        if i < x.size:
            out[i] = x[i] + k

    return add


def test_book_warp_case_has_no_differing_launch(capsys, load_script):
    """The tool's own case on the warp replay: every launch equals its CPU twin (simulator in CI)."""
    mod = load_script(SCRIPT)
    assert mod.main(["book-test", "--seed", "7", "--levels", "7", "--every", "4", "--chunk", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["first_differing_launch"] is None and out["rows_differ"] == {}
    kernels = [r["kernel"] for r in out["launches"]]
    assert "book.summarise_warp" in kernels and "book.replay_warp[7]" in kernels
