"""Onboard head hot-swap over real ZeroMQ sockets on 127.0.0.1 (random ports, linger 0, bounded waits):
a head is swapped mid-stream; every spectrum gets exactly one prediction, named with the head that made it,
equal to that head's offline result."""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from edge.backends import OnnxRuntimeBackend
from edge.bundle import Bundle
from edge.client import ControlClient, PredictionSubscriber, SpectrumSender
from edge.daemon import Daemon, DaemonConfig
from edge.data import load_spectra
from edge.errors import HeadError
from edge.heads import load_head, make_head
from edge.preprocess import Preprocessor

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def heads(rruff_base58, soysal, transfer_new_classes, tmp_path_factory):
    """v1: the base bundle's own classifier as an int8 head file; v2: an extend-mode head (63 classes)."""
    pytest.importorskip("torch")
    from trainer.bundle_io import load_model
    from trainer.transfer import TransferConfig, transfer

    base = Bundle.load(rruff_base58)
    model = load_model(base)
    sha = base.manifest["model"]["backbone_sha256"]
    v1 = make_head(model.classifier.weight.detach().numpy(), model.classifier.bias.detach().numpy(), base.labels,
                   sha, "v1")
    tr = load_spectra(soysal / "raw_train_labeled_40pct.npz")
    r = transfer(base, tr.subset(np.isin(tr.labels, transfer_new_classes)), TransferConfig(mode="extend", views=1,
                                                                                           steps=150), version="v2")
    folder = tmp_path_factory.mktemp("heads")
    foreign = make_head(v1.weight, v1.bias, v1.labels, "0" * 64, "foreign")
    return {"v1": v1.save(folder / "v1.npz"), "v2": r.head.save(folder / "v2.npz"),
            "foreign": foreign.save(folder / "foreign.npz")}


def offline(bundle_path, head_path, spectra):
    """What a head predicts for the spectra, computed apart from the daemon: the served ONNX model's
    embedding, then the head in numpy."""
    b = Bundle.load(bundle_path)
    path, _ = b.onnx_model("auto")
    with OnnxRuntimeBackend(path) as be:
        emb = be.infer(Preprocessor(b.preprocessing)(spectra.intensities, spectra.raman_shift_cm1))["embedding"]
    h = load_head(head_path)
    return np.asarray(h.labels), h.predict_proba(emb)


class Served:
    def __init__(self, bundle, **kw):
        self.ctx = zmq.Context()
        self.daemon = Daemon(DaemonConfig(bundle=str(bundle), input="tcp://127.0.0.1:*", output="tcp://127.0.0.1:*",
                                          control="tcp://127.0.0.1:*", **kw), context=self.ctx)
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.daemon.ready.wait(20)
        self.rx = PredictionSubscriber(self.daemon.endpoints["output"], context=self.ctx)
        self.rx.wait_ready(timeout_s=10)
        self.ctl = ControlClient(self.daemon.endpoints["control"], timeout_s=10, context=self.ctx)
        return self

    def __exit__(self, *exc):
        self.daemon.stop()
        self.thread.join(10)
        self.ctl.close()
        self.rx.close()
        self.ctx.term()


