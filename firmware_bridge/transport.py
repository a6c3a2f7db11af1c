"""Transport layer: serial ports by URL, deadlines, automatic reconnection.

Ports are opened with :func:`serial.serial_for_url`, so a device path
(``/dev/ttyUSB0``, a pty such as ``/dev/pts/7``), ``loop://``,
``socket://host:port`` and ``spy://`` all work. ``serial.SerialException`` and
``OSError`` never leave this module unwrapped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import threading
import time
from collections.abc import Callable

import serial

from .errors import InvalidUrl, LinkDown, TransportError

log = logging.getLogger(__name__)

#: Link states reported through :class:`LinkStateEvent`.
UP, DOWN, RECONNECTING = "up", "down", "reconnecting"


class Deadline:
    """A point in time on the monotonic clock.

    Parameters
    ----------
    timeout_s : float or None
        Seconds from now; None means never expires.
    """

    __slots__ = ("_end",)

    def __init__(self, timeout_s: float | None) -> None:
        self._end = None if timeout_s is None else time.monotonic() + timeout_s

    def remaining_s(self) -> float | None:
        """Seconds left (>= 0), or None for a deadline that never expires."""
        return None if self._end is None else max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self._end is not None and time.monotonic() >= self._end

    def wait(self, event: threading.Event) -> bool:
        """Wait for ``event`` until the deadline; True if it was set."""
        return event.wait(self.remaining_s())


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff between reconnection attempts.

    Attributes
    ----------
    initial_delay_s : float
        Wait after the first failed attempt.
    max_delay_s : float
        Upper bound of the wait.
    factor : float
        Growth of the wait per failed attempt.
    max_attempts : int or None
        Give up (raise :class:`LinkDown`) after this many failed attempts; None: never.
    """

    initial_delay_s: float = 0.1
    max_delay_s: float = 5.0
    factor: float = 2.0
    max_attempts: int | None = None

    def delay_s(self, attempt: int) -> float:
        """Wait after failed attempt number ``attempt`` (1-based), in seconds."""
        return min(self.max_delay_s, self.initial_delay_s * self.factor ** max(0, attempt - 1))


@dataclasses.dataclass(frozen=True)
class LinkStateEvent:
    """A change of link state.

    Attributes
    ----------
    state : {"up", "down", "reconnecting"}
    reason : str
        Why (the error text for "down"/"reconnecting", the URL for "up").
    attempt : int
        Connection attempt number since the link was last up (0 for "down").
    """

    state: str
    reason: str
    attempt: int = 0


def _supports_exclusive(url: str) -> bool:
    """Pyserial implements ``exclusive`` (flock) only for native POSIX ports."""
    return os.name == "posix" and ("://" not in url or url.lower().startswith("spy://"))


def open_port(url: str, baudrate: int = 115200, timeout_s: float | None = 0.1, *,
              exclusive: bool = True, write_timeout_s: float | None = 1.0) -> serial.Serial:
    """Open a serial port or pyserial URL.

    Parameters
    ----------
    url : str
        Device path or pyserial URL (``loop://``, ``socket://host:port``, ``spy://...``).
    baudrate : int, optional
        Line rate in bit/s (ignored by ptys, sockets and loop://).
    timeout_s : float or None, optional
        Read timeout in seconds (0: non-blocking, None: block).
    exclusive : bool, optional
        Lock the port (``flock``) so no second process can open it. Applied only
        where pyserial supports it (native POSIX ports); ignored for URL handlers.
    write_timeout_s : float or None, optional
        Write timeout in seconds; a timed-out write raises.

    Returns
    -------
    serial.Serial
        The open port (an instance of the URL handler's ``Serial`` class).

    Raises
    ------
    InvalidUrl
        The URL scheme or parameters are not understood.
    TransportError
        The port cannot be opened (absent, busy, refused).
    """
    lock = exclusive and _supports_exclusive(url)
    try:
        try:
            return _serial_for_url(url, baudrate, timeout_s, write_timeout_s, exclusive=lock)
        except TypeError:
            if not lock:  # the TypeError is not about the keyword
                raise
            # a handler that rejects the keyword: open it without the lock
            return _serial_for_url(url, baudrate, timeout_s, write_timeout_s, exclusive=False)
    except (serial.SerialException, OSError) as exc:
        raise TransportError(f"cannot open {url}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise InvalidUrl(f"cannot open {url}: {exc}") from exc


def _serial_for_url(url: str, baudrate: int, timeout_s: float | None, write_timeout_s: float | None, *,
                    exclusive: bool) -> serial.Serial:
    """:func:`serial.serial_for_url`, passing ``exclusive=True`` only when asked (some handlers reject it)."""
    if exclusive:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout_s, write_timeout=write_timeout_s,
                                     exclusive=True)
    return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout_s, write_timeout=write_timeout_s)


