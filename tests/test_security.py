"""CurveZMQ on the daemon's sockets (issue #17, "nobody else in"): who gets through, who does not, and that
the daemon refuses to serve a network-reachable control endpoint unauthenticated."""

from __future__ import annotations

import os
import stat
import threading
import time

import numpy as np
import pytest
import zmq
from daemon_harness import RunningDaemon

from edge.bundle import Bundle
from edge.cli import daemon_main
from edge.client import ControlClient, PredictionSubscriber, SpectrumSender
from edge.daemon import Daemon, DaemonConfig
from edge.data import load_spectra
from edge.errors import ConfigError, EdgeError
from edge.heads import make_head
from edge.keys_cli import main as keys_main
from edge.keys_cli import new_key_pair
from edge.security import _AUTHENTICATORS, CurveServer, curve_client, curve_sockets, is_loopback


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """daemon + an authorised client (public key in ``authorized/``) + an intruder with its own valid pair."""
    root = tmp_path_factory.mktemp("keys")
    daemon_pub, daemon_sec = new_key_pair(root, "daemon")
    client_pub, client_sec = new_key_pair(root, "client")
    _, intruder_sec = new_key_pair(root, "intruder")
    authorized = root / "authorized"
    authorized.mkdir()
    (authorized / "client.key").write_bytes(client_pub.read_bytes())
    return {"daemon_public": daemon_pub, "daemon_secret": daemon_sec, "authorized": authorized,
            "client": {"curve_secret_key": client_sec, "curve_server_key": daemon_pub},
            "intruder": {"curve_secret_key": intruder_sec, "curve_server_key": daemon_pub}}


def _server(keys) -> dict[str, str]:
    return {"curve_secret_key": str(keys["daemon_secret"]), "curve_authorized_dir": str(keys["authorized"])}


# -- rules and key files (no daemon) ------------------------------------------------------------------------------
@pytest.mark.parametrize(("endpoint", "local"), [
    ("tcp://127.0.0.1:5557", True), ("tcp://127.3.2.1:*", True), ("tcp://localhost:5557", True),
    ("tcp://[::1]:5557", True), ("ipc:///run/edge/control", True), ("inproc://control", True),
    ("tcp://0.0.0.0:5557", False), ("tcp://*:5557", False), ("tcp://192.168.1.7:5557", False),
    ("tcp://eth0:5557", False), ("tcp://127.0.0.1.example.org:5557", False), ("tcp://[::]:5557", False)])
def test_loopback_endpoints(endpoint, local):
    assert is_loopback(endpoint) is local


def test_control_is_protected_by_default_off_loopback_and_names_are_checked():
    assert curve_sockets([], "tcp://0.0.0.0:5557", False) == {"control"}
    assert curve_sockets([], "tcp://127.0.0.1:5557", False) == frozenset()
    assert curve_sockets(["input", "output"], "", False) == {"input", "output"}
    assert curve_sockets([], "tcp://0.0.0.0:5557", True) == frozenset()  # the explicit, logged opt-out
    with pytest.raises(ConfigError, match="unknown socket"):
        curve_sockets(["contrl"], "", False)
    with pytest.raises(ConfigError, match="choose one"):
        curve_sockets(["control"], "tcp://127.0.0.1:1", True)
    with pytest.raises(ConfigError, match="unknown socket"):
        DaemonConfig.from_dict({"bundle": "b", "curve": ["journal"]})


def test_missing_or_wrong_keys_are_refused_with_the_fix(keys, tmp_path):
    ctx = zmq.Context()
    try:
        with pytest.raises(ConfigError, match=r"edge-keys new.*curve_secret_key"):
            CurveServer({"control"}, "", "", ctx)
        with pytest.raises(ConfigError, match="curve_authorized_dir"):
            CurveServer({"control"}, keys["daemon_secret"], "", ctx)
        with pytest.raises(ConfigError, match="only a public key"):
            CurveServer({"control"}, keys["daemon_public"], keys["authorized"], ctx)
        with pytest.raises(ConfigError, match="no such file"):
            CurveServer({"control"}, tmp_path / "nope.key_secret", keys["authorized"], ctx)
        (tmp_path / "junk.key_secret").write_text("not a certificate\n")
        with pytest.raises(ConfigError, match="not a ZeroMQ certificate"):
            CurveServer({"control"}, tmp_path / "junk.key_secret", keys["authorized"], ctx)
        (tmp_path / "empty").mkdir()
        with pytest.raises(ConfigError, match="nobody could connect"):
            CurveServer({"control"}, keys["daemon_secret"], tmp_path / "empty", ctx)
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "x.key").write_text('curve\n    public-key = "short"\n')
        with pytest.raises(ConfigError, match="not a 40-character Z85"):
            CurveServer({"control"}, keys["daemon_secret"], tmp_path / "bad", ctx)
        sock = ctx.socket(zmq.REQ)
        with pytest.raises(EdgeError, match="both"):
            curve_client(sock, keys["client"]["curve_secret_key"], None)
        sock.close(linger=0)
    finally:
        ctx.term()


