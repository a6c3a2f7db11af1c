"""Pieces shared by every console script: reusable argument groups and the error boundary.

User errors (any :class:`edge.errors.EdgeError`, including the trainer's and exporter's, and
``firmware_bridge.errors.BridgeError``) print one ``error:`` line and exit with status 1, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .errors import ConfigError, EdgeError

__all__ = [
    "CliParser",
    "add_data_args",
    "add_logging_args",
    "config_file",
    "existing_dir",
    "existing_file",
    "load_toml",
    "missing_extra_note",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "probability",
    "require_extra",
    "run_cli",
    "setup_logging",
]


class CliParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors exit with status 1 (the project's convention for every
    user error) after the usage line and one ``prog: error: ...`` line.
    """

    def error(self, message: str) -> NoReturn:
        """Print the usage and one ``error:`` line on stderr, then exit 1."""
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


# -- argparse ``type=`` helpers: range checks at parse time ------------------------------------------------
def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """Argument type (argparse ``type=``): an integer ≥ 1."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """Argument type (argparse ``type=``): an integer ≥ 0."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """Argument type (argparse ``type=``): a finite number > 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    """Argument type (argparse ``type=``): a finite number ≥ 0."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number ≥ 0, got {value:g}")
    return value


def probability(text: str) -> float:
    """Argument type (argparse ``type=``): a probability in [0, 1]."""
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {value:g}")
    return value


def existing_file(text: str) -> str:
    """Argument type (argparse ``type=``): the path of an existing regular file."""
    p = Path(text)
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{text}: {'is a folder, not a file' if p.is_dir() else 'no such file'}")
    return text


def existing_dir(text: str) -> str:
    """Argument type (argparse ``type=``): the path of an existing folder."""
    p = Path(text)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {'is a file, not a folder' if p.exists() else 'no such folder'}")
    return text


def missing_extra_note(module: str, extra: str) -> str:
    """A line for ``--help``: empty when ``module`` is installed, else which extra installs it."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return ""
    return f"NOTE: {module} is not installed here; this command needs pip install 'raman-edge[{extra}]'."


def require_extra(module: str, extra: str, what: str) -> None:
    """Check that an optional dependency is installed, without importing it.

    Parameters
    ----------
    module : str
        Top-level module name (e.g. ``"torch"``).
    extra : str
        The raman-edge extra that installs it (e.g. ``"train"``).
    what : str
        What needs it, for the message (e.g. ``"edge-train"``).

    Raises
    ------
    ConfigError
        If ``module`` cannot be found: names the ``pip install 'raman-edge[extra]'`` command.
    """
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs {module}, which is not installed here: pip install 'raman-edge[{extra}]' "
                          "(an onboard install without extras only serves bundles: edge-daemon, edge-bridge)")


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


def config_file(name: str) -> Path:
    """A shipped configuration file: ``configs/NAME`` of a source checkout, else ``edge/configs/NAME`` of an
    installed wheel (package data; see setup.py).

    Parameters
    ----------
    name : str
        File name, e.g. ``"model_compact.toml"`` or ``"daemon.toml"``.

    Returns
    -------
    pathlib.Path
        The file's path (it may not exist, e.g. in a stripped install; callers check).
    """
    here = Path(__file__).resolve().parent
    checkout = here.parent / "configs" / name
    return checkout if checkout.is_file() else here / "configs" / name


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
    except SystemExit as exc:  # argparse reports usage errors with status 2; every user error here exits 1
        if isinstance(exc.code, str):  # SystemExit("message"): Python would print it; so do we, as one line
            print(f"{prog or Path(sys.argv[0]).name}: error: {exc.code}", file=sys.stderr)
            return 1
        code = 0 if exc.code is None else int(exc.code)
        return 1 if code == 2 else code
    except _user_errors() as exc:
        print(f"{prog or Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
