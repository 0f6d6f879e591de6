"""Build the wheel in a temporary venv and import every subpackage from it (not from the checkout)."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["gpuflow", "gpuflow.io", "gpuflow.features", "gpuflow.kernels", "gpuflow.dashboards", "gpuflow.live",
               "gpuflow.data"]


@pytest.mark.slow
def test_wheel_builds_and_imports(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True)
    wheel = next(dist.glob("gpuflow-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    # every module of the checkout is in the wheel (a package missing from pyproject's list would not be)
    for folder, pkg in (("gpuflow", "gpuflow"), ("kernels", "gpuflow/kernels"), ("live", "gpuflow/live"),
                        ("dashboards", "gpuflow/dashboards")):
        for py in (REPO / folder).rglob("*.py"):
            if "__pycache__" not in py.parts:
                assert f"{pkg}/{py.relative_to(REPO / folder).as_posix()}" in names, py
    assert "gpuflow/data/binance-futures_btcusdt_20240808_sample.gz" in names
    assert not any(n.startswith(("kernels/", "live/", "dashboards/")) for n in names)  # no generic top-level names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # the new venv sees the test environment's packages (numpy, numba, ...) through a .pth path entry,
    # after its own site-packages; .pth files of that directory (the editable checkout's finder) are not run
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "test-deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", str(wheel)],
                   check=True, capture_output=True)
    code = ("import importlib, gpuflow; "
            f"mods = [importlib.import_module(m) for m in {SUBPACKAGES!r}]; "
            "import gpuflow.kernels.book, gpuflow.book, gpuflow.cli, gpuflow.features.ofi, gpuflow.features.flow, "
            "gpuflow.features.liquidity, gpuflow.features.book; "
            "print(gpuflow.__file__)")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env.pop("PYTHONPATH", None)
    p = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert str(venv) in p.stdout, p.stdout
