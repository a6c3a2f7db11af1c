"""Labelled spectra for training and evaluation, read from files of any :mod:`edge.io` format.

Where a spectrum's label comes from, in order: a labels table (``file,label`` CSV, ``file`` relative to the
table's folder or to the data folder), or, when asked with ``labels="subfolders"``, the name of the
sub-folder right under the data folder; else the file's own label (RRUFF file names, labelled ``.npz``).
A spectrum with none of these is refused: a file name is never taken for a mineral.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, PreprocessError
from ..preprocess import RamanGrid, resample

log = logging.getLogger(__name__)

__all__ = ["SUBFOLDERS", "load_labelled", "read_labels_table"]
SUBFOLDERS = "subfolders"


def read_labels_table(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a ``file,label`` CSV (other columns ignored) into {resolved file path: label}.

    Raises
    ------
    DataError
        If the table is missing, lacks the columns, or names a file twice with different labels.
    """
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
                raise DataError(f"{p}: a labels table needs the columns 'file' and 'label' "
                                f"(has {reader.fieldnames})")
            table: dict[str, str] = {}
            for n, row in enumerate(reader, 2):
                if not row["file"] or not row["label"]:
                    raise DataError(f"{p}:{n}: empty file or label")
                key = str((p.parent / row["file"]).resolve())
                if table.get(key, row["label"]) != row["label"]:
                    raise DataError(f"{p}:{n}: {row['file']} is labelled twice ({table[key]}, {row['label']})")
                table[key] = row["label"]
    except OSError as exc:
        raise DataError(f"{p}: cannot read the labels table: {exc}") from exc
    return table


def load_labelled(path: str | os.PathLike[str], labels: str | os.PathLike[str] | None = None,
                  grid: RamanGrid | None = None, strict: bool = False, **read_options: Any) -> Any:
    """Read a folder (or file) of labelled spectra and resample them onto ``grid`` (no normalisation).

    Parameters
    ----------
    path : path-like
        Folder (read recursively), file or glob.
    labels : path-like or "subfolders", optional
        A ``file,label`` CSV, or ``"subfolders"``: the sub-folder under ``path`` names the mineral.
    grid : edge.preprocess.RamanGrid, optional
        Target grid (default: the model grid).
    strict : bool
        Refuse the whole read when a file is unreadable (default: load the rest; each unreadable file is
        logged and listed with its reason in the result's ``skipped``).
    **read_options
        :func:`edge.io.read_file` options.

    Returns
    -------
    edge.data.SpectraSet
        Intensities shape (B, N) float32 on ``grid``; metadata per spectrum (source file, laser, ...).

    Raises
    ------
    DataError
        If nothing reads, (``strict``) a file is unreadable, a spectrum has no label (the message names the
        options), or a spectrum does not overlap the grid.
    """
    from ..data import SpectraSet
    from . import read_spectra

    root = Path(path)
    table = None
    if labels is not None and str(labels) != SUBFOLDERS:
        table = read_labels_table(labels)
    read = read_spectra(root, strict=strict, **read_options)
    for file, reason in read.failures:
        log.warning("skipped %s: %s", file, reason)
    grid = grid or RamanGrid()
    rows, names, metas = [], [], []
    for s in read:
        src = Path(s.source)
        for i in range(len(s)):
            if table is not None:
                label = table.get(str(src.resolve()))
                if label is None:
                    raise DataError(f"{src}: not in the labels table {labels}")
            elif labels is not None:  # subfolders
                try:
                    rel = src.resolve().relative_to(root.resolve())
                except ValueError:
                    rel = Path(src.name)
                if len(rel.parts) < 2:
                    raise DataError(f"{src}: not in a sub-folder of {root}, so it has no label (labels='subfolders')")
                label = rel.parts[0]
            elif s.labels is not None:
                label = s.labels[i]
            else:
                raise DataError(f"{src}: the file names no mineral; pass a labels table (--labels labels.csv with "
                                "columns file,label) or put the files in one sub-folder per mineral "
                                "(--labels subfolders)")
            try:
                rows.append(resample(s.intensities[i], s.raman_shift_cm1, grid))
            except PreprocessError as exc:
                raise DataError(f"{src}: {exc}") from exc
            names.append(label)
            metas.append(s.spectrum_metadata(i))
    return SpectraSet(np.stack(rows).astype(np.float32), np.asarray(names), grid.axis, metas, str(root),
                      list(read.failures))
