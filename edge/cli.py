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
from collections.abc import Callable, Sequence

from .cli_common import add_logging_args, load_toml, run_cli, setup_logging
from .daemon import Daemon, DaemonConfig
from .errors import ConfigError, EdgeError
from .hygiene import InstrumentConfig
from .novelty import DETECTORS as NOVELTY_DETECTORS
from .preprocess import RamanGrid

log = logging.getLogger("edge.daemon")


def add_daemon_args(parser: argparse.ArgumentParser) -> None:
    """Add the daemon's options (each overrides the config file) to ``parser``."""
    g = parser.add_argument_group("daemon (override the config file)")
    g.add_argument("--config", default=None, help="daemon config TOML (see configs/daemon.toml)")
    g.add_argument("--bundle", default=None, help="model bundle folder")
    g.add_argument("--input", default=None, help="ZeroMQ PULL endpoint to bind for spectra ('' for none)")
    g.add_argument("--output", default=None, help="ZeroMQ PUB endpoint to bind for predictions")
    g.add_argument("--precision", choices=["auto", "int8", "fp32"], default=None)
    g.add_argument("--backend", default=None, help="inference backend (onnxruntime)")
    g.add_argument("--threads", type=int, default=None)
    g.add_argument("--max-batch", type=int, default=None)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--journal", default=None, help="append-only journal file")
    g.add_argument("--serial", default=None, help="pyserial URL of an instrument (firmware_bridge protocol)")
    g.add_argument("--control", default=None, help="ZeroMQ REP endpoint for control requests (load_head, status)")
    g.add_argument("--head", default=None, help="head file to serve instead of the bundle's own head")
    g.add_argument("--novelty", action=argparse.BooleanOptionalAction, default=None,
                   help="novelty scores and drift alarms when the bundle has an autoencoder (default: on)")
    g.add_argument("--novelty-detector", choices=NOVELTY_DETECTORS, default=None,
                   help="which score decides 'novel': the spectral-library match or the autoencoder's reconstruction "
                        "error (default auto: the library when the bundle has one)")
    g.add_argument("--calibration", default=None,
                   help="instrument calibration file from edge-calibrate (overrides [instrument] calibration)")
    g.add_argument("--laser-nm", type=float, default=None,
                   help="laser wavelength, nm (overrides [instrument] laser_nm)")


def config_from_args(args: argparse.Namespace) -> tuple[DaemonConfig, RamanGrid | None]:
    """Merge the config file and command-line options; also return the instrument's expected grid."""
    raw = load_toml(args.config) if args.config else {}
    d = dict(raw.get("daemon", {}))
    for key in ("bundle", "input", "output", "precision", "backend", "threads", "max_batch", "top_k", "journal", "serial",
                "control", "head", "novelty", "novelty_detector"):
        value = getattr(args, key, None)
        if value is not None:
            d[key] = value
    cfg = DaemonConfig.from_dict(d)
    if not cfg.bundle:
        raise ConfigError("no model bundle: pass --bundle DIR or set daemon.bundle in the config")
    grid = raw.get("instrument", {}).get("grid")
    return cfg, (RamanGrid.from_dict(grid) if grid else None)


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
    p = argparse.ArgumentParser(prog="edge-daemon",
                                description="Classify Raman spectra from ZeroMQ/serial and publish predictions.")
    add_daemon_args(p)
    add_logging_args(p)
    args = p.parse_args(argv)
    setup_logging(args)
    cfg, grid = config_from_args(args)
    daemon = Daemon(cfg, expect_grid=grid, instrument=instrument_from_args(args))
    inputs = _start_serial(daemon) if cfg.serial else []

    def shutdown(*_: object) -> None:
        for stop_input in inputs:  # inputs first: what they delivered, and their loss reports, are drained
            try:
                stop_input()
            except EdgeError as exc:
                log.error("%s", exc)
        daemon.stop()

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
