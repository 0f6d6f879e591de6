"""A small built-in table of known instruments (tick and lot sizes as decimal strings).

Readers look an instrument up here when the user gives none; where it is not
known they take the finest decimal step present in the file and mark the step as
inferred in the metadata.
"""
from __future__ import annotations

from gpuflow.schema import Instrument

__all__ = ["KNOWN", "lookup"]

#: (venue, symbol) -> (tick_size, lot_size).  Values as published by the venues
#: (Binance exchangeInfo PRICE_FILTER / LOT_SIZE, CME contract specs).
KNOWN: dict[tuple[str, str], tuple[str, str]] = {
    ("binance-futures", "BTCUSDT"): ("0.10", "0.001"),
    ("binance-futures", "ETHUSDT"): ("0.01", "0.001"),
    # Spot sizes: LOT_SIZE is 0.00001 today, but depth and bookTicker sizes still show resting
    # orders from the older 0.000001 step ("25.42618900"), so the lot is the base-asset precision.
    ("binance", "BTCUSDT"): ("0.01", "0.00000001"),
    ("binance", "ETHUSDT"): ("0.01", "0.0001"),
    ("glbx-mdp3", "ESH4"): ("0.25", "1"),
}


def lookup(venue: str, symbol: str, source: str = "") -> Instrument | None:
    """Return the known :class:`Instrument` for (venue, symbol), or None."""
    hit = KNOWN.get((venue, symbol.upper()))
    if hit is None:
        return None
    return Instrument(venue=venue, symbol=symbol.upper(), tick_size=hit[0], lot_size=hit[1], source=source)
