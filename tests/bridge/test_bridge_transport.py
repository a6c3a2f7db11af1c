"""Transport: URL opening, exclusive locking, deadlines, reconnection with backoff."""

import os
import threading
import time
import tty

import pytest
import serial

from firmware_bridge.errors import BridgeError, InvalidUrl, LinkDown, TransportError
from firmware_bridge.transport import Backoff, Deadline, ReconnectingPort, open_port


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    yield master, path
    for fd in (master, slave):
        os.close(fd)


def test_deadline():
    never = Deadline(None)
    assert never.remaining_s() is None and not never.expired()
    soon = Deadline(0.0)
    assert soon.expired() and soon.remaining_s() == 0.0
    event = threading.Event()
    event.set()
    assert Deadline(5.0).wait(event)
    assert not Deadline(0.01).wait(threading.Event())


def test_backoff_is_bounded_exponential():
    b = Backoff(initial_delay_s=0.1, max_delay_s=1.0, factor=2.0)
    assert [b.delay_s(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_open_loop_url_ignores_exclusive():
    port = open_port("loop://", timeout_s=0.1, exclusive=True)
    try:
        port.write(b"abc")
        assert port.read(3) == b"abc"
    finally:
        port.close()


def test_open_pty_exclusive_lock(pty_pair):
    master, path = pty_pair
    first = open_port(path, 921600, 0.1, exclusive=True)
    try:
        with pytest.raises(TransportError) as info:
            open_port(path, 921600, 0.1, exclusive=True)
        assert isinstance(info.value.__cause__, serial.SerialException)
        os.write(master, b"xyz")
        assert first.read(3) == b"xyz"
    finally:
        first.close()


@pytest.mark.parametrize("url, error", [("nosuch://x", InvalidUrl), ("/nonexistent/ttyX", TransportError),
                                        ("socket://127.0.0.1:1", TransportError)])
def test_open_errors_are_wrapped(url, error):
    with pytest.raises(error) as info:
        open_port(url, timeout_s=0.1)
    assert isinstance(info.value, BridgeError) and info.value.__cause__ is not None


def test_reconnecting_port_reads_and_writes_loop():
    events = []
    port = ReconnectingPort("loop://", read_timeout_s=0.05, on_state=events.append)
    with port:
        assert not port.write(b"x")  # not connected yet: writes never connect implicitly
        assert port.connect()
        assert port.write(b"\x01\x02\x00")
        got = b""
        deadline = Deadline(2.0)
        while len(got) < 3 and not deadline.expired():
            got += port.read()
        assert got == b"\x01\x02\x00"
        assert port.read() == b""  # timeout returns empty
    assert [e.state for e in events] == ["up"] and port.generation == 1


class FlakyOpener:
    """Fails ``failures`` times, then opens loop://; records call times."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, []

    def __call__(self, url, baudrate, timeout_s, **kw):
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise TransportError(f"unplugged (try {len(self.calls)})")
        return open_port("loop://", baudrate, timeout_s)


def test_reconnect_with_backoff_and_state_events():
    events = []
    opener = FlakyOpener(3)
    port = ReconnectingPort("/dev/ttyFAKE", backoff=Backoff(0.01, 0.04), on_state=events.append, opener=opener)
    with port:
        assert port.connect()
        assert [(e.state, e.attempt) for e in events] == [
            ("reconnecting", 1), ("reconnecting", 2), ("reconnecting", 3), ("up", 4)]
        gaps = [b - a for a, b in zip(opener.calls, opener.calls[1:], strict=False)]
        assert gaps[0] >= 0.009 and gaps[2] >= 0.039
        # the line fails: the port is closed, "down" reported, next read reconnects
        port._port.close()
        assert port.read() == b""
        assert events[-1].state == "down" and not port.is_open
        port.read()
        assert events[-1].state == "up" and port.generation == 2
        assert port.counters["disconnects"] == 1 and port.counters["connect_failures"] == 3


def test_write_failure_takes_link_down():
    events = []
    port = ReconnectingPort("loop://", on_state=events.append)
    port.connect()
    port._port.close()
    assert port.write(b"abc") is False
    assert events[-1].state == "down" and port.counters["write_failures"] == 1
    port.close()


def test_max_attempts_raises_link_down():
    port = ReconnectingPort("/dev/ttyFAKE", backoff=Backoff(0.001, 0.001, max_attempts=3),
                            opener=FlakyOpener(100))
    with pytest.raises(LinkDown):
        port.connect()


def test_stop_event_aborts_backoff_promptly():
    stop = threading.Event()
    port = ReconnectingPort("/dev/ttyFAKE", backoff=Backoff(30.0, 30.0), stop_event=stop,
                            opener=FlakyOpener(100))
    result = []
    thread = threading.Thread(target=lambda: result.append(port.connect()))
    thread.start()
    started = time.monotonic()
    stop.set()
    thread.join(5.0)
    assert not thread.is_alive() and result == [False]
    assert time.monotonic() - started < 2.0


def test_invalid_url_is_not_retried():
    port = ReconnectingPort("nosuch://x", backoff=Backoff(0.001, 0.001))
    with pytest.raises(InvalidUrl):
        port.read()
