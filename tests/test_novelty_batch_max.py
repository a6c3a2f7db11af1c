"""``batch_max`` (issue #17, flood clause): under a flood the drift bookkeeping takes only that many spectra of a
micro-batch; batches no larger than it are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.novelty import DriftConfig, DriftMonitor
from edge.novelty.drift import batch_rows


def test_rows_are_evenly_spaced_and_bounded():
    assert batch_rows(3, 4).tolist() == [0, 1, 2]
    assert batch_rows(64, 4).tolist() == [0, 21, 42, 63]
    assert batch_rows(64, 1).tolist() == [63]
    assert len(batch_rows(64, 32)) == 32 and len(batch_rows(64, 63)) == 63
    assert batch_rows(64, 0).tolist() == list(range(64))


def _stream(x: np.ndarray, refs: np.ndarray, batch: int, m: int) -> DriftMonitor:
    """The monitor fed as :meth:`NoveltyService.observe` feeds it: each batch's ``batch_rows`` only."""
    mon = DriftMonitor(DriftConfig(warmup=50, channels=(), offset_top_k=0, batch_max=m), refs, 1.0)
    for a in range(0, len(x), batch):
        rows = batch_rows(len(x[a:a + batch]), m)
        mon.update(a + rows, a, spectra=x[a:a + batch][rows])
    return mon


def test_subsampled_floods_still_measure_the_offset():
    rng = np.random.default_rng(0)
    grid = np.arange(600.0)
    refs = np.stack([sum(np.exp(-0.5 * ((grid - c) / 3.0) ** 2) for c in rng.uniform(50, 550, 5)) for _ in range(6)])
    x = np.roll(refs[rng.integers(0, 6, 256)], 6, axis=1) + rng.normal(0, 0.01, (256, 600))
    full, same, flood = _stream(x, refs, 8, 0), _stream(x, refs, 8, 8), _stream(x, refs, 64, 8)
    assert list(same.offsets) == list(full.offsets) and same.offset_cm1 == full.offset_cm1
    assert {s for s, _, _ in flood.offsets} <= {a + int(r) for a in range(0, 256, 64) for r in batch_rows(64, 8)}
    assert flood.offset_cm1 == pytest.approx(6.0, abs=0.5) and full.offset_cm1 == pytest.approx(6.0, abs=0.5)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8"])
def test_bad_setting_is_refused(bad):
    with pytest.raises(ConfigError):
        DriftConfig(batch_max=bad)
