"""The daemon's durable store (SQLite): spectra in, results out, replay on start, retention (docs/store.md)."""

from .schema import PRIORITY, SCHEMA_VERSION
from .store import (
    Admission,
    Arrival,
    PendingSpectrum,
    Store,
    StoreConfig,
    StoredResult,
    StoreError,
    dedup_key,
    open_for_reading,
)

__all__ = ["PRIORITY", "SCHEMA_VERSION", "Admission", "Arrival", "PendingSpectrum", "Store", "StoreConfig",
           "StoreError", "StoredResult", "dedup_key", "open_for_reading"]
