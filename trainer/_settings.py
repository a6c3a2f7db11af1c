"""One ``to_dict``/``from_dict`` for every settings dataclass of the trainer.

Unknown keys are an error, never ignored: a misspelt setting in a config file must not silently train a
different model. Lists stay lists (TOML and JSON give lists; tuples would not round-trip through JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

from .errors import TrainerError

T = TypeVar("T", bound="SettingsMixin")


class SettingsMixin:
    """Mixin for settings dataclasses; ``_kind`` names them in error messages (e.g. ``"training"``)."""

    _kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], d: Mapping[str, Any]) -> T:
        """Build from a mapping.

        Raises
        ------
        TrainerError
            If the mapping has keys that are not settings of this class.
        """
        unknown = set(d) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise TrainerError(f"unknown {cls._kind} setting(s): {sorted(unknown)}")
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()})
