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
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import zmq

from .errors import EdgeError
from .security import curve_client
from .wire import TOPICS, decode_payload, encode_payload, encode_spectrum

__all__ = ["ControlClient", "PredictionSubscriber", "SpectrumSender"]

KeyFile = str | os.PathLike[str] | None
_CURVE_HINT = "docs/security.md"


class SpectrumSender:
    """PUSH spectra to the daemon's input endpoint (queued by ZeroMQ until the daemon is up).

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
    """SUBscribe to the daemon's output topics.

    Parameters
    ----------
    endpoint : str
        The daemon's output endpoint, e.g. ``tcp://127.0.0.1:5556``.
    topics : iterable of str
        Topics to receive (``prediction``, ``error``, ``status``, ``drift``, ``link``); ``status`` is always
        added because :meth:`wait_ready` needs it.
    context : zmq.Context, optional
        Context to use (default: the process-wide instance).
    curve_secret_key, curve_server_key : path-like, optional
        CurveZMQ (docs/security.md): this client's ``NAME.key_secret`` file (its public key must be in the
        daemon's ``curve_authorized_dir``) and the daemon's public ``DAEMON.key``; both or neither. Without
        an authorised key a protected output delivers nothing (:meth:`wait_ready` times out).

    Raises
    ------
    EdgeError
        An unknown topic, or a missing or malformed key file.
    """

    def __init__(self, endpoint: str, topics: Iterable[str] = ("prediction", "error", "status"),
                 context: zmq.Context[Any] | None = None, curve_secret_key: KeyFile = None,
                 curve_server_key: KeyFile = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 100000)
        self.sock.setsockopt(zmq.LINGER, 0)
        for t in set(topics) | {"status"}:
            if t not in TOPICS:
                self.sock.close()
                raise EdgeError(f"unknown topic {t!r}; topics: {sorted(TOPICS)}")
            self.sock.setsockopt(zmq.SUBSCRIBE, TOPICS[t])
        try:
            curve_client(self.sock, curve_secret_key, curve_server_key)
        except EdgeError:
            self.sock.close()
            raise
        self.sock.connect(endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self.sock, zmq.POLLIN)

    def wait_ready(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Block until the daemon's first status message arrives: the subscription is then live.

        Raises
        ------
        EdgeError
            If nothing arrives within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            got = self.recv(timeout_s=left)
            if got is not None and got[0] == "status":
                return got[1]
        raise EdgeError(f"no status from the daemon within {timeout_s} s (is it running on this endpoint? if its "
                        f"output uses CurveZMQ, is this client's key authorised? {_CURVE_HINT})")

    def recv(self, timeout_s: float | None = 1.0) -> tuple[str, dict[str, Any]] | None:
        """Next ``(topic, payload)``, or None after ``timeout_s`` (None: wait forever)."""
        timeout = None if timeout_s is None else max(0, int(timeout_s * 1000))
        if not self._poller.poll(timeout):
            return None
        frames = self.sock.recv_multipart()
        if len(frames) != 2:
            raise EdgeError(f"unexpected message with {len(frames)} frames")
        return frames[0].decode(), decode_payload(frames[1])

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        while True:
            got = self.recv(timeout_s=None)
            if got is not None:
                yield got

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

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
