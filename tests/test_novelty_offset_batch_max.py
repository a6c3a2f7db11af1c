"""``offset_batch_max`` (issue #17, flood clause): under a flood only that many spectra of a micro-batch have their
offset estimated; batches no larger than it are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.novelty import DriftConfig, DriftMonitor


def _stream(x: np.ndarray, refs: np.ndarray, batch: int, **cfg: int) -> DriftMonitor:
    mon = DriftMonitor(DriftConfig(warmup=50, channels=(), **cfg), refs, 1.0)
    for a in range(0, len(x), batch):
        mon.update(np.arange(a, a + len(x[a:a + batch])), a, spectra=x[a:a + batch])
    return mon


@pytest.fixture(scope="module")
def shifted() -> tuple[np.ndarray, np.ndarray]:
    """Synthetic line spectra on a 1 cm⁻¹ grid, every one shifted by +6 points against its reference."""
    rng = np.random.default_rng(0)
    n, grid = 6, np.arange(600.0)
    refs = np.stack([sum(np.exp(-0.5 * ((grid - c) / 3.0) ** 2) for c in rng.uniform(50, 550, 5)) for _ in range(n)])
    cls = rng.integers(0, n, 256)
    x = np.roll(refs[cls], 6, axis=1) + rng.normal(0, 0.01, (256, 600))
    return x, refs


def test_rows_are_evenly_spaced_and_bounded():
    mon = DriftMonitor(DriftConfig(offset_batch_max=4), None)
    assert mon._offset_rows(3) == [0, 1, 2]
    assert mon._offset_rows(64) == [0, 21, 42, 63]
    assert len(DriftMonitor(DriftConfig(offset_batch_max=32), None)._offset_rows(64)) == 32
    assert DriftMonitor(DriftConfig(), None)._offset_rows(64) == list(range(64))


def test_small_batches_are_unchanged_and_floods_estimate_fewer(shifted):
    x, refs = shifted
    full = _stream(x, refs, 8, offset_top_k=0)
    same = _stream(x, refs, 8, offset_top_k=0, offset_batch_max=8)
    assert list(same.offsets) == list(full.offsets) and same.offset_cm1 == full.offset_cm1
    flood = _stream(x, refs, 64, offset_top_k=0, offset_batch_max=8)
    assert {s for s, _, _ in flood.offsets} <= {a + r for a in range(0, 256, 64) for r in flood._offset_rows(64)}
    assert flood.offset_cm1 == pytest.approx(6.0, abs=0.5) and full.offset_cm1 == pytest.approx(6.0, abs=0.5)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8"])
def test_bad_setting_is_refused(bad):
    with pytest.raises(ConfigError):
        DriftConfig(offset_batch_max=bad)
