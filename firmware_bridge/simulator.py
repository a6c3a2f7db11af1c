"""A simulated spectrometer speaking the instrument side of the protocol.

:class:`SimulatedInstrument` serves a pseudo-terminal (``os.openpty``, raw mode)
or a TCP socket on 127.0.0.1 from a background thread. It streams SPECTRUM
frames from a caller-supplied source at a fixed rate, sends STATUS heartbeats,
keeps the last ``ring_size`` spectra for RESEND_REQUEST, and damages its output
on purpose (:class:`FaultConfig`), drawing every fault from a seeded
:class:`numpy.random.Generator`.

The pty is published through a symlink (``device_path``) that is re-pointed
when a simulated disconnect closes and reopens the pty, because a new pty gets
a new ``/dev/pts/N``; readers open the symlink and find the new pty after
reconnecting.

This module never imports ``edge``: the spectrum source is injected, and
:func:`synthetic_spectra` provides a NumPy-only one for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import errno
import json
import math
import os
import queue
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any, NoReturn, cast

import numpy as np
import numpy.typing as npt

from .errors import BridgeError, ProtocolError
from .framing import FrameDecoder, encode_frame
from .protocol import (
    COUNTS_DTYPES,
    Ack,
    Hello,
    Nack,
    ResendRequest,
    ResendUnavailable,
    SpectrumMessage,
    StatusMessage,
    decode_frame,
    encode_message,
    encode_payload,
)
from .wire import FLAG_RETRANSMIT, RETRYABLE_NACK_REASONS, SEQ_MASK, MessageType

#: ``(raman_shift_cm1 shape (N,), counts shape (N,), metadata)`` -- what a source yields.
SpectrumItem = tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.floating[Any]], dict[str, Any]]


# --------------------------------------------------------------------------- sources
def synthetic_spectra(seed: int = 0, count: int | None = None, *, n_points: int = 1392,
                      start_cm1: float = 200.0, step_cm1: float = 1.0,
                      laser_wavelength_nm: float = 785.0,
                      integration_time_ms: float = 100.0) -> Iterator[SpectrumItem]:
    """Random Raman-like spectra: Gaussian peaks on a sloped baseline with noise.

    Parameters
    ----------
    seed : int, optional
        Seed of the :class:`numpy.random.Generator`.
    count : int or None, optional
        Number of spectra; None for an endless stream.
    n_points : int, optional
        Points N per spectrum (default 1392: 200..1591 cm^-1 at 1 cm^-1).
    start_cm1, step_cm1 : float, optional
        First Raman shift and spacing of the axis, in cm^-1.
    laser_wavelength_nm, integration_time_ms : float, optional
        Metadata attached to every spectrum.

    Yields
    ------
    raman_shift_cm1 : np.ndarray, shape (N,), float32
    counts : np.ndarray, shape (N,), float32
        Non-negative counts, maximum around 1000-20000.
    metadata : dict
        ``integration_time_ms``, ``laser_wavelength_nm``, ``acquisition_time_ns``, ``sample_label``.
    """
    rng = np.random.default_rng(seed)
    axis = (start_cm1 + step_cm1 * np.arange(n_points)).astype(np.float32)
    x = axis.astype(np.float64)
    index = 0
    while count is None or index < count:
        n_peaks = int(rng.integers(3, 9))
        centres = rng.uniform(x[0], x[-1], n_peaks)
        widths = rng.uniform(3.0, 25.0, n_peaks)
        heights = rng.uniform(500.0, 20000.0, n_peaks)
        signal_ = (heights * np.exp(-0.5 * ((x[:, None] - centres) / widths) ** 2)).sum(axis=1)
        baseline = rng.uniform(50.0, 500.0) + rng.uniform(-0.1, 0.1) * (x - x[0])
        counts = np.clip(signal_ + baseline + rng.normal(0.0, 10.0, n_points), 0.0, None)
        yield axis.copy(), counts.astype(np.float32), {
            "integration_time_ms": integration_time_ms,
            "laser_wavelength_nm": laser_wavelength_nm,
            "acquisition_time_ns": time.time_ns(),
            "sample_label": f"synthetic-{seed}-{index}",
        }
        index += 1


# --------------------------------------------------------------------------- faults
@dataclasses.dataclass(frozen=True)
class FaultConfig:
    """Damage applied to the instrument's outgoing byte stream.

    Rates named ``*_rate`` are probabilities **per frame** (a 1 % bit-flip rate
    corrupts about one frame in a hundred), except ``byte_error_rate``, which is
    per byte. Faults hit retransmissions too.

    Attributes
    ----------
    bit_flip_rate : float
        Frame gets 1-3 single-bit flips.
    drop_byte_rate : float
        Frame loses 1-3 bytes.
    duplicate_byte_rate : float
        Frame gets 1-3 bytes repeated.
    truncate_rate : float
        Frame is cut short (its tail and delimiter never sent).
    garbage_rate : float
        A burst of 1..``garbage_max_bytes`` random bytes precedes the frame.
    stall_rate : float
        Transmission pauses for ``stall_s`` seconds before the frame.
    byte_error_rate : float
        Independent probability per byte of one flipped bit.
    disconnect_after_frames : tuple of int
        Disconnect after the n-th spectrum is generated (1-based), e.g. ``(40, 90)``.
    disconnect_down_s : float
        How long the line stays down after a disconnect.
    seed : int or None
        Seed of the fault generator (None: fresh entropy).
    """

    bit_flip_rate: float = 0.0
    drop_byte_rate: float = 0.0
    duplicate_byte_rate: float = 0.0
    truncate_rate: float = 0.0
    garbage_rate: float = 0.0
    garbage_max_bytes: int = 64
    stall_rate: float = 0.0
    stall_s: float = 0.1
    byte_error_rate: float = 0.0
    disconnect_after_frames: tuple[int, ...] = ()
    disconnect_down_s: float = 0.2
    seed: int | None = 0


class FaultInjector:
    """Applies a :class:`FaultConfig` to frames; counts what it did.

    Parameters
    ----------
    config : FaultConfig
    rng : numpy.random.Generator, optional
        Defaults to ``default_rng(config.seed)``.
    """

    def __init__(self, config: FaultConfig, rng: np.random.Generator | None = None) -> None:
        self.config = config
        self.rng = rng if rng is not None else np.random.default_rng(config.seed)
        self.counters: collections.Counter[str] = collections.Counter()

    def _hit(self, rate: float, name: str) -> bool:
        if rate > 0.0 and self.rng.random() < rate:
            self.counters[name] += 1
            return True
        return False

    def _positions(self, size: int) -> npt.NDArray[np.int64]:
        return self.rng.integers(0, size, int(self.rng.integers(1, 4)))

    def apply(self, wire: bytes) -> tuple[bytes, bool]:
        """Damage one encoded frame (delimiter included).

        Parameters
        ----------
        wire : bytes
            COBS-encoded frame with its trailing 0x00.

        Returns
        -------
        damaged : bytes
            Bytes to transmit instead (may include a leading garbage burst).
        stall : bool
            True if transmission should pause for ``config.stall_s`` first.
        """
        cfg, rng = self.config, self.rng
        buf = np.frombuffer(wire, dtype=np.uint8).copy()
        if self._hit(cfg.truncate_rate, "truncated") and buf.size > 1:
            buf = buf[:int(rng.integers(1, buf.size))]
        if self._hit(cfg.bit_flip_rate, "bit_flips"):
            pos = self._positions(buf.size)
            buf[pos] ^= (1 << rng.integers(0, 8, pos.size)).astype(np.uint8)
        if cfg.byte_error_rate > 0.0:
            pos = np.flatnonzero(rng.random(buf.size) < cfg.byte_error_rate)
            self.counters["byte_errors"] += pos.size
            buf[pos] ^= (1 << rng.integers(0, 8, pos.size)).astype(np.uint8)
        if self._hit(cfg.drop_byte_rate, "dropped_bytes"):
            buf = np.delete(buf, self._positions(buf.size))
        if self._hit(cfg.duplicate_byte_rate, "duplicated_bytes"):
            pos = self._positions(buf.size)
            buf = np.insert(buf, pos, buf[pos])
        out = buf.tobytes()
        if self._hit(cfg.garbage_rate, "garbage_bursts"):
            n = int(rng.integers(1, cfg.garbage_max_bytes + 1))
            out = rng.integers(0, 256, n, dtype=np.uint8).tobytes() + out
        return out, self._hit(cfg.stall_rate, "stalls")


# --------------------------------------------------------------------------- endpoints
class _PtyEndpoint:
    """Master side of a raw pty, published via a stable symlink."""

    accept_fd = None

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="ramansim-")
        self.device_path = os.path.join(self._dir, "tty")
        self.url = self.device_path
        self.fd: int | None = None
        self._slave: int | None = None
        self.pts_path: str | None = None
        self.reopen()

    def reopen(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.fd, self._slave, self.pts_path = master, slave, os.ttyname(slave)
        tmp = self.device_path + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(self.pts_path, tmp)
        os.replace(tmp, self.device_path)

    def accept(self) -> None:  # a pty has no connection to accept
        pass

    def read(self, n: int) -> bytes:
        if self.fd is None:  # line down
            return b""
        try:
            return os.read(self.fd, n)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # no reader on the slave side
                return b""
            raise

    def write(self, data: memoryview) -> int:
        if self.fd is None:  # line down: the frame is lost
            return len(data)
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0

    def disconnect(self) -> None:
        # Remove the symlink *before* closing: once closed, /dev/pts/N may be
        # reused by another process's pty, and a reconnecting reader must not
        # follow a stale link to it.
        if os.path.lexists(self.device_path):
            os.unlink(self.device_path)
        for fd in (self.fd, self._slave):
            if fd is not None:
                os.close(fd)
        self.fd = self._slave = None

    def close(self) -> None:
        self.disconnect()
        shutil.rmtree(self._dir, ignore_errors=True)


class _TcpEndpoint:
    """TCP server on 127.0.0.1 serving one host connection at a time."""

    def __init__(self, port: int = 0) -> None:
        self._server: socket.socket | None = None
        self._client: socket.socket | None = None
        self.port = port
        self.device_path: str | None = None
        self.reopen()
        self.url = f"socket://127.0.0.1:{self.port}"

    @property
    def fd(self) -> int | None:
        return None if self._client is None else self._client.fileno()

    @property
    def accept_fd(self) -> int | None:
        return self._server.fileno() if self._server is not None and self._client is None else None

    def reopen(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(1)
        server.setblocking(False)
        self._server, self.port = server, server.getsockname()[1]

    def accept(self) -> None:
        if self._server is None:  # line down
            return
        try:
            client, _ = self._server.accept()
        except BlockingIOError:
            return
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = client

    def read(self, n: int) -> bytes:
        if self._client is None:  # no host connected
            return b""
        try:
            data = self._client.recv(n)
        except BlockingIOError:
            return b""
        except OSError:  # host reset the connection (e.g. killed): wait for the next one
            self._drop_client()
            return b""
        if not data:  # host closed its end; wait for the next one
            self._drop_client()
        return data

    def write(self, data: memoryview) -> int:
        if self._client is None:  # no host connected: the frame is lost
            return len(data)
        try:
            return self._client.send(data)
        except BlockingIOError:
            return 0
        except OSError:  # host reset the connection: the rest of this frame is lost
            self._drop_client()
            return len(data)

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._client.close()
            self._client = None

    def disconnect(self) -> None:
        self._drop_client()
        if self._server is not None:
            self._server.close()
            self._server = None

    def close(self) -> None:
        self.disconnect()


# --------------------------------------------------------------------------- instrument
class SimulatedInstrument:
    """Virtual spectrometer on a pty or a TCP socket, run in a background thread.

    Parameters
    ----------
    source : iterable of (raman_shift_cm1, counts, metadata)
        Spectra to send; ``raman_shift_cm1`` and ``counts`` shape (N,). Metadata
        keys used: ``integration_time_ms`` (default 100), ``laser_wavelength_nm``
        (785), ``acquisition_time_ns`` (now), ``sample_label``, ``calibration``
        (polynomial coefficients: sent instead of the axis).
    transport : {"pty", "tcp"}, optional
    tcp_port : int, optional
        Port on 127.0.0.1 for ``transport="tcp"`` (0: any free port).
    rate_hz : float or None, optional
        Spectra per second; None sends as fast as the reader takes them.
    ring_size : int, optional
        Spectra kept for retransmission.
    faults : FaultConfig, optional
    heartbeat_interval_s : float, optional
        Period of STATUS frames.
    instrument_id : str, optional
    session_id : int, optional
        Boot session (default: drawn from the fault generator).
    first_seq : int, optional
        Sequence number of the first spectrum (to exercise u32 wrap-around).
    wait_for_host : bool, optional
        Start streaming only after the first HELLO from the host.
    leading_delimiter : bool, optional
        Send 0x00 before every frame, so damage never spreads to the next frame.
    counts_dtype : {"f4", "u2", "u4"}, optional
        Wire dtype of counts (integer dtypes round the counts).
    record_sent : bool, optional
        Keep every generated spectrum in :meth:`sent_spectra` (for tests).
    max_queued_bytes : int, optional
        Output queue limit; new spectra beyond it are not transmitted (they stay
        in the ring buffer, like frames lost on the line).
    keep_unacked : bool, optional
        Custody mode (PROTOCOL.md §8): keep every spectrum until the host ACKs it
        and send the unacknowledged ones again (RETRANSMIT flag) after every HELLO,
        i.e. after the host (re)connects or restarts, and after
        ``unacked_resend_s`` without an ACK. For a host that stores before it ACKs.
    max_unacked : int, optional
        Most spectra kept unacknowledged; beyond it the oldest is dropped and
        counted ``unacked_overflow`` (the instrument's memory is finite).
    unacked_resend_s : float or None, optional
        Send an unacknowledged spectrum again once it and the host have both been
        silent this many seconds (no ACK at all: a host still ACKing is working
        through its backlog); None: only after a HELLO.

    Attributes
    ----------
    url : str
        What to pass to :func:`serial.serial_for_url` / ``InstrumentLink``.
    device_path : str or None
        Stable path of the pty (a symlink to the current ``/dev/pts/N``).
    finished : threading.Event
        Set when the source is exhausted (heartbeats and resends continue).
    streaming : threading.Event
        Set when spectra start flowing.

    Raises
    ------
    ValueError
        If ``transport`` is unknown, ``rate_hz`` is not positive or ``counts_dtype``
        is not a wire dtype (``COUNTS_DTYPES``).
    """

    def __init__(self, source: Iterable[SpectrumItem], *, transport: str = "pty", tcp_port: int = 0,
                 rate_hz: float | None = 50.0, ring_size: int = 256, faults: FaultConfig = FaultConfig(),
                 heartbeat_interval_s: float = 0.5, instrument_id: str = "sim-0",
                 session_id: int | None = None, first_seq: int = 0, wait_for_host: bool = True,
                 leading_delimiter: bool = True, counts_dtype: str = "f4", record_sent: bool = True,
                 max_queued_bytes: int = 1 << 20, keep_unacked: bool = False, max_unacked: int = 4096,
                 unacked_resend_s: float | None = None) -> None:
        if transport not in ("pty", "tcp"):
            raise ValueError(f"transport must be 'pty' or 'tcp', not {transport!r}")
        if rate_hz is not None and rate_hz <= 0:
            raise ValueError("rate_hz must be > 0 or None")
        if counts_dtype not in COUNTS_DTYPES:  # else the thread dies at its first spectrum
            raise ValueError(f"counts_dtype must be one of {sorted(COUNTS_DTYPES)}, not {counts_dtype!r}")
        if max_unacked < 1 or (unacked_resend_s is not None and unacked_resend_s <= 0):
            raise ValueError("max_unacked must be >= 1 and unacked_resend_s > 0 or None")
        self._source = iter(source)
        self.rate_hz = rate_hz
        self.ring_size = ring_size
        self.faults = FaultInjector(faults)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.instrument_id = instrument_id
        self.session_id = (int(self.faults.rng.integers(1, SEQ_MASK)) if session_id is None
                           else session_id)
        self.wait_for_host = wait_for_host
        self.leading_delimiter = leading_delimiter
        self.counts_dtype = counts_dtype
        self.record_sent = record_sent
        self.max_queued_bytes = max_queued_bytes
        self.keep_unacked = keep_unacked
        self.max_unacked = max_unacked
        self.unacked_resend_s = unacked_resend_s
        # custody mode: seq -> (payload, monotonic time last queued), oldest send first
        self._unacked: collections.OrderedDict[int, tuple[bytes, float]] = collections.OrderedDict()
        self._resend_unacked_before = -math.inf  # unacked spectra last sent before this are due (set by HELLO)
        self._last_ack_at = -math.inf  # monotonic time of the last ACK received
        self._endpoint = _PtyEndpoint() if transport == "pty" else _TcpEndpoint(tcp_port)
        self.url = self._endpoint.url
        self.device_path = self._endpoint.device_path
        self.finished = threading.Event()
        self.streaming = threading.Event()
        self._stop = threading.Event()
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._next_seq = first_seq & SEQ_MASK
        self._ring: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._sent: dict[int, SpectrumMessage] = {}
        self._sent_lock = threading.Lock()
        self._out: collections.deque[bytes] = collections.deque()
        self._current: memoryview | None = None
        self._queued_bytes = 0
        self._decoder = FrameDecoder()
        self._boot = time.monotonic()
        self._down_until: float | None = None
        self._tx_paused_until = 0.0
        self._next_spectrum_at = 0.0
        self._next_heartbeat_at = 0.0
        self._generated = 0
        self.counters: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ control
    def start(self) -> SimulatedInstrument:
        """Start the background thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._thread = threading.Thread(target=self._run, name="SimulatedInstrument", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and release the pty/sockets (idempotent).

        Raises
        ------
        BridgeError
            If the simulator thread died with an error.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise BridgeError("simulator thread did not stop")
        self._endpoint.close()
        if self._error is not None:
            error, self._error = self._error, None
            raise BridgeError(f"simulator thread failed: {error!r}") from error

    def __enter__(self) -> SimulatedInstrument:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def disconnect(self, down_s: float | None = None) -> None:
        """Drop the line now (pty closed / client socket closed) for ``down_s`` seconds."""
        self._commands.put(lambda: self._disconnect(time.monotonic(), down_s))

    def stall(self, duration_s: float) -> None:
        """Pause transmission for ``duration_s`` seconds."""
        self._commands.put(lambda: self._pause(time.monotonic() + duration_s))

    def send_garbage(self, n_bytes: int) -> None:
        """Transmit ``n_bytes`` random bytes (no delimiter) ahead of the queue."""
        self._commands.put(lambda: self._enqueue(
            self.faults.rng.integers(1, 256, n_bytes, dtype=np.uint8).tobytes(), priority=True))

    def sent_spectra(self) -> dict[int, SpectrumMessage]:
        """Copy of ``{seq: message}`` for every spectrum generated so far."""
        with self._sent_lock:
            return dict(self._sent)

    @property
    def unacked(self) -> int:
        """Spectra kept because the host has not acknowledged them (custody mode)."""
        return len(self._unacked)

    @property
    def next_seq(self) -> int:
        """Sequence number the next spectrum will get."""
        return self._next_seq

    def stats(self) -> dict[str, int]:
        """Simulator and fault counters as one dict."""
        merged = dict(self.counters)  # dict() of a Counter is atomic under the GIL
        merged.update({f"fault_{k}": v for k, v in dict(self.faults.counters).items()})
        return merged

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        try:
            if not self.wait_for_host:
                self._start_streaming(time.monotonic())
            while not self._stop.is_set():
                self._step()
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def _step(self) -> None:
        now = time.monotonic()
        while not self._commands.empty():
            self._commands.get_nowait()()
        if self._down_until is not None and now >= self._down_until:
            self._down_until = None
            self._endpoint.reopen()
            self.counters["reconnects"] += 1
        if self.streaming.is_set():
            self._produce(now)  # acquisition goes on while the line is down
        if self._down_until is not None:
            self._stop.wait(min(0.01, self._down_until - now))
            return
        endpoint = self._endpoint
        fd = endpoint.fd
        rlist = [f for f in (fd, endpoint.accept_fd) if f is not None]
        wlist = [fd] if fd is not None and self._has_output() and now >= self._tx_paused_until else []
        readable, writable, _ = select.select(rlist, wlist, [], self._timeout(now))
        if endpoint.accept_fd is not None and endpoint.accept_fd in readable:
            endpoint.accept()
        elif endpoint.fd is not None and endpoint.fd in readable:
            self._receive(endpoint.read(65536))
        if writable and endpoint.fd is not None:
            self._transmit()

    def _timeout(self, now: float) -> float:
        events = [now + 0.05]
        if self.streaming.is_set():
            events.append(self._next_heartbeat_at)
            if self.rate_hz is not None and not self.finished.is_set():
                events.append(self._next_spectrum_at)
        if self._has_output() and self._tx_paused_until > now:
            events.append(self._tx_paused_until)
        return max(0.0, min(events) - now)

    def _start_streaming(self, now: float) -> None:
        self.streaming.set()
        self._next_spectrum_at = now
        self._next_heartbeat_at = now

    def _produce(self, now: float) -> None:
        if not self.finished.is_set():
            if self.rate_hz is None:
                while self._queued_bytes < 65536 and not self.finished.is_set() and self._down_until is None:
                    # unthrottled: generate as fast as the reader drains the queue
                    self._emit_spectrum(now)
            else:
                while now >= self._next_spectrum_at and not self.finished.is_set():
                    self._emit_spectrum(now)
                    self._next_spectrum_at = max(self._next_spectrum_at + 1.0 / self.rate_hz, now - 1.0)
        if now >= self._next_heartbeat_at:
            self._send_status()
            self._next_heartbeat_at = now + self.heartbeat_interval_s
        if self._unacked and self._down_until is None and self._endpoint.fd is not None:  # a host is connected
            self._resend_unacked(now)

    def _resend_unacked(self, now: float) -> None:
        """Custody mode: queue the unacknowledged spectra that are due again, oldest first, within half the
        output queue (the rest stay due for the next step).
        """
        timeout = self.unacked_resend_s
        # the ACK timeout counts silence: while ACKs keep coming the host is working through its backlog, and
        # sending that backlog again would only double it
        timed_out = timeout is not None and now - self._last_ack_at >= timeout
        while self._unacked and self._queued_bytes < self.max_queued_bytes // 2:
            seq, (payload, sent) = next(iter(self._unacked.items()))
            if not (sent < self._resend_unacked_before or (timed_out and now - sent >= cast(float, timeout))):
                return  # ordered by last send: the rest are not due either
            self._unacked.move_to_end(seq)
            self._unacked[seq] = (payload, now)
            self.counters["unacked_resent"] += 1
            self._send_faulty(encode_frame(MessageType.SPECTRUM, seq, payload, flags=FLAG_RETRANSMIT), now)

    def _emit_spectrum(self, now: float) -> None:
        try:
            axis, counts, meta = next(self._source)
        except StopIteration:
            self.finished.set()
            self._send_status()
            return
        seq = self._next_seq
        self._next_seq = (seq + 1) & SEQ_MASK
        calibration = meta.get("calibration")
        counts = np.asarray(counts, dtype=np.float32)
        if self.counts_dtype != "f4":  # an integer ADC: round and saturate
            top = np.iinfo(COUNTS_DTYPES[self.counts_dtype]).max
            high = np.float32(top)
            if int(high) > top:  # 2**32 - 1 is not a float32: use the largest float32 below it
                high = np.nextafter(high, np.float32(0))
            counts = np.clip(np.round(counts), 0, high)
        msg = SpectrumMessage(
            instrument_id=self.instrument_id, session_id=self.session_id,
            acquisition_time_ns=int(meta.get("acquisition_time_ns", time.time_ns())),
            integration_time_ms=float(meta.get("integration_time_ms", 100.0)),
            laser_wavelength_nm=float(meta.get("laser_wavelength_nm", 785.0)),
            raman_shift_cm1=None if calibration is not None else np.asarray(axis, dtype=np.float32), counts=counts,
            sample_label=meta.get("sample_label"), calibration=calibration,
            counts_dtype=self.counts_dtype, seq=seq)
        payload = encode_payload(msg)
        self._ring[seq] = payload
        while len(self._ring) > self.ring_size:
            self._ring.popitem(last=False)
        if self.keep_unacked:
            self._unacked[seq] = (payload, now)
            while len(self._unacked) > self.max_unacked:
                self._unacked.popitem(last=False)
                self.counters["unacked_overflow"] += 1
        if self.record_sent:
            with self._sent_lock:
                self._sent[seq] = msg
        self._generated += 1
        self.counters["spectra_generated"] += 1
        self._send_faulty(encode_frame(MessageType.SPECTRUM, seq, payload), now)
        if self._generated in self.faults.config.disconnect_after_frames:
            self._disconnect(now, None)

    def _send_status(self) -> None:
        status = StatusMessage(
            instrument_id=self.instrument_id, session_id=self.session_id,
            uptime_ms=int((time.monotonic() - self._boot) * 1000),
            state="idle" if self.finished.is_set() else "acquiring",
            detector_temperature_c=-60.0, laser_power_mw=100.0,
            ring_oldest_seq=next(iter(self._ring), None), seq=self._next_seq)
        self.counters["statuses_sent"] += 1
        self._send_faulty(encode_message(status), time.monotonic())

    def _retransmit(self, seq: int) -> None:
        payload = self._ring.get(seq)
        if payload is None and seq in self._unacked:  # custody mode: kept beyond the ring until ACKed
            payload = self._unacked[seq][0]
        if payload is None:
            self.counters["resend_unavailable_sent"] += 1
            reply = encode_message(ResendUnavailable(seq, next(iter(self._ring), None)))
        else:
            self.counters["retransmissions"] += 1
            reply = encode_frame(MessageType.SPECTRUM, seq, payload, flags=FLAG_RETRANSMIT)
        self._send_faulty(reply, time.monotonic(), priority=True)

    # ------------------------------------------------------------------ host -> instrument
    def _receive(self, data: bytes) -> None:
        for frame in self._decoder.feed(data):
            try:
                msg = decode_frame(frame)
            except ProtocolError as exc:
                self.counters["host_frames_invalid"] += 1
                self._enqueue(encode_message(Nack(frame.seq, exc.nack_reason, str(exc))), priority=True)
                continue
            if isinstance(msg, Hello):
                self.counters["hellos_received"] += 1
                now = time.monotonic()
                if not self.streaming.is_set():
                    self._start_streaming(now)
                else:
                    self._send_status()
                self._resend_unacked_before = now  # a host (re)connected: what it did not ACK is sent again
            elif isinstance(msg, ResendRequest):
                self.counters["resend_requests_received"] += 1
                self._retransmit(msg.seq)
            elif isinstance(msg, Ack):
                self.counters["acks_received"] += 1
                self._last_ack_at = time.monotonic()
                if self._unacked.pop(msg.seq, None) is not None:
                    self.counters["unacked_released"] += 1
            elif isinstance(msg, Nack):
                self.counters["nacks_received"] += 1
                if msg.reason in RETRYABLE_NACK_REASONS:
                    self._retransmit(msg.seq)
            else:
                self.counters["host_frames_unexpected"] += 1

    # ------------------------------------------------------------------ output queue
    def _send_faulty(self, wire: bytes, now: float, *, priority: bool = False) -> None:
        if self._down_until is not None:
            self.counters["frames_unsent_line_down"] += 1
            return
        damaged, stall = self.faults.apply(wire)
        if stall:
            self._pause(now + self.faults.config.stall_s)
        if self.leading_delimiter:
            damaged = b"\x00" + damaged
        if not priority and self._queued_bytes + len(damaged) > self.max_queued_bytes:
            self.counters["frames_dropped_queue_full"] += 1
            return
        self._enqueue(damaged, priority=priority)

    def _enqueue(self, data: bytes, *, priority: bool = False) -> None:
        (self._out.appendleft if priority else self._out.append)(data)
        self._queued_bytes += len(data)

    def _has_output(self) -> bool:
        return self._current is not None or bool(self._out)

    def _pause(self, until: float) -> None:
        self._tx_paused_until = max(self._tx_paused_until, until)

    def _transmit(self) -> None:
        if self._current is None:
            self._current = memoryview(self._out.popleft())
        n = self._endpoint.write(self._current)
        self._queued_bytes -= n
        self.counters["bytes_sent"] += n
        self._current = self._current[n:] if n < len(self._current) else None
        if self._current is None:
            self.counters["frames_sent"] += 1

    def _disconnect(self, now: float, down_s: float | None) -> None:
        self.counters["disconnects"] += 1
        self._endpoint.disconnect()
        self._out.clear()
        self._current = None
        self._queued_bytes = 0
        self._decoder.reset()
        self._down_until = now + (self.faults.config.disconnect_down_s if down_s is None else down_s)


# --------------------------------------------------------------------------- CLI
SourceFactory = Callable[[argparse.Namespace], Iterable[SpectrumItem]]


def _default_source(args: argparse.Namespace) -> Iterable[SpectrumItem]:
    return synthetic_spectra(seed=args.seed, count=args.count)


def _number_type(low: float, high: float = math.inf, *, integer: bool = False,
                 low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type=`` that parses a number and checks it lies in [low, high] (or (low, high])."""
    def parse(text: str) -> float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if integer else 'a number'}") from None
        if not (math.isfinite(value) and (value > low if low_open else value >= low) and value <= high):
            lo = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must be in {lo}{low:g}, {high:g}], got {text}")
        return value
    return parse


_PROBABILITY = _number_type(0.0, 1.0)
_NON_NEGATIVE = _number_type(0.0)
_POSITIVE = _number_type(0.0, low_open=True)
_COUNT = _number_type(1, integer=True)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with status 1, as every user error of the raman-edge command lines."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edge-bridge", description="Instrument serial bridge tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="run a simulated spectrometer on a pty or TCP port")
    where = sim.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve a pseudo-terminal (prints its path)")
    where.add_argument("--tcp", type=_number_type(0, 65535, integer=True), metavar="PORT",
                       help="serve socket://127.0.0.1:PORT (0: any)")
    sim.add_argument("--rate", type=_NON_NEGATIVE, default=50.0, help="spectra per second (default 50; 0: as fast as the link)")
    sim.add_argument("--count", type=_COUNT, default=None, help="number of spectra (default: endless)")
    sim.add_argument("--duration", type=_POSITIVE, default=None, help="seconds to run (default: until Ctrl-C)")
    sim.add_argument("--ring-size", type=_COUNT, default=256)
    sim.add_argument("--heartbeat", type=_POSITIVE, default=0.5, help="STATUS period in seconds")
    sim.add_argument("--instrument-id", default="sim-0")
    sim.add_argument("--counts-dtype", choices=("f4", "u2", "u4"), default="f4")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--no-wait-for-host", action="store_true", help="stream before the first HELLO")
    for name in ("bit-flip", "drop-byte", "duplicate-byte", "truncate", "garbage", "stall"):
        sim.add_argument(f"--{name}-rate", type=_PROBABILITY, default=0.0, help="probability per frame, in [0, 1]")
    sim.add_argument("--byte-error-rate", type=_PROBABILITY, default=0.0, help="probability per byte, in [0, 1]")
    sim.add_argument("--stall-s", type=_NON_NEGATIVE, default=0.1)
    sim.add_argument("--disconnect-after", type=_COUNT, nargs="*", default=(), metavar="N",
                     help="disconnect after the N-th spectrum (repeatable list)")
    sim.add_argument("--disconnect-down-s", type=_NON_NEGATIVE, default=0.5)
    sim.add_argument("--keep-unacked", action="store_true",
                     help="custody mode: keep spectra until ACKed, send them again after every HELLO")
    sim.add_argument("--max-unacked", type=_COUNT, default=4096, help="most spectra kept unacknowledged")
    sim.add_argument("--unacked-resend-s", type=_POSITIVE, default=None,
                     help="custody mode: also send an unacknowledged spectrum again after this many seconds")
    listen = sub.add_parser("listen", help="receive spectra from URL and print one line each")
    listen.add_argument("url")
    listen.add_argument("--baudrate", type=_COUNT, default=115200)
    listen.add_argument("--count", type=_COUNT, default=None, help="stop after this many spectra")
    listen.add_argument("--duration", type=_POSITIVE, default=None)
    listen.add_argument("--ack", action="store_true", help="ACK every spectrum")
    listen.add_argument("--no-resend", action="store_true")
    return parser


#: What :func:`signal.signal` takes and returns.
_SignalHandler = Callable[[int, FrameType | None], object] | int | None


def _install_stop_signals(stop: threading.Event) -> dict[signal.Signals, _SignalHandler]:
    previous: dict[signal.Signals, _SignalHandler] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    return previous


def main(argv: list[str] | None = None, source_factory: SourceFactory | None = None) -> int:
    """Command line: ``edge-bridge simulate ...`` and ``edge-bridge listen URL``.

    ``simulate`` prints the URL to open (the pty path, or ``socket://127.0.0.1:PORT``)
    as its first stdout line, runs until Ctrl-C/SIGTERM or ``--duration``, then
    prints its counters as JSON on stderr.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).
    source_factory : callable, optional
        ``source_factory(args) -> iterable of (raman_shift_cm1, counts, metadata)``,
        called with the parsed arguments (``args.seed``, ``args.count`` ...).
        Default: :func:`synthetic_spectra`.

    Returns
    -------
    int
        Process exit status.
    """
    args = _build_parser().parse_args(argv)
    stop = threading.Event()
    previous = _install_stop_signals(stop)
    try:
        return _simulate(args, source_factory or _default_source, stop) if args.command == "simulate" \
            else _listen(args, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _simulate(args: argparse.Namespace, source_factory: SourceFactory, stop: threading.Event) -> int:
    faults = FaultConfig(
        bit_flip_rate=args.bit_flip_rate, drop_byte_rate=args.drop_byte_rate,
        duplicate_byte_rate=args.duplicate_byte_rate, truncate_rate=args.truncate_rate,
        garbage_rate=args.garbage_rate, stall_rate=args.stall_rate, stall_s=args.stall_s,
        byte_error_rate=args.byte_error_rate, disconnect_after_frames=tuple(args.disconnect_after),
        disconnect_down_s=args.disconnect_down_s, seed=args.seed)
    sim = SimulatedInstrument(
        source_factory(args), transport="pty" if args.pty else "tcp",
        tcp_port=args.tcp or 0, rate_hz=args.rate if args.rate > 0 else None,
        ring_size=args.ring_size, faults=faults, heartbeat_interval_s=args.heartbeat,
        instrument_id=args.instrument_id, wait_for_host=not args.no_wait_for_host,
        counts_dtype=args.counts_dtype, record_sent=False, keep_unacked=args.keep_unacked,
        max_unacked=args.max_unacked, unacked_resend_s=args.unacked_resend_s)
    with sim:
        print(sim.url, flush=True)
        stop.wait(args.duration)
    stats = {**sim.stats(), "session_id": sim.session_id, "unacked": sim.unacked}
    print(json.dumps(stats, sort_keys=True), file=sys.stderr)
    return 0


def _listen(args: argparse.Namespace, stop: threading.Event) -> int:
    from .link import InstrumentLink, LinkConfig  # local: the simulator itself needs no link

    received = 0

    def on_spectrum(msg: SpectrumMessage) -> None:
        nonlocal received
        received += 1
        print(f"seq={msg.seq} n={msg.n_pixels} label={msg.sample_label!r} "
              f"retransmitted={msg.retransmitted} max_counts={float(msg.counts.max()):.1f}", flush=True)
        if args.count is not None and received >= args.count:
            stop.set()

    link = InstrumentLink(args.url, baudrate=args.baudrate,
                          config=LinkConfig(ack_spectra=args.ack, resend=not args.no_resend))
    if args.duration is not None:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    link.run(on_spectrum, on_link_state=lambda ev: print(f"# link {ev.state}: {ev.reason}", flush=True),
             on_lost=lambda seq, why: print(f"# lost seq={seq}: {why}", flush=True), stop_event=stop)
    print(json.dumps(link.counters(), sort_keys=True), file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
