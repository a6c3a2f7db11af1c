"""Link + simulated instrument end to end over a real pty / TCP socket, with fault injection."""

import itertools
import json
import os

import numpy as np
import pytest
import serial

from firmware_bridge.link import LinkConfig
from firmware_bridge.protocol import Ack, SpectrumMessage, encode_message
from firmware_bridge.simulator import FaultConfig, FaultInjector, SimulatedInstrument, main, synthetic_spectra
from firmware_bridge.transport import Backoff
from firmware_bridge.vectors import _raw_frame, _spectrum_fields, _wire
from firmware_bridge.wire import MessageType

FIELD_FAULTS = FaultConfig(bit_flip_rate=0.01, drop_byte_rate=0.01, duplicate_byte_rate=0.005,
                           truncate_rate=0.005, garbage_rate=0.01, stall_rate=0.005, stall_s=0.05,
                           disconnect_after_frames=(90, 200), disconnect_down_s=0.2, seed=7)


def _wait_all_resolved(sim, running, timeout_s=30.0) -> dict:
    c = running.collector
    ok = c.wait_for(lambda: sim.finished.is_set() and c.resolved(sim.sent_spectra()), timeout_s)
    running.stop()
    assert ok, f"unresolved after {timeout_s}s: counters={running.link.counters()} sim={sim.stats()}"
    return sim.sent_spectra()


def _check_exactly_once(sent: dict, c) -> None:
    assert not c.redelivered and not c.lost_twice
    assert set(c.delivered).isdisjoint(c.lost)
    assert set(c.delivered) | set(c.lost) == set(sent)  # nothing silently missing, nothing invented
    for seq, msg in c.delivered.items():
        ref = sent[seq]
        assert np.array_equal(msg.counts, ref.counts) and np.array_equal(msg.raman_shift_cm1, ref.raman_shift_cm1)
        assert (msg.sample_label, msg.acquisition_time_ns) == (ref.sample_label, ref.acquisition_time_ns)


def _line_errors(counters: dict) -> int:
    return sum(counters[k] for k in ("crc_errors", "cobs_errors", "length_errors", "oversize"))


def test_pty_faults_and_two_disconnects_with_resend_lose_nothing(make_sim, run_link):
    # ring >= spectra sent: every loss is recoverable, however slow a loaded CI machine is
    sim = make_sim(synthetic_spectra(seed=1, count=300), rate_hz=200, faults=FIELD_FAULTS,
                   heartbeat_interval_s=0.2, ring_size=512)
    assert os.path.islink(sim.device_path) and sim.url == sim.device_path
    running = run_link(sim.url, baudrate=921600)
    sent = _wait_all_resolved(sim, running)
    c, counters = running.collector, running.link.counters()
    assert len(sent) == 300
    _check_exactly_once(sent, c)
    assert c.lost == {}
    assert sim.stats()["disconnects"] == 2
    assert [e.state for e in c.states].count("down") == 2
    assert _line_errors(counters) > 0 and counters["seqs_recovered"] > 0
    assert counters["spectra_retransmitted"] == counters["seqs_recovered"]
    assert all(m.raman_shift_cm1.shape == (1392,) for m in c.delivered.values())


def test_pty_faults_without_resend_report_every_loss(make_sim, run_link):
    sim = make_sim(synthetic_spectra(seed=2, count=250), rate_hz=200, faults=FIELD_FAULTS,
                   heartbeat_interval_s=0.2)
    running = run_link(sim.url, config=LinkConfig(resend=False))
    sent = _wait_all_resolved(sim, running)
    c = running.collector
    _check_exactly_once(sent, c)
    assert c.lost and set(c.lost.values()) == {"gap (resend disabled)"}
    assert running.link.counters()["resend_requests_sent"] == 0


def test_tcp_wraparound_calibration_uint16(make_sim, run_link):
    source = ((axis, counts, meta | {"calibration": (200.0, 1.0)})
              for axis, counts, meta in synthetic_spectra(seed=3, count=120))
    faults = FaultConfig(bit_flip_rate=0.02, disconnect_after_frames=(60,), seed=3)
    sim = make_sim(source, transport="tcp", rate_hz=300, first_seq=2**32 - 50, counts_dtype="u2",
                   faults=faults, heartbeat_interval_s=0.2, ring_size=512)
    assert sim.url.startswith("socket://127.0.0.1:")
    running = run_link(sim.url, config=LinkConfig(resend_timeout_s=0.25, ack_spectra=True))
    sent = _wait_all_resolved(sim, running)
    c = running.collector
    _check_exactly_once(sent, c)
    assert c.lost == {} and 0 in c.delivered and 2**32 - 1 in c.delivered
    msg = c.delivered[0]
    assert msg.counts_dtype == "u2" and msg.calibration == (200.0, 1.0)
    assert np.array_equal(msg.raman_shift_cm1, (200.0 + np.arange(1392)).astype(np.float32))
    assert sim.stats()["acks_received"] > 0


