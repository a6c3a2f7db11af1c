"""Fixtures for the firmware_bridge tests: simulators and links with guaranteed teardown."""

from __future__ import annotations

import pathlib
import sys
import threading
from collections.abc import Callable

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # allow `pytest tests/bridge` without installing the package
    sys.path.insert(0, str(ROOT))

from firmware_bridge.link import InstrumentLink, LinkConfig
from firmware_bridge.simulator import SimulatedInstrument
from firmware_bridge.transport import Backoff, LinkStateEvent, ReconnectingPort

#: run_link's defaults (frozen dataclasses, so shared instances are safe): quick resends and reconnects.
FAST_RESEND = LinkConfig(resend_timeout_s=0.3)
FAST_BACKOFF = Backoff(0.02, 0.1)


class Collector:
    """Thread-safe sink for link callbacks, with bounded waits."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.delivered: dict = {}
        self.redelivered: list[int] = []
        self.lost: dict[int, str] = {}
        self.lost_twice: list[int] = []
        self.states: list[LinkStateEvent] = []
        self.statuses: list = []

    def on_spectrum(self, msg) -> None:
        with self.cv:
            if msg.seq in self.delivered:
                self.redelivered.append(msg.seq)
            self.delivered[msg.seq] = msg
            self.cv.notify_all()

    def on_lost(self, seq: int, reason: str) -> None:
        with self.cv:
            if seq in self.lost:
                self.lost_twice.append(seq)
            self.lost[seq] = reason
            self.cv.notify_all()

    def on_link_state(self, event: LinkStateEvent) -> None:
        with self.cv:
            self.states.append(event)
            self.cv.notify_all()

    def on_status(self, msg) -> None:
        with self.cv:
            self.statuses.append(msg)
            self.cv.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate()`` (evaluated under the lock) holds, at most ``timeout_s``."""
        with self.cv:
            return self.cv.wait_for(predicate, timeout_s)

    def resolved(self, seqs) -> bool:
        return set(seqs) <= (set(self.delivered) | set(self.lost))


class RunningLink:
    def __init__(self, link: InstrumentLink, collector: Collector) -> None:
        self.link, self.collector = link, collector
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-link", daemon=True)

    def _run(self) -> None:
        c = self.collector
        try:
            self.link.run(c.on_spectrum, on_status=c.on_status, on_link_state=c.on_link_state,
                          stop_event=self.stop_event, on_lost=c.on_lost)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "link thread did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def make_sim():
    """Factory for started simulators; all are stopped (fds, threads, sockets) at teardown."""
    sims: list[SimulatedInstrument] = []

    def factory(source, **kwargs) -> SimulatedInstrument:
        sim = SimulatedInstrument(source, **kwargs)
        sims.append(sim)
        return sim.start()

    yield factory
    errors = []
    for sim in sims:
        try:
            sim.stop()
        except Exception as exc:  # report after all are stopped
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def run_link():
    """Factory running ``InstrumentLink.run`` in a thread; stopped and joined at teardown."""
    running: list[RunningLink] = []

    def factory(url: str, config: LinkConfig = FAST_RESEND, backoff: Backoff = FAST_BACKOFF,
                **kwargs) -> RunningLink:
        item = RunningLink(InstrumentLink(url, config=config, backoff=backoff, **kwargs), Collector())
        running.append(item)
        item.thread.start()
        return item

    yield factory
    for item in running:
        if item.thread.is_alive():
            item.stop()


@pytest.fixture
def loop_link():
    """An InstrumentLink whose port is loop:// so the test can inject frames; stopped at teardown."""
    items = []

    def factory(config: LinkConfig) -> RunningLink:
        port = ReconnectingPort("loop://", read_timeout_s=0.02)
        item = RunningLink(InstrumentLink("loop://", config=config, port=port), Collector())
        items.append(item)
        item.thread.start()
        assert item.collector.wait_for(lambda: port.is_open and port.generation == 1, 5)
        return item

    yield factory
    for item in items:
        if item.thread.is_alive():
            item.stop()
