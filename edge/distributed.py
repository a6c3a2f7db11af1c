"""The Dask path of :func:`edge.predict.predict`: batches of spectra as tasks on a ``distributed`` cluster.

Extra ``[distributed]`` (``dask[distributed]``), imported only here. onnxruntime sessions do not pickle, so a
task carries the bundle *path* and its spectra; each worker process loads one :class:`edge.predict.Predictor`
per bundle on its first task and keeps it (a cached loader), so every later task reuses the session. Tasks are
consecutive groups of the single-process batches (same batch composition, so the same numbers), gathered back
in input order; a task whose worker dies is rescheduled by Dask, and one that raises is retried ``retries``
times.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import ConfigError, EdgeError
from .io import ReadResult
from .wire import SpectrumIn

__all__ = ["DISTRIBUTED_EXTRA", "classify_chunk", "pack_batch", "predict_distributed", "unpack_batch"]
DISTRIBUTED_EXTRA = "distributed"
_PREDICTORS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def _require() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(f"--scheduler needs the [{DISTRIBUTED_EXTRA}] extra "
                          f"(pip install 'raman-edge[{DISTRIBUTED_EXTRA}]', which installs dask[distributed])") from exc
    return distributed


def _predictor(bundle: str, options: tuple[tuple[str, Any], ...]) -> Any:
    """Return the worker's Predictor for ``bundle`` (loaded once per process, then reused)."""
    from .predict import Predictor

    key = (bundle, repr(options))
    with _LOCK:  # a worker with several threads loads the session once
        pred = _PREDICTORS.get(key)
        if pred is None:
            pred = Predictor(bundle, **dict(options))
            pred.open()
            _PREDICTORS[key] = pred
    return pred


Segment = tuple[np.ndarray | None, np.ndarray, list[dict[str, Any]]]


def pack_batch(batch: list[tuple[dict[str, Any], SpectrumIn]]) -> list[Segment]:
    """Pack a batch for the wire: runs of spectra sharing one axis become (axis, intensities (b, M), rows).

    One array per run instead of one small object per spectrum: the axis travels once per run, and pickling
    costs a few large buffers instead of thousands of small ones.
    """
    segments: list[Segment] = []
    start = 0
    for j in range(1, len(batch) + 1):
        if j == len(batch) or batch[j][1].raman_shift_cm1 is not batch[start][1].raman_shift_cm1 \
                or batch[j][1].intensity.shape != batch[start][1].intensity.shape:
            part = batch[start:j]
            segments.append((part[0][1].raman_shift_cm1, np.stack([s.intensity for _, s in part]),
                             [row for row, _ in part]))
            start = j
    return segments


def unpack_batch(segments: list[Segment]) -> list[tuple[dict[str, Any], SpectrumIn]]:
    """Inverse of :func:`pack_batch` (intensity rows are views of the segment arrays)."""
    return [(row, SpectrumIn(row["id"], x[j], axis, label=row.get("label")))
            for axis, x, rows in segments for j, row in enumerate(rows)]


def classify_chunk(bundle: str, options: tuple[tuple[str, Any], ...], batches: list[list[Segment]]
                   ) -> list[dict[str, Any]]:
    """Worker task: classify consecutive batches with the worker's cached predictor.

    Parameters
    ----------
    bundle : str
        Bundle folder, readable on the worker.
    options : tuple of (name, value)
        :class:`edge.predict.Predictor` settings.
    batches : list of packed batches (:func:`pack_batch`)

    Returns
    -------
    list of dict
        The rows, in input order.
    """
    pred = _predictor(bundle, options)
    rows: list[dict[str, Any]] = []
    for packed in batches:
        batch = unpack_batch(packed)
        outs = pred.classify([s for _, s in batch])
        rows += [{**row, **out, **pred.model_fields} for (row, _), out in zip(batch, outs, strict=True)]
    return rows


def predict_distributed(read: ReadResult, bundle: str | os.PathLike[str], scheduler: Any, *,
                        progress: Callable[[int], Any] | None = None, chunk_batches: int = 16, retries: int = 2,
                        **predictor_options: Any) -> list[dict[str, Any]]:
    """Classify a read on a Dask cluster; the rows equal :func:`edge.predict.predict`'s single-process rows.

    Parameters
    ----------
    read : edge.io.ReadResult
    bundle : path-like
        Bundle folder; must be readable at the same path on every worker.
    scheduler : str or distributed.Client
        Scheduler address (``tcp://HOST:8786``) or a connected client.
    progress : callable, optional
        Called with the number of spectra of each finished task.
    chunk_batches : int
        Batches per task.
    retries : int
        Retries of a task that raised.
    **predictor_options
        :class:`edge.predict.Predictor` settings (``batch_size`` shapes the batches).

    Raises
    ------
    ConfigError
        If the extra is missing or the scheduler cannot be reached.
    EdgeError
        A task's error after its retries.
    """
    distributed = _require()
    from .predict import Predictor, iter_batches

    Predictor(bundle, **predictor_options)  # validate bundle and options here, with a clear error, before tasks
    batch_size = int(predictor_options.get("batch_size", 64))
    options = tuple(sorted(predictor_options.items()))
    bundle_path = os.path.abspath(os.fspath(bundle))
    own = isinstance(scheduler, str)
    try:
        client = distributed.Client(scheduler, timeout="20s") if own else scheduler
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from exc
    try:
        chunks: list[list[list[Segment]]] = [[]]
        for batch in iter_batches(read, batch_size):
            if len(chunks[-1]) == chunk_batches:
                chunks.append([])
            chunks[-1].append(pack_batch(batch))
        chunks = [c for c in chunks if c]
        futures = [client.submit(classify_chunk, bundle_path, options, c, retries=retries, pure=False)
                   for c in chunks]
        order = {f.key: i for i, f in enumerate(futures)}
        results: list[list[dict[str, Any]] | None] = [None] * len(futures)
        for fut in distributed.as_completed(futures):
            try:
                rows = fut.result()
            except EdgeError:
                raise
            except Exception as exc:  # a worker's foreign error after its retries
                raise ConfigError(f"a cluster task failed after {retries} retries: "
                                  f"{type(exc).__name__}: {exc}") from exc
            results[order[fut.key]] = rows
            if progress is not None:
                progress(len(rows))
        return [row for chunk in results for row in (chunk or [])]
    finally:
        if own:
            client.close()
