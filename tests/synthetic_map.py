"""A small real-looking Raman map with a known phase map: a mosaic of grains of real RRUFF spectra.

Each grain (Voronoi cell of random seeds on the pixel grid) is one mineral; each pixel takes one of that
mineral's real spectra (the rruff_soysal training split, on its own axis), scaled by a random factor, plus
Gaussian noise. Pixels at a grain boundary (a 4-neighbour in another grain) are mixed with the neighbour's
mineral (30-50 %), as a laser spot straddling two grains would be. The truth is the grain mineral, and
``boundary`` marks the mixed pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build_map(npz_split: Path, minerals: list[str], shape: tuple[int, int] = (20, 24), seed: int = 0,
              noise: float = 0.01, step_um: float = 2.0) -> dict:
    """Return ``cube`` (rows, cols, N) float32, ``axis`` (N,), ``truth`` (rows, cols) str, ``boundary`` bool."""
    rng = np.random.default_rng(seed)
    with np.load(npz_split) as d:
        x, y, axis = d["X"].astype(np.float64), d["y"].astype(str), d["raman_shift_cm1"]
    rows, cols = shape
    seeds = rng.uniform([0, 0], [rows, cols], size=(len(minerals) * 2, 2))
    owner = np.arange(len(seeds)) % len(minerals)
    rr, cc = np.mgrid[0:rows, 0:cols]
    d2 = (rr[..., None] - seeds[:, 0]) ** 2 + (cc[..., None] - seeds[:, 1]) ** 2
    grain = owner[np.argmin(d2, axis=-1)]
    boundary = np.zeros(shape, bool)
    neighbour = grain.copy()
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        shifted = np.roll(grain, (dr, dc), axis=(0, 1))
        valid = np.ones(shape, bool)
        if dr:
            valid[0 if dr > 0 else -1, :] = False
        if dc:
            valid[:, 0 if dc > 0 else -1] = False
        diff = valid & (shifted != grain)
        neighbour[diff & ~boundary] = shifted[diff & ~boundary]
        boundary |= diff
    pools = {m: x[y == m] for m in minerals}
    cube = np.empty((rows, cols, axis.size), np.float32)
    for r in range(rows):
        for c in range(cols):
            own = pools[minerals[grain[r, c]]]
            s = own[rng.integers(len(own))] * rng.uniform(0.8, 1.2)
            if boundary[r, c]:
                other = pools[minerals[neighbour[r, c]]]
                w = rng.uniform(0.3, 0.5)
                s = (1 - w) * s + w * other[rng.integers(len(other))] * rng.uniform(0.8, 1.2)
            cube[r, c] = s + rng.normal(0, noise * np.abs(s).max(), axis.size)
    truth = np.asarray(minerals, dtype=object)[grain]
    return {"cube": cube, "axis": axis, "truth": truth, "boundary": boundary, "step_um": step_um}


def write_map(path: Path, m: dict) -> Path:
    np.savez(path, intensities=m["cube"], raman_shift_cm1=m["axis"], step_um=np.array([m["step_um"]] * 2))
    return path
