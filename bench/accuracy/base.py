"""A benchmark row (:class:`Method`) and the data one of its cells is trained and scored on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.data import SpectraSet
from edge.preprocess import RamanGrid

if TYPE_CHECKING:
    from .classical import _PeakFeatureCache


@dataclass
class Method:
    """One row of the benchmark.

    Attributes
    ----------
    key : str
        Identifier (JSON keys, cache keys).
    label : str
        Table row name.
    seeded : bool
        Trained once per seed (else one deterministic run, reported with std 0).
    settings : dict
        Everything that defines the method (recorded and fingerprinted for the cell cache).
    table : bool
        A row of the table (False: pooling-study variant, 40 % split and first seed only).
    fn : callable
        ``fn(method, data, seed, int8=..., data_dir=...)`` → dict with ``scores`` (shift cm⁻¹ → array of
        shape (150, 63): class scores of the shifted test spectra) and ``train_seconds``, or ``status``.
    """

    key: str
    label: str
    seeded: bool
    settings: dict[str, Any]
    table: bool
    fn: Callable[..., dict[str, Any]] = field(repr=False)


@dataclass
class _Data:
    train: SpectraSet
    x_train: np.ndarray
    classes: list[str]
    y_train: np.ndarray
    tests: dict[float, np.ndarray]
    y_test: np.ndarray
    grid: RamanGrid
    peaks: _PeakFeatureCache
    train_path: str
    test_path: str
