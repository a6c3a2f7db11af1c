"""RRUFF ``.txt`` files (``##KEY=value`` header, ``x, y`` lines): :func:`edge.data.load_rruff_txt`, wrapped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import load_rruff_txt
from ._common import Spectra, finish

__all__ = ["is_rruff", "read_rruff"]


def is_rruff(head: bytes) -> bool:
    """Whether a file's first bytes look like a RRUFF text file (first non-blank line starts with ``##``)."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    return text.startswith(b"##")


def read_rruff(path: str | Path) -> Spectra:
    """Read one RRUFF text file (both file-name schemes; the parsing is :func:`edge.data.load_rruff_txt`'s).

    Returns
    -------
    Spectra
        One spectrum, labelled with the file's mineral name; ``header`` holds the ``##`` keys.

    Raises
    ------
    DataError
        As :func:`edge.data.load_rruff_txt`.
    """
    p = Path(path)
    s = load_rruff_txt(p)
    meta = dict(s.metadata)
    header = {k: v for k, v in meta.items() if k.isupper() or " " in k}
    out: dict[str, Any] = {"format": "RRUFF text", "header": header, "instrument": "RRUFF",
           **{k: meta[k] for k in ("laser_wavelength_nm", "data_kind", "file_rruff_id") if k in meta}}
    return finish(p, s.raman_shift_cm1, s.intensity, out, labels=[s.label])
