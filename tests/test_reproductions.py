"""The Cont-Kukanov-Stoikov reproduction on the LOBSTER samples: the paper's qualitative findings hold."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "reproductions" / "cks_ofi.py"


@pytest.mark.slow
@pytest.mark.parametrize("stock", ["AAPL", "GOOG"])
def test_cks_price_impact_is_positive_and_significant(shared_data, stock):
    spec = importlib.util.spec_from_file_location("cks_ofi", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    f = next((shared_data / "lobster").glob(f"{stock}_*_message_1.csv.gz"))
    r = mod.analyse(f)
    w = [x for x in r["windows_detail"] if np.isfinite(x["r2"])]
    assert len(w) == 12  # 13 half hours, the first without a quote at 09:30:00.000
    # CKS 2014: beta > 0 and significant in (nearly) every half-hour window
    assert all(x["beta"] > 0 for x in w)
    assert sum(x["t"] > 2 for x in w) >= 0.9 * len(w)
    assert 0 < r["mean_r2"] < 1
