"""Recipe selection on training data only: the proxy cross-validation behind ``configs/model_*.toml``.

Draw ``n`` spectra (at least one per class) from the 40 % training file, train our model on them, and score
the remaining spectra of that file (unshifted, and shifted by +15/+30 cm⁻¹ for the largest ``n``). The
default sizes 85/170/255 mirror the 10/20/30 % splits; their validation sets (255/170/85 spectra) are
far larger than a per-class hold-out's (~20 spectra at 10 %), and ``raw_test.npz`` is never read.

    python -m bench.recipe_cv NAME '{"model": {"members": 2}}' [--draws 3] [--config configs/model_compact.toml]

Prints one line and appends it, with the settings, to ``bench/results/recipe_cv.tsv``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np

from edge.data import SpectraSet, load_spectra, resolve_data_path
from edge.preprocess import Preprocessor
from edge.shift import shift_spectra

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
SIZES = (85, 170, 255)
SHIFTS_CM1 = (0.0, 15.0, 30.0)


def draw(labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``n`` training spectra (one of every class first, the rest at random) and of the rest.

    Parameters
    ----------
    labels : numpy.ndarray, shape (B,), str
    n : int
        Spectra to draw (≥ the number of classes).
    seed : int

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Training and validation indices, int.
    """
    rng = np.random.RandomState(seed)
    classes = np.unique(labels)
    if n < len(classes) or n >= len(labels):
        raise ValueError(f"n must lie in [{len(classes)}, {len(labels)}), got {n}")
    first = np.array([rng.choice(np.flatnonzero(labels == c)) for c in classes])
    rest = rng.permutation(np.setdiff1d(np.arange(len(labels)), first))[:n - len(first)]
    train = np.concatenate([first, rest])
    return train, np.setdiff1d(np.arange(len(labels)), train)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def run(overrides: dict[str, Any], config: str | pathlib.Path, draws: int = 3, sizes: Sequence[int] = SIZES,
        data_dir: str | None = None) -> dict[str, dict[str, float]]:
    """Mean validation top-1 (%) per drawn size (and shift at the largest size); see the module docstring."""
    import torch

    from trainer.settings import TrainerSettings
    from trainer.train import fit, predict_proba

    torch.set_num_threads(1)
    base = TrainerSettings.from_toml(config).to_dict()
    st = TrainerSettings.from_dict(_merge(copy.deepcopy(base), overrides))
    pool = load_spectra(resolve_data_path("rruff_soysal/raw_train_labeled_40pct.npz", data_dir))
    x, y, classes = pool.intensities, pool.labels, pool.classes
    pre = Preprocessor(st.preprocessing)
    out: dict[str, dict[str, float]] = {}
    for n in sizes:
        acc: dict[str, list[float]] = {}
        for d in range(draws):
            tr, va = draw(y, n, 1000 + d)
            r = fit(SpectraSet(x[tr], y[tr], pool.raman_shift_cm1), st.preprocessing, st.model,
                    dataclasses.replace(st.training, seed=d), st.augmentation, classes=classes, progress=False)
            truth = np.array([classes.index(c) for c in y[va]])
            for shift in SHIFTS_CM1 if n == max(sizes) else (0.0,):
                xv = shift_spectra(x[va], shift) if shift else x[va]
                p = predict_proba(r.model, pre(xv))
                acc.setdefault(f"{shift:g}", []).append(100.0 * float(np.mean(p.argmax(1) == truth)))
        out[str(n)] = {k: round(float(np.mean(v)), 1) for k, v in acc.items()}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the training-split proxy cross-validation of one recipe; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name")
    p.add_argument("overrides", nargs="?", default="{}", help="JSON merged into the config's sections")
    p.add_argument("--config", default=str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "model_compact.toml"))
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--log", default=str(RESULTS / "recipe_cv.tsv"))
    a = p.parse_args(argv)
    try:
        overrides = json.loads(a.overrides)
    except ValueError as exc:
        print(f"error: overrides are not JSON: {exc}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    res = run(overrides, a.config, a.draws, a.sizes, a.data_dir)
    line = f"{a.name}\t{json.dumps(overrides)}\t{json.dumps(res)}\t{time.perf_counter() - t0:.0f}s"
    print(line)
    log = pathlib.Path(a.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
