"""Size limits of every socket the daemon binds: the largest message each accepts and how many it queues.

ZeroMQ queues whole messages, counted in messages (the high-water mark), not bytes, and reads a message of any
size unless ``zmq.MAXMSGSIZE`` is set. So a peer could make the daemon hold ``HWM × message size`` bytes. Every
socket the daemon binds therefore gets (docs/wire.md §1.1):

* a maximum message size derived from what it legitimately carries: the largest valid spectrum for the
  inputs (:data:`edge.wire.MAX_MESSAGE_BYTES`), subscription frames for the output (a topic prefix, plus room
  for a CurveZMQ handshake command, which libzmq also checks against the limit), a head file for control;
* a receive queue bounded in bytes: its high-water mark is :data:`QUEUE_BYTES` divided by that size (at
  least 2, at most libzmq's default 1 000), so a flood of the largest messages queues at most about 32 MiB
  per connected peer (two heads on control); a flood of ordinary spectra waits in the kernel's TCP buffers
  and in the sender instead.

On a stream transport (tcp, ipc) libzmq drops a message above the limit while reading its size (before
allocating it) and closes the connection that sent it; nothing reaches the daemon, nothing is answered. On
``inproc`` (the daemon's internal input) libzmq does not check sizes: :func:`edge.wire.decode_spectrum` refuses
a frame above :data:`edge.wire.MAX_MESSAGE_BYTES` there, as an answered ``wire`` error.
"""

from __future__ import annotations

import time
from typing import Any, cast

import zmq

from .errors import ConfigError
from .heads import MAX_HEAD_BYTES
from .wire import MAX_MESSAGE_BYTES
from .wire_spec import MAX_CATCHUP_REQUEST_BYTES

__all__ = ["BATCH_BYTES", "MAX_BYTES", "MAX_RECEIVE_HWM", "MIN_RECEIVE_HWM", "QUEUE_BYTES", "REFILL_WAIT_MS",
           "SUBSCRIPTION_MAX_BYTES", "apply_limits", "receive_batch", "receive_hwm"]

#: Largest frame the output (XPUB) socket reads: a subscription (``\x01`` + topic prefix) or a ZMTP command.
#: A CurveZMQ INITIATE command with its metadata is about 300 bytes: 4 KiB leaves room for both.
SUBSCRIPTION_MAX_BYTES = 4096
#: Largest message, bytes, by socket role. ``input``: the public spectrum inputs (PULL, and the acknowledged
#: input's ROUTER); ``internal``: the serial input's inproc PULL; ``output``: the XPUB; ``control``: REP, one
#: request with an inline head; ``catchup``: the catch-up ROUTER (one small request map).
MAX_BYTES: dict[str, int] = {
    "input": MAX_MESSAGE_BYTES,
    "internal": MAX_MESSAGE_BYTES,
    "output": SUBSCRIPTION_MAX_BYTES,
    "control": MAX_HEAD_BYTES + 4096,
    "catchup": MAX_CATCHUP_REQUEST_BYTES,
}
#: Bytes of the largest messages one peer may have queued in a receiving socket (the high-water mark is
#: this divided by the role's maximum message size).
QUEUE_BYTES = 32 << 20
#: Input bytes the daemon takes into one micro-batch (it stops receiving once a batch holds this many; the
#: next batch takes the rest): preprocessing a batch of the largest spectra costs several times their bytes.
#: 64 ordinary spectra (1 392 float32 points and axis, about 11 KB each) stay far below it.
BATCH_BYTES = 4 << 20

#: Longest time the daemon waits, per micro-batch, for libzmq to refill an input queue that was full (a backlog:
#: :func:`receive_batch`), milliseconds: at the inputs' high-water mark of 30 messages a flood was answered in
#: micro-batches of 34 spectra on average instead of 64, each costing more per spectrum.
REFILL_WAIT_MS = 2


#: Smallest receive high-water mark: libzmq's REP over CurveZMQ receives nothing with 1 (measured, libzmq 4.3.5).
MIN_RECEIVE_HWM = 2
#: Largest receive high-water mark: libzmq's default (small messages need no deeper queue).
MAX_RECEIVE_HWM = 1000


def receive_hwm(role: str) -> int:
    """Receive high-water mark (messages) for a socket role: :data:`QUEUE_BYTES` // its maximum size, within
    [:data:`MIN_RECEIVE_HWM`, :data:`MAX_RECEIVE_HWM`].

    Raises
    ------
    ConfigError
        For an unknown role.
    """
    if role not in MAX_BYTES:
        raise ConfigError(f"unknown socket role {role!r}; roles: {sorted(MAX_BYTES)}")
    return min(MAX_RECEIVE_HWM, max(MIN_RECEIVE_HWM, QUEUE_BYTES // MAX_BYTES[role]))


def apply_limits(sock: zmq.Socket[Any], role: str) -> None:
    """Set ``zmq.MAXMSGSIZE`` and the receive high-water mark of a socket the daemon binds, before ``bind``.

    Parameters
    ----------
    sock : zmq.Socket
        The socket (not yet bound).
    role : str
        A key of :data:`MAX_BYTES`.

    Raises
    ------
    ConfigError
        For an unknown role.
    """
    hwm = receive_hwm(role)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_BYTES[role])
    sock.setsockopt(zmq.RCVHWM, hwm)


def receive_batch(sock: zmq.Socket[bytes], limit: int, budget_bytes: int = BATCH_BYTES,
                  refill_wait_ms: int = 0) -> tuple[list[list[bytes]], int]:
    """Receive up to ``limit`` waiting messages without blocking, and no more once they hold ``budget_bytes``.

    The one receive loop of the daemon's inputs (PULL, internal, the acknowledged ROUTER): the byte budget bounds
    the memory a micro-batch of the largest spectra takes (the last message may pass it).

    The receive queue holds at most its high-water mark (:func:`receive_hwm`: 30 messages on the inputs); under a
    backlog the rest waits in the kernel's TCP buffers, and libzmq's I/O thread moves it into the queue as the
    queue empties. With ``refill_wait_ms``, once this call has taken a full queue's worth of messages and the
    queue is empty, it waits up to that long in total for the refill instead of returning a short micro-batch
    (which costs more per spectrum). A queue that was not full means no backlog: it returns at once.

    Parameters
    ----------
    sock : zmq.Socket
    limit : int
        At most this many messages.
    budget_bytes : int
        Stop once the messages received hold this many bytes.
    refill_wait_ms : int
        Longest total wait for a backlog's refill, milliseconds (0: never wait).

    Returns
    -------
    messages : list of list of bytes
        Each message's frames.
    nbytes : int
        Bytes received.
    """
    out: list[list[bytes]] = []
    nbytes = 0
    full = cast("int", sock.getsockopt(zmq.RCVHWM)) if refill_wait_ms > 0 else 0
    deadline: float | None = None
    while len(out) < limit and nbytes < budget_bytes:
        try:
            parts = sock.recv_multipart(zmq.NOBLOCK, copy=True)
        except zmq.Again:
            if refill_wait_ms <= 0 or len(out) < full:
                break
            now = time.monotonic()
            deadline = now + refill_wait_ms / 1000 if deadline is None else deadline
            if now >= deadline or not sock.poll(max(1, round((deadline - now) * 1000)), zmq.POLLIN):
                break
            continue
        nbytes += sum(len(p) for p in parts)
        out.append(parts)
    return out, nbytes
