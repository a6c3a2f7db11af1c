"""The catch-up endpoint: a subscriber that was away fetches the results it missed from the store.

A :class:`CatchUpServer` runs in its own thread with its own ZeroMQ ROUTER socket and its own read-only SQLite
connection to the daemon's store (WAL: a reader never blocks the daemon's writes, so a large catch-up does not
stall classification). It answers each request (docs/wire.md §12) with one page of
:func:`edge.store.reading.results_after`; a bad request gets ``ok: false`` with a reason, never an exception.
The daemon starts it after binding its other sockets and stops it before closing the store.

ROUTER rather than REP: it answers every peer in turn without a per-peer state machine to get stuck in, and a
DEALER peer that omits the empty delimiter frame is answered all the same.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from .errors import ConfigError, EdgeError
from .socket_limits import apply_limits
from .store import open_for_reading
from .store.reading import results_after
from .wire import encode_payload
from .wire_spec import (
    CATCHUP_REQUEST,
    CATCHUP_TOPICS,
    MAX_CATCHUP_REPLY_BYTES,
    check_field,
)

__all__ = ["DEFAULT_LIMIT", "CatchUpServer", "parse_request"]
log = logging.getLogger("edge.catchup")

DEFAULT_LIMIT = 1000
"""Messages per reply when a request names no ``limit``."""


class _BadRequest(EdgeError):
    """A catch-up request that cannot be answered (the reply's ``error``)."""


def parse_request(frame: bytes) -> dict[str, Any]:
    """Decode and check one catch-up request.

    Parameters
    ----------
    frame : bytes
        The request as received (a msgpack map, docs/wire.md §12.1).

    Returns
    -------
    dict
        ``after_seq`` (int), ``topics`` (list of str or None), ``limit`` (int), ``after_row`` (int or None).

    Raises
    ------
    EdgeError
        What is wrong with the request, in words.
    """
    try:
        req = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:  # any foreign decoding failure is a bad request
        raise _BadRequest(f"not a msgpack map: {type(exc).__name__}: {exc}") from exc
    if not isinstance(req, dict):
        raise _BadRequest(f"a request is a msgpack map, got {type(req).__name__}")
    out: dict[str, Any] = {}
    for f in CATCHUP_REQUEST.fields:
        value, problem = check_field(f, req.get(f.name))
        if problem is not None:
            raise _BadRequest(problem)
        out[f.name] = value
    topics = out["topics"]
    if topics is not None:
        if not topics or not all(isinstance(t, str) and t in CATCHUP_TOPICS for t in topics):
            raise _BadRequest(f"topics must be a non-empty array of {list(CATCHUP_TOPICS)} (status is live only), "
                              f"got {topics!r:.120}")
        out["topics"] = sorted(set(topics))
    if out["limit"] is None:
        out["limit"] = DEFAULT_LIMIT
    return out


class CatchUpServer:
    """Serve catch-up requests from the store, in a thread of its own.

    Parameters
    ----------
    endpoint : str
        ZeroMQ endpoint the ROUTER socket binds (e.g. ``tcp://127.0.0.1:5558``).
    store_path : str
        The daemon's store file (read through a read-only connection of this thread's own).
    context : zmq.Context
        The daemon's context.
    max_reply_bytes : int
        A reply stops adding messages before their payloads exceed this (one message always goes).
    max_busy : float
        Largest share of time the thread spends answering (0 < ``max_busy`` ≤ 1): after a reply that took ``t``
        seconds it rests ``t * (1 / max_busy - 1)``. The thread shares the daemon's interpreter lock (GIL); an
        unthrottled catch-up of a large backlog would delay classification by tens of ms (``edge-bench catchup``).

    Attributes
    ----------
    secure : callable, optional
        Called with the socket before it binds: the daemon passes its CurveZMQ server
        (:meth:`edge.security.CurveServer.secure`, role ``output``: the catch-up serves what the output publishes).
    counters : dict of str to int
        ``requests`` answered, ``refused`` (answered ``ok: false``), ``messages`` sent.
    """

    def __init__(self, endpoint: str, store_path: str, context: zmq.Context[Any],
                 max_reply_bytes: int = MAX_CATCHUP_REPLY_BYTES, max_busy: float = 0.25,
                 secure: Callable[[zmq.Socket[bytes]], object] | None = None) -> None:
        if not 0 < max_busy <= 1:
            raise ConfigError(f"max_busy must be in (0, 1], got {max_busy!r}")
        self.max_busy = max_busy
        self.endpoint = endpoint
        self.store_path = store_path
        self.ctx = context
        self.max_reply_bytes = max_reply_bytes
        self._secure = secure
        self.bound = ""
        self.counters = {"requests": 0, "refused": 0, "messages": 0}
        self._stop = threading.Event()
        self._started = threading.Event()
        self._error: str | None = None
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> str:
        """Bind the socket (in the server's thread) and start serving.

        Returns
        -------
        str
            The bound endpoint (with the port chosen when the endpoint asked for ``*``).

        Raises
        ------
        ConfigError
            When the endpoint cannot be bound.
        """
        self._thread = threading.Thread(target=self._run, name="edge-catchup", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise ConfigError(f"the catch-up endpoint {self.endpoint} did not start within {timeout_s} s")
        if self._error is not None:
            self._thread.join(timeout_s)
            raise ConfigError(f"cannot bind the catch-up endpoint {self.endpoint}: {self._error}")
        log.info("catch-up served on %s from %s", self.bound, self.store_path)
        return self.bound

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop serving and close the socket and the read connection; waits at most ``timeout_s``."""
        self._stop.set()
        conn = self._conn
        if conn is not None:
            try:
                conn.interrupt()  # a long read returns at once (thread-safe by design)
            except sqlite3.ProgrammingError:  # closed meanwhile by the thread itself
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the catch-up thread did not stop within %.1f s", timeout_s)

    def status(self) -> dict[str, Any]:
        """The server's entry in the daemon's status: ``{"catchup": {"endpoint", "requests", "refused",
        "messages"}}``.
        """
        return {"catchup": {"endpoint": self.bound, **self.counters}}

    # -- the thread ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        sock: zmq.Socket[bytes] = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        apply_limits(sock, "catchup")  # MAXMSGSIZE: a larger request is dropped by ZeroMQ (docs/wire.md §1.1)
        sock.setsockopt(zmq.SNDHWM, 100)
        try:
            if self._secure is not None:
                self._secure(sock)  # CurveZMQ before bind, when the daemon protects its output
            sock.bind(self.endpoint)
            self.bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except (zmq.ZMQError, EdgeError) as exc:
            self._error = str(exc)
            sock.close(linger=0)
            self._started.set()
            return
        self._started.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(100, zmq.POLLIN):
                    continue
                while not self._stop.is_set():
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    t0 = time.perf_counter()
                    self._serve(sock, frames)
                    self._stop.wait((time.perf_counter() - t0) * (1 / self.max_busy - 1))  # leave the GIL to classifying
        finally:
            sock.close(linger=0)
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _serve(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
        """Answer one request: ``[identity, (b""), request]`` in, ``[identity, (b""), reply]`` out."""
        if b"" in frames[1:]:
            cut = frames.index(b"", 1) + 1
            envelope, body = frames[:cut], frames[cut:]
        else:
            envelope, body = frames[:1], frames[1:]
        if len(body) == 1:
            reply = self.answer(body[0])
        else:
            reply = {"type": "catch_up", "ok": False, "reason": "bad_request",
                     "error": f"a request is one frame, got {len(body)}"}
        self.counters["requests"] += 1
        if not reply["ok"]:
            self.counters["refused"] += 1
        try:
            sock.send_multipart([*envelope, encode_payload(reply)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer is gone or not reading: its reply is dropped, logged
            log.warning("catch-up reply not sent: %s", exc)

    def answer(self, frame: bytes) -> dict[str, Any]:
        """The reply map to one request frame (never raises; docs/wire.md §12.2)."""
        try:
            req = parse_request(frame)
        except EdgeError as exc:
            return {"type": "catch_up", "ok": False, "reason": "bad_request", "error": str(exc)}
        try:
            if self._conn is None:
                self._conn = open_for_reading(self.store_path)
            t0 = time.perf_counter()
            page = results_after(self._conn, req["after_seq"], req["topics"], req["limit"], self.max_reply_bytes,
                                 req["after_row"])
        except (sqlite3.Error, EdgeError) as exc:
            if self._conn is not None:  # reopened on the next request
                self._conn.close()
                self._conn = None
            log.warning("catch-up read failed: %s", exc)
            return {"type": "catch_up", "ok": False, "reason": "store", "error": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # never let a request kill the thread
            log.exception("catch-up request failed")
            return {"type": "catch_up", "ok": False, "reason": "internal", "error": f"{type(exc).__name__}: {exc}"}
        self.counters["messages"] += len(page.messages)
        log.debug("catch-up after seq %d: %d message(s) in %.1f ms", req["after_seq"], len(page.messages),
                  (time.perf_counter() - t0) * 1e3)
        return {"type": "catch_up", "ok": True, "messages": [[t, p] for t, p in page.messages],
                "complete": page.complete, "more": page.more, "last_seq": page.last_seq, "cursor": page.cursor,
                "store_last_seq": page.store_last_seq}
