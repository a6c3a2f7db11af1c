"""The drift bookkeeping on its own thread (issue 17, cost): a batch's drift monitor runs while the daemon stores
and publishes that batch and receives, stores and resamples the next; the next batch waits for it before it reads
the offset correction. What is published must be what the in-line computation published: the same messages in
the same order, with the same values (only the clock fields differ)."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.daemon import Daemon, DaemonConfig
from edge.data import load_spectra
from edge.shift import shift_spectra
from edge.wire import encode_spectrum
from trainer.eval_instruments import MessageCapture


class _InLine:
    """An executor that runs each job at once, on the calling thread (the computation as it was)."""

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        f: Future[Any] = Future()
        f.set_result(fn(*args))
        return f


def _run(bundle: Path, frames: list[bytes], batches: list[int], store: Path | None, in_line: bool,
         monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    with monkeypatch.context() as m:
        if in_line:
            m.setattr(Daemon, "_drift_thread", lambda self: _InLine())
        d = Daemon(DaemonConfig(bundle=str(bundle), store=str(store) if store else "",
                                drift={"warmup": 50, "offset_window": 15}))
        d.backend.__enter__()
        assert d.novelty is not None
        d.novelty.load((1, d.grid.n_points))
        pub = MessageCapture()
        i = 0
        for b in batches:
            d._process(frames[i:i + b], pub)  # type: ignore[arg-type]
            i += b
        d._publish_status(pub)  # joins the last batch's bookkeeping, as the loop does
        if d._store is not None:
            d._store.close()
        d.backend.close()
    return [(topic, {k: v for k, v in p.items() if not k.endswith("_ns") and k not in ("uptime_s", "output")})
            for topic, p in pub.messages]


@pytest.mark.parametrize("store", [False, True])
def test_drift_thread_publishes_what_the_in_line_bookkeeping_published(novelty_bundle, soysal, tmp_path, store,
                                                                       monkeypatch):
    test = load_spectra(soysal / "raw_test.npz")
    raw = np.concatenate([test.intensities[:150], shift_spectra(test.intensities[:150], 12.0)])
    frames = [encode_spectrum(r, test.raman_shift_cm1, id=f"s{i}") for i, r in enumerate(raw)]
    frames[7] = b"\x81\xa1x\x01"  # a malformed one among them: answered on the error topic, in its place
    batches = [1, 7, 64, 3, 64, 1, 1, 40, 64, 16, 39]
    assert sum(batches) == len(frames)
    threaded = _run(novelty_bundle["path"], frames, batches, tmp_path / "a.sqlite" if store else None, False,
                    monkeypatch)
    in_line = _run(novelty_bundle["path"], frames, batches, tmp_path / "b.sqlite" if store else None, True,
                   monkeypatch)
    assert threaded[:-1] == in_line[:-1]  # every prediction, error and drift alarm
    status, status_in_line = threaded[-1][1], in_line[-1][1]
    assert status["counters"] == status_in_line["counters"] and status["drift"] == status_in_line["drift"]
    topics = [t for t, _ in threaded]
    # the comparison means something: the offset was detected and compensated, and alarms were published
    drift = [p for t, p in threaded if t == "drift"]
    assert any(p["kind"] == "offset" for p in drift), drift
    corrections = [p["offset_correction_cm1"] for t, p in threaded if t == "prediction"]
    assert corrections[0] == 0.0 and abs(corrections[-1] - 12.0) < 2.0
    assert topics.count("prediction") == len(frames) - 1 and topics.count("error") == 1
    assert threaded[-1][1]["counters"]["drift_errors"] == 0


def test_a_backlog_at_start_up_is_answered_with_its_own_offset_estimate(novelty_bundle, soysal, monkeypatch):
    """A shifted instrument's first micro-batch of 64 (a backlog at start-up): its own spectra bring the drift
    compensation in before it is answered (it was answered uncorrected), and it is counted once."""
    test = load_spectra(soysal / "raw_test.npz")
    raw = shift_spectra(test.intensities[:64], 15.0)
    frames = [encode_spectrum(r, test.raman_shift_cm1, id=f"s{i}") for i, r in enumerate(raw)]
    d = Daemon(DaemonConfig(bundle=str(novelty_bundle["path"])))
    d.backend.__enter__()
    assert d.novelty is not None and d.novelty.offset_warming_up()
    d.novelty.load((1, d.grid.n_points))
    pub = MessageCapture()
    d._process(frames, pub)  # type: ignore[arg-type]
    d.join_drift(pub)
    preds = [p for t, p in pub.messages if t == "prediction"]
    assert len(preds) == 64 and not d.novelty.offset_warming_up()
    corrections = {p["offset_correction_cm1"] for p in preds}
    assert len(corrections) == 1 and abs(corrections.pop() - 15.0) < 3.0
    assert d.status()["hygiene"]["spikes_removed"] == sum(p["spikes_removed"] for p in preds)
    assert d.status()["counters"]["published"] == 64
    # compensation off: the warm-up step never runs, the batch is answered uncorrected
    off = Daemon(DaemonConfig(bundle=str(novelty_bundle["path"]), drift={"compensate_offset": False}))
    assert off.novelty is not None and not off.novelty.offset_warming_up()
    d.backend.close()
