"""Error hierarchy of the onboard package.

Every error that ``edge`` raises on purpose derives from :class:`EdgeError`, so a caller (and the CLI, which
turns them into exit code 1 without a traceback) can catch the package's errors with one clause. Foreign
errors (numpy, onnxruntime, zmq, msgpack, OS) are wrapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BackendError",
    "BundleError",
    "CalibrationError",
    "ConfigError",
    "DataError",
    "EdgeError",
    "HeadError",
    "PreprocessError",
    "WireError",
]


class EdgeError(Exception):
    """Root of every error raised on purpose by :mod:`edge`."""


class ConfigError(EdgeError):
    """A configuration file or option is missing, malformed or inconsistent."""


class DataError(EdgeError):
    """A data file or folder cannot be found or read, or holds invalid spectra."""


class PreprocessError(EdgeError):
    """A spectrum cannot be preprocessed: NaN/Inf, empty or unsorted axis, mismatched lengths."""


class BundleError(EdgeError):
    """A model bundle is missing, corrupt, or does not match what the caller expects (schema, axis, hashes)."""


class BackendError(EdgeError):
    """An inference backend cannot load a model or run it."""


class WireError(EdgeError):
    """A message on the wire (ZeroMQ frame, msgpack payload) is malformed.

    Parameters
    ----------
    message : str
        What is wrong, for the ``detail`` of the daemon's ``error`` message.
    identity : dict, optional
        The ``id``, ``instrument_id`` and ``instrument_seq`` that could be read from the rejected message
        (each None when absent or unreadable), echoed in the ``error`` message (docs/wire.md).
    """

    def __init__(self, message: str, identity: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.identity: dict[str, object] = dict(identity or {})


class CalibrationError(EdgeError):
    """A wavenumber calibration cannot be fitted, or a calibration file is missing, malformed or unusable."""


class HeadError(EdgeError):
    """A classification head file is malformed, corrupt, or does not fit the served backbone."""
