"""Every socket the daemon binds has a maximum message size (edge/socket_limits.py, issue #17): an oversize frame on
each receiving socket (input, output subscriptions, control, internal input) is dropped or refused and the daemon
lives on; the limits leave room for a CurveZMQ handshake."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import zmq
from daemon_harness import RunningDaemon

from edge.client import ControlClient
from edge.data import load_spectra
from edge.errors import ConfigError
from edge.socket_limits import (
    MAX_BYTES,
    MAX_RECEIVE_HWM,
    MIN_RECEIVE_HWM,
    QUEUE_BYTES,
    SUBSCRIPTION_MAX_BYTES,
    apply_limits,
    receive_hwm,
)
from edge.wire import MAX_MESSAGE_BYTES, TOPICS, encode_spectrum


def test_every_role_has_a_size_limit_and_a_queue_bounded_in_bytes():
    ctx = zmq.Context()
    try:
        for role, limit in MAX_BYTES.items():
            sock = ctx.socket(zmq.PULL)
            apply_limits(sock, role)
            assert sock.getsockopt(zmq.MAXMSGSIZE) == limit
            hwm = sock.getsockopt(zmq.RCVHWM)
            assert MIN_RECEIVE_HWM <= hwm == receive_hwm(role) <= MAX_RECEIVE_HWM
            assert hwm == MIN_RECEIVE_HWM or hwm * limit <= QUEUE_BYTES, role
            sock.close(linger=0)
    finally:
        ctx.term()
    assert MAX_BYTES["input"] == MAX_BYTES["internal"] == MAX_MESSAGE_BYTES and MAX_BYTES["output"] <= 4096
    with pytest.raises(ConfigError, match="unknown socket role"):
        receive_hwm("sideways")


def _monitored(ctx: zmq.Context, kind: int) -> tuple[zmq.Socket, zmq.Socket]:
    """A socket and a monitor of its disconnections."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock, sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)


def _closed_by_peer(sock: zmq.Socket, monitor: zmq.Socket, timeout_ms: int = 5000) -> bool:
    """Whether the peer closed ``sock``'s connection within ``timeout_ms``; closes both sockets."""
    try:
        return bool(monitor.poll(timeout_ms))
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


def test_an_oversize_frame_on_each_receiving_socket_is_dropped_and_the_daemon_lives_on(synthetic_bundle):
    good = load_spectra("synthetic:test")
    with RunningDaemon(synthetic_bundle, control="tcp://127.0.0.1:*") as d:
        ep = d.daemon.endpoints
        # input: ZeroMQ reads the size, drops the message and closes the connection; nothing is answered
        push, monitor = _monitored(d.ctx, zmq.PUSH)
        push.connect(ep["input"])
        push.send(b"\x00" * (MAX_MESSAGE_BYTES + 1))
        assert _closed_by_peer(push, monitor)
        # output: a subscription frame over 4 KiB is dropped with its connection; the daemon never sees it
        # the harness subscriber's topics may still be counting (its welcome status can come after the first one)
        deadline = time.monotonic() + 10
        while d.daemon.counters["subscriptions"] < len(d.topics) and time.monotonic() < deadline:
            time.sleep(0.01)
        subscriptions = d.daemon.counters["subscriptions"]
        sub, monitor = _monitored(d.ctx, zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"p" * SUBSCRIPTION_MAX_BYTES)
        sub.connect(ep["output"])
        assert _closed_by_peer(sub, monitor)
        # control: a request over an inline head's limit is dropped with its connection
        req, monitor = _monitored(d.ctx, zmq.REQ)
        req.connect(ep["control"])
        req.send(b"\x00" * (MAX_BYTES["control"] + 1))
        assert _closed_by_peer(req, monitor, 20000)
        # internal input (inproc: libzmq does not check sizes): the decoder refuses it, answered on the error topic
        oversize = encode_spectrum(good.intensities[0], good.raman_shift_cm1, id="inproc-big")
        d.send_internal(oversize + b"\x00" * (MAX_MESSAGE_BYTES + 1 - len(oversize)))
        _, errors = d.collect(0, n_err=1, timeout_s=10)
        # ... and everything still works
        with ControlClient(ep["control"], timeout_s=10, context=d.ctx) as ctl:
            reply = ctl.request({"cmd": "status"})
        d.tx.send(good.intensities[1], good.raman_shift_cm1, id="after")
        preds, _ = d.collect(1, timeout_s=10)
        status = d.daemon.status()
        alive = d.thread.is_alive()
    assert alive and "after" in preds and reply["ok"] is True
    assert [(e["reason"], e["id"]) for e in errors] == [("wire", None)] and "exceeds the limit" in errors[0]["detail"]
    assert status["counters"]["subscriptions"] == subscriptions  # the oversize subscription never arrived
    assert status["counters"]["received"] == 2 and status["counters"]["rejected"] == 1


