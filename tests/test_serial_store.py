"""Serial custody (issue 17): with a store, the serial input stores each spectrum before the link ACKs it, a resent
spectrum is predicted once, a damaged line loses nothing, and a store that cannot write never ACKs.

Daemon and serial input run in this process (synthetic bundle), the simulated instrument in custody mode
(``keep_unacked``) on a TCP socket; what was predicted is read from the store itself.
"""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq

from edge.bridge_cli import synthetic_source
from edge.daemon import Daemon, DaemonConfig
from edge.serial_input import SerialInput
from edge.store import open_for_reading
from firmware_bridge import Ack, Backoff, LinkConfig
from firmware_bridge.simulator import FaultConfig, SimulatedInstrument


class SerialStoreDaemon:
    """A daemon thread with a store, fed by a serial input; ``on_send`` sees every message the link sends."""

    def __init__(self, bundle, url, store, on_send=None):
        self.ctx = zmq.Context()
        self.daemon = Daemon(DaemonConfig(bundle=str(bundle), input="", output="tcp://127.0.0.1:*", serial=url,
                                          store=str(store), status_interval_s=0.5), context=self.ctx)
        self.serial = SerialInput(self.daemon, config=LinkConfig(resend_timeout_s=0.2), backoff=Backoff(0.02, 0.2),
                                  retry_s=0.1)
        if on_send is not None:
            link, send = self.serial.link, self.serial.link._send
            link._send = lambda msg: on_send(msg, send)
        self.thread = threading.Thread(target=self.daemon.run, name="test-daemon", daemon=True)

    def __enter__(self):
        self.serial.start()
        self.thread.start()
        assert self.daemon.ready.wait(30), "daemon not ready within 30 s"
        return self

    def __exit__(self, *exc):
        try:
            self.serial.stop()
        finally:
            self.daemon.stop()
            self.thread.join(10)
            self.ctx.term()
        assert not self.thread.is_alive(), "daemon thread did not stop"


def answers(db) -> dict[int, list[str]]:
    """instrument_seq -> the topics that answered it (prediction, or error with its reason), from the store."""
    conn = open_for_reading(db)
    try:
        rows = conn.execute("SELECT topic, payload FROM results WHERE topic IN ('prediction', 'error')").fetchall()
    finally:
        conn.close()
    out: dict[int, list[str]] = {}
    for topic, payload in rows:
        msg = msgpack.unpackb(payload)
        out.setdefault(msg["instrument_seq"], []).append(topic if topic == "prediction" else msg["reason"])
    return out


