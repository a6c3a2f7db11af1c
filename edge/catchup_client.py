"""The subscriber's side of catch-up (used by :class:`edge.client.PredictionSubscriber`).

:class:`CatchUpClient` asks the daemon's catch-up endpoint for a page of stored results (docs/wire.md §12).
:class:`SubscriberCatchUp` decides, message by message, what a subscriber delivers:

- **Predictions** are delivered exactly once per ``seq``, in ``seq`` order. A live prediction whose ``seq`` is
  more than one past the last delivered (a gap: the daemon's high-water mark dropped some, or the connection was
  down) is held, with every live message after it, while the missed results are fetched and delivered; then the
  held ones follow and those already delivered are dropped. A prediction the store no longer has (retention, a
  failed write) is counted in ``stats["missing"]`` and logged, never waited for.
- **Errors, drift alarms and link events** have no ``seq``: a message whose payload bytes (a BLAKE2b digest) were
  among the last ``dedup_window`` such messages delivered is dropped as a duplicate. Their payloads carry
  ``received_ns`` and running totals, so two different messages never have the same bytes.
- **Status** is live only (never stored), delivered as it arrives; it tells the subscriber the daemon's
  ``store.last_seq``: one beyond the last delivered prediction starts a catch-up (the predictions after the last
  one received were dropped). A ``counters.dropped_hwm`` higher than in the previous status (some subscriber's
  queue overflowed, maybe this one's) starts a catch-up from that status's ``store.last_seq``: errors, drift
  alarms and link events dropped at the high-water mark leave no gap in ``seq`` to show it.
- A catch-up also starts after a reconnection (ZeroMQ socket monitor: disconnected, then connected), from the last
  ``seq`` delivered before the disconnection, at the first status after it (the subscription is then live again);
  and at the start, from ``after_seq`` when one is given.

Order: predictions in ``seq`` order; other messages in publication order, except that one recovered by a
reconnection or high-water-mark catch-up comes after the live messages received before it was noticed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import zmq

from .errors import EdgeError
from .security import curve_client
from .wire import decode_payload, encode_payload
from .wire_spec import CATCHUP_TOPICS, MAX_CATCHUP_LIMIT, MAX_CATCHUP_REPLY_BYTES

__all__ = ["CatchUpClient", "SubscriberCatchUp"]
log = logging.getLogger("edge.client")


_KeyFile = str | os.PathLike[str] | None


class CatchUpClient:
    """REQ client of the daemon's catch-up endpoint.

    Parameters
    ----------
    endpoint : str
        The daemon's catch-up endpoint, e.g. ``tcp://127.0.0.1:5558``.
    context : zmq.Context
    timeout_s : float
        Longest wait for a reply, seconds; after a timeout the socket is replaced (a REQ socket that lost its reply
        cannot send again).
    curve : tuple of (path-like or None, path-like or None)
        The client's secret key file and the daemon's public key file when the daemon protects its output with
        CurveZMQ (the catch-up endpoint shares that protection: docs/security.md); ``(None, None)``: plain.

    Raises
    ------
    EdgeError
        If the endpoint cannot be connected, or a key file is missing or malformed.
    """

    def __init__(self, endpoint: str, context: zmq.Context[Any], timeout_s: float = 5.0,
                 curve: tuple[_KeyFile, _KeyFile] = (None, None)) -> None:
        self.endpoint = endpoint
        self.ctx = context
        self.timeout_s = float(timeout_s)
        self._curve = curve
        self.sock = self._connect()

    def _connect(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 2 * MAX_CATCHUP_REPLY_BYTES)  # one message may pass the reply bound
        try:
            curve_client(sock, *self._curve)
        except EdgeError:
            sock.close(linger=0)
            raise
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise EdgeError(f"cannot connect to the catch-up endpoint {self.endpoint}: {exc}") from exc
        return sock

    def _reset(self) -> None:
        self.sock.close(linger=0)
        self.sock = self._connect()

    def page(self, after_seq: int, topics: Sequence[str] | None = None, limit: int = 1000,
             after_row: int | None = None) -> dict[str, Any]:
        """Ask for one page of the results stored after prediction ``after_seq``.

        Parameters
        ----------
        after_seq : int
            The last prediction ``seq`` the caller has (0: everything kept).
        topics : sequence of str, optional
            Only these topics (default: all stored topics).
        limit : int
            At most this many messages.
        after_row : int, optional
            The previous page's ``cursor``, to continue.

        Returns
        -------
        dict
            The reply (docs/wire.md §12.2) with ``ok`` true; ``messages`` is a list of ``(topic, payload bytes)``.

        Raises
        ------
        EdgeError
            No reply within ``timeout_s``, a malformed reply, or ``ok`` false (its reason and error).
        """
        req: dict[str, Any] = {"type": "catch_up", "after_seq": int(after_seq), "limit": int(limit)}
        if topics is not None:
            req["topics"] = list(topics)
        if after_row is not None:
            req["after_row"] = int(after_row)
        try:
            self.sock.send(encode_payload(req), zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self._reset()
            raise EdgeError(f"cannot send to the catch-up endpoint {self.endpoint}: {exc}") from exc
        if not self.sock.poll(int(self.timeout_s * 1000), zmq.POLLIN):
            self._reset()
            raise EdgeError(f"no reply from the catch-up endpoint {self.endpoint} within {self.timeout_s} s")
        reply = decode_payload(self.sock.recv())
        if reply.get("ok") is not True:
            raise EdgeError(f"catch-up refused ({reply.get('reason')}): {reply.get('error')}")
        messages = reply.get("messages")
        if not isinstance(messages, list) or not all(
                isinstance(m, list) and len(m) == 2 and m[0] in CATCHUP_TOPICS and isinstance(m[1], bytes)
                for m in messages):
            raise EdgeError("malformed catch-up reply: messages must be [topic, payload bytes] pairs")
        for key in ("last_seq", "cursor", "store_last_seq"):
            if not isinstance(reply.get(key), int):
                raise EdgeError(f"malformed catch-up reply: {key!r} must be an int")
        reply["messages"] = [(str(t), bytes(p)) for t, p in messages]
        return reply

    def close(self) -> None:
        """Close the socket without lingering."""
        self.sock.close(linger=0)


class SubscriberCatchUp:
    """What a subscriber with catch-up delivers, and when it asks for what it missed (module docstring).

    Parameters
    ----------
    client : CatchUpClient
    topics : sequence of str
        The subscriber's stored topics (``prediction`` among them); a catch-up asks for these.
    after_seq : int, optional
        Deliver the predictions after this ``seq`` (0: everything the store keeps), fetched at the first status.
        None: from the daemon's ``store.last_seq`` in the first status (what is published from then on).
    limit : int
        Messages per catch-up page (1 … :data:`edge.wire_spec.MAX_CATCHUP_LIMIT`).
    give_up_s : float
        A catch-up that keeps failing (the endpoint unreachable) for this long is abandoned: the held live
        messages are delivered and the predictions still missing are counted in ``stats["missing"]`` (logged).
    dedup_window : int
        How many recent non-prediction payload digests are remembered for the duplicate check.
    retry_s : float
        Wait between failed catch-up attempts.

    Attributes
    ----------
    pending : collections.deque
        ``(topic, payload map)`` ready to deliver, in order.
    last_seq : int or None
        The last prediction ``seq`` delivered (or accepted for delivery).
    stats : dict of str to int
        ``live`` and ``caught_up`` (messages accepted from each path), ``duplicates`` dropped, ``missing``
        predictions that could not be had, ``catchups`` (pages received), ``catchup_errors``, ``incomplete``
        (pages saying the store no longer has some), ``reconnects``.
    """

    def __init__(self, client: CatchUpClient, topics: Sequence[str], after_seq: int | None = None,
                 limit: int = 1000, give_up_s: float = 30.0, dedup_window: int = 10000, retry_s: float = 0.5) -> None:
        if "prediction" not in topics:
            raise EdgeError("catch-up follows prediction seq: subscribe to the prediction topic")
        if not 1 <= limit <= MAX_CATCHUP_LIMIT:
            raise EdgeError(f"catch-up limit must be in [1, {MAX_CATCHUP_LIMIT}], got {limit!r}")
        if after_seq is not None and (type(after_seq) is not int or after_seq < 0):
            raise EdgeError(f"after_seq must be an int ≥ 0 (0: everything kept), got {after_seq!r}")
        if dedup_window < 1 or give_up_s <= 0 or retry_s <= 0:
            raise EdgeError("dedup_window must be ≥ 1, give_up_s and retry_s > 0")
        self.client = client
        self.topics = sorted(set(topics) & set(CATCHUP_TOPICS))
        self.limit, self.give_up_s, self.retry_s = limit, give_up_s, retry_s
        self.pending: deque[tuple[str, dict[str, Any]]] = deque()
        self.last_seq = after_seq
        self.stats = {"live": 0, "caught_up": 0, "duplicates": 0, "missing": 0, "catchups": 0, "catchup_errors": 0,
                      "incomplete": 0, "reconnects": 0}
        self._held: list[tuple[str, bytes]] = []
        self._need: str | None = None  # why a catch-up is due
        self._from: int | None = None  # the seq it starts after
        self._page: tuple[int, int] | None = None  # (after_seq, after_row) of the next page of a catch-up under way
        self._need_since = self._retry_at = 0.0
        self._wait_status = True  # the subscription is live at the first status
        self._disconnected_at: int | None = None
        self._was_disconnected = False
        self._status_last_seq = 0  # store.last_seq of the last status
        self._status_dropped: int | None = None  # counters.dropped_hwm of the last status
        self._again: int | None = None  # a catch-up to start when the one under way ends
        self._seen: deque[bytes] = deque(maxlen=dedup_window)
        self._seen_set: set[bytes] = set()
        if after_seq is not None:
            self._request("start", after_seq)

    # -- when to catch up ---------------------------------------------------------------------------------
    def _request(self, reason: str, from_seq: int) -> None:
        """Start a catch-up after ``from_seq``; one due already starts from the lower; one under way is followed
        by another.
        """
        if self._need is None:
            self._need, self._from, self._need_since, self._retry_at = reason, from_seq, time.monotonic(), 0.0
            log.info("catching up (%s) after seq %d", reason, from_seq)
        elif self._page is None:
            self._from = min(from_seq, self._from if self._from is not None else from_seq)
        else:
            self._again = from_seq if self._again is None else min(self._again, from_seq)

    def due(self) -> bool:
        """A catch-up page should be fetched now."""
        return self._need is not None and not self._wait_status and time.monotonic() >= self._retry_at

    def wait_s(self) -> float | None:
        """Seconds until the next catch-up attempt is due (None: none is waiting for a retry)."""
        if self._need is None or self._wait_status:
            return None
        return max(0.0, self._retry_at - time.monotonic())

    def on_disconnected(self) -> None:
        """The SUB socket lost its connection (socket monitor)."""
        if not self._was_disconnected:
            self._was_disconnected = True
            self._disconnected_at = self.last_seq

    def on_connected(self) -> None:
        """The SUB socket connected; after a disconnection, catch up from before it at the next status."""
        if not self._was_disconnected:
            return
        self._was_disconnected = False
        self.stats["reconnects"] += 1
        if self._disconnected_at is not None:
            self._request("reconnect", self._disconnected_at)
        self._wait_status = True  # the subscriptions are live again when the daemon's welcome status arrives

    def _on_status(self, status: dict[str, Any]) -> None:
        store = status.get("store")
        store_last = store.get("last_seq") if isinstance(store, dict) else None
        counters = status.get("counters")
        dropped = counters.get("dropped_hwm") if isinstance(counters, dict) else None
        waited, self._wait_status = self._wait_status, False  # the subscription is live
        if type(store_last) is not int:
            return
        previous_last, previous_dropped = self._status_last_seq, self._status_dropped
        if store_last < previous_last:  # monotonic in one store: the daemon now serves another one
            log.warning("the daemon's store.last_seq went back from %d to %d (another store?): predictions with seq "
                        "≤ %s are dropped as already delivered", previous_last, store_last, self.last_seq)
        self._status_last_seq = store_last
        self._status_dropped = dropped if type(dropped) is int else None
        if waited and self.last_seq is None and self._need is None:
            self.last_seq = store_last  # live from here: what is published after the subscription
            return
        if self.last_seq is None:
            return
        overflowed = (not waited and previous_dropped is not None and self._status_dropped is not None
                      and self._status_dropped > previous_dropped)
        if overflowed:
            # a subscriber's queue overflowed since the last status (maybe this one's): errors, drift and link
            # events have no seq to show a gap, so fetch what was published since then (duplicates are dropped)
            self._request("hwm", min(previous_last, self.last_seq))
        elif store_last > self.last_seq and self._need is None:
            self._request("status", self.last_seq)  # predictions published before this status never arrived

    # -- delivering ---------------------------------------------------------------------------------------
    def on_live(self, topic: str, raw: bytes) -> None:
        """A message received on the SUB socket."""
        if topic == "status":
            status = decode_payload(raw)
            self._on_status(status)
            self.pending.append((topic, status))
        elif self._need is not None:
            self._held.append((topic, raw))  # delivered after the catch-up, in order
        else:
            self._accept(topic, raw, "live")

    def _accept(self, topic: str, raw: bytes, source: str) -> None:
        """Deliver ``raw`` unless already delivered; ``source``: ``live``, ``caught_up`` or ``held`` (received
        before the store was read: a gap before it cannot be filled).
        """
        payload = decode_payload(raw)
        if topic == "prediction" and type(seq := payload.get("seq")) is int:
            last = self.last_seq
            if last is not None and seq <= last:
                self.stats["duplicates"] += 1
                return
            if last is not None and seq > last + 1:
                if source == "live":
                    self._request("gap", last)
                    self._held.append((topic, raw))
                    return
                self.stats["missing"] += seq - last - 1
                log.warning("predictions %d–%d are not in the daemon's store (retention or a failed write): "
                            "missed for good", last + 1, seq - 1)
            self.last_seq = seq
        elif topic != "prediction":
            digest = hashlib.blake2b(raw, digest_size=16).digest()
            if digest in self._seen_set:
                self.stats["duplicates"] += 1
                return
            if len(self._seen) == self._seen.maxlen:
                self._seen_set.discard(self._seen[0])
            self._seen.append(digest)
            self._seen_set.add(digest)
        self.stats["caught_up" if source == "caught_up" else "live"] += 1
        self.pending.append((topic, payload))

    def fetch_page(self) -> None:
        """Fetch and deliver the next page of the catch-up under way; after the last, release the held messages."""
        after_seq, after_row = self._page or (int(self._from or 0), None)
        try:
            reply = self.client.page(after_seq, self.topics, self.limit, after_row)
        except EdgeError as exc:
            self.stats["catchup_errors"] += 1
            if time.monotonic() - self._need_since < self.give_up_s:
                log.warning("catch-up failed (retrying in %.1f s): %s", self.retry_s, exc)
                self._retry_at = time.monotonic() + self.retry_s
                return
            log.error("catch-up abandoned after %.0f s: %s; delivering what was received live", self.give_up_s, exc)
            self._finish(None)
            return
        self.stats["catchups"] += 1
        if not reply["complete"]:
            self.stats["incomplete"] += 1
        for topic, raw in reply["messages"]:
            self._accept(topic, raw, "caught_up")
        if reply["more"]:
            self._page = (int(reply["last_seq"]), int(reply["cursor"]))
        else:
            self._finish(int(reply["store_last_seq"]))

    def _finish(self, store_last_seq: int | None) -> None:
        """End a catch-up: deliver the held live messages (received before the store was read, so a gap before
        one cannot be filled any more); predictions up to the store's ``last_seq`` at the read that arrived
        neither way are missing for good.
        """
        self._need = self._from = self._page = None
        held, self._held = self._held, []
        for topic, raw in held:
            self._accept(topic, raw, "held")
        if store_last_seq is not None and self.last_seq is not None and store_last_seq > self.last_seq:
            self.stats["missing"] += store_last_seq - self.last_seq
            log.warning("predictions %d–%d are not in the daemon's store (retention or a failed write): missed for "
                        "good", self.last_seq + 1, store_last_seq)
            self.last_seq = store_last_seq
        if self._again is not None:
            again, self._again = self._again, None
            self._request("again", again)
