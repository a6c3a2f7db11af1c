"""Catch-up for subscribers (issue #17): paged reads from the store, the catch-up endpoint, and a subscriber that
fetches what it missed by itself (late start, gaps at the high-water mark, a daemon restart)."""

from __future__ import annotations

import time

import msgpack
import pytest
import zmq
from daemon_harness import RunningDaemon

from edge.catchup import CatchUpServer
from edge.catchup_client import SubscriberCatchUp
from edge.client import PredictionSubscriber
from edge.daemon import Daemon, DaemonConfig
from edge.data import load_spectra
from edge.errors import ConfigError, EdgeError
from edge.store import PRIORITY, Arrival, Store, StoreConfig, StoredResult
from edge.store.reading import results_after
from edge.wire import encode_spectrum
from edge.wire_spec import MAX_CATCHUP_LIMIT, validator


def _pred(seq: int) -> StoredResult:
    return StoredResult("prediction", msgpack.packb({"type": "prediction", "seq": seq}), time.time_ns(), seq)


def _err(n: int) -> StoredResult:
    return StoredResult("error", msgpack.packb({"type": "error", "rejected_total": n}), time.time_ns(),
                        priority=PRIORITY["rejected"])


def _seqs(messages) -> list:
    return [msgpack.unpackb(p).get("seq") for _, p in messages]


