"""``edge-daemon``: serve a model bundle on ZeroMQ.

Examples
--------
edge-daemon --bundle bundles/rruff40
edge-daemon --config configs/daemon.toml --input tcp://0.0.0.0:5555
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .cli_common import CliParser, add_logging_args, load_toml, positive_int, run_cli, setup_logging
from .daemon import Daemon, DaemonConfig
from .errors import ConfigError, EdgeError
from .hygiene import InstrumentConfig
from .novelty import DETECTORS as NOVELTY_DETECTORS
from .preprocess import RamanGrid
from .security import SOCKET_ROLES

log = logging.getLogger("edge.daemon")


def add_daemon_args(parser: argparse.ArgumentParser) -> None:
    """Add the daemon's options (each overrides the config file) to ``parser``."""
    g = parser.add_argument_group("daemon (override the config file)")
    g.add_argument("--config", default=None, help="daemon config TOML (see configs/daemon.toml)")
    g.add_argument("--bundle", default=None, help="model bundle folder")
    g.add_argument("--input", default=None, help="ZeroMQ PULL endpoint to bind for spectra ('' for none)")
    g.add_argument("--output", default=None, help="ZeroMQ PUB endpoint to bind for predictions")
    g.add_argument("--ack-input", dest="ack_input", default=None,
                   help="ZeroMQ ROUTER endpoint of the acknowledged input (needs --store; docs/store.md)")
    g.add_argument("--precision", choices=["auto", "int8", "fp32"], default=None)
    g.add_argument("--backend", default=None, help="inference backend (onnxruntime)")
    g.add_argument("--providers", type=_provider_list, default=None, metavar="EP[,EP...]",
                   help="onnxruntime execution providers in order of preference, e.g. "
                        "TensorrtExecutionProvider,CUDAExecutionProvider (default: CPUExecutionProvider)")
    g.add_argument("--allow-cpu-fallback", action=argparse.BooleanOptionalAction, default=None,
                   help="run on the CPU when a requested provider is unavailable (default: refuse to start)")
    g.add_argument("--threads", type=positive_int, default=None)
    g.add_argument("--max-batch", type=positive_int, default=None)
    g.add_argument("--top-k", type=positive_int, default=None, help="labels per prediction (≤ the bundle's classes)")
    g.add_argument("--store", default=None,
                   help="SQLite store file: each spectrum kept with its result, resends recognised (docs/store.md)")
    g.add_argument("--catchup", default=None,
                   help="ZeroMQ endpoint serving catch-up requests from the store (needs --store; docs/store.md)")
    g.add_argument("--serial", default=None, help="pyserial URL of an instrument (firmware_bridge protocol)")
    g.add_argument("--control", default=None, help="ZeroMQ REP endpoint for control requests (load_head, status)")
    g.add_argument("--head", default=None, help="head file to serve instead of the bundle's own head")
    g.add_argument("--curve", type=_curve_list, default=None, metavar="SOCKET[,SOCKET...]",
                   help="sockets served with CurveZMQ: control, input, output ('' for none; a control endpoint "
                        "reachable from the network is always protected); docs/security.md")
    g.add_argument("--curve-secret-key", default=None, metavar="FILE",
                   help="the daemon's secret key file (NAME.key_secret from edge-keys new)")
    g.add_argument("--curve-authorized-dir", default=None, metavar="DIR",
                   help="folder of the public key files (*.key) of the clients allowed in")
    g.add_argument("--insecure-control", action=argparse.BooleanOptionalAction, default=None,
                   help="serve a network-reachable control endpoint WITHOUT CurveZMQ (default: refuse to start)")
    g.add_argument("--instrument-grid", type=_grid_arg, default=None, metavar="START,STEP,N|bundle",
                   help="the instrument's Raman-shift grid (cm⁻¹): the bundle must match it (default: the config's "
                        "[instrument.grid], else 200,1,1392); 'bundle' accepts the bundle's own recorded grid")
    g.add_argument("--novelty", action=argparse.BooleanOptionalAction, default=None,
                   help="novelty scores and drift alarms when the bundle has an autoencoder (default: on)")
    g.add_argument("--novelty-detector", choices=NOVELTY_DETECTORS, default=None,
                   help="which score decides 'novel': the spectral-library match or the autoencoder's reconstruction "
                        "error (default auto: the library when the bundle has one)")
    g.add_argument("--calibration", default=None,
                   help="instrument calibration file from edge-calibrate (overrides [instrument] calibration)")
    g.add_argument("--laser-nm", type=float, default=None,
                   help="laser wavelength, nm (overrides [instrument] laser_nm)")


def _provider_list(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of execution provider names")
    return names


def _curve_list(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(names) - set(SOCKET_ROLES))
    if unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown socket(s) {unknown}; a comma-separated list of "
                                         f"{', '.join(SOCKET_ROLES)}")
    return names


