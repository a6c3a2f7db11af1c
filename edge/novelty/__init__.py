"""Onboard novelty and drift: "this spectrum is not like anything I know" and "the instrument is drifting".

numpy and onnxruntime only (no torch, no river): the trainer fits the autoencoder and writes it into the
bundle (:mod:`trainer.autoencoder`), the exporter converts it to ONNX, and this module runs it.

Novelty score (per spectrum)
----------------------------
The bundle's autoencoder reconstructs the preprocessed spectrum ``x`` (shape (N,)) as ``r``. The score is
the **line residual** (``metric = "line_cosine"``)::

    score = 1 - cos(hp(x), hp(r))         in [0, 2], dimensionless

where ``hp`` subtracts a centred moving average of :data:`HIGHPASS_POINTS` (31) grid points, i.e. keeps the
Raman lines and drops the smooth (fluorescence) component. It is half the squared distance between the
unit-normalised line components of the spectrum and of its reconstruction. It was chosen over the plain mean
squared error (``metric = "mse"``, also computed and published as ``reconstruction_mse``) on a class-held-out
split of the *training* spectra: the plain MSE is dominated by each sample's own background, which says
little about the mineral. A spectrum is ``novel`` when its score exceeds the bundle's threshold: a quantile
of the scores of held-out nominal training spectra (``manifest["novelty"]``; never set from anomalies).

Drift (per stream), :class:`DriftMonitor`
-----------------------------------------
Page–Hinkley tests (:class:`PageHinkley`) watch four per-spectrum statistics, each standardised by the
mean and standard deviation of the first ``warmup`` spectra the daemon sees (assumed nominal: an instrument
is started calibrated) and clipped to ±``clip``:

- ``novelty``: log of the novelty score;
- ``residual``: log of the reconstruction MSE (everything the autoencoder misses, background included);
- ``confidence``: 1 − maximum softmax probability of the classifier;
- ``background``: median of the max-normalised spectrum, i.e. the level of the smooth background relative
  to the strongest line (a growing fluorescence raises it; the line residual ignores it by construction and
  the classifier is trained to), minus the same level of the predicted class's mean training spectrum when
  the references are known. Weak on its own: nominal raw spectra already differ widely in background, so it
  has its own, more sensitive Page–Hinkley settings (``background_delta``, ``background_threshold``).

A Raman-shift offset is estimated for every spectrum (:func:`estimate_offsets`: normalised
cross-correlation of the line component against the mean training spectra of the classifier's top
candidates, with parabolic sub-point interpolation); the monitor publishes the median over the last
``offset_window`` estimates and raises an ``offset`` alarm when its magnitude exceeds ``offset_alarm_cm1``
(default 3 cm⁻¹: a calibration tolerance of the instrument, a configuration value). Single estimates scatter
by a few cm⁻¹ (RRUFF samples of one mineral were measured on different instruments; solid solutions move
lines), the moving median does not. When the instrument measures a
standard (a spectrum labelled ``reference_label``, default ``"silicon"``), :func:`reference_line_offset`
measures the offset of its line against ``reference_line_cm1`` (default 520.7 cm⁻¹; some calibration tools
use 520.45: a configuration value).

Each alarm is one message on the ``drift`` topic (see :meth:`DriftMonitor.update`) with the statistic, the
threshold, the sequence number and time at which it fired and those at which the change began.

The code, one module per concern: :mod:`~edge.novelty.scores` (line residual, MSE),
:mod:`~edge.novelty.offsets` (Raman-shift offset estimates), :mod:`~edge.novelty.library` (spectral library),
:mod:`~edge.novelty.drift` (Page–Hinkley, drift monitor), :mod:`~edge.novelty.autoencoder` (the autoencoder at
run time) and :mod:`~edge.novelty.service` (what the daemon runs). This package re-exports their public names.
"""

from .autoencoder import AE_FILE_STEM, AE_FP32_FILE, AE_INT8_FILE, DETECTORS, NOVELTY_SCHEMA, PROTOTYPES_FILE, NoveltyModel
from .drift import CHANNELS, DriftConfig, DriftMonitor, PageHinkley
from .library import LIBRARY_BAND_POWER, LIBRARY_FILE, LIBRARY_SHIFT_TOLERANCE_CM1, SpectralLibrary, band_profiles
from .offsets import (
    class_mean_spectra,
    estimate_offsets,
    offset_reference_fft,
    offset_spectra_fft,
    parabolic_peak,
    reference_line_offset,
)
from .scores import (
    HIGHPASS_POINTS,
    METRICS,
    highpass,
    line_residual_score,
    novelty_scores,
    primary_channel,
    reconstruction_error,
    residual_scores,
)
from .service import NoveltyService

__all__ = [
    "AE_FILE_STEM",
    "AE_FP32_FILE",
    "AE_INT8_FILE",
    "CHANNELS",
    "DETECTORS",
    "HIGHPASS_POINTS",
    "LIBRARY_BAND_POWER",
    "LIBRARY_FILE",
    "LIBRARY_SHIFT_TOLERANCE_CM1",
    "METRICS",
    "NOVELTY_SCHEMA",
    "PROTOTYPES_FILE",
    "DriftConfig",
    "DriftMonitor",
    "NoveltyModel",
    "NoveltyService",
    "PageHinkley",
    "SpectralLibrary",
    "band_profiles",
    "class_mean_spectra",
    "estimate_offsets",
    "highpass",
    "line_residual_score",
    "novelty_scores",
    "offset_reference_fft",
    "offset_spectra_fft",
    "parabolic_peak",
    "primary_channel",
    "reconstruction_error",
    "reference_line_offset",
    "residual_scores",
]
