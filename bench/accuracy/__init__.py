"""Accuracy benchmark (issue #5): our compact model against the paper's CNN and classical peers, in one run
with the same training splits and the same shifted test sets.

Data: the paper's public RRUFF splits (``rruff_soysal/raw_train_labeled_{10,20,30,40}pct.npz``), scored on
``raw_test.npz`` (150 spectra, 63 minerals) shifted right by 0 … 40 cm⁻¹ with the project's shift function
(:func:`edge.shift.shift_spectra`, each row padded with its own first value, as the paper built its +15 and
+30 cm⁻¹ sets). The test set is only scored, never used to choose anything.

Methods
-------
* ``compact`` — ours: ``configs/model_compact.toml`` unchanged (2-channel input, ~63 k parameters), trained
  with :func:`trainer.train.fit`; one run per seed.
* ``paper_m2`` / ``paper_m16`` — the paper's CNN (Soysal et al. §3): :class:`trainer.model.RamanCNN` with
  pooling m = 2 or 16 in n = 3 stages and the flatten + dense head (``dense_units=[2048]``: 22.95 M
  parameters at m = 2, the paper's ~23 M), one max-normalised input channel (``PreprocessConfig()``), Adam
  1e-3 with ReduceLROnPlateau and class-weighted cross-entropy (``TrainConfig(schedule="plateau")``), no
  augmentation (the paper trained on the spectra as they are).
* ``knn_peaks`` / ``svm_peaks`` — paper §3 baselines: :func:`scipy.signal.find_peaks_cwt` (widths 10–20
  points) on each spectrum, counts of peaks per 12 cm⁻¹ bin, then scikit-learn's 1-nearest-neighbour or
  RBF SVM (C = 10, gamma "scale", balanced class weights). Deterministic: one run.
* ``lr_snv_deriv`` — scikit-learn logistic regression (C = 1, balanced class weights) on the SNV of the
  Savitzky–Golay first derivative (11 points; the same :class:`edge.preprocess.Preprocessor` channel as our
  model's second input). Deterministic: one run.
* ``minirocket`` — aeon's ``MiniRocketClassifier`` (10 000 kernels, ridge with built-in CV) on the
  Savitzky–Golay first derivative; seeded. Reported as "not installed" without ``aeon`` (extra ``bench``).

Also: our model's INT8 export on the 40 % split (first seed: train → :func:`trainer.bundle_io.save_model`
into a temporary bundle → :func:`export.cli.export_bundle` with ``int8=True`` → ``model.int8.onnx`` scored
with onnxruntime), and the pooling study of the paper's Tables 3–4 as plots (40 % split, first seed): top-1
versus shift 0 … 40 cm⁻¹ for the paper CNN with m = 2 / 16 / 64 (n = 3) and n = 1 / 3 / 10 (m = 2), next to
ours (:func:`trainer.report.plot_shift_curve`). At n = 1 the flatten is 4× longer; its dense layer has 512
units so the model keeps the paper's ~23 M parameters.

Every finished (method, split, seed) cell is stored in ``accuracy_cells.json`` under the output folder,
keyed by a fingerprint of its settings: an interrupted run resumes where it stopped, and the quick run shares
the cells it has in common with the full run (our model's settings do not change with ``--quick``). The
JSON, the markdown table and the plots are rewritten after every cell, so partial results can be read while
the benchmark runs.

Modules
-------
:mod:`~bench.accuracy.runner` (``run``, the command line), :mod:`~bench.accuracy.report` (markdown, plots),
:mod:`~bench.accuracy.cells` (cell fingerprint and cache, aggregation), :mod:`~bench.accuracy.methods` (the
rows), :mod:`~bench.accuracy.cnn` (ours and the paper's CNN), :mod:`~bench.accuracy.classical` (the classical
peers), :mod:`~bench.accuracy.base` and :mod:`~bench.accuracy.constants`.

Run::

    edge-bench accuracy [--quick]
    python bench/bench_accuracy.py --json bench/results/accuracy.json [--quick] [--seeds 3] [--splits 10 20 30 40]
"""

from .classical import (
    aeon_available,
    first_derivative,
    knn_scores,
    lr_scores,
    minirocket_scores,
    peak_count_features,
    peak_positions,
    snv_derivative,
    svm_scores,
)
from .constants import TARGETS_TOP1, TEAM_EARLIER_TOP1
from .methods import build_methods
from .runner import METHODS, main, run

__all__ = [
    "METHODS",
    "TARGETS_TOP1",
    "TEAM_EARLIER_TOP1",
    "aeon_available",
    "build_methods",
    "first_derivative",
    "knn_scores",
    "lr_scores",
    "main",
    "minirocket_scores",
    "peak_count_features",
    "peak_positions",
    "run",
    "snv_derivative",
    "svm_scores",
]
