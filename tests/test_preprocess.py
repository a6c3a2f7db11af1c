"""Preprocessing invariants. Every configuration inherits the same checks (pybaselines-style base class)."""

import numpy as np
import pytest

from edge.errors import ConfigError, PreprocessError
from edge.preprocess import (
    BaselineConfig,
    ChannelConfig,
    PreprocessConfig,
    Preprocessor,
    RamanGrid,
    preprocess,
    resample,
)
from edge.shift import shift_spectra
from edge.synthetic import SyntheticLibrary


def raw_spectra(n=4, seed=0):
    """Counts-like spectra with fluorescence, on a non-uniform instrument axis 150–1700 cm⁻¹."""
    lib = SyntheticLibrary()
    s = lib.sample(1, seed=seed)
    axis = np.sort(np.random.default_rng(seed).uniform(150, 1700, 1500))
    x = np.stack([np.interp(axis, s.raman_shift_cm1, row) for row in s.intensities[:n]]).astype(np.float32)
    return x, axis


class BasePreprocessTest:
    """Checks every preprocessing configuration must pass."""

    config = PreprocessConfig()

    def setup_method(self):
        self.pre = Preprocessor(self.config)
        self.x, self.axis = raw_spectra()

    def test_input_unchanged(self):
        x, axis = self.x.copy(), self.axis.copy()
        self.pre(self.x, self.axis)
        np.testing.assert_array_equal(self.x, x)
        np.testing.assert_array_equal(self.axis, axis)

    def test_dtype_and_shape(self):
        inner = ((self.config.n_channels,) if self.config.extra_channels else ()) + (self.config.grid.n_points,)
        out = self.pre(self.x, self.axis)
        assert out.dtype == np.float32 and out.shape == (len(self.x), *inner)
        single = self.pre(self.x[0], self.axis)
        assert single.dtype == np.float32 and single.shape == inner

    def test_batch_equals_single(self):
        batch = self.pre(self.x, self.axis)
        for i in range(len(self.x)):
            np.testing.assert_allclose(batch[i], self.pre(self.x[i], self.axis), rtol=1e-5, atol=1e-6)

    def test_float64_input_gives_same_result(self):
        np.testing.assert_allclose(self.pre(self.x.astype(np.float64), self.axis), self.pre(self.x, self.axis),
                                   rtol=1e-5, atol=1e-6)

    def test_on_grid_input_needs_no_axis(self):
        on_grid = resample(self.x, self.axis, self.config.grid)
        np.testing.assert_allclose(self.pre(on_grid), self.pre(self.x, self.axis), rtol=1e-5, atol=1e-6)

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_rejects_non_finite(self, bad):
        x = self.x.copy()
        x[1, 10] = bad
        with pytest.raises(PreprocessError, match="NaN or Inf"):
            self.pre(x, self.axis)

    def test_rejects_bad_axes(self):
        with pytest.raises(PreprocessError, match="empty"):
            self.pre(np.zeros(0, np.float32), np.zeros(0))
        with pytest.raises(PreprocessError, match="strictly increasing"):
            self.pre(self.x[0], self.axis[::-1])
        with pytest.raises(PreprocessError, match="at least 2"):
            self.pre(self.x[0, :1], self.axis[:1])
        with pytest.raises(PreprocessError, match="points"):
            self.pre(self.x[0, :-1], self.axis)
        with pytest.raises(PreprocessError, match="does not overlap"):
            self.pre(self.x[0], self.axis + 5000)
        with pytest.raises(PreprocessError, match="model grid"):
            self.pre(self.x[0, :100])

    def test_config_round_trip(self):
        assert PreprocessConfig.from_dict(self.config.to_dict()) == self.config

    def test_offset_compensation_undoes_a_known_raman_shift_offset(self):
        """An instrument reading every line 12 cm⁻¹ too high (axis + 12), preprocessed with ``offset_cm1=12``,
        matches the true spectrum away from the edges; uncorrected, it does not."""
        true = self.pre(self.x, self.axis)
        inner = np.s_[..., 40:-40]
        fixed = self.pre(self.x, self.axis + 12.0, offset_cm1=12.0)
        np.testing.assert_allclose(fixed[inner], true[inner], atol=0.02 * np.abs(true).max())
        assert np.abs(self.pre(self.x, self.axis + 12.0) - true)[inner].max() > 0.1 * np.abs(true).max()
        with pytest.raises(PreprocessError, match="offset_cm1"):
            self.pre(self.x, self.axis, offset_cm1=float("nan"))


class TestMax(BasePreprocessTest):
    config = PreprocessConfig(normalisation="max")

    def test_max_is_one(self):
        np.testing.assert_allclose(self.pre(self.x, self.axis).max(axis=1), 1.0, rtol=1e-6)

    def test_flat_spectrum_rejected(self):
        with pytest.raises(PreprocessError, match="flat or no positive maximum"):
            self.pre(-np.ones(1392, np.float32))

    def test_real_splits_are_a_fixed_point(self, soysal):
        from edge.data import load_npz

        s = load_npz(soysal / "raw_test.npz")
        np.testing.assert_allclose(self.pre(s.intensities, s.raman_shift_cm1), s.intensities, rtol=1e-6, atol=1e-7)


