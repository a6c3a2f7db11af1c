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
    """Everything a model TOML sets: preprocessing, model and training sections."""

    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainerSettings:
        """Build the settings from a parsed model TOML (raises TrainerError on an unknown section)."""
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
    def from_toml(cls, path: str | Path) -> TrainerSettings:
        """Read the settings from a model TOML file."""
        return cls.from_dict(load_toml(path))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a TOML-ready dict, one table per section."""
        return {name: getattr(self, name).to_dict() for name in SECTIONS}


def apply_shift_tolerance(settings: TrainerSettings, tolerance_cm1: float) -> TrainerSettings:
    """The one-knob dial: choose augmentation and pooling for an instrument that drifts by up to
    ``tolerance_cm1`` cm⁻¹ (``edge-train --shift-tolerance-cm1 T``).

    Rule (from the recipe search on the 40 % split, cross-validated on training data only):

    * shift augmentation covers the tolerance, ``max_shift_cm1 = T`` — accuracy at a shift collapses as
      soon as it lies outside the augmented range, whatever the pooling;
    * for T ≥ 15 cm⁻¹ half of the shifts come from a small ±5 cm⁻¹ range, which keeps accuracy on unshifted
      spectra (a mixture);
    * below 15 cm⁻¹ (a calibrated instrument) band-ratio augmentation ``band_ratio = 0.3`` (orientation
      changes a mineral's band ratios): +2.6 / +2.0 / ±0 points with 85 / 170 / 255 training spectra in the
      proxy cross-validation; at T = 40 it cost 4 points at +30 cm⁻¹, so it is off there;
    * pooling (paper §3, Tables 3–4): m = 4 in n = 3 stages (a 64-point, 64 cm⁻¹ pooled cell) up to
      T = 40 cm⁻¹; beyond, a fourth stage (256 cm⁻¹ cells), trading resolution for tolerance as the paper's
      larger m does.

    Raises
    ------
    TrainerError
        For a negative or non-finite tolerance.
    """
    import math

    if not (math.isfinite(tolerance_cm1) and tolerance_cm1 >= 0):
        raise TrainerError(f"shift tolerance must be a finite number ≥ 0 cm⁻¹, got {tolerance_cm1!r}")
    a, m = settings.augmentation, settings.model
    a.max_shift_cm1 = float(tolerance_cm1)
    a.shift_small_cm1 = 5.0 if tolerance_cm1 >= 15 else 0.0
    a.p_small = 0.5
    a.band_ratio = 0.0 if tolerance_cm1 >= 15 else 0.3
    m.pool_size = 4
    m.n_pool = 4 if tolerance_cm1 > 40 else 3
    m.head_positions = 22 if m.n_pool == 3 else 6
    return settings
