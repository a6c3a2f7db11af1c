"""Type checks of configuration tables against the dataclass that reads them.

A TOML value of the wrong type (``max_batch = "lots"``) must end in one :class:`~edge.errors.ConfigError`
naming the key, not in a ``TypeError`` deep inside the daemon.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

__all__ = ["check_field_types"]

# Field annotations as written (``from __future__ import annotations`` keeps them as strings).
_CHECKS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def check_field_types(cls: type, values: Mapping[str, Any], section: str) -> None:
    """Refuse values whose type does not fit the dataclass field they set.

    Parameters
    ----------
    cls : dataclass type
        The settings class (its field annotations ``int``, ``float``, ``str``, ``bool``, ``list[...]`` and
        ``dict[...]`` are checked; other annotations are left to the class).
    values : mapping
        The configuration table (e.g. ``[daemon]`` of a TOML file merged with command-line options).
    section : str
        Table name for messages (e.g. ``"daemon"``).

    Raises
    ------
    ConfigError
        For the first value of the wrong type (booleans are not accepted as numbers) or a non-finite float.
    """
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for key, value in values.items():
        kind = fields.get(key, "")
        base = kind.split("[", 1)[0].strip()
        if base in ("list", "dict"):
            ok = isinstance(value, list if base == "list" else dict)
        elif base in _CHECKS:
            ok = isinstance(value, _CHECKS[base]) and (base == "bool" or not isinstance(value, bool))
            if ok and base == "float" and not math.isfinite(value):
                raise ConfigError(f"{section}.{key} must be a finite number, got {value!r}")
        else:
            continue
        if not ok:
            want = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
                    "list": "a list", "dict": "a table"}[base]
            raise ConfigError(f"{section}.{key} must be {want}, got {value!r}")