class TestMinMax(BasePreprocessTest):
    config = PreprocessConfig(normalisation="minmax")

    def test_range(self):
        out = self.pre(self.x, self.axis)
        np.testing.assert_allclose(out.min(1), 0, atol=1e-6)
        np.testing.assert_allclose(out.max(1), 1, atol=1e-6)


class TestSNVDerivative(BasePreprocessTest):
    config = PreprocessConfig(normalisation="snv", derivative=1, derivative_window=11)

    def test_zero_mean_unit_std(self):
        out = self.pre(self.x, self.axis)
        np.testing.assert_allclose(out.mean(1), 0, atol=1e-4)
        np.testing.assert_allclose(out.std(1), 1, atol=1e-4)

    def test_derivative_removes_a_constant_offset(self):
        x = self.x[:1]
        np.testing.assert_allclose(self.pre(x, self.axis)[:, 60:-60], self.pre(x + 500.0, self.axis)[:, 60:-60],
                                   rtol=1e-3, atol=1e-3)


class TestTwoChannels(BasePreprocessTest):
    """Max-normalised spectrum plus SNV of its Savitzky–Golay derivative (the default model's input)."""

    config = PreprocessConfig(extra_channels=(ChannelConfig(1, 11, "snv"),))

    def test_channels_equal_their_single_channel_configs(self):
        out = self.pre(self.x, self.axis)
        np.testing.assert_allclose(out[:, 0], Preprocessor(PreprocessConfig())(self.x, self.axis), rtol=1e-6)
        d = Preprocessor(PreprocessConfig(derivative=1, derivative_window=11, normalisation="snv"))(self.x, self.axis)
        np.testing.assert_allclose(out[:, 1], d, rtol=1e-5, atol=1e-5)


class TestBaseline(BasePreprocessTest):
    config = PreprocessConfig(baseline=BaselineConfig("asls", {"lam": 1e6, "p": 0.01}), normalisation="max")

    def test_fluorescence_is_removed(self):
        lib = SyntheticLibrary()
        clean = lib.clean(0)
        bg = 3.0 * np.linspace(0, 1, 1392) ** 2
        out = self.pre((clean + bg).astype(np.float32))
        # after baseline removal the strongest line is again the maximum and the background is gone
        assert abs(int(np.argmax(out)) - int(np.argmax(clean))) <= 2
        assert np.median(np.abs(out)) < 0.05


def test_resample_is_exact_on_the_grid_and_edge_level_or_zero_outside():
    grid = RamanGrid()
    x = np.random.default_rng(0).random(1392).astype(np.float32)
    np.testing.assert_array_equal(resample(x, grid.axis, grid), x)
    axis = np.linspace(500, 1000, 400)
    out = resample(np.ones(400), axis, grid, outside_range="zero")
    assert np.all(out[grid.axis < 500] == 0) and np.all(out[grid.axis > 1000] == 0)
    assert np.all(out[(grid.axis >= 500) & (grid.axis <= 1000)] == 1)
    ramp = 2.0 + axis / 1000.0  # the default extends each end with its level over the last 10 cm⁻¹
    out = resample(ramp, axis, grid)
    np.testing.assert_allclose(out[grid.axis < 500], ramp[axis <= 510].mean(), rtol=1e-6)
    np.testing.assert_allclose(out[grid.axis > 1000], ramp[axis >= 990].mean(), rtol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    ({"normalisation": "l2"}, "normalisation"), ({"derivative": 2}, "derivative"),
    ({"derivative": 1, "derivative_window": 4}, "odd"), ({"baseline": BaselineConfig("nope")}, "pybaselines"),
])
def test_bad_configs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PreprocessConfig(**kwargs)
    with pytest.raises(ConfigError):
        PreprocessConfig.from_dict({"bogus": 1})


def test_shift_moves_peaks_and_pads_with_the_row_edge():
    x = np.zeros((2, 100), np.float32)
    x[:, 0] = [3.0, 5.0]
    x[:, 50] = 1.0
    out = shift_spectra(x, 15)
    assert np.all(out[:, 65] == 1.0) and np.all(out[:, 50] == 0)
    np.testing.assert_array_equal(out[:, :16], np.repeat([[3.0], [5.0]], 16, axis=1))  # each row's own edge
    back = shift_spectra(x, np.array([-2.5, 0.0]))
    assert back[0, 47] == pytest.approx(0.5) and back[0, 48] == pytest.approx(0.5) and back[1, 50] == 1.0
    np.testing.assert_array_equal(x[:, 50], 1.0)  # input unchanged


def test_preprocess_convenience_function():
    x, axis = raw_spectra(2)
    np.testing.assert_array_equal(preprocess(x, axis), Preprocessor()(x, axis))


@pytest.mark.parametrize("shift", [12.3, -7.5, 0.0, 2000.0])
def test_one_shift_for_all_rows_equals_the_same_shift_per_row(shift):
    x, _ = raw_spectra(n=3)
    np.testing.assert_array_equal(shift_spectra(x, shift, 0.5), shift_spectra(x, np.full(3, shift), 0.5))
    np.testing.assert_array_equal(shift_spectra(x[0], shift), shift_spectra(x[:1], np.array([shift]))[0])