# -- reading pages from the store ------------------------------------------------------------------------------
def test_pages_follow_the_cursor_and_stop_at_the_limit_and_the_byte_bound(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite")))
    store.record([_pred(1), _pred(2), _err(1), _err(2), _err(3), _pred(3), _pred(4)])
    first = results_after(store._conn, 1, limit=3)
    assert _seqs(first.messages) == [2, None, None] and first.more and first.complete
    assert (first.last_seq, first.store_last_seq) == (2, 4)
    # paging by seq alone would repeat the errors; the cursor continues exactly after the last message
    second = results_after(store._conn, first.last_seq, limit=3, after_row=first.cursor)
    assert _seqs(second.messages) == [None, 3, 4] and not second.more and second.complete
    only = results_after(store._conn, 0, topics=["error"], limit=10)
    assert [msgpack.unpackb(p)["rejected_total"] for _, p in only.messages] == [1, 2, 3]
    one_each = results_after(store._conn, 0, limit=10, max_bytes=1)  # each page holds at least one message
    assert len(one_each.messages) == 1 and one_each.more
    assert results_after(store._conn, 4).messages == [] and results_after(store._conn, 4).complete


def test_pages_say_when_the_store_no_longer_has_predictions(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite")))
    store.record([_pred(i) for i in range(1, 11)])
    store._conn.execute("DELETE FROM results WHERE seq IN (1, 2, 6)")  # as retention would
    page = results_after(store._conn, 0)
    assert _seqs(page.messages) == [3, 4, 5, 7, 8, 9, 10] and not page.complete
    assert results_after(store._conn, 6).complete  # nothing after 6 is missing
    gone = results_after(store._conn, 5)  # 6 is gone: its page starts at 7 and says so
    assert _seqs(gone.messages) == [7, 8, 9, 10] and not gone.complete
    assert results_after(store._conn, 2, limit=2).complete  # the page [3, 4] lacks nothing
    assert not results_after(store._conn, 2, limit=4).complete  # the page [3, 4, 5, 7] lacks 6
    store._conn.execute("UPDATE meta SET value = '12' WHERE key = 'last_seq'")  # 11, 12 given but never stored
    assert not results_after(store._conn, 10).complete


# -- the endpoint's answers ---------------------------------------------------------------------------------------
BAD_REQUESTS = {
    "not msgpack": b"\xc1\xc1",
    "not a map": msgpack.packb([1, 2]),
    "no type": msgpack.packb({"after_seq": 0}),
    "wrong type": msgpack.packb({"type": "status", "after_seq": 0}),
    "no after_seq": msgpack.packb({"type": "catch_up"}),
    "negative after_seq": msgpack.packb({"type": "catch_up", "after_seq": -1}),
    "after_seq a string": msgpack.packb({"type": "catch_up", "after_seq": "7"}),
    "after_seq a bool": msgpack.packb({"type": "catch_up", "after_seq": True}),
    "after_seq a fraction": msgpack.packb({"type": "catch_up", "after_seq": 1.5}),
    "limit 0": msgpack.packb({"type": "catch_up", "after_seq": 0, "limit": 0}),
    "limit too large": msgpack.packb({"type": "catch_up", "after_seq": 0, "limit": MAX_CATCHUP_LIMIT + 1}),
    "status topic": msgpack.packb({"type": "catch_up", "after_seq": 0, "topics": ["status"]}),
    "unknown topic": msgpack.packb({"type": "catch_up", "after_seq": 0, "topics": ["prediction", "x"]}),
    "topics not an array": msgpack.packb({"type": "catch_up", "after_seq": 0, "topics": "prediction"}),
    "empty topics": msgpack.packb({"type": "catch_up", "after_seq": 0, "topics": []}),
    "after_seq beyond int64": msgpack.packb({1: 2, "type": "catch_up", "after_seq": 2**64 - 1}),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_a_bad_request_is_answered_with_a_reason(name, tmp_path):
    Store(StoreConfig(str(tmp_path / "s.sqlite"))).record([_pred(1)])
    reply = CatchUpServer("inproc://unused", str(tmp_path / "s.sqlite"), zmq.Context.instance()).answer(
        BAD_REQUESTS[name])
    assert reply["ok"] is False and reply["reason"] == "bad_request" and reply["error"]
    assert not list(validator(message="catchup_reply").iter_errors(reply))


def test_a_store_that_cannot_be_read_is_answered_with_a_reason(tmp_path):
    server = CatchUpServer("inproc://unused", str(tmp_path / "absent.sqlite"), zmq.Context.instance())
    reply = server.answer(msgpack.packb({"type": "catch_up", "after_seq": 0}))
    assert reply["ok"] is False and reply["reason"] == "store" and "no store" in reply["error"]


def test_catchup_needs_a_store(synthetic_bundle):
    with pytest.raises(ConfigError, match="needs a store"):
        DaemonConfig.from_dict({"catchup": "tcp://127.0.0.1:5558"})
    with pytest.raises(ConfigError, match="needs a store"):
        Daemon(DaemonConfig(bundle=str(synthetic_bundle), catchup="tcp://127.0.0.1:*"))


# -- the subscriber's rules, against a real store ----------------------------------------------------------------
class _StoreClient:
    """A catch-up client reading the store directly (what the endpoint answers), or failing when told to."""

    def __init__(self, store: Store) -> None:
        self.store, self.fail, self.calls = store, False, 0

    def page(self, after_seq, topics=None, limit=1000, after_row=None):
        self.calls += 1
        if self.fail:
            raise EdgeError("no reply from the catch-up endpoint")
        p = results_after(self.store._conn, after_seq, topics, limit, 0, after_row)
        return {"ok": True, "messages": p.messages, "complete": p.complete, "more": p.more, "last_seq": p.last_seq,
                "cursor": p.cursor, "store_last_seq": p.store_last_seq}


def _status(last_seq: int, dropped_hwm: int = 0) -> bytes:
    return msgpack.packb({"type": "status", "store": {"last_seq": last_seq}, "counters": {"dropped_hwm": dropped_hwm}})


def _catch_up(cu: SubscriberCatchUp) -> None:
    while cu.due():
        cu.fetch_page()


def _delivered(cu: SubscriberCatchUp) -> list:
    out = [p.get("seq", f"e{p.get('rejected_total')}") for t, p in cu.pending if t != "status"]
    cu.pending.clear()
    return out


def test_a_gap_is_filled_in_order_and_nothing_is_delivered_twice(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite")))
    published = [_pred(1), _pred(2), _pred(3), _err(1), _pred(4), _pred(5), _err(2), *map(_pred, range(6, 11))]
    store.record(published)
    cu = SubscriberCatchUp(_StoreClient(store), ["prediction", "error"], limit=2)
    cu.on_live("status", _status(0))  # live from seq 0
    for r in published[:2]:
        cu.on_live(r.topic, r.payload)
    for r in published[5:7]:  # 3, error 1 and 4 were dropped on the way; 5 shows the gap
        cu.on_live(r.topic, r.payload)
    assert _delivered(cu) == [1, 2] and cu.due()  # 5 and what follows it are held
    _catch_up(cu)
    assert _delivered(cu) == [3, "e1", 4, 5, "e2", 6, 7, 8, 9, 10]
    assert cu.stats["duplicates"] == 2 and cu.stats["missing"] == 0  # the held 5 and error 2
    cu.on_live("prediction", published[-1].payload)  # a late live copy of 10
    cu.on_live("status", _status(10))
    assert _delivered(cu) == [] and not cu.due() and cu.last_seq == 10
    store.record([_pred(11)])  # published, then lost at the high-water mark: the next status tells
    cu.on_live("status", _status(11))
    _catch_up(cu)
    assert _delivered(cu) == [11] and cu.stats["missing"] == 0


def test_errors_lost_at_the_high_water_mark_are_fetched_when_the_status_counts_a_drop(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite")))
    published = [_pred(1), _err(1), _pred(2)]
    store.record(published)
    cu = SubscriberCatchUp(_StoreClient(store), ["prediction", "error"])
    cu.on_live("status", _status(0, dropped_hwm=5))
    cu.on_live("prediction", published[0].payload)
    cu.on_live("prediction", published[2].payload)  # no gap in seq: the dropped error leaves no trace ...
    cu.on_live("status", _status(2, dropped_hwm=6))  # ... but the daemon counted a drop since the last status
    _catch_up(cu)
    assert _delivered(cu) == [1, 2, "e1"] and cu.stats["duplicates"] == 2
    cu.on_live("status", _status(2, dropped_hwm=6))
    assert not cu.due()  # no new drop, nothing to fetch


def test_predictions_the_store_lost_are_counted_missing_not_waited_for(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite")))
    store.record([_pred(i) for i in range(1, 7)])
    store._conn.execute("DELETE FROM results WHERE seq IN (3, 6)")  # retention
    cu = SubscriberCatchUp(_StoreClient(store), ["prediction"], after_seq=0)
    cu.on_live("status", _status(6))
    _catch_up(cu)
    assert _delivered(cu) == [1, 2, 4, 5] and cu.last_seq == 6
    assert cu.stats["missing"] == 2 and cu.stats["incomplete"] == 1
    cu.on_live("status", _status(6))
    assert not cu.due()  # nothing left to ask for


def test_a_reconnection_catches_up_from_before_it_at_the_next_status(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite")))
    store.record([_pred(1), _pred(2), _err(1), _pred(3)])
    cu = SubscriberCatchUp(_StoreClient(store), ["prediction", "error"])
    cu.on_live("status", _status(0))
    cu.on_live("prediction", _pred(1).payload)
    cu.on_disconnected()
    cu.on_live("prediction", _pred(2).payload)  # raced the disconnection
    cu.on_connected()
    cu.on_live("prediction", _pred(3).payload)  # no gap, but the error between was published while away
    assert not cu.due()  # waits for the welcome status: the subscriptions are live again
    cu.on_live("status", _status(3))
    _catch_up(cu)
    assert _delivered(cu) == [1, 2, "e1", 3] and cu.stats["reconnects"] == 1


def test_a_catch_up_that_keeps_failing_is_abandoned_and_counted(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite")))
    client = _StoreClient(store)
    client.fail = True
    cu = SubscriberCatchUp(client, ["prediction"], give_up_s=0.05, retry_s=0.01)
    cu.on_live("status", _status(0))
    cu.on_live("prediction", _pred(1).payload)
    cu.on_live("prediction", _pred(4).payload)
    cu.fetch_page()
    assert _delivered(cu) == [1] and not cu.due() and cu.wait_s() > 0  # retried later, 4 still held
    time.sleep(0.06)
    _catch_up(cu)
    assert _delivered(cu) == [4] and cu.stats["missing"] == 2 and cu.stats["catchup_errors"] == 2


def test_subscriber_options_are_checked():
    with pytest.raises(EdgeError, match="after_seq needs"):
        PredictionSubscriber("tcp://127.0.0.1:1", after_seq=0)
    with pytest.raises(EdgeError, match="prediction topic"):
        PredictionSubscriber("tcp://127.0.0.1:1", topics=["error"], catchup="tcp://127.0.0.1:2")
    with pytest.raises(EdgeError, match="after_seq must be"):
        PredictionSubscriber("tcp://127.0.0.1:1", catchup="tcp://127.0.0.1:2", after_seq=-1)


# -- against a running daemon -------------------------------------------------------------------------------------
def _predictions(rx: PredictionSubscriber, n: int, timeout_s: float = 30.0) -> list[dict]:
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        got = rx.recv(timeout_s=0.5)
        if got and got[0] == "prediction":
            out.append(got[1])
    return out


def _more_predictions(rx: PredictionSubscriber, window_s: float = 0.5) -> list[dict]:
    """Predictions arriving within ``window_s`` (none should, once all were delivered)."""
    deadline = time.monotonic() + window_s
    return [got[1] for got in iter(lambda: rx.recv(timeout_s=max(0.0, deadline - time.monotonic())), None)
            if got[0] == "prediction"]


def test_a_late_subscriber_gets_every_prediction_from_seq_1_in_order(synthetic_bundle, tmp_path):
    s = load_spectra("synthetic:test")
    with RunningDaemon(synthetic_bundle, store=str(tmp_path / "s.sqlite"), catchup="tcp://127.0.0.1:*") as d:
        for i in range(40):
            d.tx.send(s.intensities[i % len(s)], s.raman_shift_cm1, id=f"a{i}")
        d.collect(40)  # all published before the late subscriber connects
        with PredictionSubscriber(d.daemon.endpoints["output"], context=d.ctx, after_seq=0,
                                  catchup=d.daemon.endpoints["catchup"]) as rx:
            rx.wait_ready(timeout_s=10)
            for i in range(40, 50):  # and more, live
                d.tx.send(s.intensities[i % len(s)], s.raman_shift_cm1, id=f"a{i}")
            preds = _predictions(rx, 50)
            extra = _more_predictions(rx)
            stats = rx.stats
        status = d.daemon.status()
    assert [p["seq"] for p in preds] == list(range(1, 51)) and not extra
    assert [p["id"] for p in preds] == [f"a{i}" for i in range(50)]
    assert stats["caught_up"] >= 40 and stats["missing"] == 0
    assert status["catchup"]["requests"] >= 1 and status["catchup"]["refused"] == 0


def test_bad_catch_up_requests_are_refused_and_the_daemon_keeps_classifying(synthetic_bundle, tmp_path):
    s = load_spectra("synthetic:test")
    with RunningDaemon(synthetic_bundle, store=str(tmp_path / "s.sqlite"), catchup="tcp://127.0.0.1:*") as d:
        endpoint = d.daemon.endpoints["catchup"]
        req = d.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(endpoint)
        replies = []
        for frame in BAD_REQUESTS.values():
            req.send(frame)
            assert req.poll(5000)
            replies.append(msgpack.unpackb(req.recv()))
        dealer = d.ctx.socket(zmq.DEALER)  # two body frames; then no delimiter frame at all
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(endpoint)
        dealer.send_multipart([b"", msgpack.packb({"type": "catch_up", "after_seq": 0}), b"x"])
        assert dealer.poll(5000)
        multipart = msgpack.unpackb(dealer.recv_multipart()[-1])
        dealer.send(msgpack.packb({"type": "catch_up", "after_seq": 0}))
        assert dealer.poll(5000)
        bare = msgpack.unpackb(dealer.recv_multipart()[-1])
        big = d.ctx.socket(zmq.REQ)  # larger than MAXMSGSIZE: ZeroMQ drops it (and the connection), no reply
        big.setsockopt(zmq.LINGER, 0)
        big.connect(endpoint)
        big.send(msgpack.packb({"type": "catch_up", "after_seq": 0, "pad": b"x" * 100_000}))
        assert not big.poll(300)
        for i in range(5):
            d.tx.send(s.intensities[i], s.raman_shift_cm1, id=f"a{i}")
        preds, _ = d.collect(5)
        req.send(msgpack.packb({"type": "catch_up", "after_seq": 0, "limit": 3}))
        assert req.poll(5000)
        good = msgpack.unpackb(req.recv())
        for s_ in (req, dealer, big):
            s_.close()
        status = d.daemon.status()
    assert all(r["ok"] is False and r["reason"] == "bad_request" for r in replies)
    assert multipart["ok"] is False and "one frame" in multipart["error"]
    assert bare["ok"] is True  # a DEALER without the delimiter frame is answered all the same
    assert len(preds) == 5 and good["ok"] and good["more"] and len(good["messages"]) == 3
    assert [msgpack.unpackb(p)["seq"] for _, p in good["messages"]] == [1, 2, 3]
    assert not list(validator(message="catchup_reply").iter_errors(good))
    assert status["catchup"]["refused"] == len(BAD_REQUESTS) + 1


def test_a_subscriber_across_a_daemon_restart_gets_every_prediction_once(synthetic_bundle, tmp_path):
    s = load_spectra("synthetic:test")
    path = str(tmp_path / "s.sqlite")
    ctx = zmq.Context()  # the subscriber outlives both daemons (and their contexts)
    preds: list[dict] = []
    first = RunningDaemon(synthetic_bundle, store=path, catchup="tcp://127.0.0.1:*")
    with first as d:
        endpoints = dict(d.daemon.endpoints)
        rx = PredictionSubscriber(endpoints["output"], context=ctx, catchup=endpoints["catchup"], after_seq=0)
        rx.wait_ready(timeout_s=10)
        for i in range(20):
            d.tx.send(s.intensities[i], s.raman_shift_cm1, id=f"a{i}", instrument_id="rover")
        preds += _predictions(rx, 20)
    store = Store(StoreConfig(path))  # as if the daemon died after storing these: replayed at the restart,
    store.admit([Arrival(encode_spectrum(s.intensities[i], s.raman_shift_cm1, id=f"k{i}", instrument_id="rover"),
                         "push", time.time_ns(), f"k{i}", "rover") for i in range(5)])  # before rx reconnects
    store.close()
    second = RunningDaemon(synthetic_bundle, store=path, catchup=endpoints["catchup"])
    second.daemon.config.input, second.daemon.config.output = endpoints["input"], endpoints["output"]
    with second as d:
        for i in range(20):
            d.tx.send(s.intensities[i], s.raman_shift_cm1, id=f"b{i}", instrument_id="rover")
        preds += _predictions(rx, 25)
        extra = _more_predictions(rx)
    stats = rx.stats
    rx.close()
    ctx.term()
    assert [p["seq"] for p in preds] == list(range(1, 46)) and not extra
    assert sorted(p["id"] for p in preds) == sorted([f"a{i}" for i in range(20)] + [f"k{i}" for i in range(5)]
                                                    + [f"b{i}" for i in range(20)])
    assert stats["reconnects"] >= 1 and stats["missing"] == 0


def test_a_slow_subscriber_at_a_tiny_high_water_mark_gets_all_2000_once(synthetic_bundle, tmp_path):
    """The issue's slow subscriber: its queues overflow during a burst (counted in dropped_hwm), and catch-up
    recovers every prediction, in order, exactly once."""
    s = load_spectra("synthetic:stream")
    n = 2000
    running = RunningDaemon(synthetic_bundle, store=str(tmp_path / "s.sqlite"), catchup="tcp://127.0.0.1:*",
                            output_hwm=10, status_interval_s=0.2)
    running.daemon.config.output = f"ipc://{tmp_path}/out"  # small kernel buffers (unlike loopback TCP)
    with running as d:
        rx = PredictionSubscriber(d.daemon.endpoints["output"], context=d.ctx, catchup=d.daemon.endpoints["catchup"],
                                  rcvhwm=10)
        rx.wait_ready(timeout_s=10)
        for i in range(n):
            d.tx.send(s.intensities[i % len(s)], s.raman_shift_cm1, id=f"{i}")
        deadline = time.monotonic() + 60
        while d.daemon.counters["published"] < n and time.monotonic() < deadline:
            time.sleep(0.05)  # the subscriber reads nothing during the burst
        preds = _predictions(rx, n)
        extra = _more_predictions(rx)
        stats = rx.stats
        rx.close()
        dropped = d.daemon.status()["counters"]["dropped_hwm"]
    subscriber_missing = n - len({p["seq"] for p in preds})
    assert dropped > 0 and stats["caught_up"] > 0  # it did fall behind, and caught up
    assert subscriber_missing == 0 and not extra
    assert [p["seq"] for p in preds] == list(range(1, n + 1))
    assert sorted(p["id"] for p in preds) == sorted(str(i) for i in range(n))
