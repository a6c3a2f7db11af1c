"""Classification heads that can be swapped onboard: file format, verification, numpy inference, and the
daemon's head switch with its ZeroMQ control protocol.

Why a separate head
-------------------
The served ONNX model (FP32 or INT8 QDQ) has three outputs: ``logits``, ``probabilities`` and
``embedding`` (the backbone features before the classifier, shape (B, D)). A *head* is the last linear layer
alone: ``probabilities = softmax(embedding @ W.T + b)``, K·D multiply-adds, computed here in numpy. A new
head (new minerals learnt on the ground, paper §8) is therefore a small file that can be uplinked and
swapped in without touching the backbone, without restarting the daemon, and without onnx on board. Until a
head is loaded the daemon serves the ONNX model's own classifier (version: the bundle's head version, else
its model id).

Head file (``.npz``, readable with ``numpy.load(..., allow_pickle=False)``)
---------------------------------------------------------------------------
``meta``
    0-d unicode array holding a JSON map: ``format`` (``"raman-edge-head"``), ``format_version`` (2),
    ``version`` (the head version every prediction names), ``backbone_sha256`` (SHA-256 of the backbone
    weights the head was trained on; the daemon refuses any other), ``embedding_size`` D, ``n_classes`` K,
    ``dtype`` (``"int8"``, ``"float16"`` or ``"float32"``), ``payload_sha256`` (of the arrays below, bias
    included, and of labels, version and backbone hash; checked on load: an edited weight or bias is refused;
    format version 1, whose hash left the bias out, is refused), plus free-form provenance (``mode``,
    ``base_model_id``, ``created_utc`` ...).
``labels``
    unicode, shape (K,): mineral names, distinct.
``weight``
    shape (K, D): int8 (symmetric, one scale per class row), float16 or float32.
``weight_scale``
    float32, shape (K,): only for int8; ``W = weight * weight_scale[:, None]``.
``bias``
    float32, shape (K,).

With int8 weights a 63-class head measures about 42 kB on a 704-wide embedding (the default model) and
50 kB on a 1024-wide one (≈ 1 byte per weight; float16 doubles that).

Control protocol (ZeroMQ REP socket, ``control`` endpoint of the daemon)
------------------------------------------------------------------------
Requests and replies are msgpack maps. Requests::

    {"cmd": "status"}
    {"cmd": "load_head", "path": "/path/to/head.npz"}       # a file in the daemon's heads folder, or
    {"cmd": "load_head", "head": <bytes of the .npz file>}  # the file inline (uplink)

Replies always carry ``ok`` (bool). ``load_head`` answers ``{"ok": true, "head_version", "previous_version",
"n_classes", "last_seq_previous_head"}`` (predictions with ``seq`` up to that number used the previous head,
all later ones the new head), or ``{"ok": false, "reason", "error"}`` with ``reason`` one of ``"bad_request"``,
``"invalid_head"``, ``"backbone_mismatch"``, ``"no_embedding_output"`` (or ``"internal"``: the daemon wraps
any unexpected error into that answer); a ``path`` must name a regular
file (a FIFO or device is refused, never opened blocking) inside the heads folder (``[daemon] heads_dir``,
symlinks resolved: :mod:`edge.head_guard`); every head's arrays are size-checked before they are inflated;
a refused head is counted in the status (``head.rejected``) and the head in service stays.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgpack
import numpy as np

from .errors import HeadError
from .head_guard import check_npz_sizes, confine_head_path

__all__ = [
    "EMBEDDING_OUTPUT",
    "HEAD_DTYPES",
    "HEAD_FORMAT",
    "HEAD_FORMAT_VERSION",
    "MAX_HEAD_BYTES",
    "Head",
    "HeadSwitch",
    "load_head",
    "make_head",
    "softmax",
]

log = logging.getLogger("edge.heads")

HEAD_FORMAT = "raman-edge-head"
HEAD_FORMAT_VERSION = 2  # 2: the payload hash covers the bias (version 1, refused, left it out)
HEAD_DTYPES = ("int8", "float16", "float32")
MAX_HEAD_BYTES = 64 << 20
EMBEDDING_OUTPUT = "embedding"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable.

    Parameters
    ----------
    logits : numpy.ndarray, shape (B, K), float

    Returns
    -------
    numpy.ndarray, shape (B, K), float32
    """
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32, copy=False)