def _ask(ctx, endpoint, client_keys, timeout_ms=1500):
    """One REQ round trip as a CURVE client (or a plain one without keys); the reply or None."""
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    if client_keys:
        curve_client(req, client_keys["curve_secret_key"], client_keys["curve_server_key"])
    req.connect(endpoint)
    req.send(b"ping")
    reply = req.recv() if req.poll(timeout_ms) else None
    req.close(linger=0)
    return reply


def test_two_servers_in_one_context_share_one_authenticator_with_their_own_keys(keys, tmp_path):
    """Two daemons in one process and context: each admits only its own authorised clients; the shared ZAP
    authenticator stops with the last one (the context then terminates instead of hanging)."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "intruder.key").write_bytes(keys["intruder"]["curve_secret_key"].with_suffix(".key").read_bytes())
    ctx = zmq.Context()
    servers = [CurveServer({"control"}, keys["daemon_secret"], keys["authorized"], ctx),
               CurveServer({"control"}, keys["daemon_secret"], other, ctx)]
    socks, endpoints = [], []
    unprotected = ctx.socket(zmq.PUB)
    assert not servers[0].secure(unprotected, "output")  # not in its roles: left alone
    with pytest.raises(ConfigError, match="unknown socket role"):
        servers[0].secure(unprotected, "contrl")
    assert unprotected.getsockopt(zmq.MECHANISM) == zmq.NULL
    unprotected.close(linger=0)
    for server in servers:
        rep = ctx.socket(zmq.REP)
        rep.setsockopt(zmq.LINGER, 0)
        assert server.secure(rep, "control") and rep.getsockopt(zmq.MECHANISM) == zmq.CURVE
        rep.bind("tcp://127.0.0.1:*")
        socks.append(rep)
        endpoints.append(rep.getsockopt_string(zmq.LAST_ENDPOINT))
    stop = threading.Event()

    def echo() -> None:
        poller = zmq.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        while not stop.is_set():
            for s, _ in poller.poll(50):
                s.send(s.recv())

    t = threading.Thread(target=echo)
    t.start()
    try:
        assert _ask(ctx, endpoints[0], keys["client"]) == b"ping"
        assert _ask(ctx, endpoints[0], keys["intruder"]) is None
        assert _ask(ctx, endpoints[1], keys["intruder"]) == b"ping"
        assert _ask(ctx, endpoints[1], keys["client"]) is None
        assert _ask(ctx, endpoints[0], None, timeout_ms=500) is None  # no keys at all
    finally:
        stop.set()
        t.join(5)
        for s in socks:
            s.close(linger=0)
        for server in servers:
            server.close()
    assert id(ctx) not in _AUTHENTICATORS
    done = threading.Thread(target=ctx.term, daemon=True)
    done.start()
    done.join(10)
    assert not done.is_alive(), "the context did not terminate: an authenticator was left running"


def test_a_context_with_another_zap_handler_is_refused(keys):
    from zmq.auth.thread import ThreadAuthenticator

    ctx = zmq.Context()
    theirs = ThreadAuthenticator(ctx)
    theirs.start()
    sock = ctx.socket(zmq.REP)
    try:
        server = CurveServer({"input"}, keys["daemon_secret"], keys["authorized"], ctx)
        with pytest.raises(ConfigError, match="another ZAP handler"):
            server.secure(sock, "input")
        server.close()
        assert id(ctx) not in _AUTHENTICATORS
    finally:
        sock.close(linger=0)
        theirs.stop()
        ctx.term()


# -- edge-keys ---------------------------------------------------------------------------------------------------
def test_edge_keys_makes_a_private_pair_and_never_overwrites(tmp_path, capsys):
    folder = tmp_path / "k"
    assert keys_main(["new", "--dir", str(folder), "--name", "daemon"]) == 0
    out = capsys.readouterr().out
    secret, public = folder / "daemon.key_secret", folder / "daemon.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and stat.S_IMODE(public.stat().st_mode) == 0o644
    assert b"secret-key" in secret.read_bytes() and b"secret-key" not in public.read_bytes()
    key_line = next(line for line in out.splitlines() if line.startswith("public key "))
    assert key_line.split()[2].encode() in public.read_bytes()
    before = secret.read_bytes()
    assert keys_main(["new", "--dir", str(folder), "--name", "daemon"]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "already exists" in err and "Traceback" not in err
    assert secret.read_bytes() == before
    assert sorted(os.listdir(folder)) == ["daemon.key", "daemon.key_secret"]  # no temporary folder left
    for argv in (["new", "--dir", str(folder), "--name", "../escape"], ["show", str(tmp_path / "missing.key")],
                 ["new", "--dir", str(tmp_path / "no" / "parent"), "--name", "x"], ["bogus"]):
        assert keys_main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err
    assert keys_main(["show", str(secret)]) == 0
    assert key_line in capsys.readouterr().out


# -- a running daemon ------------------------------------------------------------------------------------------
def _heads(bundle_path):
    """The bundle's own classifier as a head file, under its real labels ("auth") and forged labels."""
    pytest.importorskip("torch")
    from trainer.bundle_io import load_model

    b = Bundle.load(bundle_path)
    model = load_model(b)
    w, bias = model.classifier.weight.detach().numpy(), model.classifier.bias.detach().numpy()
    sha = b.manifest["model"]["backbone_sha256"]
    real = make_head(w, bias, b.labels, sha, "auth-v2").to_bytes()
    forged = make_head(w, bias, [f"FORGED-{x}" for x in b.labels], sha, "forged").to_bytes()
    return real, forged