def test_small_ring_buffer_reports_resend_unavailable(make_sim, run_link):
    faults = FaultConfig(disconnect_after_frames=(30,), disconnect_down_s=0.3, seed=4)
    sim = make_sim(synthetic_spectra(seed=4, count=80), rate_hz=200, ring_size=4, faults=faults,
                   heartbeat_interval_s=0.2)
    running = run_link(sim.url)
    sent = _wait_all_resolved(sim, running)
    c = running.collector
    _check_exactly_once(sent, c)
    assert c.lost and all("unavailable" in why for why in c.lost.values())
    assert running.link.counters()["resend_unavailable"] >= len(c.lost)


def test_stop_is_prompt_while_reconnecting(run_link, tmp_path):
    running = run_link(str(tmp_path / "no-such-tty"), backoff=Backoff(10.0, 10.0))
    assert running.collector.wait_for(lambda: any(e.state == "reconnecting" for e in running.collector.states), 5)
    running.stop(timeout_s=2.0)


# --------------------------------------------------------------------------- link logic over loop://
def _spectrum(seq: int, session_id: int = 1) -> SpectrumMessage:
    axis, counts, meta = next(synthetic_spectra(seed=seq, count=1, n_points=16))
    return SpectrumMessage("loop", session_id, meta["acquisition_time_ns"], 10.0, 532.0, axis, counts, seq=seq)


def test_link_retries_exhausted_invalid_payload_restart(loop_link):
    running = loop_link(LinkConfig(resend_timeout_s=0.05, max_resend_attempts=3, ack_spectra=True))
    port, c = running.link.port, running.collector
    for seq in (0, 1, 3, 3):  # 2 missing, 3 duplicated
        port.write(encode_message(_spectrum(seq)))
    port.write(_wire(_raw_frame(MessageType.SPECTRUM, 4, _spectrum_fields(counts=None))))
    assert c.wait_for(lambda: {2, 4} <= set(c.lost), 5)
    assert "no retransmission after 3" in c.lost[2] and c.lost[4].startswith("rejected: INVALID_FIELD")
    counters = running.link.counters()
    assert counters["resend_requests_sent"] == 3 and counters["nacks_sent"] == 1
    assert counters["duplicates"] == 1 and counters["acks_sent"] == 4
    port.write(encode_message(_spectrum(2)))  # arrives after it was reported lost: dropped
    port.write(encode_message(_spectrum(7)))  # 5, 6 missing
    assert c.wait_for(lambda: 7 in c.delivered, 5)
    port.write(encode_message(_spectrum(0, session_id=2)))  # instrument rebooted
    assert c.wait_for(lambda: {5, 6} <= set(c.lost), 5)
    assert c.lost[5] == "instrument restart"
    running.stop()
    assert sorted(c.delivered) == [0, 1, 3, 7]
    assert c.redelivered == [0]  # seq 0 of the new session is a new spectrum, delivered again
    assert c.delivered[0].session_id == 2
    counters = running.link.counters()
    assert counters["late_after_lost"] == 1 and counters["restarts"] == 1


# --------------------------------------------------------------------------- simulator pieces
def test_fault_injector_is_reproducible():
    frames = [encode_message(Ack(i)) for i in range(200)]
    cfg = FaultConfig(bit_flip_rate=0.3, drop_byte_rate=0.3, duplicate_byte_rate=0.3, truncate_rate=0.1,
                      garbage_rate=0.2, byte_error_rate=0.01, stall_rate=0.1, seed=11)
    a, b = FaultInjector(cfg), FaultInjector(cfg)
    assert [a.apply(f) for f in frames] == [b.apply(f) for f in frames]
    assert a.counters == b.counters and all(a.counters[k] > 0 for k in
                                           ("bit_flips", "dropped_bytes", "truncated", "garbage_bursts"))
    clean = FaultInjector(FaultConfig())
    assert all(clean.apply(f) == (f, False) for f in frames)