def _grid_arg(text: str) -> RamanGrid | str:
    if text == "bundle":
        return text
    parts = text.split(",")
    try:
        if len(parts) != 3:
            raise ValueError(text)
        return RamanGrid(float(parts[0]), float(parts[1]), int(parts[2]))
    except (ValueError, ConfigError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected START,STEP,N (cm⁻¹, cm⁻¹, points) or 'bundle' ({exc})") from None


def instrument_grid(raw: dict[str, Any], override: RamanGrid | str | None) -> RamanGrid | None:
    """The Raman-shift grid the served bundle must have.

    Parameters
    ----------
    raw : dict
        The daemon config file (``[instrument]`` table: ``grid = {start_cm1, step_cm1, n_points}`` or
        ``grid = "bundle"``).
    override : RamanGrid or "bundle" or None
        ``--instrument-grid``.

    Returns
    -------
    RamanGrid or None
        The grid to check (default: :class:`RamanGrid`'s default, the grid of configs/daemon.toml), or None when
        the user explicitly accepts the bundle's own recorded grid ("bundle").

    Raises
    ------
    ConfigError
        If the config's grid is malformed.
    """
    instrument = raw.get("instrument", {})
    if not isinstance(instrument, dict):
        raise ConfigError(f"[instrument] must be a table, got {instrument!r}")
    grid = override if override is not None else instrument.get("grid", None)
    if grid == "bundle":
        log.warning("instrument grid not checked: serving the bundle's own recorded Raman-shift grid, as asked")
        return None
    if grid is None:
        return RamanGrid()
    if isinstance(grid, RamanGrid):
        return grid
    if not isinstance(grid, dict):
        raise ConfigError(f"instrument.grid must be a table (start_cm1, step_cm1, n_points) or \"bundle\", got {grid!r}")
    return RamanGrid.from_dict(grid)


def config_from_args(args: argparse.Namespace) -> tuple[DaemonConfig, RamanGrid | None]:
    """Merge the config file and command-line options; also return the instrument's expected grid."""
    raw = load_toml(args.config) if args.config else {}
    d = raw.get("daemon", {})
    if not isinstance(d, dict):
        raise ConfigError(f"{args.config}: [daemon] must be a table")
    d = dict(d)
    for key in ("bundle", "input", "ack_input", "output", "precision", "backend", "providers", "allow_cpu_fallback", "threads",
                "max_batch", "top_k", "store", "catchup", "serial", "control", "head", "novelty", "novelty_detector",
                "curve", "curve_secret_key", "curve_authorized_dir", "insecure_control"):
        value = getattr(args, key, None)
        if value is not None:
            d[key] = value
    cfg = DaemonConfig.from_dict(d)
    if not cfg.bundle:
        raise ConfigError("no model bundle: pass --bundle DIR or set daemon.bundle in the config")
    return cfg, instrument_grid(raw, getattr(args, "instrument_grid", None))


def instrument_from_args(args: argparse.Namespace) -> InstrumentConfig:
    """Read the ``[instrument]`` table of the config file, with ``--calibration`` / ``--laser-nm`` applied."""
    raw = load_toml(args.config) if args.config else {}
    d = dict(raw.get("instrument", {}))
    if getattr(args, "calibration", None) is not None:
        d["calibration"] = args.calibration
    if getattr(args, "laser_nm", None) is not None:
        d["laser_nm"] = args.laser_nm
    return InstrumentConfig.from_dict(d)


def daemon_impl(argv: Sequence[str] | None = None) -> int:
    """Parse the ``edge-daemon`` command line, build the daemon and serve until stopped; returns the exit code."""
    p = CliParser(prog="edge-daemon",
                                description="Classify Raman spectra from ZeroMQ/serial and publish predictions.")
    add_daemon_args(p)
    add_logging_args(p)
    args = p.parse_args(argv)
    setup_logging(args)
    cfg, grid = config_from_args(args)
    daemon = Daemon(cfg, expect_grid=grid, instrument=instrument_from_args(args))
    inputs = _start_serial(daemon) if cfg.serial else []

    def shutdown(*_: object) -> None:
        requested_at = time.monotonic()  # drain_timeout_s counts from the signal, serial stop included
        for stop_input in inputs:  # inputs first: what they delivered, and their loss reports, are drained
            try:
                stop_input()
            except EdgeError as exc:
                log.error("%s", exc)
        daemon.stop(requested_at)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, shutdown)
    try:
        counters = daemon.run()
    finally:
        for stop in inputs:
            stop()
    print(json.dumps({"stopped": counters}), flush=True)
    return 0


def _start_serial(daemon: Daemon) -> list[Callable[[], None]]:
    from .serial_input import start_serial_input

    return [start_serial_input(daemon)]


def daemon_main(argv: Sequence[str] | None = None) -> int:
    """Console script ``edge-daemon``: user errors print one ``error:`` line and exit 1."""
    return run_cli(daemon_impl, argv, "edge-daemon")


if __name__ == "__main__":
    sys.exit(daemon_main())