def _predict(d, spectra, ids):
    for i, sid in enumerate(ids):
        d.tx.send(spectra.intensities[i], spectra.raman_shift_cm1, id=sid)
    preds, _ = d.collect(len(ids), timeout_s=20)
    assert set(preds) == set(ids)
    return preds


def test_forged_head_over_an_unauthenticated_control_connection_gets_no_reply(synthetic_bundle, keys):
    """The control endpoint binds every interface (tcp://0.0.0.0): CurveZMQ is on by default. A client without
    keys and one with an unauthorised key send a forged inline head (right backbone hash, forged labels): no
    reply, the labels stay; an authorised client gets the status and loads heads (the same forged bytes too,
    which shows it is CurveZMQ that kept them out)."""
    real, forged = _heads(synthetic_bundle)
    spectra = load_spectra("synthetic:test")
    with RunningDaemon(synthetic_bundle, control="tcp://0.0.0.0:*", **_server(keys)) as d:
        endpoint = d.daemon.endpoints["control"].replace("0.0.0.0", "127.0.0.1")
        for who in (None, keys["intruder"]):
            with ControlClient(endpoint, timeout_s=1.5, context=d.ctx, **(who or {})) as intruder:
                with pytest.raises(EdgeError, match="no reply"):
                    intruder.load_head(data=forged)
        preds = _predict(d, spectra, [f"a{i}" for i in range(5)])
        assert not any(lab.startswith("FORGED") for p in preds.values() for lab in p["labels"])
        assert {p["head_version"] for p in preds.values()} == {d.daemon.heads.version} != {"forged"}
        with ControlClient(endpoint, timeout_s=10, context=d.ctx, **keys["client"]) as ctl:
            st = ctl.status()
            assert st["ok"] and st["head"]["version"] != "forged" and st["head"]["rejected"] == 0  # never reached
            reply = ctl.load_head(data=real)
            assert reply["ok"] and reply["head_version"] == "auth-v2"
            preds = _predict(d, spectra, [f"b{i}" for i in range(5)])
            assert {p["head_version"] for p in preds.values()} == {"auth-v2"}
            assert ctl.load_head(data=forged)["ok"]  # authorised: accepted (head integrity is not authenticity)
        preds = _predict(d, spectra, [f"c{i}" for i in range(3)])
        assert all(p["labels"][0].startswith("FORGED-") for p in preds.values())
        assert d.thread.is_alive()


