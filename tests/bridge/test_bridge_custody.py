"""Custody mode: the host ACKs a spectrum only once it has taken it (stored), the instrument keeps what is not ACKed
and sends it again after a HELLO; a restarted host (a fresh link) is offered what an earlier one did not ACK."""

from __future__ import annotations

import threading

import pytest

from firmware_bridge.link import InstrumentLink, LinkConfig
from firmware_bridge.protocol import SpectrumMessage, encode_message
from firmware_bridge.simulator import FaultConfig, synthetic_spectra
from firmware_bridge.transport import Backoff, ReconnectingPort

CUSTODY = LinkConfig(ack_spectra=True, ack_when_taken=True, resend_timeout_s=0.05)


def _spectrum(seq: int, retransmitted: bool = False) -> SpectrumMessage:
    axis, counts, meta = next(synthetic_spectra(seed=seq, count=1, n_points=16))
    return SpectrumMessage("loop", 1, meta["acquisition_time_ns"], 10.0, 532.0, axis, counts, seq=seq,
                           retransmitted=retransmitted)


class FakeStore:
    """Takes spectra like the daemon's store: the first offer of a (session, seq) is stored (and classified), a
    later one is a duplicate (taken, not classified); ``refuse`` says which first offers fail (not taken)."""

    def __init__(self, refuse=lambda seq: False) -> None:
        self.lock = threading.Lock()
        self.stored: dict[int, int] = {}  # seq -> times classified
        self.offers: list[int] = []
        self.refused: set[int] = set()
        self._refuse = refuse

    def take(self, msg: SpectrumMessage) -> bool:
        with self.lock:
            self.offers.append(msg.seq)
            if msg.seq in self.stored:
                return True
            if msg.seq not in self.refused and self._refuse(msg.seq):
                self.refused.add(msg.seq)
                return False
            self.stored[msg.seq] = self.stored.get(msg.seq, 0) + 1
            return True


def test_custody_needs_ack_spectra():
    with pytest.raises(ValueError, match="ack_spectra"):
        LinkConfig(ack_when_taken=True)


def test_loop_acks_only_what_was_taken_and_reoffers_the_rest():
    port = ReconnectingPort("loop://", read_timeout_s=0.02)
    link = InstrumentLink("loop://", config=CUSTODY, port=port)
    store = FakeStore(refuse=lambda seq: seq == 0)
    stop = threading.Event()
    thread = threading.Thread(target=link.run, args=(store.take,), kwargs={"stop_event": stop}, daemon=True)
    thread.start()
    try:
        def wait(predicate):
            pause = threading.Event()
            for _ in range(250):
                if predicate():
                    return True
                pause.wait(0.02)
            return False

        def offers(n):
            return wait(lambda: len(store.offers) >= n)

        assert wait(lambda: port.is_open and port.generation == 1)  # frames written before are lost
        port.write(encode_message(_spectrum(0)))  # refused (store failed): no ACK
        assert offers(1)
        port.write(encode_message(_spectrum(0, retransmitted=True)))  # the instrument sends it again: offered again
        assert offers(2)
        port.write(encode_message(_spectrum(0, retransmitted=True)))  # taken already: ACKed again, not offered
        port.write(encode_message(_spectrum(1)))
        assert offers(3)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    counters = link.counters()
    assert store.offers == [0, 0, 1] and store.stored == {0: 1, 1: 1}
    assert counters["spectra_not_taken"] == 1 and counters["spectra_reoffered"] == 1
    assert counters["duplicates"] == 1 and counters["acks_sent"] == 3  # 0 (taken), 0 (again), 1


def test_instrument_keeps_unacked_and_a_restarted_host_takes_each_once(make_sim):
    """A host that stops mid-stream (its last spectra not ACKed: 1 in 7 refused at first) and a new one on the same
    store: the instrument, damaged line and all, sends the unacknowledged spectra again after the new HELLO (and
    after 0.3 s without an ACK); every spectrum ends stored exactly once and ACKed (nothing left unacknowledged)."""
    n = 240
    faults = FaultConfig(bit_flip_rate=0.02, drop_byte_rate=0.02, disconnect_after_frames=(60,),
                         disconnect_down_s=0.1, seed=21)
    sim = make_sim(synthetic_spectra(seed=5, count=n), transport="tcp", rate_hz=400, faults=faults,
                   heartbeat_interval_s=0.1, keep_unacked=True, unacked_resend_s=0.3)
    store = FakeStore(refuse=lambda seq: seq % 7 == 3)
    links = []
    for run_s in (0.3, None):  # the first host stops after 0.3 s, the second runs to the end
        link = InstrumentLink(sim.url, config=CUSTODY, backoff=Backoff(0.02, 0.1))
        stop = threading.Event()
        thread = threading.Thread(target=link.run, args=(store.take,), kwargs={"stop_event": stop}, daemon=True)
        thread.start()
        links.append(link)
        if run_s is not None:
            stop.wait(run_s)
        else:
            for _ in range(300):
                if sim.finished.is_set() and len(store.stored) == n and sim.unacked == 0:
                    break
                stop.wait(0.05)
        stop.set()
        thread.join(5)
        assert not thread.is_alive()
    stats = sim.stats()
    missing = sorted(set(range(n)) - set(store.stored))
    assert not missing, (missing, sim.unacked, stats, links[-1].counters())
    assert set(store.stored.values()) == {1}  # taken (classified) exactly once each
    assert sim.unacked == 0 and stats["unacked_released"] == n
    assert stats["unacked_resent"] > 0 and links[1].counters()["spectra_reoffered"] > 0
    assert store.refused and stats.get("fault_bit_flips", 0) + stats.get("fault_dropped_bytes", 0) > 0


def test_tcp_simulator_survives_a_host_reset(make_sim):
    """A host killed mid-stream resets its TCP connection: the simulator waits for the next host (it used to die
    with ConnectionResetError), which is then sent what the first one did not ACK."""
    import socket
    import struct

    sim = make_sim(synthetic_spectra(seed=6, count=20), transport="tcp", rate_hz=200, keep_unacked=True)
    port = int(sim.url.rsplit(":", 1)[1])
    first = socket.create_connection(("127.0.0.1", port))
    first.sendall(encode_message(_hello()))
    first.settimeout(5)
    assert first.recv(65536)  # streaming to it
    first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    first.close()  # RST
    store = FakeStore()
    link = InstrumentLink(sim.url, config=CUSTODY, backoff=Backoff(0.02, 0.1))
    stop = threading.Event()
    thread = threading.Thread(target=link.run, args=(store.take,), kwargs={"stop_event": stop}, daemon=True)
    thread.start()
    for _ in range(200):
        if len(store.stored) == 20 and sim.unacked == 0:
            break
        stop.wait(0.05)
    stop.set()
    thread.join(5)
    assert sorted(store.stored) == list(range(20)) and sim.unacked == 0


def _hello():
    from firmware_bridge.protocol import Hello

    return Hello("test-host")
