r"""Delimited text and CSV from any vendor (BWTek, Horiba LabSpec, Renishaw WiRE, Neegala, LightNovo, Andor).

Own code (numpy only): no maintained library reads the vendors' text variants (decimal comma, ``key;value``
header blocks, blank cells, footers) and the onboard install must stay small. The rules, in order:

1. **Delimiter and decimal separator**: the pair (``;`` ``\\t`` ``,`` or spaces; ``.`` or ``,``) under which the
   longest run of consecutive lines parses as numeric rows of one width wins (``delimiter=`` / ``decimal=``
   fix them).
2. **Header and footer**: lines before the numeric block are the header: the line right before it, when its
   cells are names, names the columns; other ``key<delim>value`` (or ``key: value``) lines are kept as
   metadata (``header``), as are lines after the block (Andor's footer).
3. **Columns** (``x_column=`` / ``y_column=``, a name or a 0-based index): a known vendor layout (BWTek:
   ``Raman Shift`` / ``Dark Subtracted #1``; Neegala: ``Raman_Shift`` / ``Processed_Data``), else a column
   named like a Raman shift or wavelength for x, and the only other column for y; two unnamed columns are
   x, y. Anything else is refused with the option that resolves it.
4. **Axis unit** (``axis_unit=`` ``"cm-1"`` or ``"nm"``): from the x column's name (``Raman Shift`` → cm⁻¹,
   ``Wavelength`` → nm), else from its values only when they rule out a wavelength (negative, or above
   2000); otherwise refused. An nm axis needs ``laser_nm=`` unless the header gives the laser wavelength.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ._common import Spectra, finish

__all__ = ["KNOWN_LAYOUTS", "read_text"]

_DELIMITERS = {";": ";", "\t": "\t", ",": ",", " ": None}  # None: runs of whitespace
_DECIMALS = (".", ",")
#: Vendor layouts recognised by their column names: (x column, y column).
KNOWN_LAYOUTS: dict[str, tuple[str, str]] = {
    "BWTek BWRam": ("Raman Shift", "Dark Subtracted #1"),
    "Neegala": ("Raman_Shift", "Processed_Data"),
}
_LASER_KEYS = ("laser_wavelength", "laserwavelength_nm", "laser wavelength", "wl", "raman ex wavelength",
               "excitation wavelength", "laser")
_INSTRUMENT_KEYS = ("model", "device", "devicesn", "instrument", "spectrometer", "title")
_TIME_KEYS = ("date", "time_stamp", "date and time", "acquisition time", "timestamp")
_WAVELENGTH_MAX_NM = 2000.0  # scattered light of any Raman laser (UV to 1064 nm) is below this


def _norm(name: str) -> str:
    return re.sub(r"[\s_#]+", "", name.strip().lower())


def _split(line: str, delim: str | None) -> list[str]:
    cells = line.split(delim) if delim is not None else line.split()
    cells = [c.strip() for c in cells]
    while cells and cells[-1] == "":  # a trailing delimiter (BWTek ';', Andor '\t')
        cells.pop()
    return cells


def _number(cell: str, decimal: str) -> float | None:
    if cell == "":
        return float("nan")
    if decimal == ",":
        if "." in cell:
            return None
        cell = cell.replace(",", ".")
    try:
        return float(cell)
    except ValueError:
        return None


def _numeric_row(line: str, delim: str | None, decimal: str) -> list[float] | None:
    if delim == decimal:
        return None
    cells = _split(line, delim)
    if len(cells) < 2:
        return None
    row = [_number(c, decimal) for c in cells]
    if any(v is None for v in row) or sum(np.isfinite(v) for v in row) < 2:  # type: ignore[arg-type]
        return None
    return row  # type: ignore[return-value]


def _best_block(lines: list[str], delimiter: str | None, decimal: str | None) -> tuple[str, str, int, int, int]:
    """(delimiter key, decimal, first line, end line, width) of the longest numeric block."""
    best = ("", "", 0, 0, 0)
    for dkey in ([delimiter] if delimiter is not None else list(_DELIMITERS)):
        if dkey not in _DELIMITERS:
            raise DataError(f"delimiter must be one of {list(_DELIMITERS)}, got {dkey!r}")
        for dec in ([decimal] if decimal is not None else list(_DECIMALS)):
            start, width = 0, 0
            for i, line in enumerate([*lines, ""]):
                row = _numeric_row(line, _DELIMITERS[dkey], dec) if line.strip() else None
                if row is not None and (width == 0 or len(row) == width):
                    if width == 0:
                        start, width = i, len(row)
                    continue
                if width and i - start > best[3] - best[2]:
                    best = (dkey, dec, start, i, width)
                start, width = (i, len(row)) if row is not None else (0, 0)
    return best


def _key_values(lines: list[str], delim: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        s = line.strip()
        if not s:
            continue
        cells = _split(s, delim)
        if len(cells) >= 2 and cells[0]:
            out[cells[0]] = (delim or " ").join(cells[1:])
        elif ":" in s:
            k, _, v = s.partition(":")
            out[k.strip()] = v.strip()
        else:
            out[s] = ""
    return out


def _lookup(header: dict[str, str], keys: tuple[str, ...]) -> str | None:
    low = {k.strip().lower(): v for k, v in header.items()}
    for k in keys:
        if low.get(k):
            return low[k]
    return None


def _first_float(text: str) -> float | None:
    m = re.search(r"[-+]?\d+(?:[.,]\d+)?", text)
    return float(m.group(0).replace(",", ".")) if m else None


def _unit_from_name(name: str) -> str | None:
    n = _norm(name)
    if "shift" in n or "cm-1" in n or "1/cm" in n or "cm⁻¹" in n:
        return "cm-1"
    if "wavelength" in n or n.endswith("(nm)") or n == "nm":
        return "nm"
    return None


def _column(spec: str | int, names: list[str] | None, width: int, what: str, path: Path) -> int:
    if isinstance(spec, int) or (isinstance(spec, str) and spec.lstrip("-").isdigit()):
        i = int(spec)
        if not -width <= i < width:
            raise DataError(f"{path}: {what} index {i} is out of range (the file has {width} columns)")
        return i % width
    if names is None:
        raise DataError(f"{path}: the file names no columns; pass {what}=INDEX (0-based)")
    hits = [i for i, n in enumerate(names) if _norm(n) == _norm(spec)]
    if not hits:
        raise DataError(f"{path}: no column named {spec!r} (columns: {names})")
    return hits[0]


def read_text(path: str | Path, *, delimiter: str | None = None, decimal: str | None = None,
              x_column: str | int | None = None, y_column: str | int | None = None, axis_unit: str = "auto",
              laser_nm: float | None = None, encoding: str = "utf-8") -> Spectra:
    r"""Read one spectrum from a delimited text or CSV file (rules in the module docstring).

    Parameters
    ----------
    path : str or pathlib.Path
    delimiter : {";", "\\t", ",", " "}, optional
        Column separator (``" "``: runs of whitespace); detected when None.
    decimal : {".", ","}, optional
        Decimal separator; detected when None.
    x_column, y_column : str or int, optional
        Column name (case, spaces, ``_`` and ``#`` ignored) or 0-based index.
    axis_unit : {"auto", "cm-1", "nm"}
        The x column's unit; ``"nm"`` (wavelength) is converted to Raman shift with the laser wavelength.
    laser_nm : float, optional
        Excitation wavelength in nm (else the header's, where it gives one).
    encoding : str
        Text encoding (undecodable bytes are replaced).

    Returns
    -------
    Spectra
        One spectrum; ``metadata`` holds ``header`` (key → value), ``columns`` (x, y names or indices),
        ``delimiter``, ``decimal``, ``instrument``, ``acquisition_time``, ``laser_wavelength_nm`` where known,
        and ``rows_without_value`` (rows dropped for a blank x or y cell, e.g. BWTek pixels outside the
        calibrated range).

    Raises
    ------
    DataError
        If no numeric block is found, or the columns or the axis unit are ambiguous (the message names the
        option that resolves it), or the values are invalid.
    """
    p = Path(path)
    if axis_unit not in ("auto", "cm-1", "nm"):
        raise DataError(f"axis_unit must be 'auto', 'cm-1' or 'nm', got {axis_unit!r}")
    try:
        lines = p.read_bytes().decode(encoding, errors="replace").splitlines()
    except (OSError, LookupError) as exc:
        raise DataError(f"{p}: cannot read: {exc}") from exc
    dkey, dec, start, end, width = _best_block(lines, delimiter, decimal)
    if end - start < 2:
        raise DataError(f"{p}: no block of numeric rows found (not a delimited spectrum file)")
    delim = _DELIMITERS[dkey]
    data = np.array([_numeric_row(line, delim, dec) for line in lines[start:end]], dtype=np.float64)
    head = [line for line in lines[:start] if line.strip()]
    names: list[str] | None = None
    if head:
        cells = [c for c in _split(head[-1], delim) if c]
        if len(cells) == width and all(_number(c, dec) is None for c in cells):
            names, head = cells, head[:-1]
    header = _key_values(head, delim)
    header.update(_key_values(lines[end:], None if dkey == " " else delim))
    layout = None
    if names is not None:
        for vendor, (xn, yn) in KNOWN_LAYOUTS.items():
            normed = [_norm(n) for n in names]
            if _norm(xn) in normed and _norm(yn) in normed:
                layout = vendor
                x_column = xn if x_column is None else x_column
                y_column = yn if y_column is None else y_column
                break
    if x_column is None:
        named = [i for i, n in enumerate(names or []) if _unit_from_name(n)]
        shift = [i for i in named if _unit_from_name((names or [])[i]) == "cm-1"]
        if shift or named:
            x_column = (shift or named)[0]
        elif width == 2:
            x_column = 0
        else:
            raise DataError(f"{p}: {width} columns {names or ''} and none is named as a Raman shift or wavelength; "
                            "pass x_column=NAME|INDEX (--x-column) and y_column=NAME|INDEX (--y-column)")
    xi = _column(x_column, names, width, "x_column", p)
    if y_column is None:
        if width != 2:
            raise DataError(f"{p}: {width} columns {names or ''}: which one holds the intensities is ambiguous; "
                            "pass y_column=NAME|INDEX (--y-column)")
        y_column = 1 - xi
    yi = _column(y_column, names, width, "y_column", p)
    x, y = data[:, xi], data[:, yi]
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size >= 2 and not (np.all(np.diff(x) > 0) or np.all(np.diff(x) < 0)):
        raise DataError(f"{p}: column {names[xi] if names else xi} is not monotonic, so it is not an axis; "
                        "pass x_column=NAME|INDEX (--x-column)")
    unit = axis_unit
    if unit == "auto":
        unit = _unit_from_name(names[xi]) if names else None  # type: ignore[assignment]
        if unit is None and x.size and (x.min() < 0 or x.max() > _WAVELENGTH_MAX_NM):
            unit = "cm-1"
        if unit is None:
            raise DataError(f"{p}: cannot tell whether the axis ({x.min():.2f} to {x.max():.2f}) is Raman shift or "
                            "wavelength; pass axis_unit='cm-1' or axis_unit='nm' with laser_nm=... "
                            "(--axis-unit, --laser-nm)")
    laser = laser_nm
    header_laser = _lookup(header, _LASER_KEYS)
    if laser is None and header_laser:
        laser = _first_float(header_laser)
    meta: dict[str, Any] = {
        "format": f"text ({layout})" if layout else "text", "header": header, "delimiter": dkey, "decimal": dec,
        "columns": [names[xi] if names else xi, names[yi] if names else yi],
        "rows_without_value": int((~keep).sum()),
    }
    if laser is not None:
        meta["laser_wavelength_nm"] = float(laser)
    if (inst := _lookup(header, _INSTRUMENT_KEYS)) is not None:
        meta["instrument"] = inst
    if (when := _lookup(header, _TIME_KEYS)) is not None:
        meta["acquisition_time"] = when
    return finish(p, x, y, meta, unit=unit, laser_nm=laser)
