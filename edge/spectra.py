"""Spectra sharing one Raman-shift axis: :class:`SpectraSet`, what the loaders (:mod:`edge.data`, :mod:`edge.io`)
and the synthetic library (:mod:`edge.synthetic`) return.

Its own module so that :mod:`edge.synthetic` needs nothing from :mod:`edge.data` (which dispatches
``"synthetic..."`` paths to it): no import cycle between the two. ``edge.data.SpectraSet`` still works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import DataError

__all__ = ["SpectraSet"]


@dataclass
class SpectraSet:
    """Spectra sharing one Raman-shift axis.

    Attributes
    ----------
    intensities : numpy.ndarray, shape (B, N), float32
    labels : numpy.ndarray, shape (B,), str
    raman_shift_cm1 : numpy.ndarray, shape (N,), float64
    metadata : list of dict, length B
    source : str
        Where the set came from (path or generator description).
    skipped : list of (str, str)
        Files of a folder that could not be loaded, with the reason (see :func:`edge.data.load_rruff_folder`).
    """

    intensities: np.ndarray
    labels: np.ndarray
    raman_shift_cm1: np.ndarray
    metadata: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.intensities.ndim != 2 or self.intensities.shape[0] != len(self.labels):
            raise DataError(
                f"{self.source or 'spectra'}: intensities shape {self.intensities.shape} does not match "
                f"{len(self.labels)} labels"
            )
        if self.intensities.shape[1] != self.raman_shift_cm1.shape[0]:
            raise DataError(f"{self.source or 'spectra'}: axis length differs from the intensities' width")
        if not self.metadata:
            self.metadata = [{} for _ in range(len(self.labels))]

    def __len__(self) -> int:
        return int(self.intensities.shape[0])

    @property
    def classes(self) -> list[str]:
        """Sorted distinct labels."""
        return sorted(set(self.labels.tolist()))

    def subset(self, index: npt.NDArray[np.integer[Any]] | npt.NDArray[np.bool_] | list[int] | slice) -> SpectraSet:
        """Rows selected by an index array (shape (K,), int) or boolean mask (shape (B,)), or a slice."""
        idx = np.arange(len(self))[index]
        return SpectraSet(self.intensities[idx], self.labels[idx], self.raman_shift_cm1,
                          [self.metadata[i] for i in idx], self.source)
