"""Small client for instruments and subscribers of the edge daemon.

Examples
--------
>>> with SpectrumSender("tcp://127.0.0.1:5555") as tx, PredictionSubscriber("tcp://127.0.0.1:5556") as rx:
...     rx.wait_ready(timeout_s=5)
...     tx.send(counts, raman_shift_cm1=axis, id="s1")
...     topic, msg = rx.recv(timeout_s=1)
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import parse_monitor_message

from .acked_sender import AckedSender, SenderFullError
from .catchup_client import CatchUpClient, SubscriberCatchUp
from .errors import EdgeError
from .security import curve_client
from .wire import TOPICS, decode_payload, encode_payload, encode_spectrum

__all__ = ["AckedSender", "ControlClient", "PredictionSubscriber", "SenderFullError", "SpectrumSender"]

KeyFile = str | os.PathLike[str] | None
_CURVE_HINT = "docs/security.md"


class SpectrumSender:
    """PUSH spectra to the daemon's input endpoint (queued by ZeroMQ until the daemon is up): fire and forget.

    Nothing tells this sender what the daemon received; a spectrum in flight when the daemon is killed is lost.
    Where every spectrum matters, use :class:`AckedSender` with the daemon's ``ack_input`` (docs/store.md).

    Parameters
    ----------
    endpoint : str
        The daemon's input endpoint, e.g. ``tcp://127.0.0.1:5555``.
    context : zmq.Context, optional
        Context to use (default: the process-wide instance).
    linger_ms : int
        How long :meth:`close` (and terminating the context after it) keeps trying to deliver spectra still
        queued in this socket, in ms (ZeroMQ ``LINGER``; ``-1``: until delivered, ``0``: drop them). PUSH is
        fire and forget (docs/wire.md §1): terminate the context after ``close`` so the linger is waited for
        before the process exits.
    curve_secret_key, curve_server_key : path-like, optional
        CurveZMQ (docs/security.md): this client's ``NAME.key_secret`` file (its public key must be in the
        daemon's ``curve_authorized_dir``) and the daemon's public ``DAEMON.key``; both or neither.

    Raises
    ------
    EdgeError
        If ``linger_ms`` is not an int ≥ -1, a key file is missing or malformed, or the endpoint cannot be
        connected.
    """

    def __init__(self, endpoint: str, context: zmq.Context[Any] | None = None, linger_ms: int = 5000,
                 curve_secret_key: KeyFile = None, curve_server_key: KeyFile = None) -> None:
        if type(linger_ms) is not int or linger_ms < -1:
            raise EdgeError(f"linger_ms must be an int ≥ -1 (ms; -1: wait until delivered), got {linger_ms!r}")
        self.linger_ms = linger_ms
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, 100000)
        self.sock.setsockopt(zmq.LINGER, linger_ms)
        try:
            curve_client(self.sock, curve_secret_key, curve_server_key)
            self.sock.connect(endpoint)
        except (zmq.ZMQError, EdgeError) as exc:
            self.sock.close(linger=0)
            if isinstance(exc, EdgeError):
                raise
            raise EdgeError(f"cannot connect to {endpoint}: {exc}") from exc

    def send(self, intensity: np.ndarray, raman_shift_cm1: np.ndarray | None = None, **fields: Any) -> None:
        """Send one spectrum (see :func:`edge.wire.encode_spectrum` for the fields)."""
        self.sock.send(encode_spectrum(intensity, raman_shift_cm1, **fields))

    def send_raw(self, frame: bytes) -> None:
        """Send an already-encoded (or deliberately malformed) frame."""
        self.sock.send(frame)

    def close(self) -> None:
        """Close the socket, lingering ``linger_ms`` for spectra still queued (none is dropped before that)."""
        self.sock.close(linger=self.linger_ms)

    def __enter__(self) -> SpectrumSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PredictionSubscriber:
    """SUBscribe to the daemon's output topics; with a catch-up endpoint, miss nothing the store keeps.

    Parameters
    ----------
    endpoint : str
        The daemon's output endpoint, e.g. ``tcp://127.0.0.1:5556``.
    topics : iterable of str
        Topics to receive (``prediction``, ``error``, ``status``, ``drift``, ``link``); ``status`` is always
        added (and subscribed last) because :meth:`wait_ready` needs it.
    context : zmq.Context, optional
        Context to use (default: the process-wide instance).
    catchup : str, optional
        The daemon's catch-up endpoint (``catchup`` setting, e.g. ``tcp://127.0.0.1:5558``). With it the subscriber
        delivers every prediction exactly once, in ``seq`` order: it fetches what it missed when it sees a gap in
        ``seq``, after a reconnection, or when a status shows ``store.last_seq`` beyond what it has, and drops what
        it already delivered (rules: :mod:`edge.catchup_client`; docs/store.md "Catch-up"). Needs ``prediction``
        among ``topics``.
    after_seq : int, optional
        With ``catchup``: start after this ``seq`` (0: every prediction the store keeps, also those published before
        this subscriber connected). Default: from what is published once the subscription is live.
    rcvhwm : int
        ZeroMQ receive high-water mark of the SUB socket, in messages.
    catchup_limit : int
        Messages per catch-up page.
    catchup_timeout_s : float
        Longest wait for one catch-up reply; a catch-up that keeps failing for ``give_up_s`` is abandoned (the
        predictions it could not fetch are counted in ``stats["missing"]`` and logged).
    give_up_s : float
        See ``catchup_timeout_s``.
    dedup_window : int
        Errors, drift alarms and link events (no ``seq``) already delivered are recognised among the last this many.
    curve_secret_key, curve_server_key : path-like, optional
        CurveZMQ (docs/security.md): this client's ``NAME.key_secret`` file (its public key must be in the
        daemon's ``curve_authorized_dir``) and the daemon's public ``DAEMON.key``; both or neither. Without
        an authorised key a protected output delivers nothing (:meth:`wait_ready` times out).

    Raises
    ------
    EdgeError
        An unknown topic, ``after_seq`` without ``catchup``, ``catchup`` without the ``prediction`` topic, a
        missing or malformed key file, or an endpoint that cannot be connected.
    """

    def __init__(self, endpoint: str, topics: Iterable[str] = ("prediction", "error", "status"),
                 context: zmq.Context[Any] | None = None, curve_secret_key: KeyFile = None,
                 curve_server_key: KeyFile = None, *, catchup: str | None = None,
                 after_seq: int | None = None, rcvhwm: int = 100000, catchup_limit: int = 1000,
                 catchup_timeout_s: float = 5.0, give_up_s: float = 30.0, dedup_window: int = 10000) -> None:
        wanted = set(topics)
        unknown = sorted(wanted - set(TOPICS))
        if unknown:
            raise EdgeError(f"unknown topic(s) {unknown}; topics: {sorted(TOPICS)}")
        if after_seq is not None and not catchup:
            raise EdgeError("after_seq needs the daemon's catch-up endpoint (catchup=...)")
        if type(rcvhwm) is not int or rcvhwm < 0:
            raise EdgeError(f"rcvhwm must be an int ≥ 0 (messages; 0: no limit), got {rcvhwm!r}")
        self.ctx = context or zmq.Context.instance()
        self._catchup: SubscriberCatchUp | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        if catchup:
            client = CatchUpClient(catchup, self.ctx, catchup_timeout_s, (curve_secret_key, curve_server_key))
            try:
                self._catchup = SubscriberCatchUp(client, sorted(wanted), after_seq, catchup_limit, give_up_s,
                                                  dedup_window)
            except EdgeError:
                client.close()
                raise
        self._queue: deque[tuple[str, dict[str, Any]]] = (
            self._catchup.pending if self._catchup is not None else deque())
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        for t in [*sorted(wanted - {"status"}), "status"]:  # status last: its welcome says all the others are live
            self.sock.setsockopt(zmq.SUBSCRIBE, TOPICS[t])
        try:
            curve_client(self.sock, curve_secret_key, curve_server_key)
        except EdgeError:
            self.sock.close()
            if self._catchup is not None:
                self._catchup.client.close()
            raise
        self._poller = zmq.Poller()
        if self._catchup is not None:  # reconnections start a catch-up (edge.catchup_client)
            self._monitor = self.sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
            self._poller.register(self._monitor, zmq.POLLIN)
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise EdgeError(f"cannot connect to {endpoint}: {exc}") from exc
        self._poller.register(self.sock, zmq.POLLIN)

    @property
    def last_seq(self) -> int | None:
        """With catch-up: the last prediction ``seq`` delivered or queued for delivery (None before the first)."""
        return self._catchup.last_seq if self._catchup is not None else None

    @property
    def stats(self) -> dict[str, int]:
        """With catch-up: ``live``, ``caught_up``, ``duplicates``, ``missing``, ``catchups``, ``catchup_errors``,
        ``incomplete``, ``reconnects`` (:class:`edge.catchup_client.SubscriberCatchUp`); empty without.
        """
        return dict(self._catchup.stats) if self._catchup is not None else {}

    def wait_ready(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Block until the daemon's first status message arrives: the subscription is then live.

        Without catch-up, messages received before that status are discarded (nothing before the handshake is
        guaranteed); with catch-up they stay queued for :meth:`recv` (they count among what it delivers once).

        Raises
        ------
        EdgeError
            If nothing arrives within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if self._catchup is None:
                while self._queue:
                    topic, payload = self._queue.popleft()
                    if topic == "status":
                        return payload
            for i, (topic, payload) in enumerate(self._queue):
                if topic == "status":
                    del self._queue[i]
                    return payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise EdgeError(f"no status from the daemon within {timeout_s} s (is it running on this endpoint? if "
                               f"its output uses CurveZMQ, is this client's key authorised? {_CURVE_HINT})")
            self._step(left)

    def recv(self, timeout_s: float | None = 1.0) -> tuple[str, dict[str, Any]] | None:
        """Next ``(topic, payload)``, or None after ``timeout_s`` (None: wait forever).

        With catch-up, fetching a page may take up to ``catchup_timeout_s`` beyond ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._queue:
            left = None if deadline is None else deadline - time.monotonic()
            self._step(left)
            if not self._queue and deadline is not None and time.monotonic() >= deadline:
                return None
        return self._queue.popleft()

    def _step(self, timeout_s: float | None) -> None:
        """One round: a due catch-up page, or wait up to ``timeout_s`` for live messages and take them."""
        cu = self._catchup
        if cu is not None:
            self._read_monitor()
            if cu.due():
                cu.fetch_page()
                return
            retry = cu.wait_s()
            if retry is not None:
                timeout_s = retry if timeout_s is None else min(timeout_s, retry)
        timeout = None if timeout_s is None else max(0, int(timeout_s * 1000))
        events = dict(self._poller.poll(timeout))
        if self._monitor is not None and self._monitor in events:
            self._read_monitor()
        if self.sock not in events:
            return
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                raise EdgeError(f"unexpected message with {len(frames)} frames")
            topic = frames[0].decode("ascii", "replace")
            if cu is None:
                self._queue.append((topic, decode_payload(frames[1])))
                return
            cu.on_live(topic, frames[1])
            if cu.due() or len(self._queue) >= 1000:
                return

    def _read_monitor(self) -> None:
        """Pass the SUB socket's connection events (socket monitor) to the catch-up logic."""
        if self._monitor is None or self._catchup is None:
            return
        while True:
            try:
                event = parse_monitor_message(self._monitor.recv_multipart(zmq.NOBLOCK))["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_DISCONNECTED:
                self._catchup.on_disconnected()
            elif event == zmq.EVENT_CONNECTED:
                self._catchup.on_connected()

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        while True:
            got = self.recv(timeout_s=None)
            if got is not None:
                yield got

    def close(self) -> None:
        """Close the sockets."""
        if self._monitor is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(linger=0)
            self._monitor = None
        if self._catchup is not None:
            self._catchup.client.close()
        self.sock.close(linger=0)

    def __enter__(self) -> PredictionSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ControlClient:
    """REQ client of the daemon's control endpoint (head swaps, status; protocol in :mod:`edge.heads`).

    Every request waits at most ``timeout_s``; after a timeout the socket is replaced (a REQ socket that
    lost its reply cannot send again) and :class:`EdgeError` is raised.

    Parameters
    ----------
    endpoint : str
        The daemon's control endpoint, e.g. ``tcp://127.0.0.1:5557``.
    timeout_s : float
        Longest wait for a reply, seconds.
    context : zmq.Context, optional
        Context to use (default: the process-wide instance).
    curve_secret_key, curve_server_key : path-like, optional
        CurveZMQ (docs/security.md): this client's ``NAME.key_secret`` file (its public key must be in the
        daemon's ``curve_authorized_dir``) and the daemon's public ``DAEMON.key``; both or neither. A control
        endpoint reachable from the network always requires them; without an authorised key no reply comes
        (the request times out).

    Raises
    ------
    EdgeError
        A missing or malformed key file, or an endpoint that cannot be connected.
    """

    def __init__(self, endpoint: str, timeout_s: float = 10.0, context: zmq.Context[Any] | None = None,
                 curve_secret_key: KeyFile = None, curve_server_key: KeyFile = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.endpoint = endpoint
        self.timeout_s = float(timeout_s)
        self._curve = (curve_secret_key, curve_server_key)
        self.sock = self._connect()

    def _connect(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            curve_client(sock, *self._curve)
            sock.connect(self.endpoint)
        except (zmq.ZMQError, EdgeError) as exc:
            sock.close(linger=0)
            if isinstance(exc, EdgeError):
                raise
            raise EdgeError(f"cannot connect to {self.endpoint}: {exc}") from exc
        return sock

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send one request map and return the reply map.

        Raises
        ------
        EdgeError
            If no reply arrives within ``timeout_s``.
        """
        self.sock.send(encode_payload(req))
        if not self.sock.poll(int(self.timeout_s * 1000), zmq.POLLIN):
            self.sock.close(linger=0)
            self.sock = self._connect()
            raise EdgeError(f"no reply from the daemon's control endpoint {self.endpoint} within {self.timeout_s} s "
                            f"(a CurveZMQ endpoint answers nothing to a client without an authorised key: {_CURVE_HINT})")
        return decode_payload(self.sock.recv())

    def load_head(self, path: str | None = None, data: bytes | None = None) -> dict[str, Any]:
        """Ask the daemon to serve a head file: ``path`` on the daemon's machine, or the file's bytes inline.

        Returns the reply: ``ok`` and ``head_version`` etc., or ``ok`` false with ``reason`` and ``error``.
        """
        if path is not None and data is None:
            return self.request({"cmd": "load_head", "path": str(path)})
        if data is not None and path is None:
            return self.request({"cmd": "load_head", "head": bytes(data)})
        raise EdgeError("load_head needs exactly one of path and data")

    def status(self) -> dict[str, Any]:
        """The daemon's status (counters, head version)."""
        return self.request({"cmd": "status"})

    def close(self) -> None:
        """Close the socket without lingering."""
        self.sock.close(linger=0)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
