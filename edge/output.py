"""The daemon's output socket: publish without blocking, and count what a full subscriber queue refused.

ZeroMQ's XPUB drops a message silently for a subscriber whose queue is at the high-water mark. With
``ZMQ_XPUB_NODROP`` set, a non-blocking send raises :class:`zmq.Again` instead, but then the message goes to
*no* subscriber (libzmq ``xpub_t::xsend`` checks the high-water mark of every subscriber matching the topic,
``dist_t::check_hwm``, before writing to any). :class:`CountingPublisher` therefore sends with NODROP on;
when the send is refused it counts the message once (``dropped_hwm``, and per topic), switches NODROP off
for one resend (the message then reaches every subscriber whose queue has room, and is dropped for the full
ones) and switches it back on. The loop never blocks and a slow subscriber never starves the others.
Semantics and bounds: docs/wire.md §7 "delivery". No library offers this counter, hence this small wrapper.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import zmq

__all__ = ["CountingPublisher"]
log = logging.getLogger("edge.daemon")


class CountingPublisher:
    """Send ``[topic, payload]`` on an XPUB socket without blocking, counting high-water-mark drops.

    Parameters
    ----------
    sock : zmq.Socket
        The daemon's XPUB output socket; ``ZMQ_XPUB_NODROP`` is set on it here.
    log_interval_s : float
        At most one warning per this many seconds while drops happen (each with the running total).

    Attributes
    ----------
    dropped : int
        Messages that at least one subscriber of their topic did not get because its queue was full.
    dropped_by_topic : dict of str to int
        The same, by topic name (``prediction``, ``status``, ...).
    """

    def __init__(self, sock: zmq.Socket[bytes], log_interval_s: float = 1.0) -> None:
        self.sock = sock
        self.sock.setsockopt(zmq.XPUB_NODROP, 1)
        self.log_interval_s = log_interval_s
        self.dropped = 0
        self.dropped_by_topic: dict[str, int] = {}
        self._last_log = float("-inf")
        self._unlogged = 0

    def send_multipart(self, msg_parts: Sequence[bytes], /) -> Any:
        """Send one message; when a subscriber's queue is full, count it and deliver it to the others.

        Parameters
        ----------
        msg_parts : sequence of bytes
            ``[topic, payload]``.

        Returns
        -------
        bool
            True when every matching subscriber got the message, False when at least one did not (counted).
        """
        try:
            self.sock.send_multipart(msg_parts, zmq.NOBLOCK)
            return True
        except zmq.Again:
            pass
        topic = bytes(msg_parts[0]).decode("ascii", "replace")
        self.dropped += 1
        self.dropped_by_topic[topic] = self.dropped_by_topic.get(topic, 0) + 1
        self.sock.setsockopt(zmq.XPUB_NODROP, 0)  # lossy for one send: the subscribers with room get it
        try:
            self.sock.send_multipart(msg_parts, zmq.NOBLOCK)
        except zmq.Again:  # not expected in lossy mode; the message is counted as dropped either way
            log.debug("lossy resend refused too")
        finally:
            self.sock.setsockopt(zmq.XPUB_NODROP, 1)
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_log >= self.log_interval_s:
            log.warning("a subscriber's queue is full (high-water mark): %d message(s) not delivered to it "
                        "since the last warning, %d in all (%s)", self._unlogged, self.dropped,
                        self.dropped_by_topic)
            self._last_log, self._unlogged = now, 0
        return False
