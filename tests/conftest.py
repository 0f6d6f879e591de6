"""Test configuration.

Without a real GPU (CI), numba's CUDA simulator is switched on before numba is
imported, so every kernel's CUDA twin runs in the parity tests.  On a GPU machine
set ``GPUFLOW_TEST_GPU=1`` to run the CUDA twins on the device instead (and the
``gpu``-marked tests with ``-m gpu``).  The default backend for library calls in
tests is the CPU; tests that need another ask for it explicitly.
"""
from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("GPUFLOW_TEST_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ.setdefault("GPUFLOW_BACKEND", "cpu")
os.environ.setdefault("GPUFLOW_PROGRESS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("GPUFLOW_SHARED_DATA")
    if env:
        return Path(env)
    for cand in (REPO / "shared" / "data", REPO.parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    return REPO.parent / "shared" / "data"


SHARED_DATA = _shared_data_dir()


@pytest.fixture(scope="session")
def load_script():
    """``load_script("experiments/tools/x.py")``: a repository script imported as a module (named after its
    file, registered in ``sys.modules`` so that its dataclasses resolve)."""
    import importlib.util
    import sys

    def load(rel: str):
        path = REPO / rel
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = mod
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real market-data samples (../shared/data); skip when absent, fail under CI."""
    if not (SHARED_DATA / "MANIFEST.md").is_file():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"shared data not found at {SHARED_DATA} (CI=true requires it; "
                        "set GPUFLOW_SHARED_DATA)")
        pytest.skip(f"shared data not found at {SHARED_DATA}; set GPUFLOW_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(params=[0, 1, 7, 42])
def global_random_seed(request: pytest.FixtureRequest) -> int:
    """Seeds the tests must pass for (as sklearn's fixture)."""
    return int(os.environ.get("GPUFLOW_TESTS_SEED", request.param))


@pytest.fixture
def rng(global_random_seed: int) -> np.random.Generator:
    return np.random.default_rng(global_random_seed)


def _garbage_local_arrays() -> None:
    """Under the simulator, fill every ``cuda.local.array`` with garbage (0xA5 bytes: a large negative
    integer, a NaN-like float) instead of numpy's often-zero ``np.empty``: on a GPU thread-local memory is
    not initialised, so a kernel that reads a local slot before writing it must fail here, not there."""
    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    def array(self, shape, dtype, alignment=None):  # FakeCUDALocal.array
        if alignment is not None:
            msg = "Array alignment is not supported in cudasim"
            raise RuntimeError(msg)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        a = np.empty(shape, dtype)
        a.view(np.uint8)[...] = 0xA5
        return a

    kernelapi.FakeCUDALocal.array = array


if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    _garbage_local_arrays()


@pytest.fixture
def fake_device_jit(monkeypatch):
    """A stand-in numba.cuda whose ``jit`` returns the function unchanged and records its options, with the
    simulator reported off and the backtest engine's kernel cache emptied: what engine_pair asks of a real
    device, without one.  Returns the list of option dicts, one per jit call."""
    import types

    from gpuflow.kernels import backtest as kbt

    from gpuflow import backend as gb

    seen: list[dict] = []

    def jit(*args, **kw):
        seen.append(kw)
        return args[0] if args else (lambda f: f)

    monkeypatch.setattr(gb, "cuda_module", lambda: types.SimpleNamespace(jit=jit))
    monkeypatch.setattr(gb, "simulator_enabled", lambda: False)
    monkeypatch.setattr(kbt, "simulator_enabled", lambda: False)
    monkeypatch.setattr(kbt, "_PAIRS", {})
    return seen


@pytest.fixture
def fake_gpu():
    """A factory of stand-in GPU backends: ``fake_gpu(hook=None)`` is what the backtest engine asks of a device
    backend (``uses_cuda``, a name other than ``cpu``) with the CPU backend underneath; its ``launch(pair, n,
    *args)`` calls ``hook(cpu_backend, pair, n, *args)`` (default: the CPU launch, the kernel's CPU twin)."""
    from gpuflow.backend import get_backend

    class FakeGpu:
        def __init__(self, hook=None):
            self._cpu = get_backend("cpu")
            self._hook = hook
            self.uses_cuda = True
            self.name = "fake-gpu"

        def __getattr__(self, k):
            return getattr(self._cpu, k)

        def launch(self, pair, n, *args):
            if self._hook is not None:
                return self._hook(self._cpu, pair, n, *args)
            return self._cpu.launch(pair, n, *args)

    return FakeGpu


@pytest.fixture
def device_backend():
    """The CUDA backend for parity tests: the simulator in CI, the device with GPUFLOW_TEST_GPU=1."""
    from gpuflow.backend import get_backend

    return get_backend("gpu")
