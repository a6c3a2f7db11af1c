"""The benchmark's rows with their settings."""

from __future__ import annotations

import os
import pathlib
from typing import Any

from .base import Method
from .classical import _fit_lr, _fit_minirocket, _fit_peaks
from .cnn import _fit_cnn, _fit_cnn_compensated, _paper_settings
from .constants import CALIBRATED_TOLERANCE_CM1, DEFAULT_CONFIG, ENSEMBLE_CONFIG, PEAK_BIN_CM1, PEAK_WIDTHS


def build_methods(quick: bool = False, config: str | os.PathLike | None = None) -> list[Method]:
    """The benchmark's methods with their settings (``quick``: smaller paper CNNs and MiniRocket; ours unchanged).

    Returns
    -------
    list of Method
    """
    from trainer.settings import TrainerSettings, apply_shift_tolerance

    def ours(key: str, label: str, path: str | os.PathLike[str], tolerance_cm1: float | None = None) -> Method:
        settings = TrainerSettings.from_toml(os.fspath(path))
        settings.training.threads = 1
        extra: dict[str, Any] = {"config_file": str(path)}
        if tolerance_cm1 is not None:
            settings = apply_shift_tolerance(settings, tolerance_cm1)
            extra["shift_tolerance_cm1"] = tolerance_cm1
        return Method(key, label, True, {**settings.to_dict(), **extra}, True, _fit_cnn)

    config = config or DEFAULT_CONFIG
    t5 = f"dial T={CALIBRATED_TOLERANCE_CM1:g} cm⁻¹ (calibrated instrument)"
    dense, dense_n1 = ([256], [64]) if quick else ([2048], [512])
    epochs = 15 if quick else None
    mr_kernels = 2_000 if quick else 10_000

    def compensated(m: Method, drift: dict[str, Any] | None = None) -> Method:
        from edge.novelty import DriftConfig

        cfg = DriftConfig.from_dict(drift) if drift is not None else DriftConfig(compensate_offset=True)
        m.settings = {**m.settings, "drift_compensation": cfg.to_dict(),
                      "stream": "test spectra one at a time, in a random order seeded by the seed"}
        m.fn = _fit_cnn_compensated
        return m

    def paper(key: str, label: str, m: int, n: int, units: list[int], table: bool = True) -> Method:
        return Method(key, label, True, _paper_settings(m, n, units, epochs), table, _fit_cnn)

    return [
        # The shipped default (issue #14): edge-train's defaults (the config) behind the daemon's default drift
        # settings (compensation on, offset against every class's reference).
        compensated(ours("default", f"ours: the default ({pathlib.Path(config).name} + daemon defaults: drift "
                                    "compensation)", config), {}),
        ours("compact", f"ours: compact CNN ({pathlib.Path(config).name}), no compensation", config),
        ours("compact_calibrated", f"ours: same, {t5}", config, CALIBRATED_TOLERANCE_CM1),
        ours("ensemble", "ours: 2 half-width members (model_ensemble.toml, T=40)", ENSEMBLE_CONFIG),
        ours("ensemble_calibrated", f"ours: 2 half-width members, {t5}", ENSEMBLE_CONFIG, CALIBRATED_TOLERANCE_CM1),
        compensated(ours("compact_compensated", "ours: compact CNN (T=40) + onboard drift compensation "
                                                "(daemon's offset estimate, streamed)", config)),
        compensated(ours("ensemble_compensated", "ours: 2 half-width members (T=40) + onboard drift compensation",
                         ENSEMBLE_CONFIG)),
        paper("paper_m2", "paper CNN m=2 n=3", 2, 3, dense),
        paper("paper_m16", "paper CNN m=16 n=3", 16, 3, dense),
        Method("knn_peaks", "kNN (k=1) on peak counts", False,
               {"features": {"find_peaks_cwt_widths": list(PEAK_WIDTHS), "bin_cm1": PEAK_BIN_CM1},
                "classifier": "sklearn KNeighborsClassifier(n_neighbors=1), Euclidean"}, True, _fit_peaks),
        Method("svm_peaks", "SVM (RBF) on peak counts", False,
               {"features": {"find_peaks_cwt_widths": list(PEAK_WIDTHS), "bin_cm1": PEAK_BIN_CM1},
                "classifier": "sklearn SVC(kernel='rbf', C=10, gamma='scale', class_weight='balanced')"}, True,
               _fit_peaks),
        Method("lr_snv_deriv", "logistic regression on SNV of 1st derivative", False,
               {"features": "SNV of Savitzky-Golay 1st derivative (window 11, quadratic), edge.preprocess",
                "classifier": "sklearn LogisticRegression(C=1, lbfgs, max_iter=3000, class_weight='balanced')"},
               True, _fit_lr),
        Method("minirocket", "MiniRocket (aeon) on 1st derivative", True,
               {"features": "Savitzky-Golay 1st derivative (window 11, quadratic), edge.preprocess",
                "classifier": f"aeon MiniRocketClassifier(n_kernels={mr_kernels}): StandardScaler(with_mean=False) "
                              "+ RidgeClassifierCV(alphas=logspace(-3, 3, 10))", "n_kernels": mr_kernels},
               True, _fit_minirocket),
        paper("paper_m64", "paper CNN m=64 n=3", 64, 3, dense, table=False),
        paper("paper_m2_n1", f"paper CNN m=2 n=1 (dense {dense_n1[0]})", 2, 1, dense_n1, table=False),
        paper("paper_m2_n10", "paper CNN m=2 n=10", 2, 10, dense, table=False),
    ]