def test_synthetic_spectra_shape():
    axis, counts, _meta = next(synthetic_spectra(seed=0))
    assert axis.shape == counts.shape == (1392,) and axis.dtype == counts.dtype == np.float32
    assert axis[0] == 200.0 and axis[-1] == 1591.0 and counts.min() >= 0
    assert len(list(itertools.islice(synthetic_spectra(seed=0, count=3), 10))) == 3


@pytest.mark.parametrize("where", [["--tcp", "0"], ["--pty"]])
def test_cli_simulate_prints_url(where, capsys):
    assert main(["simulate", *where, "--duration", "0.2", "--count", "3", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    url = out.splitlines()[0]
    assert url.startswith("socket://127.0.0.1:") if where[0] == "--tcp" else "ramansim-" in url
    assert isinstance(json.loads(err), dict)  # counters


def test_cli_listen_receives(make_sim, capsys):
    sim = make_sim(synthetic_spectra(seed=5, count=5), rate_hz=100, heartbeat_interval_s=0.1)
    assert main(["listen", sim.url, "--count", "5", "--duration", "20"]) == 0
    out, err = capsys.readouterr()
    assert sum(line.startswith("seq=") for line in out.splitlines()) == 5
    assert json.loads(err)["spectra_delivered"] == 5


@pytest.fixture
def ramansim():
    from firmware_bridge import protocol_ramansim
    protocol_ramansim.register()
    yield protocol_ramansim
    protocol_ramansim.close_simulators()


def test_ramansim_url_handler_survives_disconnect(ramansim, run_link):
    url = "ramansim://t1?rate=200&count=60&seed=9&bit_flip_rate=0.02&disconnect_after=30&heartbeat=0.2"
    running = run_link(url)
    c = running.collector
    assert c.wait_for(lambda: len(c.delivered) == 60, 20), running.link.counters()
    running.stop()
    assert c.lost == {} and [e.state for e in c.states].count("down") == 1
    sim = ramansim.simulator_for_url(url)
    assert sim.stats()["disconnects"] == 1 and len({m.session_id for m in c.delivered.values()}) == 1
    with pytest.raises(serial.SerialException):
        serial.serial_for_url("ramansim://x?nonsense=1")


# Found while typing firmware_bridge for mypy (#20): COUNTS_DTYPES[self.counts_dtype] in the simulator
# thread was the only check of counts_dtype, so an unknown one was accepted, the thread died with a
# KeyError at its first spectrum and the instrument (e.g. ramansim://x?counts_dtype=f8) sent nothing.
def test_simulator_rejects_unknown_counts_dtype():
    with pytest.raises(ValueError, match="counts_dtype"):
        SimulatedInstrument(synthetic_spectra(count=1), counts_dtype="f8")


def test_ramansim_rejects_unknown_counts_dtype(ramansim):
    with pytest.raises(ValueError, match="counts_dtype"):
        ramansim.simulator_for_url("ramansim://bad?counts_dtype=f8")
    with pytest.raises(serial.SerialException, match="counts_dtype"):
        serial.serial_for_url("ramansim://bad?counts_dtype=f8")
    assert "ramansim://bad?counts_dtype=f8" not in ramansim._SIMULATORS


def test_ramansim_options_reach_the_simulator(ramansim):
    # every query option lands in the FaultConfig / SimulatedInstrument field it names
    rates = ("bit_flip_rate", "drop_byte_rate", "duplicate_byte_rate", "truncate_rate", "garbage_rate",
             "stall_rate", "byte_error_rate", "stall_s", "disconnect_down_s")
    query = "&".join(f"{name}=0.0{i + 1}" for i, name in enumerate(rates))
    sim = ramansim._build(f"ramansim://opt-7?{query}&seed=5&disconnect_after=3,8&rate=0&ring_size=16"
                          "&heartbeat=0.25&counts_dtype=u2&count=4")
    try:
        cfg = sim.faults.config
        assert [getattr(cfg, name) for name in rates] == [float(f"0.0{i + 1}") for i in range(len(rates))]
        assert (cfg.seed, cfg.disconnect_after_frames, cfg.garbage_max_bytes) == (5, (3, 8), 64)
        assert (sim.rate_hz, sim.ring_size, sim.heartbeat_interval_s) == (None, 16, 0.25)
        assert (sim.counts_dtype, sim.instrument_id, sim.record_sent) == ("u2", "opt-7", False)
    finally:
        sim.stop()
    default = ramansim._build("ramansim://")
    try:
        assert default.faults.config == FaultConfig() and default.instrument_id == "ramansim"
        assert (default.rate_hz, default.ring_size, default.counts_dtype) == (50.0, 256, "f4")
    finally:
        default.stop()
