"""An acknowledged sender: keeps every spectrum until the daemon says it is stored, resends what is not.

Use it against the daemon's acknowledged input (``ack_input``, :mod:`edge.ack_input`); the plain
:class:`edge.client.SpectrumSender` (PUSH) stays for fire-and-forget senders. Guarantees (docs/store.md,
"guarantees"): a spectrum :meth:`AckedSender.send` accepted is kept in this process until an ack says ``stored``
or ``duplicate`` (it is then in the daemon's store and answered exactly once), or ``rejected`` (malformed:
:attr:`AckedSender.rejected`); it is resent ``resend_timeout_ms`` after its last send, at once when the connection
to the daemon comes back, and after ``retry_after_ms`` when the daemon's store could not write (``not_stored``).
Nothing is dropped: a full window blocks, then raises; :meth:`AckedSender.close` reports what is still
unacknowledged (:meth:`AckedSender.unacknowledged` hands the frames back, e.g. to keep them on disk).

One thread per sender (a ZeroMQ socket is not thread-safe). Written here: ZeroMQ has no acknowledged-delivery
socket; the DEALER, its connection monitor and msgpack do the rest.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from .errors import EdgeError, WireError
from .security import curve_client
from .wire import MAX_MESSAGE_BYTES, decode_payload, encode_spectrum, peek_identity

__all__ = ["AckedSender", "SenderFullError"]
log = logging.getLogger("edge.client")


class SenderFullError(EdgeError):
    """``max_in_flight`` spectra are unacknowledged and none was acknowledged within ``block_timeout_s``."""


@dataclass
class _Pending:
    frame: bytes
    first_sent: float
    due: float  # monotonic time of the next resend
    sends: int = 0  # times handed to ZeroMQ (0: not yet: no connection when it was sent)


class AckedSender:
    """DEALER connected to the daemon's acknowledged input.

    Parameters
    ----------
    endpoint : str
        The daemon's ``ack_input`` endpoint, e.g. ``tcp://127.0.0.1:5558``.
    context : zmq.Context, optional
        Context to use (default: the process-wide instance).
    resend_timeout_ms : int
        A spectrum not acknowledged this long after its last send is sent again (≥ 1).
    max_in_flight : int
        Most unacknowledged spectra kept (≥ 1); :meth:`send` blocks when that many are in flight.
    block_timeout_s : float
        How long :meth:`send` waits for room before raising :class:`SenderFullError` (≥ 0).
    curve_secret_key, curve_server_key : path-like, optional
        CurveZMQ, when the daemon protects its ``input`` (which covers the acknowledged input): this client's
        ``NAME.key_secret`` (its public key in the daemon's ``curve_authorized_dir``) and the daemon's public
        ``DAEMON.key``; both or neither (docs/security.md).

    Raises
    ------
    EdgeError
        If a setting is out of range, a key file is missing or malformed, or the endpoint cannot be connected.
    """

    def __init__(self, endpoint: str, context: zmq.Context[Any] | None = None, *, resend_timeout_ms: int = 2000,
                 max_in_flight: int = 1000, block_timeout_s: float = 30.0,
                 curve_secret_key: str | os.PathLike[str] | None = None,
                 curve_server_key: str | os.PathLike[str] | None = None) -> None:
        if type(resend_timeout_ms) is not int or resend_timeout_ms < 1:
            raise EdgeError(f"resend_timeout_ms must be an int ≥ 1 (ms), got {resend_timeout_ms!r}")
        if type(max_in_flight) is not int or max_in_flight < 1:
            raise EdgeError(f"max_in_flight must be an int ≥ 1, got {max_in_flight!r}")
        if not block_timeout_s >= 0:
            raise EdgeError(f"block_timeout_s must be ≥ 0 (s), got {block_timeout_s!r}")
        self.endpoint = endpoint
        self.resend_s = resend_timeout_ms / 1000
        self.max_in_flight = max_in_flight
        self.block_timeout_s = float(block_timeout_s)
        self.ctx = context or zmq.Context.instance()
        self.sock: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.SNDHWM, 0)  # bounded by max_in_flight, not by ZeroMQ (a full HWM would block)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing while disconnected: kept here, sent on (re)connection
        self.sock.setsockopt(zmq.LINGER, 0)  # nothing is lost by closing: what is unacknowledged is reported
        # a connection is usable once its ZMTP (or CurveZMQ) handshake succeeded: then what waits is sent
        self._monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        try:
            curve_client(self.sock, curve_secret_key, curve_server_key)
            self.sock.connect(endpoint)
        except EdgeError:
            self._close_sockets()
            raise
        except zmq.ZMQError as exc:
            self._close_sockets()
            raise EdgeError(f"cannot connect to {endpoint}: {exc}") from exc
        self._poller = zmq.Poller()
        self._poller.register(self.sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._due: list[tuple[float, tuple[str, str]]] = []  # heap of (due, key); stale entries skipped
        self.rejected: list[dict[str, Any]] = []  # acks with status "rejected" (malformed spectra)
        self.counts = {"sent": 0, "resent": 0, "stored": 0, "duplicate": 0, "rejected": 0, "not_stored": 0,
                       "reconnects": 0, "unknown_acks": 0}
        self.last_ack_monotonic = 0.0
        self._connected_before = False
        self._closed = False

    # -- sending ------------------------------------------------------------------------------------------------
    def send(self, intensity: np.ndarray, raman_shift_cm1: np.ndarray | None = None, *, id: str | None = None,
             instrument_id: str | None = None, **fields: Any) -> str:
        """Send one spectrum and keep it until acknowledged.

        Parameters
        ----------
        intensity, raman_shift_cm1 : numpy.ndarray
            As :func:`edge.wire.encode_spectrum`.
        id : str, optional
            The spectrum's id (default: a new random 32-hex-digit one); with ``instrument_id`` it names the
            spectrum in the daemon's store: a resend under the same pair is recognised.
        instrument_id : str, optional
        **fields
            ``sent_ns``, ``instrument_seq``, ``label`` (:func:`edge.wire.encode_spectrum`).

        Returns
        -------
        str
            The id sent.

        Raises
        ------
        SenderFullError
            ``max_in_flight`` spectra stayed unacknowledged for ``block_timeout_s`` (this one was not sent).
        EdgeError
            The pair (``instrument_id``, ``id``) is already in flight, the message exceeds the daemon's
            ``MAX_MESSAGE_BYTES``, or the sender is closed.
        """
        sid = id if id is not None else uuid.uuid4().hex
        self.send_frame(encode_spectrum(intensity, raman_shift_cm1, id=sid, instrument_id=instrument_id, **fields))
        return sid

    def send_frame(self, frame: bytes) -> tuple[str, str]:
        """Send an encoded spectrum frame (its ``id`` must be set) and keep it until acknowledged.

        Parameters
        ----------
        frame : bytes
            One msgpack ``spectrum`` map (:func:`edge.wire.encode_spectrum`).

        Returns
        -------
        (str, str)
            The key it is kept under: (``instrument_id`` or ``""``, ``id``).

        Raises
        ------
        SenderFullError, EdgeError
            As :meth:`send`; also when the frame has no readable ``id``.
        """
        if self._closed:
            raise EdgeError("the sender is closed")
        if len(frame) > MAX_MESSAGE_BYTES:
            raise WireError(f"a {len(frame)}-byte message exceeds the daemon's limit of {MAX_MESSAGE_BYTES} bytes "
                            "(ZeroMQ would drop it, and every resend)")
        ident = peek_identity(frame)
        if ident["id"] is None:
            raise WireError("the acknowledged input needs each spectrum's 'id' (none readable in this frame)")
        key = (ident["instrument_id"] or "", ident["id"])
        if key in self._pending:
            raise EdgeError(f"spectrum {key[1]!r} of instrument {key[0]!r} is already in flight (ids must be unique)")
        self._wait_for_room()
        now = time.monotonic()
        item = self._pending[key] = _Pending(frame, now, now + self.resend_s)
        heapq.heappush(self._due, (item.due, key))
        item.sends += self._transmit(frame)
        self.counts["sent"] += 1
        self.poll(0)
        return key

    def _wait_for_room(self) -> None:
        if len(self._pending) < self.max_in_flight:
            return
        deadline = time.monotonic() + self.block_timeout_s
        while len(self._pending) >= self.max_in_flight:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SenderFullError(
                    f"{len(self._pending)} spectra unacknowledged (max_in_flight) for {self.block_timeout_s} s: is a "
                    f"daemon with an ack_input running at {self.endpoint}? (nothing was dropped: the spectrum passed "
                    "to send was not taken; unacknowledged() has the others)")
            self.poll(min(left, 0.1))

    def _transmit(self, frame: bytes) -> bool:
        try:
            self.sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:  # cannot queue now: kept, resent when due
            return False
        return True

    # -- acknowledgements and resends ---------------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.0) -> int:
        """Take the acks that arrived (waiting up to ``timeout_s`` for the first) and resend what is due.

        Parameters
        ----------
        timeout_s : float
            Longest wait, seconds.

        Returns
        -------
        int
            Spectra acknowledged by this call.
        """
        done = 0
        events = dict(self._poller.poll(max(0, int(timeout_s * 1000))))
        if self._monitor in events:
            self._connection_events()
        if self.sock in events:
            while True:
                try:
                    frame = self.sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                done += self._take_ack(frame)
        self._resend_due()
        return done

    def _take_ack(self, frame: bytes) -> int:
        try:
            ack = decode_payload(frame)
        except WireError:
            self.counts["unknown_acks"] += 1
            return 0
        sid, iid, status = ack.get("id"), ack.get("instrument_id"), ack.get("status")
        key = (iid if isinstance(iid, str) else "", sid if isinstance(sid, str) else "")
        item = self._pending.get(key)
        if item is None or status not in ("stored", "duplicate", "rejected", "not_stored"):
            self.counts["unknown_acks"] += 1  # an ack of a spectrum acknowledged already (a resend's): harmless
            return 0
        self.counts[status] += 1
        self.last_ack_monotonic = time.monotonic()
        if status == "not_stored":  # the daemon's store cannot write: keep it, resend when the daemon says
            retry = ack.get("retry_after_ms")
            item.due = time.monotonic() + (retry / 1000 if isinstance(retry, int) and retry > 0 else self.resend_s)
            heapq.heappush(self._due, (item.due, key))
            return 0
        del self._pending[key]
        if status == "rejected":
            log.warning("the daemon rejected spectrum %s: %s: %s", key[1], ack.get("reason"), ack.get("detail"))
            self.rejected.append(ack)
        return 1

    def _resend_due(self) -> None:
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            due, key = heapq.heappop(self._due)
            item = self._pending.get(key)
            if item is None or item.due != due:
                continue  # acknowledged, or rescheduled
            self._resend(key, item, now)

    def _resend(self, key: tuple[str, str], item: _Pending, now: float) -> None:
        item.due = now + self.resend_s
        heapq.heappush(self._due, (item.due, key))
        if self._transmit(item.frame):
            self.counts["resent"] += item.sends > 0
            item.sends += 1

    def _connection_events(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED:
                continue
            # first connection: send what could not be sent yet; a reconnection: everything unacknowledged (the
            # daemon may have lost what it had queued, or the acks)
            now = time.monotonic()
            for key, item in list(self._pending.items()):
                if self._connected_before or not item.sends:
                    self._resend(key, item, now)
            self.counts["reconnects"] += self._connected_before
            self._connected_before = True

    # -- finishing ----------------------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Spectra sent and not yet acknowledged."""
        return len(self._pending)

    def unacknowledged(self) -> list[tuple[str, str, bytes]]:
        """The spectra not yet acknowledged: ``(instrument_id or "", id, frame)`` in the order they were sent."""
        return [(k[0], k[1], p.frame) for k, p in sorted(self._pending.items(), key=lambda kv: kv[1].first_sent)]

    def flush(self, timeout_s: float = 10.0) -> int:
        """Wait until every spectrum is acknowledged, resending as needed.

        Parameters
        ----------
        timeout_s : float
            Longest wait, seconds.

        Returns
        -------
        int
            Spectra still unacknowledged (0: all acknowledged).
        """
        deadline = time.monotonic() + timeout_s
        while self._pending and (left := deadline - time.monotonic()) > 0:
            self.poll(min(left, 0.05))
        return len(self._pending)

    def close(self, timeout_s: float = 5.0) -> int:
        """Flush for up to ``timeout_s``, then close; what is still unacknowledged is reported, never dropped silently.

        Parameters
        ----------
        timeout_s : float
            Longest wait for the acks, seconds.

        Returns
        -------
        int
            Spectra never acknowledged (a warning names how many; :meth:`unacknowledged` still returns them).
        """
        if self._closed:
            return len(self._pending)
        left = self.flush(timeout_s)
        if left:
            log.warning("closing the acknowledged sender with %d spectra unacknowledged by %s (first: %s): they may "
                        "not be stored; unacknowledged() returns them to resend later", left, self.endpoint,
                        self.unacknowledged()[0][1])
        self._close_sockets()
        self._closed = True
        return left

    def _close_sockets(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)
        self.sock.close(linger=0)

    def __enter__(self) -> AckedSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
