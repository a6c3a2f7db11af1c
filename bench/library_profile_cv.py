"""Band-profile selection on training data only: the proxy behind :data:`edge.novelty.LIBRARY_BAND_POWER`.

Leave-classes-out inside the 40 % training file, without the test file and without training a network:
withhold ``k`` random classes from the library, score every training spectrum against the library rows of
"its predicted class" (self excluded), and report the AUROC of withheld (novel) against kept (nominal)
spectra. The classifier is stood in for by a nearest-neighbour search with the signed line component
(``band_power=None``), so every variant is asked of the same predicted classes and differs only in how it
compares a spectrum with that class's spectra. ``raw_test.npz`` is never read.

    python -m bench.library_profile_cv [--draws 40] [--k 5 10 15] [--json bench/results/library_profile_cv.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np

from edge.data import load_spectra
from edge.novelty import LIBRARY_SHIFT_TOLERANCE_CM1, SpectralLibrary
from edge.preprocess import PreprocessConfig, Preprocessor

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
POWERS: tuple[float | None, ...] = (None, 1.0, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05)


def proxy_auroc(similarity: np.ndarray, predictor: np.ndarray, labels: np.ndarray, k: int, draws: int,
                seed: int = 7) -> np.ndarray:
    """AUROC of each leave-``k``-classes-out draw for one library variant.

    Parameters
    ----------
    similarity : numpy.ndarray, shape (L, L)
        The variant's :meth:`~edge.novelty.SpectralLibrary.similarity_matrix`.
    predictor : numpy.ndarray, shape (L, L)
        The similarity that names each spectrum's class (nearest kept spectrum, self excluded).
    labels : numpy.ndarray, shape (L,), str
    k, draws, seed : int
        Classes withheld per draw, number of draws, seed of the draws.

    Returns
    -------
    numpy.ndarray, shape (draws,), float64
    """
    from sklearn.metrics import roc_auc_score

    sim, pred_sim = similarity.astype(np.float64), predictor.astype(np.float64)
    np.fill_diagonal(sim, -np.inf)
    np.fill_diagonal(pred_sim, -np.inf)
    classes = np.unique(labels)
    out = []
    for d in range(draws):
        withheld = np.random.default_rng([seed, k, d]).choice(classes, k, replace=False)
        novel = np.isin(labels, withheld)
        kept = labels[~novel]
        predicted = kept[np.argmax(pred_sim[:, ~novel], axis=1)]
        s = sim[:, ~novel]
        score = np.array([1.0 - s[i, kept == predicted[i]].max() for i in range(len(labels))])
        out.append(roc_auc_score(novel, score))
    return np.asarray(out)


def run(ks: Sequence[int] = (5, 10, 15), draws: int = 40,
        powers: Sequence[float | None] = POWERS) -> dict[str, Any]:
    """The proxy for every band power (None: signed line component); returns the JSON document."""
    t0 = time.perf_counter()
    pre = Preprocessor(PreprocessConfig())  # channel 0 of every bundle: the max-normalised spectrum
    train = load_spectra("rruff_soysal/raw_train_labeled_40pct.npz", pre.config.grid)
    x = pre(train.intensities, train.raman_shift_cm1)
    labels = np.asarray(train.labels)

    def matrix(power):
        lib = SpectralLibrary.from_spectra(x, labels, train.classes, LIBRARY_SHIFT_TOLERANCE_CM1,
                                           pre.config.grid.step_cm1, band_power=power)
        return lib.similarity_matrix()

    predictor = matrix(None)
    rows = []
    for power in powers:
        sim = predictor if power is None else matrix(power)
        row: dict[str, Any] = {"band_power": power}
        for k in ks:
            a = proxy_auroc(sim, predictor, labels, k, draws)
            row[f"k{k}"] = {"auroc_mean": float(a.mean()), "auroc_sd": float(a.std()), "draws": int(a.size)}
        rows.append(row)
        print(f"band_power {power!s:>5}: " + "  ".join(f"k={k} {row[f'k{k}']['auroc_mean']:.3f}"
                                                     f" ± {row[f'k{k}']['auroc_sd']:.3f}" for k in ks), flush=True)
    return {"benchmark": "library_profile_cv", "data": "rruff_soysal/raw_train_labeled_40pct.npz (test file unread)",
            "n_spectra": len(labels), "shift_tolerance_cm1": LIBRARY_SHIFT_TOLERANCE_CM1,
            "predictor": "nearest kept training spectrum, signed line component (band_power None)",
            "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the band-power cross-validation from the command line; returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m bench.library_profile_cv", description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 15], help="classes withheld per draw")
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--json", default=str(RESULTS / "library_profile_cv.json"))
    args = ap.parse_args(argv)
    doc = run(args.k, args.draws)
    path = pathlib.Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