def test_curve_on_input_and_output_admits_only_authorised_peers(synthetic_bundle, keys):
    spectra = load_spectra("synthetic:test")
    with RunningDaemon(synthetic_bundle, curve=["input", "output"], client_keys=keys["client"], **_server(keys)) as d:
        ep_in, ep_out = d.daemon.endpoints["input"], d.daemon.endpoints["output"]
        eavesdropper = PredictionSubscriber(ep_out, context=d.ctx, **keys["intruder"])
        plain = PredictionSubscriber(ep_out, context=d.ctx)
        intruders = [SpectrumSender(ep_in, d.ctx, linger_ms=0, **keys["intruder"]), SpectrumSender(ep_in, d.ctx, linger_ms=0)]
        try:
            for k, tx in enumerate(intruders):
                for i in range(5):
                    tx.send(spectra.intensities[i], spectra.raman_shift_cm1, id=f"intruder{k}-{i}")
            ids = [f"ok{i}" for i in range(8)]
            for i, sid in enumerate(ids):
                d.tx.send(spectra.intensities[i], spectra.raman_shift_cm1, id=sid)
            preds, _ = d.messages(len(ids), timeout_s=20, trailing_s=1.0)
            assert sorted(preds) == sorted(ids)  # the intruders' spectra never reached the daemon
            assert d.daemon.counters["received"] == len(ids)
            for rx in (eavesdropper, plain):  # nothing at all, not even a status
                assert rx.recv(timeout_s=0.5) is None
        finally:
            for tx in intruders:
                tx.close()
            eavesdropper.close()
            plain.close()
    assert id(d.ctx) not in _AUTHENTICATORS  # the daemon stopped its authenticator (the context terminated)


def test_network_control_without_keys_refuses_to_start(synthetic_bundle, keys, capsys):
    with pytest.raises(ConfigError, match=r"never served unauthenticated.*edge-keys new.*curve_secret_key"):
        Daemon(DaemonConfig(bundle=str(synthetic_bundle), control="tcp://0.0.0.0:*"))
    assert daemon_main(["--bundle", str(synthetic_bundle), "--control", "tcp://*:0", "--input", "", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "edge-keys" in err and "Traceback" not in err
    assert daemon_main(["--bundle", str(synthetic_bundle), "--control", "tcp://*:0", "--input", "", "-q",
                        "--curve-secret-key", str(keys["daemon_public"]),
                        "--curve-authorized-dir", str(keys["authorized"])]) == 1
    assert "only a public key" in capsys.readouterr().err
    assert daemon_main(["--bundle", str(synthetic_bundle), "--curve", "input,journal"]) == 1
    assert "unknown socket(s) ['journal']" in capsys.readouterr().err


def test_a_loopback_daemon_without_keys_still_serves(synthetic_bundle):
    """Nothing changes for a loopback daemon with no CurveZMQ settings (the default configuration)."""
    spectra = load_spectra("synthetic:test")
    with RunningDaemon(synthetic_bundle, control="tcp://127.0.0.1:*") as d:
        assert d.daemon.security.roles == frozenset()
        preds = _predict(d, spectra, ["x0", "x1"])
        assert all(np.isfinite(p["probabilities"][0]) for p in preds.values())
        with ControlClient(d.daemon.endpoints["control"], timeout_s=10, context=d.ctx) as ctl:
            assert ctl.status()["ok"]


def test_the_catch_up_endpoint_shares_the_output_protection(synthetic_bundle, keys, tmp_path):
    """With ``output`` protected, the catch-up endpoint (stored results) answers an authorised subscriber and
    nobody else."""
    from edge.catchup_client import CatchUpClient

    spectra = load_spectra("synthetic:test")
    with RunningDaemon(synthetic_bundle, curve=["input", "output"], client_keys=keys["client"],
                       store=str(tmp_path / "s.sqlite"), catchup="tcp://127.0.0.1:*", **_server(keys)) as d:
        for i in range(5):
            d.tx.send(spectra.intensities[i], spectra.raman_shift_cm1, id=f"c{i}")
        preds, _ = d.messages(5, timeout_s=20)
        ep = d.daemon.endpoints["catchup"]
        late = PredictionSubscriber(d.daemon.endpoints["output"], context=d.ctx, catchup=ep, after_seq=0,
                                    **keys["client"])
        intruder = CatchUpClient(ep, d.ctx, timeout_s=0.5,
                                 curve=(keys["intruder"]["curve_secret_key"], keys["intruder"]["curve_server_key"]))
        plain = CatchUpClient(ep, d.ctx, timeout_s=0.5)
        try:
            got = []
            deadline = time.monotonic() + 15
            while len(got) < 5 and time.monotonic() < deadline:
                msg = late.recv(timeout_s=0.2)
                if msg is not None and msg[0] == "prediction":
                    got.append(msg[1]["seq"])
            for client in (intruder, plain):
                with pytest.raises(EdgeError):
                    client.page(0)
        finally:
            late.close()
            intruder.close()
            plain.close()
    assert len(preds) == 5 and got == [1, 2, 3, 4, 5]
