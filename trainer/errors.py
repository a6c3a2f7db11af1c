"""Error root of the trainer: every error it raises on purpose derives from :class:`TrainerError`."""

from edge.errors import EdgeError

__all__ = ["TrainerError"]


class TrainerError(EdgeError):
    """Root of every error raised on purpose by :mod:`trainer` (a subclass of :class:`edge.errors.EdgeError`,
    so the CLIs report both the same way).
    """