def _payload_sha256(stored: Mapping[str, np.ndarray], bias: np.ndarray, labels: tuple[str, ...], version: str,
                    backbone: str) -> str:
    """SHA-256 of everything that decides a head's output: stored weights (and scales), bias (float32), labels,
    version and backbone hash (format version 2; version 1 left the bias out, so an edited bias went unnoticed).
    """
    h = hashlib.sha256()
    arrays = {**stored, "bias": np.asarray(bias, dtype=np.float32)}
    for name in ("weight", "weight_scale", "bias"):
        if name in arrays:
            a = np.ascontiguousarray(arrays[name])
            h.update(name.encode() + a.dtype.str.encode() + str(a.shape).encode())
            h.update(a.tobytes())
    h.update("\n".join(labels).encode("utf-8"))
    h.update(version.encode("utf-8") + b"\0" + backbone.encode("ascii", "replace"))
    return h.hexdigest()


def _quantize(weight: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    if dtype == "int8":
        amax = np.abs(weight).max(axis=1)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8)
        return {"weight": q, "weight_scale": scale}
    return {"weight": weight.astype(dtype)}


def _dequantize(stored: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
    w = np.asarray(stored["weight"])
    if dtype == "int8":
        return (w.astype(np.float32) * np.asarray(stored["weight_scale"], dtype=np.float32)[:, None]).astype(np.float32)
    return w.astype(np.float32)


@dataclass(frozen=True, eq=False)
class Head:
    """A linear classification head on the backbone embedding.

    Build one with :func:`make_head` (quantises the weights) or :func:`load_head`; the float32 ``weight`` is
    always the dequantised stored weight, so a head computes the same numbers before saving and after
    loading.

    Attributes
    ----------
    weight : numpy.ndarray, shape (K, D), float32
    bias : numpy.ndarray, shape (K,), float32
    labels : tuple of str, length K
    backbone_sha256 : str
        SHA-256 (hex) of the backbone weights this head fits.
    version : str
        Head version, named by every prediction made with it.
    dtype : {"int8", "float16", "float32"}
        Storage precision of the weight.
    info : dict
        Provenance (mode, base model id, creation time ...), JSON-able.
    """

    weight: np.ndarray
    bias: np.ndarray
    labels: tuple[str, ...]
    backbone_sha256: str
    version: str
    dtype: str = "int8"
    info: dict[str, Any] = field(default_factory=dict)
    stored: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_classes(self) -> int:
        """Number of classes K."""
        return int(self.weight.shape[0])

    @property
    def embedding_size(self) -> int:
        """Length D of the backbone embedding the head reads."""
        return int(self.weight.shape[1])

    @property
    def payload_sha256(self) -> str:
        """SHA-256 of the stored arrays, labels, version and backbone hash (what the file's meta records)."""
        return _payload_sha256(self.stored, self.bias, self.labels, self.version, self.backbone_sha256)

    def logits(self, embedding: np.ndarray) -> np.ndarray:
        """Class scores.

        Parameters
        ----------
        embedding : numpy.ndarray, shape (B, D), float32

        Returns
        -------
        numpy.ndarray, shape (B, K), float32

        Raises
        ------
        HeadError
            If the embedding width is not D.
        """
        e = np.asarray(embedding, dtype=np.float32)
        if e.ndim != 2 or e.shape[1] != self.embedding_size:
            raise HeadError(f"head {self.version!r} expects embeddings of shape (B, {self.embedding_size}), "
                            f"got {e.shape}")
        return e @ self.weight.T + self.bias

    def predict_proba(self, embedding: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (B, K), float32 (softmax of :meth:`logits`)."""
        return softmax(self.logits(embedding))

    def verify(self, backbone_sha256: str | None, embedding_size: int | None = None) -> None:
        """Check that this head fits a backbone.

        Raises
        ------
        HeadError
            If the backbone hash is unknown or differs, or the embedding width differs.
        """
        if not backbone_sha256:
            raise HeadError("the served bundle records no backbone_sha256; re-export it with edge-export")
        if self.backbone_sha256 != backbone_sha256:
            raise HeadError(f"head {self.version!r} was trained on backbone {self.backbone_sha256[:12]}…, "
                            f"the daemon serves backbone {backbone_sha256[:12]}…")
        if embedding_size is not None and int(embedding_size) != self.embedding_size:
            raise HeadError(f"head {self.version!r} has embedding size {self.embedding_size}, "
                            f"the backbone gives {embedding_size}")

    def to_bytes(self) -> bytes:
        """The head file's bytes (compressed ``.npz``)."""
        meta = {"format": HEAD_FORMAT, "format_version": HEAD_FORMAT_VERSION, "version": self.version,
                "backbone_sha256": self.backbone_sha256, "embedding_size": self.embedding_size,
                "n_classes": self.n_classes, "dtype": self.dtype, "payload_sha256": self.payload_sha256,
                **{k: v for k, v in self.info.items() if k not in _RESERVED}}
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=np.array(json.dumps(meta, ensure_ascii=False)),
                            labels=np.array(self.labels, dtype=str), bias=self.bias.astype(np.float32),
                            **cast(dict[str, Any], self.stored))
        return buf.getvalue()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the head file atomically; returns its path.

        Raises
        ------
        HeadError
            If the file cannot be written.
        """
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        try:
            tmp.write_bytes(self.to_bytes())
            os.replace(tmp, p)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise HeadError(f"cannot write head file {p}: {exc}") from exc
        return p

    def describe(self) -> dict[str, Any]:
        """Version, classes, dtype, backbone hash and provenance, JSON-able."""
        return {"version": self.version, "n_classes": self.n_classes, "embedding_size": self.embedding_size,
                "dtype": self.dtype, "backbone_sha256": self.backbone_sha256, **self.info}


_RESERVED = {"format", "format_version", "version", "backbone_sha256", "embedding_size", "n_classes", "dtype",
             "payload_sha256"}


def make_head(weight: np.ndarray, bias: np.ndarray, labels: Sequence[str] | np.ndarray, backbone_sha256: str, version: str,
              dtype: str = "int8", **info: Any) -> Head:
    """Build a head from float weights, quantised to ``dtype`` (what is stored is what is served).

    Parameters
    ----------
    weight : numpy.ndarray, shape (K, D), float
    bias : numpy.ndarray, shape (K,), float
    labels : sequence of str, length K, distinct
    backbone_sha256 : str
        Hex SHA-256 of the backbone weights (see :func:`trainer.bundle_io.backbone_sha256`).
    version : str
        Non-empty head version.
    dtype : {"int8", "float16", "float32"}
        Storage precision of the weight (int8: symmetric, per class row).
    **info
        JSON-able provenance stored in the file.

    Raises
    ------
    HeadError
        On inconsistent shapes, non-finite values, repeated or empty labels, an empty version, an unknown
        dtype.
    """
    if dtype not in HEAD_DTYPES:
        raise HeadError(f"head dtype must be one of {HEAD_DTYPES}, got {dtype!r}")
    w = np.asarray(weight, dtype=np.float32)
    b = np.asarray(bias, dtype=np.float32)
    labels = tuple(str(x) for x in labels)
    _check(w, b, labels, str(version), str(backbone_sha256))
    stored = _quantize(w, dtype)
    return Head(_dequantize(stored, dtype), b.copy(), labels, str(backbone_sha256), str(version), dtype,
                dict(info), stored)


def _check(w: np.ndarray, b: np.ndarray, labels: tuple[str, ...], version: str, backbone: str) -> None:
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
        raise HeadError(f"head weight must have shape (K, D) with K, D ≥ 1, got {w.shape}")
    if b.shape != (w.shape[0],):
        raise HeadError(f"head bias must have shape ({w.shape[0]},), got {b.shape}")
    if len(labels) != w.shape[0]:
        raise HeadError(f"head has {w.shape[0]} weight rows but {len(labels)} labels")
    if len(set(labels)) != len(labels) or any(not x for x in labels):
        raise HeadError("head labels must be distinct non-empty strings")
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise HeadError("head weights hold NaN or Inf")
    if not version:
        raise HeadError("a head needs a non-empty version")
    if len(backbone) != 64 or any(c not in "0123456789abcdef" for c in backbone):
        raise HeadError(f"backbone_sha256 must be 64 lowercase hex digits, got {backbone[:20]!r}")


def load_head(source: str | os.PathLike[str] | bytes | bytearray) -> Head:
    """Read and validate a head file.

    Parameters
    ----------
    source : path-like or bytes
        The ``.npz`` file, or its bytes (inline uplink).

    Returns
    -------
    Head

    Raises
    ------
    HeadError
        If the file is missing, too large, not a head file of a known format version, inconsistent, or its
        payload does not match its recorded SHA-256 (corrupted on the way).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, where = bytes(source), "inline head"
    else:
        where = str(source)
        data = _read_regular_file(source, where)
    if len(data) > MAX_HEAD_BYTES:
        raise HeadError(f"{where}: {len(data)} bytes is larger than a head may be ({MAX_HEAD_BYTES})")
    check_npz_sizes(data, where)  # from the zip and .npy headers, before anything is inflated (no bombs)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")[()]))
    except HeadError:
        raise
    except Exception as exc:  # numpy/zipfile/json raise many types for a damaged file
        raise HeadError(f"{where}: not a readable head file: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != HEAD_FORMAT:
        raise HeadError(f"{where}: not a {HEAD_FORMAT} file")
    if meta.get("format_version") == 1:  # its hash leaves the bias out: an edited bias would pass unnoticed
        raise HeadError(f"{where}: head format version 1 is no longer accepted (its payload hash does not cover the "
                        f"bias); export the head again with this version (format {HEAD_FORMAT_VERSION})")
    if meta.get("format_version") != HEAD_FORMAT_VERSION:
        raise HeadError(f"{where}: head format version {meta.get('format_version')!r} is not supported "
                        f"(this edge reads {HEAD_FORMAT_VERSION})")
    dtype = meta.get("dtype")
    if dtype not in HEAD_DTYPES:
        raise HeadError(f"{where}: unknown weight dtype {dtype!r}")
    missing = {"weight", "bias", "labels"} - set(arrays) | ({"weight_scale"} - set(arrays) if dtype == "int8" else set())
    if missing:
        raise HeadError(f"{where}: head file lacks {sorted(missing)}")
    want = {"int8": np.int8, "float16": np.float16, "float32": np.float32}[dtype]
    if arrays["weight"].dtype != want or arrays["bias"].dtype != np.float32 or arrays["labels"].dtype.kind != "U":
        raise HeadError(f"{where}: stored arrays have unexpected dtypes")
    stored = {k: arrays[k] for k in ("weight", "weight_scale") if k in arrays}
    if dtype == "int8" and (stored["weight_scale"].dtype != np.float32
                            or stored["weight_scale"].shape != (stored["weight"].shape[0],)):
        raise HeadError(f"{where}: weight_scale must be float32 of shape (K,)")
    labels = tuple(str(x) for x in arrays["labels"].tolist())
    version, backbone = str(meta.get("version", "")), str(meta.get("backbone_sha256", ""))
    w = _dequantize(stored, dtype) if stored["weight"].ndim == 2 else stored["weight"]
    _check(w, arrays["bias"], labels, version, backbone)
    if _payload_sha256(stored, arrays["bias"], labels, version, backbone) != meta.get("payload_sha256"):
        raise HeadError(f"{where}: head payload does not match its SHA-256 (corrupted or edited)")
    info = {k: v for k, v in meta.items() if k not in _RESERVED}
    return Head(w, arrays["bias"].copy(), labels, backbone, version, dtype, info, stored)


def _read_regular_file(path: str | os.PathLike[str], where: str) -> bytes:
    """Read a head file without ever blocking.

    The file is opened non-blocking and refused unless it is a regular file (a FIFO or a device would stall
    the daemon's loop); at most :data:`MAX_HEAD_BYTES` are read.

    Raises
    ------
    HeadError
        Not a readable regular file, a path with a NUL byte, or too large.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError, TypeError) as exc:  # ValueError: NUL byte in the path
        raise HeadError(f"cannot read head file {where!r}: {exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HeadError(f"head file {where!r} is not a regular file")
        if st.st_size > MAX_HEAD_BYTES:
            raise HeadError(f"{where}: {st.st_size} bytes is larger than a head may be ({MAX_HEAD_BYTES})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_HEAD_BYTES + 1)
    except OSError as exc:
        raise HeadError(f"cannot read head file {where!r}: {exc}") from exc
    finally:
        os.close(fd)


class HeadSwitch:
    """The head the daemon serves, and the swap protocol. Used only from the daemon's loop thread, between
    micro-batches, so every batch is classified by exactly one head.

    Parameters
    ----------
    manifest : dict
        The served bundle's manifest: ``model.backbone_sha256``, ``model.embedding_size``, the labels, the
        model id and (for bundles made by ``edge-train transfer``) ``head.version``.
    model_file : str
        Name of the served ONNX file in the bundle (its entry must list an ``embedding`` output, or
        its FP32 parent ``model.onnx`` must).
    heads_dir : path-like, optional
        The only folder a ``load_head`` ``path`` may resolve into (:func:`edge.head_guard.confine_head_path`);
        None refuses every path (inline heads only).
    """

    def __init__(self, manifest: Mapping[str, Any], model_file: str = "model.onnx",
                 heads_dir: str | os.PathLike[str] | None = None) -> None:
        self.heads_dir = heads_dir
        model = manifest.get("model", {})
        files = manifest.get("files", {})
        outputs = (files.get(model_file, {}).get("outputs") or files.get("model.onnx", {}).get("outputs") or [])
        self.backbone_sha256: str | None = model.get("backbone_sha256")
        self.embedding_size: int | None = model.get("embedding_size")
        self.has_embedding = EMBEDDING_OUTPUT in outputs
        self.head: Head | None = None
        self.labels = np.asarray(manifest.get("labels", []))
        self.version = str((manifest.get("head") or {}).get("version") or manifest.get("model_id", "bundle"))
        self.counters = {"loads": 0, "rejected": 0}
        self.last_error = ""
        self.loaded_at_ns: int | None = None

    # -- serving -------------------------------------------------------------------------------------------
    def apply(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Replace ``logits`` and ``probabilities`` of a backend result by the loaded head's (no-op before
        any head is loaded).

        Raises
        ------
        HeadError
            If a head is loaded but the backend gave no ``embedding``.
        """
        if self.head is None:
            return out
        emb = out.get(EMBEDDING_OUTPUT)
        if emb is None:
            raise HeadError("the model gave no 'embedding' output; cannot apply the loaded head")
        logits = self.head.logits(emb)
        return {**out, "logits": logits, "probabilities": softmax(logits.copy())}

    def check(self, head: Head) -> None:
        """Refuse a head that does not fit the served backbone.

        Raises
        ------
        HeadError
            Backbone hash or embedding size mismatch, or a served model without an embedding output.
        """
        if not self.has_embedding:
            raise HeadError("the served ONNX model has no 'embedding' output (exported by an older "
                            "raman-edge); re-export the bundle with edge-export to enable head swaps")
        head.verify(self.backbone_sha256, self.embedding_size)

    def activate(self, head: Head) -> str:
        """Serve ``head`` from the next batch on (after :meth:`check`); returns the previous version."""
        self.check(head)
        previous = self.version
        self.head, self.version, self.labels = head, head.version, np.asarray(head.labels)
        self.counters["loads"] += 1
        self.loaded_at_ns = time.time_ns()
        log.info("head %s → %s (%d classes)", previous, head.version, head.n_classes)
        return previous

    # -- control protocol ----------------------------------------------------------------------------------
    def handle(self, frame: bytes, status: Mapping[str, Any] | None = None, last_seq: int = 0) -> dict[str, Any]:
        """Answer one control request (see the module docstring); never raises for bad input.

        Parameters
        ----------
        frame : bytes
            The msgpack request.
        status : dict, optional
            The daemon's status, returned for ``{"cmd": "status"}``.
        last_seq : int
            Sequence number of the last prediction published so far (the last one of the previous head).

        Returns
        -------
        dict
            The reply map.
        """
        try:
            req = msgpack.unpackb(frame, raw=False, max_bin_len=MAX_HEAD_BYTES)
        except Exception as exc:
            return self._refuse("bad_request", f"not a msgpack request: {exc}")
        if not isinstance(req, dict):
            return self._refuse("bad_request", "request must be a map with a 'cmd'")
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": dict(status or {}), "head": self.status()["head"]}
        if cmd != "load_head":
            return self._refuse("bad_request", f"unknown cmd {cmd!r}; known: 'load_head', 'status'", count=False)
        src = req.get("head") if req.get("head") is not None else req.get("path")
        if not isinstance(src, (bytes, str)) or not src:
            return self._refuse("bad_request", "load_head needs 'path' (str) or 'head' (bytes)")
        try:
            if isinstance(src, str):  # a path: only inside the heads folder, symlinks resolved
                if self.heads_dir is None:
                    raise HeadError("no heads folder is configured: send the head inline")
                src = confine_head_path(src, self.heads_dir)
            head = load_head(src)
        except HeadError as exc:
            return self._refuse("invalid_head", str(exc))
        except Exception as exc:  # a validation gap: still an answered refusal, never a dead control loop
            return self._refuse("invalid_head", f"{type(exc).__name__}: {exc}")
        try:
            self.check(head)
        except HeadError as exc:
            reason = "no_embedding_output" if not self.has_embedding else "backbone_mismatch"
            return self._refuse(reason, str(exc))
        previous = self.activate(head)
        return {"ok": True, "head_version": head.version, "previous_version": previous,
                "n_classes": head.n_classes, "last_seq_previous_head": int(last_seq)}

    def _refuse(self, reason: str, error: str, count: bool = True) -> dict[str, Any]:
        if count:
            self.counters["rejected"] += 1
        self.last_error = f"{reason}: {error}"
        log.warning("head refused (%s): %s", reason, error)
        return {"ok": False, "reason": reason, "error": error}

    def status(self) -> dict[str, Any]:
        """``{"head": {...}}`` for the daemon's status messages."""
        return {"head": {"version": self.version, "n_classes": len(self.labels),
                         "source": "bundle" if self.head is None else "loaded", **self.counters,
                         "last_error": self.last_error, "swappable": self.has_embedding and bool(self.backbone_sha256)}}
