"""``edge-bridge``: the :mod:`firmware_bridge` command line fed with raman-edge spectra.

``edge-bridge simulate --pty|--tcp PORT [...]`` runs a simulated spectrometer (pty or TCP) that streams
spectra of the embedded synthetic mineral library (:class:`edge.synthetic.SyntheticLibrary`), or of a data
file with ``--data PATH`` (anything :func:`edge.data.load_spectra` reads: an ``.npz`` split, a RRUFF ``.txt``
file or folder, ``synthetic:test``; relative paths are also looked up in the data folder). The spectra are
sent in order and repeated until ``--count`` spectra (default: endless). ``edge-bridge listen URL`` prints
the spectra received from an instrument. Every other option is the simulator's
(``firmware_bridge.simulator.main``).

Examples
--------
edge-bridge simulate --pty --data rruff_soysal/raw_test.npz --count 150 --bit-flip-rate 0.01
edge-daemon --bundle bundles/rruff40 --input '' --serial /tmp/ramansim-XXXX/tty
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from firmware_bridge.simulator import main as bridge_main

from .cli_common import run_cli
from .data import SpectraSet, load_spectra
from .errors import ConfigError
from .synthetic import SyntheticLibrary

__all__ = ["main", "spectra_source", "synthetic_source"]

#: Spectra per class drawn at a time from the synthetic library (12 classes: 96 spectra per draw).
_SYNTHETIC_CHUNK_PER_CLASS = 8


def spectra_source(spectra: SpectraSet, count: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """Yield the spectra of a set in order, repeating it, as the simulator's source items.

    Parameters
    ----------
    spectra : SpectraSet
        ``intensities`` shape (B, N); ``raman_shift_cm1`` shape (N,) in cm⁻¹.
    count : int or None, optional
        Number of items (None: endless).

    Yields
    ------
    raman_shift_cm1 : numpy.ndarray, shape (N,), float32
    counts : numpy.ndarray, shape (N,), float32
        The intensities (counts-like units).
    metadata : dict
        ``sample_label``: the spectrum's mineral label.

    Raises
    ------
    ConfigError
        If the set is empty.
    """
    if len(spectra) == 0:
        raise ConfigError(f"{spectra.source or 'spectra'}: no spectra to stream")
    axis = np.asarray(spectra.raman_shift_cm1, dtype=np.float32)
    rows = itertools.cycle(range(len(spectra)))
    for i in itertools.islice(rows, count):
        yield axis, np.asarray(spectra.intensities[i], dtype=np.float32), {"sample_label": str(spectra.labels[i])}


def synthetic_source(seed: int = 0, count: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """Endless (or ``count``) fresh draws of the default synthetic library, in counts-like units.

    Parameters
    ----------
    seed : int, optional
        Seed of the first draw (draw ``k`` uses ``seed + k``).
    count : int or None, optional
        Number of items (None: endless).

    Yields
    ------
    raman_shift_cm1, counts, metadata
        As :func:`spectra_source`; ``sample_label`` is ``synthite-NN``.
    """
    library = SyntheticLibrary()
    draws = (library.sample(_SYNTHETIC_CHUNK_PER_CLASS, seed=seed + k) for k in itertools.count())
    items = itertools.chain.from_iterable(spectra_source(s, len(s)) for s in draws)
    yield from itertools.islice(items, count)


Source = Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]


def _source_factory(data: str | None) -> Callable[[argparse.Namespace], Source]:
    def factory(args: argparse.Namespace) -> Source:
        if data is None:
            return synthetic_source(seed=args.seed, count=args.count)
        return spectra_source(load_spectra(data), count=args.count)  # DataError: exit 1 with one line
    return factory


def bridge_impl(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(prog="edge-bridge", add_help=False, allow_abbrev=False)
    pre.add_argument("--data", default=None)
    known, rest = pre.parse_known_args(argv)
    command = next((a for a in rest if not a.startswith("-")), None)
    if known.data is not None and command != "simulate":
        raise ConfigError("--data applies to 'edge-bridge simulate' only")
    if command == "simulate" and ("-h" in rest or "--help" in rest):
        print("edge-bridge simulate also takes --data PATH: stream the spectra of PATH (.npz split, RRUFF .txt file "
              "or folder, synthetic:test ...) instead of the synthetic mineral library\n")
    return bridge_main(rest, _source_factory(known.data))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edge-bridge`` (see the module docstring); returns the exit status."""
    return run_cli(bridge_impl, argv, "edge-bridge")


if __name__ == "__main__":
    sys.exit(main())
