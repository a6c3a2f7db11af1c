"""Phase maps of Raman maps: which mineral is where, as a PNG and a per-pixel table.

matplotlib is imported only when a PNG is drawn (it is not part of the onboard install).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataError

__all__ = ["LOW_QUALITY", "NOVEL", "REJECTED", "phase_grid", "write_phase_map"]
NOVEL = "novel"
LOW_QUALITY = "low quality"
REJECTED = "rejected"


def phase_grid(rows: list[dict[str, Any]], map_shape: tuple[int, int]) -> np.ndarray:
    """Return the phase of every pixel: the predicted mineral, :data:`NOVEL`, :data:`LOW_QUALITY` or :data:`REJECTED`.

    A pixel is :data:`REJECTED` when it could not be classified (``status`` not ``ok``), :data:`LOW_QUALITY` when
    the quality gate did not trust it (``labels_trusted`` false: :mod:`edge.hygiene`), :data:`NOVEL` when it is
    novel.

    Parameters
    ----------
    rows : list of dict
        The map's result rows (``map_row``, ``map_col``, ``status``, ``predicted``, ``novel``).
    map_shape : (rows, cols)

    Returns
    -------
    numpy.ndarray, shape (rows, cols), object (str)

    Raises
    ------
    DataError
        If a pixel has no row.
    """
    grid = np.full(map_shape, None, dtype=object)
    for r in rows:
        if r["status"] != "ok":
            phase = REJECTED
        elif r.get("labels_trusted") is False:
            phase = LOW_QUALITY
        else:
            phase = NOVEL if r.get("novel") else r["predicted"]
        grid[r["map_row"], r["map_col"]] = phase
    if any(v is None for v in grid.ravel()):
        raise DataError(f"phase map: {sum(v is None for v in grid.ravel())} pixel(s) have no result")
    return grid


def write_phase_map(rows: list[dict[str, Any]], map_shape: tuple[int, int], out_png: str | os.PathLike[str], *,
                    step_um: tuple[float, float] | None = None, title: str = "") -> dict[str, int]:
    """Draw a phase map: one colour per mineral, novel pixels grey, low-quality pixels black, rejected white.

    Parameters
    ----------
    rows : list of dict
        The map's result rows (see :func:`phase_grid`).
    map_shape : (rows, cols)
    out_png : path-like
    step_um : (dy, dx), optional
        Pixel pitch, µm: the axes are then in µm (the physical scale), else in pixels.
    title : str

    Returns
    -------
    dict
        Pixel count per phase (the legend's numbers).

    Raises
    ------
    ConfigError
        If matplotlib is not installed.
    DataError
        If a pixel has no row or the PNG cannot be written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise ConfigError("a phase-map PNG needs matplotlib (pip install matplotlib)") from exc
    grid = phase_grid(rows, map_shape)
    counts = Counter(grid.ravel().tolist())
    minerals = [p for p, _ in counts.most_common() if p not in (NOVEL, LOW_QUALITY, REJECTED)]
    tab10 = [plt.get_cmap("tab10")(i) for i in range(10)]
    palette = tab10[:7] + tab10[8:] + [plt.get_cmap("tab20b")(i) for i in range(20)]  # tab10 grey: "novel"
    colours: dict[str, Any] = {m: palette[i % len(palette)] for i, m in enumerate(minerals)}
    colours[NOVEL] = tab10[7]
    colours[LOW_QUALITY] = (0.0, 0.0, 0.0)
    colours[REJECTED] = (1.0, 1.0, 1.0)
    order = [*minerals, NOVEL, LOW_QUALITY, REJECTED]
    index = {p: i for i, p in enumerate(order)}
    img = np.vectorize(index.__getitem__)(grid)
    n_rows, n_cols = map_shape
    fig, ax = plt.subplots(figsize=(min(14, 5 + n_cols / 8), 3.0 if n_rows < 4 else min(10, 3 + n_rows / 8)),
                           dpi=120)
    extent = None
    if step_um is not None:
        dy, dx = step_um
        extent = (0, n_cols * abs(dx), n_rows * abs(dy), 0)
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
    else:
        ax.set_xlabel("column (pixel)")
        ax.set_ylabel("row (pixel)")
    ax.imshow(img, cmap=ListedColormap([colours[p] for p in order]), vmin=-0.5, vmax=len(order) - 0.5,
              interpolation="nearest", extent=extent, aspect="auto" if n_rows < 4 else "equal")
    handles = [Patch(facecolor=colours[p], edgecolor="k", label=f"{p} ({counts[p]} px)") for p in order if counts[p]]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if n_rows == 1:
        ax.set_yticks([])
        ax.set_ylabel("")
    ax.set_title(title or f"phase map ({n_rows} x {n_cols} pixels)", fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(Path(out_png))
    except OSError as exc:
        raise DataError(f"{out_png}: cannot write: {exc}") from exc
    finally:
        plt.close(fig)
    return {p: counts[p] for p in order if counts[p]}
