"""Pieces shared by every console script: reusable argument groups and the error boundary.

User errors (any :class:`edge.errors.EdgeError`, including the trainer's and exporter's, and
``firmware_bridge.errors.BridgeError``) print one ``error:`` line and exit with status 1, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, EdgeError

__all__ = ["add_data_args", "add_logging_args", "load_toml", "run_cli", "setup_logging"]


def add_data_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """``--data-dir``: the shared data folder (else $RAMAN_EDGE_DATA, else ../shared/data)."""
    g = parser.add_argument_group("data")
    g.add_argument("--data-dir", default=None, help="data folder (default: $RAMAN_EDGE_DATA or ../shared/data)")
    return g


def add_logging_args(parser: argparse.ArgumentParser) -> None:
    """Add ``-v/--verbose`` (repeatable) and ``-q/--quiet`` to ``parser``."""
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def setup_logging(args: argparse.Namespace) -> None:
    """Configure the root logger from the ``--verbose``/``--quiet`` options in ``args``."""
    level = logging.WARNING if getattr(args, "quiet", False) else (
        logging.DEBUG if getattr(args, "verbose", 0) > 0 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file.

    Raises
    ------
    ConfigError
        If the file is missing or not valid TOML.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: config file not found") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: invalid config: {exc}") from exc


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [EdgeError]
    try:
        from firmware_bridge.errors import BridgeError

        errors.append(BridgeError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, prog: str = "") -> int:
    """Run a CLI entry point; user errors exit 1 with one line, Ctrl-C exits 130."""
    try:
        return int(main(argv) or 0)
    except _user_errors() as exc:
        print(f"{prog or Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
