"""The daemon's per-batch path made cheaper (issue 17, cost): each vectorised step against the straightforward
computation it replaced, value for value (exact equality, not a tolerance)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy.signal import savgol_coeffs

from edge.novelty.drift import _median, _Standardiser
from edge.novelty.offsets import estimate_offsets, offset_reference_fft, offset_spectra_fft
from edge.novelty.scores import _unit_lines
from edge.quality import _broad, _longest_runs_at_max
from edge.store import Arrival, Store, StoreConfig


def _offsets_one_shot(x, refs, cand, max_lag):
    """The former estimate_offsets: one (B, k, nfft) correlation."""
    b, n = x.shape
    nfft = 1 << math.ceil(math.log2(n + max_lag + 1))
    rf = np.conj(np.fft.rfft(_unit_lines(refs, 31), n=nfft, axis=-1))
    cand = np.broadcast_to(np.arange(len(refs)), (b, len(refs))) if cand is None else cand
    xf = np.fft.rfft(_unit_lines(x, 31), n=nfft, axis=-1)
    corr = np.fft.irfft(xf[:, None, :] * rf[cand], n=nfft, axis=-1)
    return np.concatenate([corr[..., nfft - max_lag:], corr[..., : max_lag + 1]], axis=-1)


@pytest.mark.parametrize(("b", "k"), [(1, 3), (64, 3), (5, None), (17, 1)])
def test_offsets_in_blocks_equal_the_one_shot_correlation(b, k):
    rng = np.random.default_rng(b)
    n, r, lag = 300, 9, 20
    refs = np.cumsum(rng.standard_normal((r, n)), axis=1)
    x = np.roll(refs[rng.integers(0, r, b)], 3, axis=1) + 0.1 * rng.standard_normal((b, n))
    cand = None if k is None else rng.integers(0, r, (b, k))
    lags = _offsets_one_shot(x, refs, cand, lag)
    flat = lags.reshape(b, -1)
    ci, li = np.divmod(np.argmax(flat, axis=1), 2 * lag + 1)
    rf = offset_reference_fft(refs, n, lag)
    for xf in (None, offset_spectra_fft(x, lag)):
        off, quality, best = estimate_offsets(x, refs, cand, lag, references_fft=rf, spectra_fft=xf)
        assert np.array_equal(quality, flat.max(axis=1))
        assert np.array_equal(np.round(off - (li - lag)), np.zeros(b))
        assert np.array_equal(best, (np.broadcast_to(np.arange(r), (b, r)) if cand is None else cand)[np.arange(b), ci])


def test_broad_component_equals_the_row_by_row_convolution():
    rng = np.random.default_rng(0)
    for b, n, w in [(1, 1392, 75), (64, 1392, 75), (3, 5, 5), (7, 100, 99), (5, 801, 37), (0, 50, 5)]:
        y = rng.standard_normal((b, n)) * 10 ** rng.uniform(-3, 5)
        coeffs, h = savgol_coeffs(w, 3, use="dot"), w // 2
        ref = np.array([np.convolve(np.concatenate([np.full(h, r[0]), r, np.full(h, r[-1])]), coeffs, mode="valid")
                        for r in y]).reshape(b, n)
        assert np.array_equal(_broad(y, w), ref)


def test_saturation_runs_equal_the_scalar_count():
    def scalar(y):
        peak = float(y.max())
        top = y >= peak - 1e-7 * abs(peak)
        if np.count_nonzero(top) < 2:
            return 1
        edges = np.diff(np.concatenate([[0], top.astype(np.int8), [0]]))
        return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())

    rng = np.random.default_rng(3)
    for _ in range(500):
        y = rng.integers(0, 4, (rng.integers(1, 6), rng.integers(1, 40))).astype(float) * rng.choice([1, -1, 1e-9])
        assert _longest_runs_at_max(y).tolist() == [scalar(r) for r in y]


def test_standardiser_batch_equals_value_by_value():
    rng = np.random.default_rng(1)
    values = rng.standard_normal(100) * 5 + 2
    one, many = _Standardiser(30, 3.0), _Standardiser(30, 3.0)
    expected = [one(float(v)) for v in values]
    got = many.batch(values[:7]) + many.batch(values[7:29]) + many.batch(values[29:64]) + many.batch(values[64:])
    assert got == expected and expected[29] is None and expected[30] is not None


def test_median_equals_numpy():
    rng = np.random.default_rng(2)
    for n in range(1, 30):
        for _ in range(50):
            v = (rng.standard_normal(n) * 10 ** rng.uniform(-3, 3)).tolist()
            assert _median(v) == float(np.median(v))


def test_admit_in_one_batch_mixes_new_resent_and_rejected_messages(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite")))

    def arrival(sid, accepted=True, instrument="rover"):
        return Arrival(b"x" * 10, "push", time.time_ns(), sid, instrument, accepted)

    assert [a.row for a in store.admit([arrival("a"), arrival("b")])] == [1, 2]
    got = store.admit([arrival("c"), arrival("a"), arrival("c"), arrival("a", accepted=False), arrival(None),
                       arrival("d"), arrival("b", instrument="lander")])
    assert [(a.row, a.duplicate_of, a.answered) for a in got] == [
        (3, None, False), (None, 1, False), (None, 3, False), (4, None, False), (5, None, False), (6, None, False),
        (7, None, False)]
    store.close()
