"""The daemon's acknowledged input: a ROUTER endpoint that acknowledges every spectrum once it is stored.

A sender (:class:`edge.acked_sender.AckedSender`, a DEALER; a REQ socket works too) sends each spectrum as one
frame, with its ``id`` set. The daemon classifies the micro-batch, stores it with its results
(:meth:`edge.store.Store.write_batch`, one transaction) and only then answers each message with an ``ack`` map
(docs/wire.md §4.3, declared in :mod:`edge.wire_spec`):

``stored``
    stored with its result (answered exactly once): the sender forgets it.
``duplicate``
    the store already held this ``instrument_id`` + ``id`` (a resend): not classified again, not published on
    the error topic (a resend is normal protocol; counted in ``counters.duplicates``): the sender forgets it.
``rejected``
    the message is malformed (stored, answered on the ``error`` topic with the same ``reason`` and ``detail``):
    resending it cannot help, the sender forgets it and reports it.
``not_stored``
    the store cannot write (disk full, I/O error): until the store writes again a spectrum is classified only
    once it is stored, so that its resend is classified once (only the micro-batch whose commit failed first was
    classified and published: docs/store.md); the sender keeps it and resends after ``retry_after_ms``.

This module is the socket and the acknowledgements; the daemon's answering path (:meth:`edge.daemon.Daemon._answer`)
calls :meth:`AckInput.acknowledge` right after the micro-batch's commit. Written here (no library offers a store-then-ack
ROUTER): pyzmq gives the sockets, msgpack the encoding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from .batch import rejection_detail, rejection_reason
from .errors import ConfigError, WireError
from .socket_limits import apply_limits, receive_batch
from .store import Store
from .wire import WIRE_VERSION, SpectrumIn, encode_payload, peek_identity

__all__ = ["ACK_STATUSES", "AckInput", "AckItem", "Received", "require_id"]
log = logging.getLogger("edge.ack_input")

ACK_STATUSES = ("stored", "duplicate", "rejected", "not_stored")
_WARN_EVERY_S = 1.0


@dataclass(frozen=True)
class Received:
    """One message taken from the ROUTER: the ``envelope`` to reply with (the sender's routing id, plus the empty
    delimiter frame of a REQ sender) and the ``frame`` (a multipart body: the list of its frames, refused later).
    """

    envelope: list[bytes]
    frame: bytes | list[bytes]


@dataclass(frozen=True)
class AckItem:
    """What the daemon did with one acknowledged-input message, after the store's commit.

    Parameters
    ----------
    envelope : list of bytes
        Where the ack goes (:attr:`Received.envelope`).
    spectrum : SpectrumIn or None
        The decoded spectrum (None: refused in decoding).
    error : Exception or None
        Why it was refused (with ``spectrum`` None).
    row : int or None
        Its store row (None: a duplicate, or the store could not write).
    duplicate_of : int or None
        The stored row it repeats.
    """

    envelope: list[bytes]
    spectrum: SpectrumIn | None
    error: Exception | None
    row: int | None
    duplicate_of: int | None


def require_id(frame: bytes) -> None:
    """Refuse an acknowledged-input spectrum without an ``id`` (the daemon would make one the sender cannot know, and
    a resend could not be recognised).

    Parameters
    ----------
    frame : bytes
        A frame that :func:`edge.wire.decode_spectrum` accepted.

    Raises
    ------
    WireError
        When the message has no ``id``.
    """
    ident = peek_identity(frame)
    if ident["id"] is None:
        raise WireError("the acknowledged input needs each spectrum's 'id' (how a resend is recognised and an ack "
                        "matched); set one, e.g. edge.client.AckedSender does", ident)


class AckInput:
    """Bind the acknowledged input (ROUTER).

    The socket has ``MAXMSGSIZE`` = :data:`edge.wire.MAX_MESSAGE_BYTES` like the PULL input (ZeroMQ drops a larger
    message and its connection) and ``ROUTER_MANDATORY`` on: an ack to a sender that is gone (or whose queue is
    full) is counted (``unroutable``) and logged, never raised into the daemon's loop; that sender resends and is
    acknowledged again (``duplicate``).

    Parameters
    ----------
    context : zmq.Context
    endpoint : str
        ZeroMQ endpoint to bind, e.g. ``tcp://127.0.0.1:5558``.
    secure : callable, optional
        Called with the socket before it binds: the daemon makes it a CurveZMQ server there when its ``input``
        is protected (:meth:`edge.security.CurveServer.secure`, role ``input``: both spectrum inputs or neither).

    Raises
    ------
    zmq.ZMQError
        When the endpoint cannot be bound (the socket is closed first).
    ConfigError
        From ``secure`` (the socket is closed first).
    """

    def __init__(self, context: zmq.Context[Any], endpoint: str,
                 secure: Callable[[zmq.Socket[bytes]], object] | None = None) -> None:
        self.sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        apply_limits(self.sock, "input")  # as the PULL input: MAXMSGSIZE, queue ≤ 32 MiB (docs/wire.md §1.1)
        self.sock.setsockopt(zmq.SNDHWM, 100000)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.LINGER, 0)
        try:
            if secure is not None:
                secure(self.sock)
            self.sock.bind(endpoint)
        except (zmq.ZMQError, ConfigError):
            self.sock.close(linger=0)
            raise
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.acks = dict.fromkeys(ACK_STATUSES, 0)
        self.unroutable = 0
        self._warned_at = 0.0

    def drain(self, limit: int) -> list[Received]:
        """Take up to ``limit`` waiting messages without blocking.

        Parameters
        ----------
        limit : int

        Returns
        -------
        list of Received
        """
        out: list[Received] = []
        for parts in receive_batch(self.sock, limit)[0]:  # a batch of the largest spectra stays ≤ 4 MiB (+1 message)
            cut = 2 if len(parts) > 2 and parts[1] == b"" else 1  # a REQ sender's empty delimiter stays in the envelope
            body = parts[cut:]
            out.append(Received(parts[:cut], body[0] if len(body) == 1 else body))
        return out

    def acknowledge(self, items: Sequence[AckItem], store: Store) -> None:
        """Send each item's ack (call only after the store's transaction committed).

        Parameters
        ----------
        items : sequence of AckItem
        store : Store
            For ``not_stored``: its error and retry interval go into the ack.
        """
        for item in items:
            self._send(item.envelope, self._ack(item, store))

    def _ack(self, item: AckItem, store: Store) -> dict[str, Any]:
        ack: dict[str, Any] = {"type": "ack", "v": WIRE_VERSION}
        if item.spectrum is None:
            err = item.error if item.error is not None else WireError("undecodable")
            ident = err.identity if isinstance(err, WireError) else {}
            ack.update(id=ident.get("id"), instrument_id=ident.get("instrument_id"), status="rejected",
                       reason=rejection_reason(err), detail=rejection_detail(err))
        else:
            ack.update(id=item.spectrum.id, instrument_id=item.spectrum.instrument_id)
            if item.duplicate_of is not None:
                ack["status"] = "duplicate"
            elif item.row is not None:
                ack["status"] = "stored"
            else:
                ack.update(status="not_stored", retry_after_ms=int(store.config.retry_s * 1000),
                           detail=f"the daemon's store cannot write ({store.error or 'unavailable'}): keep this "
                                  "spectrum and resend it after retry_after_ms")
        self.acks[ack["status"]] += 1
        return ack

    def _send(self, envelope: list[bytes], ack: dict[str, Any]) -> None:
        try:
            self.sock.send_multipart([*envelope, encode_payload(ack)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the sender is gone; EAGAIN: its queue is full. It resends.
            self.unroutable += 1
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY_S:
                self._warned_at = now
                log.warning("ack for %s not delivered (%s); %d so far: the sender resends and is acknowledged then",
                            ack.get("id"), exc, self.unroutable)

    def status(self) -> dict[str, Any]:
        """The ``ack_input`` entry of the daemon's status: ``endpoint``, ``acks`` by status, ``unroutable``."""
        return {"ack_input": {"endpoint": self.endpoint, "acks": dict(self.acks), "unroutable": self.unroutable}}

    def unbind(self) -> None:
        """Stop taking new connections (on stop); messages already queued can still be drained and acknowledged."""
        try:
            self.sock.unbind(self.endpoint)
        except zmq.ZMQError as exc:
            log.debug("unbinding the acknowledged input failed: %s", exc)

    def close(self) -> None:
        """Close the socket (acks not yet sent are dropped: their senders resend)."""
        self.sock.close(linger=0)