def test_oversize_on_the_acknowledged_input_and_catch_up_is_dropped(synthetic_bundle, tmp_path):
    """The ROUTER sockets of the store's endpoints: acknowledged input (a spectrum's limit) and catch-up (4 KiB)."""
    good = load_spectra("synthetic:test")
    with RunningDaemon(synthetic_bundle, store=str(tmp_path / "s.sqlite"), ack_input="tcp://127.0.0.1:*",
                       catchup="tcp://127.0.0.1:*") as d:
        for name, kind, size in (("ack_input", zmq.DEALER, MAX_BYTES["input"] + 1),
                                 ("catchup", zmq.REQ, MAX_BYTES["catchup"] + 1)):
            sock, monitor = _monitored(d.ctx, kind)
            sock.connect(d.daemon.endpoints[name])
            sock.send(b"\x00" * size)
            assert _closed_by_peer(sock, monitor), name
        d.tx.send(good.intensities[0], good.raman_shift_cm1, id="after")
        preds, errors = d.collect(1, timeout_s=10)
        status = d.daemon.status()
        alive = d.thread.is_alive()
    assert alive and "after" in preds and errors == [] and status["counters"]["received"] == 1


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_the_output_limit_leaves_room_for_a_curvezmq_handshake():
    """libzmq checks ZMTP commands against MAXMSGSIZE too: a CURVE handshake (HELLO 200 bytes, INITIATE with its
    metadata) and an encrypted subscription must pass the output's 4 KiB, and a largest spectrum the input's."""
    ctx = zmq.Context()
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    try:
        socks = []
        for kind, role in ((zmq.XPUB, "output"), (zmq.PULL, "input")):
            s = ctx.socket(kind)
            s.setsockopt(zmq.LINGER, 0)
            s.curve_server = True
            s.curve_secretkey = server_secret
            apply_limits(s, role)
            port = s.bind_to_random_port("tcp://127.0.0.1")
            c = ctx.socket(zmq.SUB if kind == zmq.XPUB else zmq.PUSH)
            c.setsockopt(zmq.LINGER, 0)
            c.curve_serverkey, c.curve_publickey, c.curve_secretkey = server_public, client_public, client_secret
            c.setsockopt(zmq.ROUTING_ID, b"r" * 255)  # the largest metadata a peer may send in INITIATE
            c.connect(f"tcp://127.0.0.1:{port}")
            socks += [s, c]
        xpub, sub, pull, push = socks
        sub.setsockopt(zmq.SUBSCRIBE, TOPICS["prediction"])
        assert xpub.poll(5000) and xpub.recv() == b"\x01" + TOPICS["prediction"]
        largest = b"\x00" * (MAX_MESSAGE_BYTES - 64 * 1024)  # two float64 arrays of 65 536 points, and then some
        push.send(largest)
        assert pull.poll(5000) and len(pull.recv()) == len(largest)
    finally:
        ctx.destroy(linger=0)


def test_the_limits_table_in_docs_wire_md_matches_the_code():
    text = (Path(__file__).resolve().parents[1] / "docs" / "wire.md").read_text(encoding="utf-8")
    section = text[text.index("### 1.1"):text.index("## 2.")]
    rows = {line.split("|")[1].strip().split(" ")[0]: [c.strip() for c in line.split("|")[1:-1]]
            for line in section.splitlines() if line.startswith("| ") and "---" not in line}

    def number(cell: str) -> int:
        """The leading figure of a cell: "1 114 112 bytes (...)" -> 1114112, "64 MiB + 4 KiB" -> 67112960."""
        if cell.startswith("64 MiB + 4 KiB"):
            return 64 * 2**20 + 4096
        return int(re.match(r"[\d ]+", cell).group().replace(" ", ""))

    for role, row in (("input", "input"), ("input", "acknowledged"), ("output", "output"), ("control", "control"),
                      ("internal", "internal"), ("catchup", "catch-up")):
        assert number(rows[row][2]) == MAX_BYTES[role], (role, rows[row][2])
        assert number(rows[row][3]) == receive_hwm(role), (role, rows[row][3])


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_the_control_queue_passes_a_request_over_curvezmq_with_zap():
    """libzmq's REP over CurveZMQ with a ZAP authenticator receives nothing with a receive HWM of 1 (libzmq 4.3.5):
    the control socket's limits must let an authorised request through."""
    from zmq.auth import CURVE_ALLOW_ANY
    from zmq.auth.thread import ThreadAuthenticator

    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=CURVE_ALLOW_ANY)
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    try:
        rep = ctx.socket(zmq.REP)
        rep.setsockopt(zmq.LINGER, 0)
        rep.curve_server, rep.curve_secretkey = True, server_secret
        apply_limits(rep, "control")
        port = rep.bind_to_random_port("tcp://127.0.0.1")
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.curve_serverkey, req.curve_publickey, req.curve_secretkey = server_public, client_public, client_secret
        req.connect(f"tcp://127.0.0.1:{port}")
        req.send(b"status")
        assert rep.poll(5000) and rep.recv() == b"status"
    finally:
        auth.stop()
        ctx.destroy(linger=0)
