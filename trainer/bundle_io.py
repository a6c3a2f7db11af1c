"""Write a trained model into a bundle, and read it back."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from edge.bundle import Bundle
from edge.errors import BundleError

from .model import ModelConfig, RamanCNN, count_parameters
from .settings import TrainerSettings

__all__ = ["MODEL_FILE", "backbone_sha256", "load_model", "save_model"]

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
