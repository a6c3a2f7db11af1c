"""All trainer settings in one object, read from a TOML model config (``configs/model_*.toml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.cli_common import load_toml
from edge.preprocess import PreprocessConfig

from .augment import AugmentConfig
from .errors import TrainerError
from .model import ModelConfig
from .train import TrainConfig

__all__ = ["TrainerSettings"]

SECTIONS = ("preprocessing", "model", "training", "augmentation")


@dataclass
class TrainerSettings:
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainerSettings":
        unknown = set(d) - set(SECTIONS) - {"name", "description"}
        if unknown:
            raise TrainerError(f"unknown model-config section(s): {sorted(unknown)}; expected {SECTIONS}")
        return cls(
            PreprocessConfig.from_dict(d.get("preprocessing", {})),
            ModelConfig.from_dict(d.get("model", {})),
            TrainConfig.from_dict(d.get("training", {})),
            AugmentConfig.from_dict(d.get("augmentation", {})),
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> "TrainerSettings":
        return cls.from_dict(load_toml(path))

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).to_dict() for name in SECTIONS}