def wait_until(predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def instrument(n, faults=None, **kwargs):
    return SimulatedInstrument(synthetic_source(seed=4, count=n), transport="tcp", rate_hz=300, faults=faults or FaultConfig(),
                               heartbeat_interval_s=0.2, instrument_id="sim-custody", keep_unacked=True,
                               record_sent=False, unacked_resend_s=1.0, **kwargs)


def test_damaged_line_each_spectrum_stored_before_its_ack_and_predicted_once(synthetic_bundle, tmp_path):
    """Bit flips, dropped bytes and two disconnects: every ACK leaves only for a spectrum already in the store, and
    every spectrum the instrument sent is predicted exactly once (none lost, none left unacknowledged)."""
    n, db = 120, tmp_path / "store.sqlite"
    faults = FaultConfig(bit_flip_rate=0.02, drop_byte_rate=0.02, disconnect_after_frames=(40, 85),
                         disconnect_down_s=0.15, seed=13)
    sim = instrument(n, faults)
    checked, unstored = [], []

    def on_send(msg, send):
        if isinstance(msg, Ack):  # the ACK is about to leave: its spectrum must be in the store already
            conn = open_for_reading(db)
            try:
                found = conn.execute("SELECT count(*) FROM spectra WHERE instrument_id = ? AND spectrum_id LIKE ?",
                                     ("sim-custody", f"sim-custody-%-{msg.seq}")).fetchone()[0]
            finally:
                conn.close()
            (checked if found == 1 else unstored).append(msg.seq)
        return send(msg)

    try:
        with SerialStoreDaemon(synthetic_bundle, sim.url, db, on_send) as d:
            sim.start()
            done = wait_until(lambda: len(answers(db)) == n and sim.unacked == 0, 60)
            status = d.daemon.status()
            synchronous = d.serial._store._conn.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        sim.stop()
    got, stats = answers(db), sim.stats()
    assert done, (n - len(got), sim.unacked, status["serial"], stats)
    assert unstored == [] and set(checked) == set(range(n))
    assert synchronous == 2  # FULL: a spectrum ACKed (forgotten by the instrument) survives a power cut too
    assert all(len(topics) == 1 for topics in got.values()), {s: t for s, t in got.items() if len(t) > 1}
    assert sum(t == ["prediction"] for t in got.values()) >= n - 5  # a synthetic draw may be refused by the gate
    assert "lost" not in {t[0] for t in got.values()}
    counters = status["serial"]["counters"]
    assert counters["stored"] == n and counters["not_stored"] == 0 and status["serial"]["store"]["alarm"] is False
    assert stats["disconnects"] == 2 and stats.get("fault_bit_flips", 0) + stats.get("fault_dropped_bytes", 0) > 0
    assert counters["seqs_recovered"] + counters["spectra_reoffered"] > 0  # the link repaired the line


def test_resent_after_a_lost_ack_is_predicted_once_across_a_restart(synthetic_bundle, tmp_path):
    """The ACKs of three stored spectra never reach the instrument; it sends them again to the next daemon on the
    same store, which recognises them (ACKed again, not classified twice)."""
    n, db, lost_acks = 30, tmp_path / "store.sqlite", {2, 11, 23}
    sim = instrument(n)

    def drop_some_acks(msg, send):
        return True if isinstance(msg, Ack) and msg.seq in lost_acks else send(msg)

    try:
        with SerialStoreDaemon(synthetic_bundle, sim.url, db, drop_some_acks):
            sim.start()
            assert wait_until(lambda: len(answers(db)) == n and sim.unacked == len(lost_acks), 30), \
                (len(answers(db)), sim.unacked)
        with SerialStoreDaemon(synthetic_bundle, sim.url, db) as d:
            assert wait_until(lambda: sim.unacked == 0, 30), sim.stats()
            status = d.daemon.status()
    finally:
        sim.stop()
    got = answers(db)
    assert sorted(got) == list(range(n)) and all(len(t) == 1 for t in got.values())
    assert status["serial"]["counters"]["resent_stored"] == len(lost_acks)
    assert status["counters"]["received"] == 0 and status["counters"]["published"] == 0
    assert sim.stats()["unacked_resent"] >= len(lost_acks)


def test_a_store_that_cannot_write_never_acks(synthetic_bundle):
    """``--store /dev/full``: the spectra are classified at once all the same, but none is ACKed (the instrument
    keeps them all), and the serial status says why."""
    n = 10
    sim = instrument(n)
    try:
        with SerialStoreDaemon(synthetic_bundle, sim.url, "/dev/full") as d:
            sim.start()
            assert wait_until(lambda: d.daemon.counters["published"] + d.daemon.counters["rejected"] >= n, 30)
            status = d.daemon.status()
            link = d.serial.link.counters()
    finally:
        sim.stop()
    assert sim.unacked == n and link["acks_sent"] == 0 and link["spectra_not_taken"] >= n
    serial = status["serial"]
    assert serial["counters"]["not_stored"] >= n and serial["counters"]["stored"] == 0
    assert serial["store"]["alarm"] is True and status["store"]["alarm"] is True


@pytest.mark.parametrize("bad", [{"max_unacked": 0}, {"unacked_resend_s": 0.0}])
def test_simulator_custody_options_are_checked(bad):
    with pytest.raises(ValueError, match="max_unacked"):
        SimulatedInstrument(iter(()), **bad)


def test_store_synchronous_option_is_checked():
    from edge.errors import ConfigError
    from edge.store import StoreConfig

    assert StoreConfig("x.sqlite", synchronous="FULL").synchronous == "FULL"
    with pytest.raises(ConfigError, match="synchronous must be NORMAL or FULL"):
        StoreConfig("x.sqlite", synchronous="OFF")
