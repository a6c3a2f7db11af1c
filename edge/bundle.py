"""The model bundle: a directory with a versioned ``manifest.json``; the contract between trainer, export
and edge.

Layout (files other than the manifest are optional and listed with their SHA-256 in ``manifest["files"]``)::

    bundle/
      manifest.json         schema version, Raman-shift grid, preprocessing, labels, model settings, metrics
      model.pt              PyTorch state dict (trainer)
      model.onnx            FP32 ONNX (export)
      model.int8.onnx       static QDQ INT8 ONNX (export --int8)
      report/               evaluation report: metrics JSON, confusion matrix and training curve PNGs

The daemon refuses a bundle whose schema version or Raman-shift grid does not match, or whose files do not
match their recorded hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import BundleError, ConfigError
from .preprocess import PreprocessConfig, RamanGrid

__all__ = ["MANIFEST_NAME", "SCHEMA_VERSION", "Bundle", "chmod_umask", "sha256_file"]

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
KIND = "raman-edge-bundle"
_REQUIRED = ("schema_version", "kind", "model_id", "raman_shift", "preprocessing", "labels", "model", "files")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def chmod_umask(path: str | os.PathLike[str], mode: int = 0o666) -> None:
    """Give a file the permissions an ordinary ``open()`` would: ``mode`` less the process umask.

    ``tempfile.mkstemp`` creates files with mode 0600 whatever the umask; a file written that way and moved
    into place (atomic write) would be unreadable for a daemon running as another user.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