class ReconnectingPort:
    """A port that closes and reopens itself when the line fails.

    On ``serial.SerialException``/``OSError`` the port is closed, a ``"down"``
    event is reported, and every later :meth:`read` first reconnects, retrying
    with :class:`Backoff` (``"reconnecting"`` events) until it succeeds (``"up"``),
    ``stop_event`` is set, or ``backoff.max_attempts`` is exhausted. All waits
    observe ``stop_event``, so shutdown takes at most ``read_timeout_s``.

    Parameters
    ----------
    url : str
        Device path or pyserial URL.
    baudrate : int, optional
        Line rate in bit/s.
    read_timeout_s : float, optional
        Longest a :meth:`read` blocks when no byte arrives.
    write_timeout_s : float, optional
        Longest a :meth:`write` blocks.
    exclusive : bool, optional
        Lock native ports, see :func:`open_port`.
    backoff : Backoff, optional
        Reconnection schedule.
    on_state : callable, optional
        Called with a :class:`LinkStateEvent` on every state change, from the
        thread that calls :meth:`read`/:meth:`write`.
    stop_event : threading.Event, optional
        Set it to abort reconnection promptly.
    opener : callable, optional
        ``opener(url, baudrate, timeout_s, exclusive=..., write_timeout_s=...)``;
        defaults to :func:`open_port` (tests inject failing openers).

    Attributes
    ----------
    generation : int
        Incremented on every successful (re)open; compare to detect reconnects.
    """

    def __init__(self, url: str, *, baudrate: int = 115200, read_timeout_s: float = 0.05,
                 write_timeout_s: float = 1.0, exclusive: bool = True, backoff: Backoff = Backoff(),
                 on_state: Callable[[LinkStateEvent], None] | None = None,
                 stop_event: threading.Event | None = None,
                 opener: Callable[..., serial.Serial] = open_port) -> None:
        self.url = url
        self.baudrate = baudrate
        self.read_timeout_s = read_timeout_s
        self.write_timeout_s = write_timeout_s
        self.exclusive = exclusive
        self.backoff = backoff
        self.on_state = on_state
        self.stop_event = stop_event or threading.Event()
        self._opener = opener
        self._port: serial.Serial | None = None
        self._fileno: int | None = None
        self._lock = threading.RLock()
        self.generation = 0
        self.state = DOWN
        self.counters = {"connects": 0, "disconnects": 0, "connect_failures": 0,
                         "bytes_read": 0, "bytes_written": 0, "write_failures": 0}

    @property
    def is_open(self) -> bool:
        """True while a port is open."""
        return self._port is not None

    def connect(self) -> bool:
        """Open the port, retrying with backoff; no-op if already open.

        Returns
        -------
        bool
            True once open; False if ``stop_event`` was set first.

        Raises
        ------
        InvalidUrl
            The URL can never be opened.
        LinkDown
            ``backoff.max_attempts`` failed attempts.
        """
        attempt = 0
        while self._port is None:
            if self.stop_event.is_set():
                return False
            attempt += 1
            try:
                port = self._opener(self.url, self.baudrate, self.read_timeout_s,
                                    exclusive=self.exclusive, write_timeout_s=self.write_timeout_s)
            except InvalidUrl:
                raise
            except TransportError as exc:
                self.counters["connect_failures"] += 1
                self._set_state(RECONNECTING, str(exc), attempt)
                if self.backoff.max_attempts is not None and attempt >= self.backoff.max_attempts:
                    raise LinkDown(f"{self.url}: gave up after {attempt} attempts: {exc}") from exc
                self.stop_event.wait(self.backoff.delay_s(attempt))
                continue
            self._install(port)
            self._set_state(UP, self.url, attempt)
        return True

    def _install(self, port: serial.Serial) -> None:
        fileno = None
        try:
            fileno = port.fileno()
            port.timeout = 0  # we wait with select() ourselves, then take what is there
        except (AttributeError, NotImplementedError, serial.SerialException, OSError):
            fileno = None
        with self._lock:
            self._port, self._fileno = port, fileno
            self.generation += 1
            self.counters["connects"] += 1

    def read(self, max_bytes: int = 65536) -> bytes:
        """Return the bytes available now, waiting up to ``read_timeout_s`` for the first.

        Reconnects first if the port is closed. Errors close the port and return b"".

        Parameters
        ----------
        max_bytes : int, optional
            Most bytes returned.

        Returns
        -------
        bytes
            Possibly empty (timeout, stop requested, or the link just went down).

        Raises
        ------
        InvalidUrl, LinkDown
            From :meth:`connect`.
        """
        if self._port is None and not self.connect():
            return b""
        port = self._port
        if port is None:  # closed by close() from another thread since connect()
            return b""
        try:
            if self._fileno is not None:
                ready, _, _ = select.select([self._fileno], [], [], self.read_timeout_s)
                data = port.read(max_bytes) if ready else b""
            else:
                data = port.read(1)
                if data:
                    waiting = port.in_waiting
                    if waiting:
                        data += port.read(min(waiting, max_bytes - 1))
        except (serial.SerialException, OSError, ValueError, AttributeError) as exc:
            # ValueError/AttributeError: the port was closed under us by close().
            self._drop(f"read failed: {exc}")
            return b""
        self.counters["bytes_read"] += len(data)
        return bytes(data)

    def write(self, data: bytes) -> bool:
        """Write ``data`` if the port is open.

        A write timeout drops the data but keeps the link; other errors take the
        link down (a later :meth:`read` reconnects).

        Parameters
        ----------
        data : bytes

        Returns
        -------
        bool
            True if all bytes were handed to the port.
        """
        with self._lock:
            port = self._port
            if port is None:
                self.counters["write_failures"] += 1
                return False
            try:
                port.write(data)
            except serial.SerialTimeoutException:
                self.counters["write_failures"] += 1
                return False
            except (serial.SerialException, OSError, ValueError, AttributeError) as exc:
                self.counters["write_failures"] += 1
                self._drop(f"write failed: {exc}")
                return False
        self.counters["bytes_written"] += len(data)
        return True

    def _drop(self, reason: str) -> None:
        with self._lock:
            port, self._port, self._fileno = self._port, None, None
        if port is None:
            return
        self.counters["disconnects"] += 1
        _close_quietly(port)
        self._set_state(DOWN, reason, 0)

    def close(self) -> None:
        """Close the port (no state event); :meth:`connect` may reopen it later."""
        with self._lock:
            port, self._port, self._fileno = self._port, None, None
        if port is not None:
            _close_quietly(port)
        self.state = DOWN

    def _set_state(self, state: str, reason: str, attempt: int) -> None:
        self.state = state
        log.info("link %s: %s (%s, attempt %d)", self.url, state, reason, attempt)
        if self.on_state is not None:
            self.on_state(LinkStateEvent(state, reason, attempt))

    def __enter__(self) -> ReconnectingPort:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _close_quietly(port: serial.Serial) -> None:
    # pyserial's socket:// close() skips socket.close() when shutdown() fails on a
    # connection the peer already dropped; close the socket ourselves as well.
    sock = getattr(port, "_socket", None)
    try:
        port.close()
    except (serial.SerialException, OSError) as exc:  # already broken; nothing to recover
        log.debug("error while closing port: %s", exc)
    if sock is not None:
        sock.close()
