"""Inference backends behind one interface.

Every backend meets :class:`InferenceBackend` (a ``typing.Protocol``) and has an explicit lifecycle, as
Polygraphy's runners do::

    with OnnxRuntimeBackend(path) as backend:
        out = backend.infer(batch)        # {"logits": (B, K), "probabilities": (B, K)}

``tests/test_backends.py`` checks every registered backend against the protocol (parity test).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import BackendError

__all__ = ["BACKENDS", "CPU_PROVIDER", "InferenceBackend", "OnnxRuntimeBackend", "create_backend", "resolve_providers"]

CPU_PROVIDER = "CPUExecutionProvider"
log = logging.getLogger("edge.backend")


@runtime_checkable
class InferenceBackend(Protocol):
    """What the daemon needs from a model runtime."""

    name: str

    def load(self) -> None:
        """Load the model and allocate resources. Raises :class:`BackendError`."""

    def infer(self, spectra: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch.

        Parameters
        ----------
        spectra : numpy.ndarray, shape (B, N) or (B, C, N), float32
            Preprocessed spectra.

        Returns
        -------
        dict of str to numpy.ndarray
            Model outputs by name, each shape (B, ...), float32 (``"probabilities"`` always present).
        """

    def warmup(self, sample_shape: tuple[int, ...], batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run dummy batches so the first real spectrum does not pay for lazy initialisation.

        ``sample_shape`` is one preprocessed spectrum's shape: (N,) or (C, N).
        """

    def describe(self) -> dict[str, Any]:
        """Backend name, version, device, model path and precision, as JSON-able values."""

    def close(self) -> None:
        """Release resources; the backend can be loaded again."""

    def __enter__(self) -> InferenceBackend: ...

    def __exit__(self, *exc: object) -> None: ...


def resolve_providers(requested: Sequence[str] | None, allow_cpu_fallback: bool = False) -> list[str]:
    """The onnxruntime execution providers to ask for, in order of preference.

    Parameters
    ----------
    requested : sequence of str or None
        Provider names in order of preference, e.g. ``["TensorrtExecutionProvider", "CUDAExecutionProvider"]``
        on a Jetson with onnxruntime-gpu (None or empty: ``["CPUExecutionProvider"]``).
    allow_cpu_fallback : bool
        When a requested provider is not in this onnxruntime build: drop it (with a warning) and fall back to
        the remaining ones, ending with the CPU provider. Otherwise refuse.

    Returns
    -------
    list of str
        The providers to create the session with.

    Raises
    ------
    BackendError
        If a requested provider is unavailable and ``allow_cpu_fallback`` is false, or a name is not a string.
    """
    import onnxruntime as ort

    wanted = list(requested or [CPU_PROVIDER])
    if not all(isinstance(p, str) and p for p in wanted):
        raise BackendError(f"execution providers must be non-empty strings, got {wanted!r}")
    available = list(ort.get_available_providers())
    missing = [p for p in wanted if p not in available]
    if missing and not allow_cpu_fallback:
        raise BackendError(
            f"execution provider(s) {missing} not available in this onnxruntime {ort.__version__} (available: "
            f"{available}); install the onnxruntime build for the device (e.g. onnxruntime-gpu for its JetPack), "
            "or set allow_cpu_fallback = true (--allow-cpu-fallback) to run on the CPU instead")
    if missing:
        log.warning("execution provider(s) %s not available (have %s): falling back, as configured", missing, available)
    providers = [p for p in wanted if p in available]
    if allow_cpu_fallback and CPU_PROVIDER not in providers:
        providers.append(CPU_PROVIDER)
    return providers


class OnnxRuntimeBackend:
    """onnxruntime on the CPU (or another execution provider where installed).

    Parameters
    ----------
    model_path : path-like
        ONNX model with input ``spectra`` (B, N) and outputs including ``probabilities``.
    intra_op_threads : int
        onnxruntime intra-op threads (1 gives the steadiest latency on a small edge CPU).
    providers : list of str, optional
        Execution providers in order of preference (default: CPUExecutionProvider); checked at construction
        (:func:`resolve_providers`).
    allow_cpu_fallback : bool
        Run on the CPU provider when a requested provider is unavailable or fails to initialise; otherwise
        those cases raise :class:`BackendError`.
    required_outputs : tuple of str
        Outputs the model must have (``load`` raises otherwise); ``("reconstruction",)`` for the novelty
        autoencoder (:mod:`edge.novelty`).
    """

    name = "onnxruntime"

    def __init__(self, model_path: str | Path, intra_op_threads: int = 1, providers: Sequence[str] | None = None,
                 precision: str = "", required_outputs: tuple[str, ...] = ("probabilities",),
                 allow_cpu_fallback: bool = False) -> None:
        self.required_outputs = tuple(required_outputs)
        self.model_path = Path(model_path)
        self.intra_op_threads = int(intra_op_threads)
        self.requested_providers = list(providers or [CPU_PROVIDER])
        self.allow_cpu_fallback = bool(allow_cpu_fallback)
        self.providers = resolve_providers(self.requested_providers, self.allow_cpu_fallback)
        #: Providers the session actually uses (onnxruntime may drop one that fails to initialise).
        self.active_providers: list[str] = []
        self.precision = precision
        self._session = None
        self._input = ""
        self._outputs: list[str] = []

    def load(self) -> None:
        """Create the onnxruntime session (raises BackendError when the model or a provider cannot be loaded)."""
        try:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.intra_op_threads
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(str(self.model_path), sess_options=opts, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own and generic exceptions
            raise BackendError(f"onnxruntime cannot load {self.model_path}: {exc}") from exc
        active = list(session.get_providers())
        if active and active[0] != self.providers[0] and not self.allow_cpu_fallback:
            raise BackendError(f"onnxruntime could not initialise {self.providers[0]} for {self.model_path} (session "
                               f"runs on {active}); set allow_cpu_fallback = true to accept that")
        self.active_providers = active
        self._session = session
        self._input = session.get_inputs()[0].name
        self._outputs = [o.name for o in session.get_outputs()]
        for name in self.required_outputs:
            if name not in self._outputs:
                raise BackendError(f"{self.model_path}: model has no {name!r} output (has {self._outputs})")

    def infer(self, spectra: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on ``spectra``, shape (B, C, N) float32; returns the named outputs, each shape (B, ...)."""
        if self._session is None:
            raise BackendError("backend used before load() (use 'with backend:')")
        x = np.ascontiguousarray(spectra, dtype=np.float32)
        try:
            outs = self._session.run(None, {self._input: x})
        except Exception as exc:
            raise BackendError(f"onnxruntime inference failed for a batch of shape {x.shape}: {exc}") from exc
        return dict(zip(self._outputs, outs, strict=True))

    def warmup(self, sample_shape: tuple[int, ...], batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run one zero batch of each size so the first real spectrum does not pay for allocation."""
        for b in batch_sizes:
            self.infer(np.zeros((b, *sample_shape), dtype=np.float32))

    def describe(self) -> dict[str, Any]:
        """Backend name, onnxruntime version, providers and model file, for the status message."""
        import onnxruntime as ort

        return {"backend": self.name, "version": ort.__version__, "provider": (self.active_providers or self.providers)[0],
                "providers": self.active_providers or self.providers, "requested_providers": self.requested_providers,
                "model": str(self.model_path), "precision": self.precision,
                "intra_op_threads": self.intra_op_threads}

    def close(self) -> None:
        """Release the session."""
        self._session = None

    def __enter__(self) -> OnnxRuntimeBackend:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Backend classes by config name; the TensorRT backend registers itself here where it is importable.
BACKENDS: dict[str, type] = {"onnxruntime": OnnxRuntimeBackend}


def create_backend(name: str, model_path: str | Path, **kwargs: Any) -> InferenceBackend:
    """Instantiate a registered backend by name.

    Raises
    ------
    BackendError
        For an unknown backend name.
    """
    cls = BACKENDS.get(name)
    if cls is None:
        raise BackendError(f"unknown inference backend {name!r}; available: {sorted(BACKENDS)}")
    backend: InferenceBackend = cls(model_path, **kwargs)
    return backend
