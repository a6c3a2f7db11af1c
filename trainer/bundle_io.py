"""Write a trained model into a bundle, and read it back."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from edge.bundle import MANIFEST_NAME, Bundle
from edge.errors import BundleError

from .errors import TrainerError
from .model import ModelConfig, RamanCNN, count_parameters
from .settings import TrainerSettings

__all__ = ["MODEL_FILE", "backbone_sha256", "load_model", "prepare_out_dir", "save_model"]
log = logging.getLogger("trainer")

MODEL_FILE = "model.pt"


def backbone_sha256(model: RamanCNN) -> str:
    """SHA-256 (hex) of the backbone weights: every state-dict tensor except the ``classifier`` head, each
    hashed with its name, dtype and shape. A head file names this hash; the daemon refuses a head made for
    another backbone. Recorded as ``manifest["model"]["backbone_sha256"]``.
    """
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if name.startswith("classifier."):
            continue
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}|{a.dtype.str}|{tuple(a.shape)}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def prepare_out_dir(out: str | Path, *, force: bool = False) -> None:
    """Make sure a new bundle can be written to ``out`` without mixing with older files.

    Parameters
    ----------
    out : path-like
        The bundle folder to write.
    force : bool
        Replace an existing bundle: its folder's contents are removed first (stale ONNX models and reports
        would otherwise stay next to the new weights).

    Raises
    ------
    TrainerError
        If ``out`` is a file, a bundle (without ``force``), or a non-empty folder that is not a bundle.
    """
    p = Path(out)
    if not p.exists():
        return
    if not p.is_dir():
        raise TrainerError(f"--out {p}: is a file, not a folder")
    if not any(p.iterdir()):
        return
    if not (p / MANIFEST_NAME).is_file():
        raise TrainerError(f"--out {p}: folder is not empty and holds no bundle; choose a new or empty folder")
    if not force:
        raise TrainerError(f"--out {p}: a bundle already exists there; pass --force to replace it (its files are "
                           "removed) or choose another folder")
    log.info("--force: removing the old bundle in %s", p)
    try:
        shutil.rmtree(p)
    except OSError as exc:
        raise TrainerError(f"--out {p}: cannot remove the old bundle: {exc}") from exc


def save_model(out: str | Path, model: RamanCNN, labels: list[str], settings: TrainerSettings,
               training: dict[str, Any], name: str = "raman-cnn") -> Bundle:
    """Create a bundle in ``out`` holding the model's state dict and a manifest.

    The ``model_id`` is ``name`` plus the first 12 hex digits of the weights' SHA-256.
    """
    bundle = Bundle.create(out, preprocessing=settings.preprocessing, labels=labels, name=name, model={
        "architecture": "RamanCNN",
        "settings": model.config.to_dict(),  # as built (in_channels set from the preprocessing)
        "n_parameters": count_parameters(model),
        "n_points": model.n_points,
        "feature_channels": model.feature_channels,
        "embedding_size": model.embedding_size,
        "backbone_sha256": backbone_sha256(model),
    })
    path = Path(out) / MODEL_FILE
    torch.save(model.state_dict(), path)
    bundle.add_file(MODEL_FILE, role="pytorch-state-dict")
    digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())).hexdigest()
    bundle.manifest["model_id"] = f"{name}-{digest[:12]}"
    bundle.manifest["training"] = {**training, "settings": settings.to_dict()}
    bundle.save()
    return bundle


def load_model(bundle: Bundle) -> RamanCNN:
    """Rebuild the PyTorch model of a bundle (eval mode).

    Raises
    ------
    BundleError
        If the bundle has no PyTorch weights or they do not fit the recorded architecture.
    """
    m = bundle.manifest["model"]
    if m.get("architecture") != "RamanCNN":
        raise BundleError(f"{bundle.path}: unsupported architecture {m.get('architecture')!r}")
    model = RamanCNN(int(m["n_points"]), len(bundle.labels), ModelConfig.from_dict(m["settings"]))
    try:
        state = torch.load(bundle.file(MODEL_FILE), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, OSError, ValueError) as exc:
        raise BundleError(f"{bundle.path}: weights do not load into the recorded architecture: {exc}") from exc
    model.eval()
    return model
