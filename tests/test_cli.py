"""The gpuflow command line, run as a user would (in-process and as a subprocess)."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys


from gpuflow.cli import main


def _last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_demo_json(tmp_path, capsys):
    assert main(["demo", "--store", str(tmp_path / "s"), "--json"]) == 0
    d = _last_json(capsys)
    assert d["ok"] is True
    assert d["verify"]["mismatches"] == 0 and d["verify"]["checked"] > 0
    assert d["ingest"]["events"] > 50_000
    # idempotent re-run: nothing new written
    assert main(["demo", "--store", str(tmp_path / "s"), "--json"]) == 0
    assert _last_json(capsys)["ingest"]["skipped"] is True


def test_ingest_info_and_failed_ingest(tmp_path, capsys, shared_data):
    store = tmp_path / "store"
    src = shared_data / "nautilus_fixtures" / "tardis" / "binance-futures_trades_BTCUSDT.csv"
    assert main(["ingest", "tardis", str(src), "--store", str(store), "--json"]) == 0
    d = _last_json(capsys)
    assert d["events"] == 9_999 and d["failed"] == 0
    assert main(["info", "--store", str(store), "--json"]) == 0
    info = _last_json(capsys)
    assert info["instruments"][0]["events"] == 9_999
    # a truncated gzip fails the ingest (exit 1) and leaves the store as it was
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(src.read_bytes())[:5000])
    assert main(["ingest", "tardis", str(bad), "--store", str(store), "--json"]) == 1
    d = _last_json(capsys)
    assert d["failed"] == 1 and "bad.gz" in d["files"][0]["error"]
    assert main(["info", "--store", str(store), "--json"]) == 0
    assert _last_json(capsys)["instruments"][0]["events"] == 9_999


def test_clean_report_table(capsys, shared_data):
    src = shared_data / "binance" / "spot" / "btcusdt_20240808.gz"
    assert main(["clean", "binance", str(src), "--report"]) == 0
    out = capsys.readouterr().out
    assert "sequence_gap" in out and "duplicates" in out and "rows: in" in out


def test_verify_exit_codes(capsys, shared_data, tmp_path):
    lob = shared_data / "lobster" / "GOOG_2012-06-21_34200000_57600000_message_1.csv.gz"
    assert main(["verify", "lobster", str(lob), "--json"]) == 0
    d = _last_json(capsys)
    assert d["mismatched_rows"] == 0 and d["rows"] == 49_481
    assert main(["verify", "binance", str(shared_data / "binance" / "spot" / "btcusdt_20240809.gz"), "--json"]) == 1


def test_console_script_subprocess(tmp_path):
    env = dict(os.environ, GPUFLOW_BACKEND="cpu")
    p = subprocess.run([sys.executable, "-m", "gpuflow.cli", "info", "--store", str(tmp_path / "none")],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 1
    assert "no gpuflow store here" in p.stderr


def test_negative_size_is_quarantined_with_its_line(tmp_path, capsys):
    """A raw row with a negative size is not stored: it lands in the store's quarantine with rule and line."""
    from gpuflow.store import Store

    src = tmp_path / "trades.csv"
    src.write_text("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
                   "binance-futures,BTCUSDT,1582329602418000,1582329602426000,1,sell,9700.00,0.100\n"
                   "binance-futures,BTCUSDT,1582329602500000,1582329602510000,2,buy,9700.10,-0.200\n"
                   "binance-futures,BTCUSDT,1582329602600000,1582329602610000,3,buy,9700.20,0.300\n")
    store = tmp_path / "store"
    assert main(["ingest", "tardis", str(src), "--store", str(store), "--json"]) == 0
    d = _last_json(capsys)
    assert d["events"] == 2 and d["quarantined"] == 1
    q = Store(store).load_quarantine()
    row = q.to_pylist()[0]
    assert row["rule"] in ("nonpositive_size", "bad_value") and row["line"] == 3
    assert "-0.200" in (row["raw"] or "") + (row["detail"] or ""), row
