"""pyserial URL handler ``ramansim://``: a simulated instrument opened like a serial port.

::

    from firmware_bridge import protocol_ramansim
    protocol_ramansim.register()          # adds "firmware_bridge" to serial.protocol_handler_packages
    link = InstrumentLink("ramansim://demo?rate=50&seed=1&bit_flip_rate=0.01&disconnect_after=100")

The part between ``//`` and ``?`` names the instrument. Query options: ``rate``
(spectra/s), ``seed``, ``count``, ``ring_size``, ``heartbeat`` (s),
``counts_dtype``, ``disconnect_after`` (comma-separated spectrum counts),
``disconnect_down_s``, ``stall_s`` and every ``*_rate`` of
:class:`~firmware_bridge.simulator.FaultConfig`. The instrument streams
:func:`~firmware_bridge.simulator.synthetic_spectra` from a pty. It is created
at the first open of a URL and shared by later opens of the same URL, so a
reader that reconnects after a simulated disconnect finds the same instrument.
Stop them with :func:`close_simulators` (also run at interpreter exit).
"""

from __future__ import annotations

import atexit
import threading
import urllib.parse

import serial
from serial.serialposix import Serial as PosixSerial

from .simulator import FaultConfig, SimulatedInstrument, synthetic_spectra

_SIMULATORS: dict[str, SimulatedInstrument] = {}
_LOCK = threading.Lock()
_FLOAT_OPTIONS = {"bit_flip_rate", "drop_byte_rate", "duplicate_byte_rate", "truncate_rate",
                  "garbage_rate", "stall_rate", "byte_error_rate", "stall_s", "disconnect_down_s"}


def register() -> None:
    """Make :func:`serial.serial_for_url` find the ``ramansim://`` handler."""
    if "firmware_bridge" not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append("firmware_bridge")


def simulator_for_url(url: str) -> SimulatedInstrument:
    """The running simulator behind ``url``, started on first use.

    Raises
    ------
    ValueError
        Unknown or malformed query option.
    """
    with _LOCK:
        sim = _SIMULATORS.get(url)
        if sim is None:
            sim = _SIMULATORS[url] = _build(url).start()
        return sim


def close_simulators() -> None:
    """Stop every simulator started through a ``ramansim://`` URL."""
    with _LOCK:
        sims = list(_SIMULATORS.values())
        _SIMULATORS.clear()
    for sim in sims:
        sim.stop()


def _build(url: str) -> SimulatedInstrument:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ramansim":
        raise ValueError(f"not a ramansim:// URL: {url!r}")
    options = {key: values[-1] for key, values in urllib.parse.parse_qs(parts.query, strict_parsing=False).items()}
    fault_kwargs: dict = {"seed": int(options.pop("seed", 0))}
    for key in list(options):
        if key in _FLOAT_OPTIONS:
            fault_kwargs[key] = float(options.pop(key))
    if "disconnect_after" in options:
        fault_kwargs["disconnect_after_frames"] = tuple(int(n) for n in options.pop("disconnect_after").split(","))
    count = options.pop("count", None)
    rate = float(options.pop("rate", 50.0))
    sim_kwargs = dict(
        rate_hz=rate if rate > 0 else None, ring_size=int(options.pop("ring_size", 256)),
        heartbeat_interval_s=float(options.pop("heartbeat", 0.5)),
        counts_dtype=options.pop("counts_dtype", "f4"), instrument_id=parts.netloc or "ramansim",
        record_sent=False)
    if options:
        raise ValueError(f"unknown ramansim:// option(s): {sorted(options)}")
    source = synthetic_spectra(seed=fault_kwargs["seed"], count=None if count is None else int(count))
    return SimulatedInstrument(source, faults=FaultConfig(**fault_kwargs), **sim_kwargs)


class Serial(PosixSerial):
    """pyserial port class for ``ramansim://``: opens the simulator's pty."""

    def open(self) -> None:
        try:
            sim = simulator_for_url(self._port)
        except (ValueError, TypeError) as exc:
            raise serial.SerialException(f"invalid ramansim URL {self._port!r}: {exc}") from exc
        self.portstr = sim.device_path  # PosixSerial.open() opens self.portstr
        try:
            super().open()
        finally:
            self.portstr = self._port


atexit.register(close_simulators)
