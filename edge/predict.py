"""Offline prediction: files, folders and maps through exactly the daemon's per-batch path.

:class:`Predictor` loads a bundle the way :class:`edge.daemon.Daemon` does (preprocessing, inference backend,
classification head, novelty service) and runs :func:`edge.batch.classify_batch` on batches of spectra read by
:mod:`edge.io`; sockets are replaced by rows. Notebook use::

    from edge.predict import predict
    result = predict(["spectra/", "map.wdf"], bundle="bundles/rruff40")
    result.rows[0]["predicted"], result.summary()
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends import create_backend
from .batch import classify_batch
from .bundle import Bundle
from .errors import ConfigError, DataError
from .heads import HeadSwitch, load_head
from .hygiene import Hygiene, InstrumentConfig
from .io import ReadResult, Spectra, read_spectra
from .novelty import DETECTORS as NOVELTY_DETECTORS
from .novelty import NoveltyService
from .preprocess import Preprocessor
from .wire import SpectrumIn

__all__ = ["OUTPUT_FORMATS", "PredictionResult", "Predictor", "predict", "write_rows"]
log = logging.getLogger("edge.predict")
OUTPUT_FORMATS = (".csv", ".jsonl", ".parquet")
_ROW_KEYS = ("file", "index", "id", "map_row", "map_col", "x_um", "y_um", "label", "status", "reason", "detail")


@dataclass
class Predictor:
    """A bundle loaded for offline prediction, with the daemon's settings and components.

    Parameters
    ----------
    bundle : str or path-like
        Model bundle folder.
    precision : {"auto", "int8", "fp32"}
    backend : str
        Inference backend name (``onnxruntime``).
    threads : int
        Backend intra-op threads.
    batch_size : int
        Spectra per batch (the daemon's ``max_batch``).
    top_k : int
    novelty : bool
        Score novelty when the bundle has a novelty section (as the daemon).
    novelty_detector : {"auto", "library", "autoencoder"}
    head : str
        Head file to serve instead of the bundle's own head (``""``: none).
    instrument : edge.hygiene.InstrumentConfig, optional
        The daemon's ``[instrument]`` settings: calibration file, laser wavelength, quality gate.

    Raises
    ------
    BundleError, BackendError, ConfigError, HeadError
        When the bundle, model or options cannot be used.
    """

    bundle: str | os.PathLike[str]
    precision: str = "auto"
    backend: str = "onnxruntime"
    threads: int = 1
    batch_size: int = 64
    top_k: int = 3
    novelty: bool = True
    novelty_detector: str = "auto"
    head: str = ""
    instrument: InstrumentConfig | None = None
    _loaded: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        """Load the bundle and build the daemon's components (the backend loads on :meth:`open`)."""
        if self.batch_size < 1 or self.top_k < 1 or self.threads < 1:
            raise ConfigError("batch_size, top_k and threads must be ≥ 1")
        if self.novelty_detector not in NOVELTY_DETECTORS:
            raise ConfigError(f"novelty_detector must be one of {NOVELTY_DETECTORS}, got {self.novelty_detector!r}")
        self.model = Bundle.load(self.bundle)
        self.preprocessor = Preprocessor(self.model.preprocessing)
        model_path, self.precision = self.model.onnx_model(self.precision)
        self.model_sha256 = self.model.manifest["files"][model_path.name]["sha256"]
        self._backend = create_backend(self.backend, model_path, intra_op_threads=self.threads,
                                       precision=self.precision)
        self.heads = HeadSwitch(self.model.manifest, model_path.name)
        if self.head:
            self.heads.activate(load_head(self.head))
        self.labels = self.heads.labels
        if self.top_k > len(self.labels):  # as the daemon
            raise ConfigError(f"top_k = {self.top_k} exceeds the bundle's {len(self.labels)} classes")
        self.hygiene = Hygiene(self.instrument, self.model.grid)
        self._novelty = (NoveltyService.from_bundle(self.model, {}, self.precision, self.threads,
                                                    self.novelty_detector) if self.novelty else None)

    def __enter__(self) -> Predictor:
        """Load the backend (and novelty model)."""
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        """Release the backend."""
        self.close()

    def open(self) -> None:
        """Load the inference backend and the novelty model (idempotent)."""
        if not self._loaded:
            self._backend.load()
            if self._novelty is not None:
                self._novelty.load()
            self._loaded = True

    def close(self) -> None:
        """Release the backend and the novelty model."""
        if self._loaded:
            self._backend.close()
            if self._novelty is not None:
                self._novelty.close()
            self._loaded = False

    @property
    def model_fields(self) -> dict[str, Any]:
        """The model identity every row carries (as the daemon's predictions)."""
        return {"model_id": self.model.model_id, "model_sha256": self.model_sha256, "precision": self.precision,
                "head_version": self.heads.version}

    def classify(self, spectra: Sequence[SpectrumIn]) -> list[dict[str, Any]]:
        """Classify one batch; one row per input spectrum, in input order.

        Parameters
        ----------
        spectra : sequence of edge.wire.SpectrumIn
            ``intensity`` shape (M,), ``raman_shift_cm1`` shape (M,) in cm⁻¹ (None: on the model grid).

        Returns
        -------
        list of dict
            ``id``, ``status`` (``ok`` or ``rejected``), ``reason`` and ``detail`` for rejections, and for
            classified spectra :func:`edge.batch.result_fields`' fields plus ``predicted`` and ``probability``
            (top-1).
        """
        self.open()
        res = classify_batch(list(spectra), self.preprocessor, self._backend, self.heads, self.labels,
                             self._novelty, self.top_k, 0.0, self.hygiene)
        by_id: dict[int, dict[str, Any]] = {}
        for s, f in zip(res.accepted, res.fields, strict=True):
            by_id[id(s)] = {"id": s.id, "status": "ok", "predicted": f["labels"][0],
                            "probability": f["probabilities"][0], **f}
        for s, reason, detail in res.rejected:
            by_id[id(s)] = {"id": s.id, "status": "rejected", "reason": reason, "detail": detail}
        return [by_id[id(s)] for s in spectra]


def _spectra_in(src: Spectra) -> Iterator[tuple[dict[str, Any], SpectrumIn]]:
    for i in range(len(src)):
        m = src.spectrum_metadata(i)
        sid = f"{Path(src.source).name}#{i}"
        row: dict[str, Any] = {"file": src.source, "index": i, "id": sid}
        for k in ("map_row", "map_col", "x_um", "y_um", "label"):
            if k in m:
                row[k] = m[k]
        yield row, SpectrumIn(sid, src.intensities[i], src.raman_shift_cm1, label=m.get("label"))


def iter_batches(read: ReadResult, batch_size: int) -> Iterator[list[tuple[dict[str, Any], SpectrumIn]]]:
    """Group the spectra of a read into batches of ``batch_size`` (input order kept across files)."""
    batch: list[tuple[dict[str, Any], SpectrumIn]] = []
    for src in read:
        for item in _spectra_in(src):
            batch.append(item)
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


@dataclass
class PredictionResult:
    """Rows of a prediction run, the files that could not be read, and the maps among the inputs.

    Attributes
    ----------
    rows : list of dict
        One per spectrum, in input order (see :meth:`Predictor.classify`; plus ``file``, ``index``, and
        ``map_row``/``map_col``/``x_um``/``y_um``/``label`` where known).
    unreadable : list of (str, str)
        (file, reason).
    maps : list of Spectra
        The inputs that are maps (``map_shape`` set), for :mod:`edge.phase_map`.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    maps: list[Spectra] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Count spectra, classified per mineral (novel ones apart), novel, rejected per reason, unreadable."""
        ok = [r for r in self.rows if r["status"] == "ok"]
        novel = [r for r in ok if r.get("novel")]
        return {"spectra": len(self.rows), "classified": len(ok) - len(novel),
                "per_mineral": dict(Counter(r["predicted"] for r in ok if not r.get("novel")).most_common()),
                "novel": len(novel),
                "rejected": dict(Counter(r["reason"] for r in self.rows if r["status"] == "rejected")),
                "unreadable_files": len(self.unreadable)}


def predict(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | ReadResult,
            bundle: str | os.PathLike[str] | Predictor, *,
            strict: bool = False, progress: bool | Callable[[int], Any] = False, scheduler: Any = None,
            read_options: dict[str, Any] | None = None, **predictor_options: Any) -> PredictionResult:
    """Classify the spectra of files, folders, globs and maps with a bundle.

    Parameters
    ----------
    paths : path-like or iterable of them, or edge.io.ReadResult
        Files (any :mod:`edge.io` format), folders (read recursively) or glob patterns; or spectra already
        read (:func:`edge.io.read_spectra`, or built in memory).
    bundle : path-like or Predictor
        Model bundle folder (or an open :class:`Predictor`).
    strict : bool
        Refuse the run when a file is unreadable (else it is reported in ``unreadable``).
    progress : bool or callable
        Show a tqdm progress bar (needs tqdm), or call ``progress(n)`` after each batch of ``n`` spectra.
    scheduler : str, optional
        Dask scheduler address (``tcp://HOST:8786``) or a ``distributed.Client``: run the batches on the
        cluster (:mod:`edge.distributed`, extra ``[distributed]``).
    read_options : dict, optional
        Reader options (:func:`edge.io.read_file`).
    **predictor_options
        :class:`Predictor` settings (``precision``, ``batch_size``, ``top_k``, ``novelty`` ...).

    Returns
    -------
    PredictionResult

    Raises
    ------
    DataError
        If nothing can be read, or (``strict``) a file is unreadable.
    BundleError, BackendError, ConfigError
        If the bundle or options cannot be used.
    """
    if isinstance(paths, ReadResult):
        read = paths
    else:
        read = read_spectra(paths, strict=strict, **(read_options or {}))
    result = PredictionResult(unreadable=list(read.failures), maps=[s for s in read if s.map_shape is not None])
    total = read.n_spectra
    tick, bar = _progress(progress, total)
    try:
        if scheduler is not None:
            from .distributed import predict_distributed

            if isinstance(bundle, Predictor):
                raise ConfigError("with a scheduler, pass the bundle path (each worker loads its own model)")
            result.rows = predict_distributed(read, bundle, scheduler, progress=tick, **predictor_options)
            return result
        pred = bundle if isinstance(bundle, Predictor) else Predictor(bundle, **predictor_options)
        try:
            for batch in iter_batches(read, pred.batch_size):
                for (row, _), out in zip(batch, pred.classify([s for _, s in batch]), strict=True):
                    result.rows.append({**row, **out, **pred.model_fields})
                tick(len(batch))
        finally:
            if not isinstance(bundle, Predictor):
                pred.close()
    finally:
        if bar is not None:
            bar.close()
    return result


def _progress(progress: bool | Callable[[int], Any], total: int) -> tuple[Callable[[int], Any], Any]:
    if callable(progress):
        return progress, None
    if not progress:
        return (lambda n: None), None
    try:
        from tqdm import tqdm
    except ImportError as exc:
        raise ConfigError("a progress bar needs tqdm (pip install tqdm); or turn it off (--no-progress)") from exc
    bar = tqdm(total=total, unit="spectra", desc="edge-predict")
    return bar.update, bar


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, (list, tuple)):
            v = "|".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v)
        elif isinstance(v, dict):  # quality, calibration (edge.hygiene): JSON in one cell
            v = json.dumps(v, default=_json_default)
        elif isinstance(v, float) and not math.isfinite(v):
            v = ""
        out[k] = v
    return out


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols = [k for k in _ROW_KEYS if any(k in r for r in rows)]
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def write_rows(rows: list[dict[str, Any]], out: str | os.PathLike[str]) -> Path:
    """Write result rows to ``.csv`` (lists joined with ``|``), ``.jsonl`` or ``.parquet`` (needs pyarrow).

    Raises
    ------
    ConfigError
        For another extension, or ``.parquet`` without pyarrow.
    DataError
        If the file cannot be written.
    """
    p = Path(out)
    ext = p.suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise ConfigError(f"{p}: output must end in one of {', '.join(OUTPUT_FORMATS)}")
    cols = _columns(rows)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        if ext == ".parquet":
            try:
                import pyarrow as pa  # type: ignore[import-untyped]
                import pyarrow.parquet as pq  # type: ignore[import-untyped]
            except ImportError as exc:
                raise ConfigError(f"{p}: writing .parquet needs pyarrow (pip install pyarrow); "
                                  "or write .csv / .jsonl") from exc
            pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows]), p)
        elif ext == ".jsonl":
            with open(p, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, default=_json_default) + "\n")
        else:
            with open(p, "w", encoding="utf-8", newline="") as f:
                w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
                w.writeheader()
                for r in rows:
                    w.writerow(_flat(r))
    except OSError as exc:
        raise DataError(f"{p}: cannot write: {exc}") from exc
    return p


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")
