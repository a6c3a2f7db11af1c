"""Serial input of the daemon: spectra from an instrument over the :mod:`firmware_bridge` protocol.

A :class:`SerialInput` runs an :class:`~firmware_bridge.InstrumentLink` (resend on) in its own thread. Every
delivered spectrum is encoded with :func:`edge.wire.encode_spectrum` (``id`` = ``"{instrument_id}-{session}-
{seq}"``, ``instrument_seq`` = the link's sequence number, ``label`` = the instrument's sample label) and
PUSHed to the daemon's :data:`~edge.daemon.INTERNAL_INPUT` over ``inproc://`` on ``daemon.ctx``; the PUSH
socket is created, used and closed in that thread only. Lost sequence numbers and link-state changes travel
the same way as events (:func:`edge.wire.encode_event`), which the daemon publishes on the ``error`` topic
(reason ``"lost"``) and the ``link`` topic. A status hook adds the link state and counters to every status
message under ``"serial"``.

With a store (``daemon.config.store``) the input takes *custody* of each spectrum (docs/serial.md, "store before
ACK"): it writes the spectrum to the store on its own connection (one transaction per spectrum, ``synchronous = FULL``:
an fsync per commit, so that what the instrument is told is stored survives a power cut too) before the link
ACKs it to the instrument, then hands the daemon an internal message naming the stored row
(:func:`edge.daemon.stored_input_message`), which the daemon classifies without storing it again. A spectrum the
store already holds (the instrument resent it after a lost ACK or a daemon restart: same ``id``) is ACKed again and
not classified twice. A spectrum the store cannot write is not ACKed (the instrument keeps it and sends it again)
and is classified at once all the same, unstored. A kill between the store and the daemon's answer is covered by
the daemon's replay on start; the link starts only after that replay.

Link errors never stop the daemon: a port that cannot be opened is retried with backoff (``reconnecting``
events), an invalid URL or an exhausted link is reported (``down``) and retried after ``retry_s``; the
daemon keeps serving ZeroMQ meanwhile.

Examples
--------
>>> stop = start_serial_input(daemon)   # after Daemon(...), before or while daemon.run() runs
>>> ...
>>> stop()                              # stops the link and joins the thread
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

import zmq

from firmware_bridge import (
    Backoff,
    BridgeError,
    InstrumentLink,
    LinkConfig,
    LinkStateEvent,
    SpectrumMessage,
    StatusMessage,
)

from .daemon import INTERNAL_INPUT, Daemon, stored_input_message
from .errors import EdgeError
from .store import Arrival, Store
from .wire import encode_event, encode_spectrum

__all__ = ["SerialInput", "start_serial_input"]
log = logging.getLogger("edge.serial")

#: Reconnection schedule of the serial port: 0.1 s after the first failure, doubling up to 2 s.
DEFAULT_BACKOFF = Backoff(initial_delay_s=0.1, max_delay_s=2.0)


class SerialInput:
    """An instrument link feeding a :class:`~edge.daemon.Daemon` (see the module docstring).

    Parameters
    ----------
    daemon : Daemon
        The daemon; ``daemon.config.serial`` is the pyserial URL, ``daemon.config.serial_baudrate`` the
        line rate (bit/s), ``daemon.ctx`` the ZeroMQ context its internal input is bound on.
    url : str, optional
        Overrides ``daemon.config.serial``.
    config : LinkConfig, optional
        Link behaviour (default: resend on, 0.5 s resend timeout, 5 attempts). With a store, ACKs are turned on
        in custody mode (``ack_spectra``, ``ack_when_taken``): a spectrum is ACKed once stored.
    backoff : Backoff, optional
        Reconnection schedule of the port (default :data:`DEFAULT_BACKOFF`).
    retry_s : float, optional
        Wait before running the link again after it stopped with an error (invalid URL, retries
        exhausted, unexpected failure), in seconds.

    Raises
    ------
    StoreError
        With a store, when its file cannot be opened (the daemon would have refused it already).

    Notes
    -----
    Call the instance (or :meth:`stop`) to stop: the link stops within about 0.05 s, pending resends are
    reported lost, and the thread is joined.
    """

    def __init__(self, daemon: Daemon, *, url: str | None = None, config: LinkConfig = LinkConfig(),
                 backoff: Backoff = DEFAULT_BACKOFF, retry_s: float = 2.0) -> None:
        self.daemon = daemon
        self.url = daemon.config.serial if url is None else url
        self.baudrate = daemon.config.serial_baudrate
        self.retry_s = retry_s
        store_config = daemon.config.store_config()
        # custody: its own connection to the daemon's store file (WAL; one connection per thread), synchronous FULL:
        # what it ACKs the instrument forgets, so a commit must survive a power cut too (one fsync per spectrum)
        self._store = Store(dataclasses.replace(store_config, synchronous="FULL")) if store_config is not None else None
        if self._store is not None:
            config = dataclasses.replace(config, ack_spectra=True, ack_when_taken=True)
        self.link = InstrumentLink(self.url, baudrate=self.baudrate, config=config, backoff=backoff)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._instrument_id: str | None = None
        self._session_id: int | None = None
        self._state: dict[str, Any] = {"state": "down", "reason": "not started", "attempt": 0,
                                       "since_ns": time.time_ns()}
        self._instrument: dict[str, Any] = {}
        self.counters = {"pushed": 0, "lost_reported": 0, "push_dropped": 0, "link_errors": 0}
        if self._store is not None:  # stored: before the ACK; resent_stored: held already, ACKed again
            self.counters.update({"stored": 0, "resent_stored": 0, "not_stored": 0})

    # -- public -------------------------------------------------------------------------------------------
    def start(self) -> SerialInput:
        """Register the status hook and start the thread; returns self.

        Raises
        ------
        EdgeError
            If the URL is empty or the input was already started.
        """
        if not self.url:
            raise EdgeError("serial input needs a URL (daemon.serial / --serial)")
        if self._thread is not None:
            raise EdgeError("serial input already started")
        self.daemon.add_status_hook(self.status)
        self._thread = threading.Thread(target=self._run, name="edge-serial-input", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the link and join the thread (idempotent).

        Parameters
        ----------
        timeout_s : float, optional
            Longest wait for the thread, in seconds.

        Raises
        ------
        EdgeError
            If the thread did not stop within ``timeout_s``.
        """
        self._stop.set()
        if self._thread is None:  # never started: its store connection is closed here
            self._close_store()
        else:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise EdgeError(f"serial input thread did not stop within {timeout_s} s")

    __call__ = stop

    def status(self) -> dict[str, Any]:
        """The ``"serial"`` entry of the daemon's status: URL, link state, last heartbeat, counters."""
        counters = dict(self.counters)
        try:
            counters.update(self.link.counters())
        except RuntimeError:  # a dict resized by the link thread mid-copy: report ours only this time
            pass
        out = {"url": self.url, "baudrate": self.baudrate, **self._state, "instrument_id": self._instrument_id,
               "session_id": self._session_id, "instrument": dict(self._instrument), "counters": counters}
        if self._store is not None:
            out["store"] = {k: v for k, v in self._store.status()["store"].items() if k != "last_seq"}
        return {"serial": out}

    # -- thread -------------------------------------------------------------------------------------------
    def _run(self) -> None:
        daemon = self.daemon
        # the daemon binds INTERNAL_INPUT before setting ready; with a store, the link starts after the replay,
        # so that no spectrum is both replayed and handed over
        started = daemon.replay_done if self._store is not None else daemon.ready
        while not started.wait(0.05):
            if self._stop.is_set():
                self._close_store()
                return
        sock = daemon.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 10000)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(INTERNAL_INPUT)
            self._sock = sock
            while not self._stop.is_set():
                try:
                    self.link.run(self._on_spectrum, on_status=self._on_status, on_link_state=self._on_link_state,
                                  stop_event=self._stop, on_lost=self._on_lost)
                except zmq.ContextTerminated:
                    return
                except BridgeError as exc:  # InvalidUrl, LinkDown: the port could not be (re)opened
                    self._link_failed(exc)
                except Exception as exc:  # a bug must not kill the input silently: log, report, retry
                    log.exception("serial input failed")
                    self._link_failed(exc)
        finally:
            self._sock = None
            sock.close(linger=0)
            self._close_store()

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()

    def _link_failed(self, exc: BaseException) -> None:
        self.counters["link_errors"] += 1
        log.error("serial link %s failed: %s; retrying in %.1f s", self.url, exc, self.retry_s)
        self._set_state(LinkStateEvent("down", f"{type(exc).__name__}: {exc}", 0))
        self._stop.wait(self.retry_s)

    def _on_spectrum(self, msg: SpectrumMessage) -> bool | None:
        """Hand a delivered spectrum to the daemon; with a store, store it first and return whether it is stored
        (the link ACKs it only then: custody mode).
        """
        self._instrument_id, self._session_id = msg.instrument_id, msg.session_id
        spectrum_id = f"{msg.instrument_id}-{msg.session_id}-{msg.seq}"
        frame = encode_spectrum(msg.counts, msg.raman_shift_cm1, id=spectrum_id, sent_ns=time.time_ns(),
                                instrument_id=msg.instrument_id, instrument_seq=msg.seq, label=msg.sample_label)
        if self._store is None:
            if self._push(frame):
                self.counters["pushed"] += 1
            return None
        received_ns = time.time_ns()
        admission = self._store.admit([Arrival(frame, "serial", received_ns, spectrum_id, msg.instrument_id)])[0]
        if admission.row is not None:
            self.counters["stored"] += 1
            # if the hand-over fails (stopping), the row waits in the store: the replay on start answers it
            if self._push(stored_input_message(admission.row, received_ns, frame)):
                self.counters["pushed"] += 1
            return True
        if admission.duplicate_of is not None:  # resent after a lost ACK or a restart: answered (or replayed) once
            self.counters["resent_stored"] += 1
            log.debug("spectrum %s already stored (row %d): ACKed again", spectrum_id, admission.duplicate_of)
            return True
        # the store cannot write (alarm raised, counted): classify it now, unstored, and do not ACK it: the
        # instrument keeps it and sends it again (stored then, or counted again)
        self.counters["not_stored"] += 1
        if self._push(frame):
            self.counters["pushed"] += 1
        return False

    def _on_lost(self, seq: int, reason: str) -> None:
        instrument = self._instrument_id
        spectrum_id = None if instrument is None else f"{instrument}-{self._session_id}-{seq}"
        if self._push(encode_event("lost", instrument_seq=seq, reason=reason, instrument_id=instrument,
                                   id=spectrum_id)):
            self.counters["lost_reported"] += 1

    def _on_status(self, msg: StatusMessage) -> None:
        self._instrument_id, self._session_id = msg.instrument_id, msg.session_id
        self._instrument = {"state": msg.state, "uptime_ms": msg.uptime_ms,
                            "detector_temperature_c": msg.detector_temperature_c,
                            "laser_power_mw": msg.laser_power_mw, "next_seq": msg.seq}

    def _on_link_state(self, event: LinkStateEvent) -> None:
        self._set_state(event)

    def _set_state(self, event: LinkStateEvent) -> None:
        self._state = {"state": event.state, "reason": event.reason, "attempt": event.attempt,
                       "since_ns": time.time_ns()}
        if event.state == "up":
            log.info("serial link %s up", self.url)
        elif event.attempt <= 1:  # every attempt is published; log the first of a series only
            log.warning("serial link %s %s: %s", self.url, event.state, event.reason)
        self._push(encode_event("link", state=event.state, reason=event.reason, attempt=event.attempt,
                                url=self.url, instrument_id=self._instrument_id))

    def _push(self, frame: bytes | list[bytes]) -> bool:
        """Hand ``frame`` (one frame, or a multipart message) to the daemon; waits (in 0.1 s slices) while its
        queue is full, gives up on stop.
        """
        sock = self._sock
        parts = [frame] if isinstance(frame, bytes) else frame
        while sock is not None:
            try:
                sock.send_multipart(parts, zmq.NOBLOCK)
                return True
            except zmq.Again:
                if self._stop.is_set():
                    break
                sock.poll(100, zmq.POLLOUT)
        self.counters["push_dropped"] += 1
        log.error("serial input stopping: a frame could not be handed to the daemon")
        return False


def start_serial_input(daemon: Daemon, **kwargs: Any) -> SerialInput:
    """Start feeding ``daemon`` from the instrument at ``daemon.config.serial``.

    Parameters
    ----------
    daemon : Daemon
        A constructed daemon (its :meth:`~edge.daemon.Daemon.run` may start before or after).
    **kwargs
        Passed to :class:`SerialInput` (``url``, ``config``, ``backoff``, ``retry_s``).

    Returns
    -------
    SerialInput
        Callable with no arguments: stops the link and joins its thread.

    Raises
    ------
    EdgeError
        If ``daemon.config.serial`` (or ``url``) is empty.
    """
    return SerialInput(daemon, **kwargs).start()
