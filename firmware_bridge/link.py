"""Link layer: consume spectra from an instrument over a serial URL.

:class:`InstrumentLink` ties a :class:`~firmware_bridge.transport.ReconnectingPort`,
a :class:`~firmware_bridge.framing.FrameDecoder` and a
:class:`~firmware_bridge.protocol.SequenceTracker` together. Guarantee: every
SPECTRUM sequence number the link learns about is either delivered exactly once
to ``on_spectrum`` or reported exactly once to ``on_lost(seq, reason)``.

Typical use (the daemon)::

    stop = threading.Event()
    link = InstrumentLink("/dev/ttyUSB0", baudrate=921600)
    thread = threading.Thread(target=link.run, kwargs=dict(
        on_spectrum=queue.put, on_lost=lambda seq, why: log.warning(...), stop_event=stop))
    thread.start(); ...; stop.set(); thread.join()
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from .errors import ProtocolError
from .framing import Frame, FrameDecoder
from .protocol import (
    Ack,
    Hello,
    Message,
    Nack,
    ProtocolCounters,
    ResendRequest,
    ResendUnavailable,
    SeqObservation,
    SequenceTracker,
    SpectrumMessage,
    StatusMessage,
    decode_frame,
    encode_message,
)
from .transport import Backoff, LinkStateEvent, ReconnectingPort
from .wire import MAX_FRAME_SIZE, MessageType

log = logging.getLogger(__name__)

SpectrumCallback = Callable[[SpectrumMessage], bool | None]
StatusCallback = Callable[[StatusMessage], None]
LinkStateCallback = Callable[[LinkStateEvent], None]
LostCallback = Callable[[int, str], None]

#: Reconnection schedule used when none is given (frozen, so one shared instance is safe).
_DEFAULT_BACKOFF = Backoff()


@dataclasses.dataclass(frozen=True)
class LinkConfig:
    """Behaviour of :class:`InstrumentLink`.

    Attributes
    ----------
    ack_spectra : bool
        Send ACK(seq) after each spectrum is delivered (also for duplicates).
    nack_invalid : bool
        Send NACK(seq, reason) for intact frames whose message is invalid.
    resend : bool
        Request missing sequence numbers; if False they are reported lost at once.
    resend_timeout_s : float
        Wait for a requested retransmission before asking again. The clock of an
        outstanding request restarts whenever another retransmission arrives
        (it may be queued behind it), so only silence counts.
    max_resend_attempts : int
        Requests per sequence number before reporting it lost.
    max_outstanding_resends : int
        Most RESEND_REQUESTs awaiting an answer at any time.
    read_timeout_s : float
        Longest a read blocks; bounds shutdown latency and resend-timer resolution.
    max_frame_size : int
        Largest accepted unstuffed frame, in bytes.
    dedupe_window : int
        Sequence numbers remembered for duplicate detection.
    max_gap : int
        Largest forward jump treated as a gap (larger: resync, see PROTOCOL.md).
    host_id : str
        Sent in HELLO.
    report_pending_on_stop : bool
        When :meth:`InstrumentLink.run` returns, report still-missing numbers as lost.
    ack_when_taken : bool
        Custody mode, for a host that stores a spectrum before it acknowledges it (with ``ack_spectra``):
        ``on_spectrum`` returns True once it has *taken* the spectrum (stored it, or found it stored before),
        and only then is it ACKed; otherwise no ACK goes out and a retransmission of it is offered again.
        Every intact SPECTRUM this link has not yet taken is offered, duplicates and
        late arrivals included (after a host restart the tracker cannot know what an earlier run stored: the
        callback deduplicates); a taken one that arrives again is ACKed again without a callback. A
        retransmission the link did not ask for leaves sequence tracking alone. PROTOCOL.md §7.8.
    """

    ack_spectra: bool = False
    nack_invalid: bool = True
    resend: bool = True
    resend_timeout_s: float = 0.5
    max_resend_attempts: int = 5
    max_outstanding_resends: int = 32
    read_timeout_s: float = 0.05
    max_frame_size: int = MAX_FRAME_SIZE
    dedupe_window: int = 4096
    max_gap: int = 65536
    host_id: str = "raman-edge"
    report_pending_on_stop: bool = True
    ack_when_taken: bool = False

    def __post_init__(self) -> None:
        if self.ack_when_taken and not self.ack_spectra:
            raise ValueError("ack_when_taken (custody mode) needs ack_spectra: it decides when an ACK goes out")


class _Callbacks(NamedTuple):
    """The callbacks of the current :meth:`InstrumentLink.run`."""

    on_spectrum: SpectrumCallback
    on_status: StatusCallback | None
    on_lost: LostCallback | None


@dataclasses.dataclass
class _Pending:
    attempts: int = 0
    due: float = 0.0  # monotonic time of the next request (or of giving up)


class InstrumentLink:
    """Receive spectra from one instrument, with resend, dedupe and reconnection.

    Parameters
    ----------
    url : str
        Device path or pyserial URL (``/dev/ttyUSB0``, ``socket://127.0.0.1:5000``, ...).
    baudrate : int, optional
        Line rate in bit/s.
    config : LinkConfig, optional
    backoff : Backoff, optional
        Reconnection schedule of the transport.
    exclusive : bool, optional
        Lock native serial ports (see :func:`~firmware_bridge.transport.open_port`).
    port : ReconnectingPort, optional
        Use this transport instead of building one from ``url`` (its
        ``on_state`` and ``stop_event`` are replaced by :meth:`run`).

    Notes
    -----
    :meth:`run` is single-threaded: all callbacks run on the thread that calls it.
    Retransmitted spectra are delivered when they arrive, so delivery order can
    differ from sequence order; use ``SpectrumMessage.seq`` to reorder.
    """

    def __init__(self, url: str, *, baudrate: int = 115200, config: LinkConfig = LinkConfig(),
                 backoff: Backoff = _DEFAULT_BACKOFF, exclusive: bool = True,
                 port: ReconnectingPort | None = None) -> None:
        self.url = url
        self.config = config
        self.port = port or ReconnectingPort(url, baudrate=baudrate, exclusive=exclusive,
                                             read_timeout_s=config.read_timeout_s, backoff=backoff)
        self.decoder = FrameDecoder(config.max_frame_size)
        self.tracker = SequenceTracker(window=config.dedupe_window, max_gap=config.max_gap)
        self.protocol_counters = ProtocolCounters()
        self._pending: dict[int, _Pending] = {}
        self._last_retransmission = 0.0
        self._generation = 0
        self._running = threading.Lock()
        self._callbacks: _Callbacks | None = None  # set while run() runs
        self._taken: _Taken = _Taken(config.dedupe_window)  # custody mode: (session, seq) taken in this run

    # ------------------------------------------------------------------ public API
    def run(self, on_spectrum: SpectrumCallback, on_status: StatusCallback | None = None,
            on_link_state: LinkStateCallback | None = None, stop_event: threading.Event | None = None,
            on_lost: LostCallback | None = None) -> None:
        """Receive until ``stop_event`` is set.

        Parameters
        ----------
        on_spectrum : callable
            ``on_spectrum(msg: SpectrumMessage)``, once per sequence number. In custody mode
            (``config.ack_when_taken``) it returns True when it took the spectrum (then it is ACKed), anything
            else when it did not (no ACK; a retransmission is offered again).
        on_status : callable, optional
            ``on_status(msg: StatusMessage)`` for every heartbeat.
        on_link_state : callable, optional
            ``on_link_state(event: LinkStateEvent)`` on "up"/"down"/"reconnecting".
        stop_event : threading.Event, optional
            Set from any thread to stop; ``run`` returns within about
            ``config.read_timeout_s`` (or the current backoff wait, which also
            watches the event).
        on_lost : callable, optional
            ``on_lost(seq: int, reason: str)`` once per sequence number that will
            never be delivered (resend unavailable, retries exhausted, invalid
            payload, instrument restart, stop). Without it, losses are logged.

        Raises
        ------
        InvalidUrl, LinkDown
            The port can never be (re)opened. Exceptions raised by a callback
            propagate after the port is closed.
        RuntimeError
            If ``run`` is already running on this link.
        """
        if not self._running.acquire(blocking=False):
            raise RuntimeError("InstrumentLink.run is already running")
        stop = stop_event or threading.Event()
        self._callbacks = _Callbacks(on_spectrum, on_status, on_lost)
        self.port.stop_event = stop
        self.port.on_state = on_link_state
        try:
            while not stop.is_set():
                if not self.port.is_open and not self.port.connect():
                    break
                if self.port.generation != self._generation:
                    self._on_connected()
                data = self.port.read()
                for frame in self.decoder.feed(data) if data else ():
                    self._handle(frame)
                self._service_resends(time.monotonic())
        finally:
            self.port.close()
            try:
                if self.config.report_pending_on_stop:
                    for seq in list(self._pending):
                        self._lose(seq, "link stopped before retransmission")
            finally:
                self._callbacks = None
                self._running.release()

    def counters(self) -> dict[str, int]:
        """All counters (decoder, protocol, transport) as one flat dict."""
        merged = self.decoder.counters.as_dict()
        merged.update(self.protocol_counters.as_dict())
        merged.update(self.port.counters)
        merged["seqs_pending"] = len(self._pending)
        return merged

    # ------------------------------------------------------------------ receiving
    def _on_connected(self) -> None:
        self._generation = self.port.generation
        self.decoder.reset()
        now = time.monotonic()
        for pending in self._pending.values():
            pending.due = now  # ask again at once; requests sent while down never arrived
        if self._send(Hello(self.config.host_id)):
            self.protocol_counters.hellos_sent += 1

    def _handle(self, frame: Frame) -> None:
        counters = self.protocol_counters
        try:
            msg = decode_frame(frame)
        except ProtocolError as exc:
            counters.protocol_errors += 1
            log.warning("rejected frame seq=%d type=0x%02x: %s", frame.seq, frame.msg_type, exc)
            if self.config.nack_invalid and self._send(Nack(frame.seq, exc.nack_reason, str(exc))):
                counters.nacks_sent += 1
            if frame.msg_type == MessageType.SPECTRUM:
                observation = self.tracker.observe(frame.seq)
                self._account(observation)
                if observation.deliver:
                    self._lose(frame.seq, f"rejected: {exc.nack_reason.name}: {exc}")
            return
        # frame.seq is the header seq that decode_frame copied into msg.seq
        if isinstance(msg, SpectrumMessage):
            self._on_spectrum(msg, frame.seq)
        elif isinstance(msg, StatusMessage):
            counters.statuses += 1
            self._account(self.tracker.observe_next(frame.seq, msg.session_id))
            on_status = self._run_callbacks().on_status
            if on_status is not None:
                on_status(msg)
        elif isinstance(msg, ResendUnavailable):
            counters.resend_unavailable += 1
            if msg.seq in self._pending:
                self._lose(msg.seq, "resend unavailable: no longer in the instrument's ring buffer")
        elif isinstance(msg, Nack):
            counters.nacks_received += 1
            log.warning("instrument rejected our frame seq=%d: %s %s", msg.seq, msg.reason_name, msg.detail)
        else:
            counters.unexpected_messages += 1

    def _on_spectrum(self, msg: SpectrumMessage, seq: int) -> None:
        counters = self.protocol_counters
        custody = self.config.ack_when_taken
        key = (msg.session_id, seq)
        if msg.retransmitted:
            self._last_retransmission = time.monotonic()
            if custody and not self.tracker.is_missing(seq) and self.tracker.session_id in (None, msg.session_id):
                # an unacknowledged spectrum the instrument sent again on its own (after a HELLO or its ACK
                # timeout), not one we asked for: it may be far behind (a restarted host never saw it), so it
                # must not move sequence tracking (no bogus gaps or resyncs); offered unless taken already
                self._take_resent(msg, key)
                return
        observation = self.tracker.observe(seq, msg.session_id)
        self._account(observation)
        if observation.deliver or (custody and key not in self._taken):
            if observation.deliver:
                counters.spectra_delivered += 1
                counters.spectra_retransmitted += msg.retransmitted
            else:  # custody: a duplicate or late arrival this run has not taken (e.g. resent after a host restart)
                counters.spectra_reoffered += 1
            taken = self._run_callbacks().on_spectrum(msg)
            if custody:
                if taken is not True:
                    counters.spectra_not_taken += 1
                    return  # no ACK: the instrument keeps it and sends it again
                self._taken.add(key)
        elif observation.kind == "late":
            counters.late_after_lost += 1
        else:
            counters.duplicates += 1
        if self.config.ack_spectra and self._send(Ack(seq)):
            counters.acks_sent += 1

    def _take_resent(self, msg: SpectrumMessage, key: tuple[int, int]) -> None:
        """Custody mode: offer a spectrum the instrument resent unasked unless taken already; ACK it once taken."""
        counters = self.protocol_counters
        if key in self._taken:
            counters.duplicates += 1
        else:
            counters.spectra_reoffered += 1
            if self._run_callbacks().on_spectrum(msg) is not True:
                counters.spectra_not_taken += 1
                return
            self._taken.add(key)
        if self._send(Ack(key[1])):
            counters.acks_sent += 1

    def _run_callbacks(self) -> _Callbacks:
        if self._callbacks is None:
            raise RuntimeError("InstrumentLink: a frame was handled outside run()")
        return self._callbacks

    def _account(self, observation: SeqObservation) -> None:
        """Update counters and resend bookkeeping for one tracker observation."""
        counters = self.protocol_counters
        counters.restarts += observation.kind == "restart"
        counters.resyncs += observation.kind == "resync"
        for seq in observation.abandoned:
            self._lose(seq, f"instrument {observation.kind}")
        if observation.kind == "recovered" and self._pending.pop(observation.seq, None) is not None:
            counters.seqs_recovered += 1
        if observation.missing:
            counters.gaps_detected += 1
            counters.seqs_missing += len(observation.missing)
            log.info("gap: %d missing before seq %d", len(observation.missing), observation.seq)
            for seq in observation.missing:
                if self.config.resend:
                    self._pending[seq] = _Pending()
                else:
                    self._lose(seq, "gap (resend disabled)")

    # ------------------------------------------------------------------ resend / loss
    def _service_resends(self, now: float) -> None:
        if not self._pending or not self.port.is_open:
            return
        cfg = self.config
        # retransmissions still arriving: requests queued behind them have not timed out
        quiet_since = self._last_retransmission + cfg.resend_timeout_s
        in_flight = sum(1 for p in self._pending.values() if p.attempts and max(p.due, quiet_since) > now)
        for seq, pending in list(self._pending.items()):
            if pending.due > now or (pending.attempts and quiet_since > now):
                continue
            if pending.attempts >= cfg.max_resend_attempts:
                self._lose(seq, f"no retransmission after {pending.attempts} resend requests")
                continue
            if in_flight >= cfg.max_outstanding_resends:
                break
            if not self._send(ResendRequest(seq)):
                return  # link went down; pending entries are re-armed on reconnect
            self.protocol_counters.resend_requests_sent += 1
            pending.attempts += 1
            pending.due = now + cfg.resend_timeout_s
            in_flight += 1

    def _lose(self, seq: int, reason: str) -> None:
        """Report ``seq`` lost, once; a later arrival is then dropped as "late"."""
        self._pending.pop(seq, None)
        self.tracker.give_up(seq)
        self.protocol_counters.seqs_lost += 1
        on_lost = self._callbacks.on_lost if self._callbacks is not None else None
        if on_lost is None:
            log.warning("spectrum seq=%d lost: %s", seq, reason)
        else:
            on_lost(seq, reason)

    def _send(self, msg: Message) -> bool:
        return self.port.write(encode_message(msg))


class _Taken:
    """The last ``size`` (session, seq) pairs taken in custody mode, oldest forgotten first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: dict[tuple[int, int], None] = {}

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._items

    def add(self, key: tuple[int, int]) -> None:
        self._items[key] = None
        if len(self._items) > self._size:
            del self._items[next(iter(self._items))]
