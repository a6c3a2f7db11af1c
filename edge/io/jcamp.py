"""JCAMP-DX through ``jcamp`` (extra ``[formats]``): the maintained reader of the compressed forms (DIF/DUP/SQZ).

``jcamp`` 1.3.2 crashes when a ``$$`` comment follows a numeric header value (``##YFACTOR= 2.38e-9 $$ ...``);
``$$`` starts a comment to the end of the line (JCAMP-DX 4.24, McDonald & Wilks 1988), so comments are
removed from the header before parsing. Spectra whose ``##DATA TYPE`` is not Raman are refused unless
``allow_non_raman=True`` (their x is then an absolute wavenumber, kept as is).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._common import Spectra, finish, require

__all__ = ["read_jcamp"]
_COMMENT = re.compile(r"\$\$.*$")


def read_jcamp(path: str | Path, *, allow_non_raman: bool = False, laser_nm: float | None = None) -> Spectra:
    """Read a single-spectrum JCAMP-DX file.

    Parameters
    ----------
    path : str or pathlib.Path
    allow_non_raman : bool
        Read a non-Raman spectrum (IR ...) with its x as is.
    laser_nm : float, optional
        Needed when ``##XUNITS`` is NANOMETERS.

    Raises
    ------
    DataError
        If the file cannot be parsed, is not a Raman spectrum (without ``allow_non_raman``), or has an
        unsupported x unit.
    """
    p = Path(path)
    jcamp = require("jcamp", "JCAMP-DX", "jcamp")
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc}") from exc
    lines = [(_COMMENT.sub("", ln).rstrip() if ln.startswith("##") else ln) for ln in text.splitlines()]
    try:
        d = jcamp.read(io.StringIO("\n".join(lines)))
        x = np.asarray(d["x"], dtype=np.float64)
        y = np.asarray(d["y"], dtype=np.float64)
    except Exception as exc:  # the library's parse failures, wrapped at the boundary
        raise DataError(f"{p}: cannot read as JCAMP-DX: {type(exc).__name__}: {exc}") from exc
    npoints = d.get("npoints")
    if isinstance(npoints, (int, float)) and int(npoints) != x.size:
        raise DataError(f"{p}: holds {x.size} of its NPOINTS={int(npoints)} points (truncated or corrupt)")
    data_type = str(d.get("datatype", d.get("data type", ""))).upper()
    if "RAMAN" not in data_type and not allow_non_raman:
        raise DataError(f"{p}: JCAMP-DX DATA TYPE {data_type or '(none)'!r} is not a Raman spectrum "
                        "(pass allow_non_raman=True to read it anyway)")
    xunits = str(d.get("xunits", "")).upper()
    unit = "nm" if "NANOMETER" in xunits else "cm-1"
    if unit == "cm-1" and "1/CM" not in xunits:
        raise DataError(f"{p}: JCAMP-DX XUNITS {xunits!r} is neither 1/CM nor NANOMETERS")
    header = {k: v for k, v in d.items() if k not in ("x", "y", "children") and not isinstance(v, np.ndarray)}
    meta = {"format": "JCAMP-DX", "header": header, "data_type": data_type,
            "instrument": str(d.get("spectrometer/data system", d.get("origin", ""))),
            "acquisition_time": " ".join(str(d[k]) for k in ("date", "time") if k in d) or None}
    return finish(p, x, y, meta, unit=unit, laser_nm=laser_nm)
