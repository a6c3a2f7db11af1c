"""Small client for instruments and subscribers of the edge daemon.

Examples
--------
>>> with SpectrumSender("tcp://127.0.0.1:5555") as tx, PredictionSubscriber("tcp://127.0.0.1:5556") as rx:
...     rx.wait_ready(timeout_s=5)
...     tx.send(counts, raman_shift_cm1=axis, id="s1")
...     topic, msg = rx.recv(timeout_s=1)
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

import numpy as np
import zmq

from .errors import EdgeError
from .wire import TOPICS, decode_payload, encode_spectrum

__all__ = ["SpectrumSender", "PredictionSubscriber"]


class SpectrumSender:
    """PUSH spectra to the daemon's input endpoint (queued by ZeroMQ until the daemon is up).

    Parameters
    ----------
    endpoint : str
        The daemon's input endpoint, e.g. ``tcp://127.0.0.1:5555``.
    """

    def __init__(self, endpoint: str, context: zmq.Context | None = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, 100000)
        self.sock.setsockopt(zmq.LINGER, 5000)
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.sock.close(linger=0)
            raise EdgeError(f"cannot connect to {endpoint}: {exc}") from exc

    def send(self, intensity: np.ndarray, raman_shift_cm1: np.ndarray | None = None, **fields: Any) -> None:
        """Send one spectrum (see :func:`edge.wire.encode_spectrum` for the fields)."""
        self.sock.send(encode_spectrum(intensity, raman_shift_cm1, **fields))

    def send_raw(self, frame: bytes) -> None:
        """Send an already-encoded (or deliberately malformed) frame."""
        self.sock.send(frame)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "SpectrumSender":
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
    """

    def __init__(self, endpoint: str, topics: Iterable[str] = ("prediction", "error", "status"),
                 context: zmq.Context | None = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 100000)
        self.sock.setsockopt(zmq.LINGER, 0)
        for t in set(topics) | {"status"}:
            if t not in TOPICS:
                self.sock.close()
                raise EdgeError(f"unknown topic {t!r}; topics: {sorted(TOPICS)}")
            self.sock.setsockopt(zmq.SUBSCRIBE, TOPICS[t])
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
        raise EdgeError(f"no status from the daemon within {timeout_s} s (is it running on this endpoint?)")

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
        self.sock.close()

    def __enter__(self) -> "PredictionSubscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
