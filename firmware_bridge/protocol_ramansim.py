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
    default = FaultConfig()

    def number(key: str) -> float:
        """Float option ``key``; :class:`FaultConfig`'s default when absent."""
        return float(options.pop(key, getattr(default, key)))

    seed = int(options.pop("seed", 0))
    disconnect_after = options.pop("disconnect_after", None)
    faults = FaultConfig(
        bit_flip_rate=number("bit_flip_rate"), drop_byte_rate=number("drop_byte_rate"),
        duplicate_byte_rate=number("duplicate_byte_rate"), truncate_rate=number("truncate_rate"),
        garbage_rate=number("garbage_rate"), stall_rate=number("stall_rate"), stall_s=number("stall_s"),
        byte_error_rate=number("byte_error_rate"), disconnect_down_s=number("disconnect_down_s"),
        disconnect_after_frames=() if disconnect_after is None else tuple(int(n) for n in disconnect_after.split(",")),
        seed=seed)
    count = options.pop("count", None)
    rate = float(options.pop("rate", 50.0))
    ring_size = int(options.pop("ring_size", 256))
    heartbeat_s = float(options.pop("heartbeat", 0.5))
    counts_dtype = options.pop("counts_dtype", "f4")
    if options:
        raise ValueError(f"unknown ramansim:// option(s): {sorted(options)}")
    source = synthetic_spectra(seed=seed, count=None if count is None else int(count))
    return SimulatedInstrument(source, faults=faults, rate_hz=rate if rate > 0 else None, ring_size=ring_size,
                               heartbeat_interval_s=heartbeat_s, counts_dtype=counts_dtype,
                               instrument_id=parts.netloc or "ramansim", record_sent=False)


class Serial(PosixSerial):
    """pyserial port class for ``ramansim://``: opens the simulator's pty."""

    def open(self) -> None:
        """Start (or find) the URL's simulator and open its pty.

        Raises
        ------
        serial.SerialException
            The URL is not set, malformed or has an unknown option; or the pty cannot be opened.
        """
        url = self.port
        if url is None:
            raise serial.SerialException("Port must be configured before it can be used.")
        try:
            sim = simulator_for_url(url)
        except (ValueError, TypeError) as exc:
            raise serial.SerialException(f"invalid ramansim URL {url!r}: {exc}") from exc
        self.portstr = sim.device_path  # PosixSerial.open() opens self.portstr
        try:
            super().open()
        finally:
            self.portstr = url


atexit.register(close_simulators)