class Bundle:
    """A model bundle on disk.

    Use :meth:`create` (trainer) or :meth:`load` (export, edge); change the manifest through the methods and
    :meth:`save`, which writes atomically.
    """

    def __init__(self, path: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, preprocessing: PreprocessConfig, labels: list[str],
               model: Mapping[str, Any], name: str = "raman-cnn") -> Bundle:
        """Start a new bundle in ``path`` (created if needed; an existing manifest is replaced).

        Raises
        ------
        BundleError
            If the labels are empty or not unique, or the folder cannot be created.
        """
        labels = [str(x) for x in labels]
        if not labels or len(set(labels)) != len(labels):
            raise BundleError("a bundle needs a non-empty list of distinct labels")
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BundleError(f"cannot create bundle folder {path}: {exc}") from exc
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "kind": KIND,
            "name": name,
            "model_id": name,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "raman_shift": preprocessing.grid.to_dict(),
            "preprocessing": preprocessing.to_dict(),
            "labels": labels,
            "model": dict(model),
            "files": {},
            "metrics": {},
        }
        return cls(path, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, expect_grid: RamanGrid | None = None,
             verify: bool = True) -> Bundle:
        """Load and validate a bundle.

        Parameters
        ----------
        path : path-like
            Bundle folder (or its ``manifest.json``).
        expect_grid : RamanGrid, optional
            Raman-shift grid the caller (e.g. the instrument config) requires.
        verify : bool
            Check every listed file's SHA-256.

        Raises
        ------
        BundleError
            Missing folder or manifest, unreadable JSON, another schema version, missing keys, a grid other
            than ``expect_grid``, or a file that is missing or does not match its hash.
        """
        p = Path(path)
        if p.name == MANIFEST_NAME:
            p = p.parent
        mpath = p / MANIFEST_NAME
        if not mpath.is_file():
            raise BundleError(f"{p}: not a model bundle (no {MANIFEST_NAME}); train one with edge-train")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{mpath}: unreadable manifest: {exc}") from exc
        if not isinstance(manifest, dict):
            raise BundleError(f"{mpath}: manifest must be a JSON object")
        if manifest.get("kind") != KIND:
            raise BundleError(f"{mpath}: kind is {manifest.get('kind')!r}, expected {KIND!r}")
        version = manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"{mpath}: bundle schema version {version!r} is not supported (this edge reads version "
                f"{SCHEMA_VERSION}); re-export the bundle with a matching raman-edge"
            )
        missing = [k for k in _REQUIRED if k not in manifest]
        if missing:
            raise BundleError(f"{mpath}: manifest lacks {missing}")
        bundle = cls(p, manifest)
        try:
            grid = bundle.grid
            pre = bundle.preprocessing
        except ConfigError as exc:
            raise BundleError(f"{mpath}: {exc}") from exc
        if pre.grid != grid:
            raise BundleError(f"{mpath}: preprocessing grid ({pre.grid.describe()}) differs from raman_shift "
                              f"({grid.describe()})")
        if expect_grid is not None and expect_grid != grid:
            raise BundleError(
                f"{p}: the model's Raman-shift axis ({grid.describe()}) does not match the expected axis "
                f"({expect_grid.describe()}); use a bundle trained for this instrument"
            )
        if verify:
            for name in manifest["files"]:
                bundle.file(name)
        return bundle

    # -- accessors ----------------------------------------------------------------------------------------
    @property
    def grid(self) -> RamanGrid:
        """The model's Raman-shift grid (cm⁻¹)."""
        return RamanGrid.from_dict(self.manifest["raman_shift"])

    @property
    def preprocessing(self) -> PreprocessConfig:
        """The preprocessing the model was trained with."""
        return PreprocessConfig.from_dict(self.manifest["preprocessing"])

    @property
    def labels(self) -> list[str]:
        """Class names, in output order."""
        return list(self.manifest["labels"])

    @property
    def model_id(self) -> str:
        """The model's identifier."""
        return str(self.manifest["model_id"])

    @property
    def metrics(self) -> dict[str, Any]:
        """The manifest's metrics section (created empty if absent)."""
        return self.manifest.setdefault("metrics", {})

    def has_file(self, name: str) -> bool:
        """Whether the manifest lists ``name``."""
        return name in self.manifest["files"]

    def file(self, name: str, verify: bool = True) -> Path:
        """Path of a listed file, after checking its SHA-256.

        Raises
        ------
        BundleError
            If the file is not listed, missing, or its hash differs from the manifest's.
        """
        entry = self.manifest["files"].get(name)
        if entry is None:
            raise BundleError(f"{self.path}: no {name!r} in this bundle (has: {sorted(self.manifest['files'])})")
        fpath = self.path / name
        if not fpath.is_file():
            raise BundleError(f"{self.path}: {name} is listed in the manifest but missing")
        if verify and sha256_file(fpath) != entry["sha256"]:
            raise BundleError(f"{self.path}: {name} does not match its SHA-256 in the manifest (corrupt or replaced)")
        return fpath

    # -- mutation -----------------------------------------------------------------------------------------
    def add_file(self, name: str, **info: Any) -> Path:
        """Record an existing file of the bundle (its SHA-256 and size, plus ``info``)."""
        fpath = self.path / name
        if not fpath.is_file():
            raise BundleError(f"{fpath}: cannot add a file that does not exist")
        self.manifest["files"][name] = {"sha256": sha256_file(fpath), "bytes": fpath.stat().st_size, **info}
        return fpath

    def save(self) -> Path:
        """Write ``manifest.json`` atomically (temporary file + rename)."""
        mpath = self.path / MANIFEST_NAME
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".manifest.", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.manifest, f, indent=2, ensure_ascii=False, default=_json_default)
                f.write("\n")
            chmod_umask(tmp)
            os.replace(tmp, mpath)
        except (OSError, TypeError) as exc:
            Path(tmp).unlink(missing_ok=True)
            raise BundleError(f"cannot write {mpath}: {exc}") from exc
        return mpath

    def onnx_model(self, precision: str = "auto") -> tuple[Path, str]:
        """The ONNX classifier to serve.

        Parameters
        ----------
        precision : {"auto", "int8", "fp32"}
            ``"auto"`` prefers INT8 when the bundle has it.

        Returns
        -------
        (pathlib.Path, str)
            Model path (hash verified) and the precision served.

        Raises
        ------
        BundleError
            If the requested precision is not in the bundle (never silently downgraded).
        """
        names = {"int8": "model.int8.onnx", "fp32": "model.onnx"}
        if precision == "auto":
            precision = "int8" if self.has_file(names["int8"]) else "fp32"
        if precision not in names:
            raise BundleError(f"precision must be auto, int8 or fp32, got {precision!r}")
        if not self.has_file(names[precision]):
            raise BundleError(f"{self.path}: no {precision.upper()} ONNX model; run edge-export"
                              + (" --int8" if precision == "int8" else "") + f" {self.path}")
        return self.file(names[precision]), precision


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