def test_swap_mid_stream_every_spectrum_once_with_its_heads_result(rruff_base58, heads, soysal):
    test = load_spectra(soysal / "raw_test.npz")
    n_rounds = 2
    n = n_rounds * len(test)  # 300 spectra streamed continuously
    labels1, p1 = offline(rruff_base58, heads["v1"], test)
    labels2, p2 = offline(rruff_base58, heads["v2"], test)
    assert p1.shape == (150, 58) and p2.shape == (150, 63)
    with Served(rruff_base58, head=str(heads["v1"]), max_batch=8, heads_dir=str(heads["v1"].parent)) as d:
        assert d.ctl.status()["head"]["version"] == "v1"
        sent, received = threading.Event(), threading.Event()

        def stream():  # its own socket in its own thread (ZeroMQ sockets are not thread-safe)
            with SpectrumSender(d.daemon.endpoints["input"], d.ctx) as tx:
                tx.sock.setsockopt(zmq.LINGER, 0)
                for k in range(n):
                    i = k % len(test)
                    tx.send(test.intensities[i], test.raman_shift_cm1, id=f"s{k}", instrument_seq=k)
                    time.sleep(0.002)
                sent.set()
                received.wait(60)  # close (linger 0) only once everything came back

        sender = threading.Thread(target=stream, daemon=True)
        sender.start()
        preds: list[dict] = []
        errors: list[dict] = []
        reply = None
        deadline = time.monotonic() + 60
        while len(preds) < n and time.monotonic() < deadline:
            got = d.rx.recv(timeout_s=0.2)
            if got and got[0] == "prediction":
                preds.append(got[1])
            elif got and got[0] == "error":
                errors.append(got[1])
            if reply is None and len(preds) >= 60:
                # refused first: a head for another backbone, and a malformed request; the stream goes on
                bad = d.ctl.load_head(path=str(heads["foreign"]))
                assert bad["ok"] is False and bad["reason"] == "backbone_mismatch" and "backbone" in bad["error"]
                junk = d.ctl.request({"cmd": "load_head"})
                assert junk["ok"] is False and junk["reason"] == "bad_request"
                reply = d.ctl.load_head(data=heads["v2"].read_bytes())  # inline bytes, as over an uplink
        received.set()
        sender.join(10)
        assert sent.is_set()
        status = d.ctl.status()
    assert reply is not None and reply["ok"], reply
    assert reply["head_version"] == "v2" and reply["previous_version"] == "v1" and reply["n_classes"] == 63
    assert errors == []
    ids = [p["id"] for p in preds]
    assert len(ids) == n and len(set(ids)) == n  # every spectrum exactly once
    seqs = [p["seq"] for p in preds]
    assert seqs == sorted(seqs)
    cut = reply["last_seq_previous_head"]
    before = [p for p in preds if p["seq"] <= cut]
    after = [p for p in preds if p["seq"] > cut]
    assert len(before) >= 60 and len(after) >= 60, (len(before), len(after))  # swapped mid-stream
    assert {p["head_version"] for p in before} == {"v1"}
    assert {p["head_version"] for p in after} == {"v2"}
    for p in preds:
        i = int(p["id"][1:]) % len(test)
        labels, proba = (labels1, p1) if p["head_version"] == "v1" else (labels2, p2)
        order = np.argsort(-proba[i], kind="stable")
        assert p["labels"][0] == labels[order[0]] or proba[i][order[0]] - proba[i][order[1]] < 1e-4
        assert p["probabilities"] == pytest.approx(proba[i][order[:3]].tolist(), abs=1e-4)
        assert p["instrument_seq"] == int(p["id"][1:])
    # the new head knows the new minerals: some post-swap predictions name them (label set of v2)
    assert any(lab not in set(labels1) for p in after for lab in p["labels"])
    head = status["head"]
    assert head["version"] == "v2" and head["loads"] == 2 and head["rejected"] == 2  # start + swap; foreign + junk
    assert status["status"]["counters"]["published"] == n


def test_bundle_head_by_default_and_refused_head_at_start(rruff_base58, heads):
    b = Bundle.load(rruff_base58)
    with Served(rruff_base58) as d:
        st = d.ctl.status()
        assert st["ok"] and st["head"]["version"] == b.model_id and st["head"]["source"] == "bundle"
        assert st["head"]["swappable"] is True
        assert d.ctl.request({"cmd": "reboot"})["reason"] == "bad_request"
        # not msgpack at all: answered, not fatal
        d.ctl.sock.send(b"\xc1garbage")
        assert d.ctl.sock.poll(10_000)
        assert msgpack.unpackb(d.ctl.sock.recv())["reason"] == "bad_request"
        assert d.ctl.load_head(path="/nonexistent/head.npz")["reason"] == "invalid_head"
        assert d.ctl.status()["head"]["version"] == b.model_id
    with pytest.raises(HeadError, match="backbone"):
        Daemon(DaemonConfig(bundle=str(rruff_base58), head=str(heads["foreign"])))
