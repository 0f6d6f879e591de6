"""The demo run by ``gpuflow demo``: the whole flow on data that ships inside the package.

1. ingest the bundled Binance USD-M BTCUSDT sample (first 8,000 lines of a real recording):
   normalise, clean (report + quarantine), store as partitioned Parquet;
2. load it back from the store and rebuild the book from the REST snapshot and the
   diff stream (Binance's sync rules), top 5 levels and OFI after every message;
3. check the rebuilt top of book against every bookTicker that describes the same state;
4. generate a synthetic zero-intelligence order book, store it and rebuild it.

No network and no GPU are needed (the GPU is used when present).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["SAMPLE", "sample_path", "run_demo"]

SAMPLE = "binance-futures_btcusdt_20240808_sample.gz"


def sample_path() -> Path:
    """Path of the bundled Binance sample recording."""
    return Path(str(resources.files("gpuflow.data").joinpath(SAMPLE)))


def run_demo(root: Any, echo: Callable[[str], None] | None = None, synthetic_events: int = 200_000
             ) -> dict[str, Any]:
    """Run the demo into store ``root``; return a JSON-ready summary (``ok`` True when every check passed)."""
    from gpuflow.config import config_context

    with config_context(progress=False):  # the demo's steps take well under a second each
        return _run(root, echo, synthetic_events)


def _run(root: Any, echo: Callable[[str], None] | None, synthetic_events: int) -> dict[str, Any]:
    from gpuflow.book import rebuild_book
    from gpuflow.ingest import ingest_file
    from gpuflow.schema import instrument_of
    from gpuflow.store import Store
    from gpuflow.sync import compare_book_ticker, synced_events
    from gpuflow.synthetic import generate

    say = echo or (lambda s: None)
    store = Store(root)
    path = sample_path()
    say(f"gpuflow demo: store at {root}")
    say(f"1. ingest {path.name} (Binance USD-M BTCUSDT, real recording, {path.stat().st_size:,} bytes)")
    r = ingest_file("binance", path, store)
    if r["skipped"]:
        say("   already in the store (idempotent re-ingest): nothing written")
    else:
        say(f"   {r['events']:,} events written, {r['quarantined']} quarantined, partitions: "
            f"{', '.join(r['partitions'])}")
    if r.get("report_text"):
        say("   cleaning report:")
        for line in r["report_text"].splitlines():
            say("   " + line)
    info = store.info()
    for e in info:
        say(f"   stored: {e['venue']}/{e['symbol']}: {e['events']:,} events in {e['partitions']} partition(s), "
            f"{e['first']} .. {e['last']}, tick {e['tick_size']}, lot {e['lot_size']}")

    say("2. load from the store and rebuild the book (snapshot + diffs, top 5, OFI after every message)")
    events = store.load(venue="binance-futures", symbol="BTCUSDT")
    inst = instrument_of(events)
    synced, sync_info = synced_events(events)
    book = rebuild_book(synced, levels=5, every=0, ofi=True).to_host()
    bid = inst.price_of(book.bid_price[:, 0])
    ask = inst.price_of(book.ask_price[:, 0])
    valid = (book.bid_qty[:, 0] > 0) & (book.ask_qty[:, 0] > 0)
    spread = (ask - bid)[valid]
    say(f"   {sync_info.applied:,} diffs applied after the snapshot ({sync_info.gaps} gaps), {book.index.size:,} "
        f"book rows on {book.stats['backend']}")
    if valid.any():
        last = np.nonzero(valid)[0][-1]
        say(f"   last book: bid {bid[last]:.1f} x {inst.size_of(book.bid_qty[last, 0]):.3f}  |  "
            f"ask {ask[last]:.1f} x {inst.size_of(book.ask_qty[last, 0]):.3f}; mean spread "
            f"{spread.mean():.3f} USDT; OFI(level 1) sum {inst.size_of(book.ofi[:, 0].sum()):.3f} BTC")

    say("3. check the rebuilt top of book against Binance's bookTicker")
    ver = compare_book_ticker(events, str(path))
    say(f"   {ver.checked} bookTickers at the same update id compared: {ver.mismatches} mismatches "
        f"({ver.skipped:,} inside a diff's aggregated range, {ver.unsynced} before sync)")

    say(f"4. synthetic zero-intelligence book ({synthetic_events:,} events, seeded)")
    syn = generate(synthetic_events, seed=42, mode="l2")
    srep = store.ingest(syn, f"demo-synthetic-{synthetic_events}-42")
    sb = rebuild_book(syn, levels=5, every=0, ofi=True).to_host()
    say(f"   stored {srep.events:,} events ({'already there' if srep.skipped else 'new'}); "
        f"{sb.index.size:,} book rows; final book has {sb.final_book['price'].size} levels")
    ok = bool(ver.ok and r.get("error") is None)
    say("demo " + ("OK" if ok else "FAILED") + f": try `gpuflow info --store {root}`")
    return {"ok": ok, "store": str(root), "ingest": {k: r[k] for k in ("events", "quarantined", "partitions",
                                                                         "skipped")},
            "clean": r.get("report"), "store_info": info, "book_rows": int(book.index.size),
            "verify": ver.to_dict(), "synthetic_events": int(syn.num_rows)}
