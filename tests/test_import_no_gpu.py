"""Importing gpuflow touches no device and imports neither cupy nor numba.cuda (as cuDF tests do)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(code, **env):
    e = dict(os.environ, CUDA_VISIBLE_DEVICES="-1")
    e.pop("NUMBA_ENABLE_CUDASIM", None)
    e.pop("GPUFLOW_BACKEND", None)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e)


def test_import_gpuflow_without_device():
    p = _run("import sys, gpuflow, gpuflow.schema, gpuflow.io, gpuflow.store, gpuflow.clean; "
             "print('cupy' in sys.modules, 'numba.cuda' in sys.modules)")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "False"]


def test_gpu_request_without_device_is_a_clear_error():
    p = _run("from gpuflow.backend import get_backend\n"
             "try:\n    get_backend('gpu')\nexcept Exception as e:\n    print(type(e).__name__, e)")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("BackendUnavailableError")
    assert "no GPU is usable" in p.stdout and "GPUFLOW_BACKEND=cpu" in p.stdout


def test_auto_falls_back_to_cpu_with_one_warning():
    p = _run("import warnings\nwarnings.simplefilter('always')\nfrom gpuflow.backend import get_backend\n"
             "with warnings.catch_warnings(record=True) as w:\n"
             "    warnings.simplefilter('always')\n"
             "    a = get_backend(); b = get_backend()\n"
             "print(a.name, b.name, len(w), w[0].category.__name__)")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["cpu", "cpu", "1", "PerformanceWarning"]


def test_env_override_and_invalid_value():
    p = _run("from gpuflow.backend import get_backend; print(get_backend().name)", GPUFLOW_BACKEND="cpu")
    assert p.stdout.strip() == "cpu"
    p = _run("import gpuflow.config", GPUFLOW_BACKEND="tpu")
    assert p.returncode != 0 and "GPUFLOW_BACKEND='tpu'" in p.stderr


@pytest.mark.parametrize("name", ["cuda-sim"])
def test_simulator_backend_requires_env(name):
    p = _run(f"from gpuflow.backend import get_backend\ntry:\n    get_backend('{name}')\n"
             "except Exception as e:\n    print(e)")
    assert "NUMBA_ENABLE_CUDASIM=1" in p.stdout
