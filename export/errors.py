"""Error root of the exporter."""

from edge.errors import EdgeError

__all__ = ["AccuracyGateError", "ExportError"]


class ExportError(EdgeError):
    """Root of every error raised on purpose by :mod:`export`."""


class AccuracyGateError(ExportError):
    """A quantised (or otherwise converted) model lost more accuracy than allowed; it was not shipped."""
