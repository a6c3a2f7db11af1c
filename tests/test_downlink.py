"""edge-downlink (issue 17): priority order, the byte budget, the nominal sample, marking, reading a package back,
user errors, and a run beside a working daemon."""

from __future__ import annotations

import contextlib
import io
import logging
import sqlite3
import threading
import time

import msgpack
import numpy as np
import pytest
from daemon_harness import RunningDaemon

from edge.data import load_spectra
from edge.downlink import KINDS, mark_exported, plan_downlink, read_package, write_package
from edge.downlink_cli import main
from edge.errors import ConfigError, DataError
from edge.store import PRIORITY, Arrival, Store, StoreConfig, StoredResult, StoreError
from edge.wire import decode_spectrum, encode_spectrum

SPECTRA = load_spectra("synthetic:test")


def _prediction(i: int, seq: int, rng: np.random.Generator) -> bytes:
    probs = sorted(rng.random(3).round(6).tolist(), reverse=True)
    return msgpack.packb({"type": "prediction", "id": f"s{i}", "seq": seq, "labels": ["Calcite", "Quartz", "Albite"],
                          "probabilities": probs, "novelty_score": float(rng.random()), "received_ns": time.time_ns()})


def make_store(path, n_nominal=300, n_novel=3, n_doubtful=3, n_rejected=3, n_events=2) -> dict[str, list[int]]:
    """A store as the daemon leaves it: spectra with predictions of every priority, rejections and events.
    Returns the result rows by kind."""
    rng = np.random.default_rng(7)
    kinds = ["novel"] * n_novel + ["doubtful"] * n_doubtful + ["rejected"] * n_rejected + ["nominal"] * n_nominal
    order = rng.permutation(len(kinds))  # interleaved in time, as they arrive
    kinds = [kinds[i] for i in order]
    store = Store(StoreConfig(str(path)))
    t0 = time.time_ns()
    arrivals = [Arrival(encode_spectrum(SPECTRA.intensities[i % len(SPECTRA.intensities)], SPECTRA.raman_shift_cm1,
                                        id=f"s{i}", instrument_id="rover"), "push", t0 + i, f"s{i}", "rover")
                for i in range(len(kinds))]
    rows = [a.row for a in store.admit(arrivals)]
    results, answered, seq = [], [], 0
    by_kind: dict[str, list[int]] = {k: [] for k in KINDS}
    for i, (kind, row) in enumerate(zip(kinds, rows, strict=True)):
        if kind == "rejected":
            payload = msgpack.packb({"type": "error", "reason": "range", "id": f"s{i}"})
            results.append(StoredResult("error", payload, t0 + i, None, row, PRIORITY["rejected"]))
        else:
            seq += 1
            pri = {"novel": PRIORITY["novel"], "doubtful": PRIORITY["doubtful"], "nominal": 0}[kind]
            results.append(StoredResult("prediction", _prediction(i, seq, rng), t0 + i, seq, row, pri))
        answered.append((row, results[-1].priority))
    for j in range(n_events):
        results.append(StoredResult("drift" if j % 2 == 0 else "link", msgpack.packb({"type": "drift", "n": j}),
                                    time.time_ns(), None, None, PRIORITY["event"]))
    store.record(results, answered)
    got = store._conn.execute("SELECT row, priority FROM results ORDER BY row").fetchall()
    name = {4: "novel", 2: "doubtful", 1: "rejected", 3: "event", 0: "nominal"}
    for row, pri in got:
        by_kind[name[pri]].append(row)
    store.close()
    return by_kind


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "store.sqlite"


def test_everything_fits_in_priority_order_and_reads_back_as_stored(store_path, tmp_path):
    by_kind = make_store(store_path)
    plan = plan_downlink(store_path, 10_000_000)
    n = write_package(plan, tmp_path / "p.rdl")
    pkg = read_package(tmp_path / "p.rdl")
    assert n == (tmp_path / "p.rdl").stat().st_size == plan.size_bytes
    assert pkg.header["format"] == "raman-edge-downlink" and pkg.header["store_schema_version"] == 1
    assert pkg.header["counts"] == {k: len(v) for k, v in by_kind.items()}
    assert sum(pkg.header["left"].values()) == 0
    kinds = [r["kind"] for r in pkg.records]
    assert kinds == sorted(kinds, key=KINDS.index)  # novel, doubtful, event, rejected, nominal
    db = sqlite3.connect(store_path)
    for rec in pkg.records:  # each record is what the store holds, as published and as received
        payload, spectrum_row = db.execute("SELECT payload, spectrum_row FROM results WHERE row = ?",
                                           (rec["result_row"],)).fetchone()
        assert rec["payload"] == msgpack.unpackb(payload)
        if rec["kind"] in ("novel", "doubtful"):
            frame = db.execute("SELECT frame FROM spectra WHERE row = ?", (spectrum_row,)).fetchone()[0]
            assert rec["spectrum"]["frame"] == frame and rec["spectrum"]["row"] == spectrum_row
            assert decode_spectrum(rec["spectrum"]["frame"]).id == rec["payload"]["id"]
        else:  # predictions only for the nominal sample; the error message alone for rejected inputs
            assert "spectrum" not in rec
    # compression pays: the same package in plain msgpack is far bigger (synthetic spectra: ~2.8 times)
    assert plan_downlink(store_path, 10_000_000, compress=False).size_bytes > 2 * plan.size_bytes


@pytest.mark.parametrize("budget", [1_000, 5_000, 20_000, 45_000, 200_000])
def test_the_budget_is_never_exceeded_and_used_nearly_fully(store_path, tmp_path, budget):
    make_store(store_path, n_nominal=2000)
    plan = plan_downlink(store_path, budget)
    size = write_package(plan, tmp_path / "p.rdl")
    left = plan.header["left"]
    assert size <= budget
    if budget == 200_000:  # room for all
        assert sum(left.values()) == 0
    else:  # nominal results wait: what is left unused is less than one of them
        assert left["nominal"] > 0
        assert budget - size < max(n for kind, *_, n in plan.items if kind == "nominal") + 16
    kinds = [kind for kind, *_ in plan.items]
    assert kinds == sorted(kinds, key=KINDS.index)
    assert len(read_package(tmp_path / "p.rdl").records) == sum(plan.header["counts"].values())


def test_a_small_budget_takes_novel_first(store_path):
    make_store(store_path)
    full = plan_downlink(store_path, 10_000_000)
    novel_bytes = full.header["bytes"]["novel"]
    plan = plan_downlink(store_path, novel_bytes + 600)  # the novel ones and the header: nothing doubtful fits
    assert plan.header["counts"]["novel"] == 3 and plan.header["counts"]["doubtful"] == 0
    assert plan.header["left"]["doubtful"] == 3


def test_the_nominal_sample_is_seeded_and_spread_over_time(store_path):
    by_kind = make_store(store_path, n_nominal=2000, n_novel=0, n_doubtful=0, n_rejected=0, n_events=0)
    nominal = np.asarray(by_kind["nominal"])
    plan = plan_downlink(store_path, 12_000, seed=3)
    picked = np.asarray([row for kind, row, *_ in plan.items if kind == "nominal"])
    assert 20 <= len(picked) < len(nominal) * 0.5
    deciles = np.searchsorted(np.quantile(nominal, np.linspace(0, 1, 11)[1:-1]), picked)
    assert set(deciles.tolist()) == set(range(10))  # every tenth of the time span is represented
    assert np.bincount(deciles, minlength=10).max() <= 3 * len(picked) / 10
    again = plan_downlink(store_path, 12_000, seed=3)
    other = plan_downlink(store_path, 12_000, seed=4)
    assert [i[1] for i in again.items] == [i[1] for i in plan.items]
    assert [i[1] for i in other.items] != [i[1] for i in plan.items]


def test_marking_then_a_second_run_carries_nothing_new(store_path, tmp_path):
    make_store(store_path)
    plan = plan_downlink(store_path, 30_000)
    write_package(plan, tmp_path / "1.rdl")
    assert mark_exported(store_path, plan) == len(plan.result_rows) + len(plan.spectrum_rows)
    db = sqlite3.connect(store_path)
    marked = {r for (r,) in db.execute("SELECT row FROM results WHERE exported_ns IS NOT NULL")}
    assert marked == set(plan.result_rows)
    assert {r for (r,) in db.execute("SELECT row FROM spectra WHERE exported_ns IS NOT NULL")} == set(plan.spectrum_rows)
    second = plan_downlink(store_path, 10_000_000)
    assert not set(second.result_rows) & marked  # what went once does not go again ...
    assert sum(second.header["counts"].values()) == sum(plan.header["left"].values())  # ... what was left does
    write_package(second, tmp_path / "2.rdl")
    mark_exported(store_path, second)
    third = plan_downlink(store_path, 10_000_000)
    assert third.items == [] and sum(third.header["counts"].values()) == 0
    assert len(plan_downlink(store_path, 10_000_000, include_exported=True).items) == len(marked | set(second.result_rows))


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
    return code, out.getvalue(), err.getvalue()


def test_cli_writes_prints_the_summary_and_dry_run_writes_nothing(store_path, tmp_path):
    make_store(store_path)
    code, out, err = run_main(["--store", str(store_path), "--budget-bytes", "30000", "--out", str(tmp_path / "d.rdl"),
                               "--dry-run"])
    assert code == 0 and "dry run" in out and not (tmp_path / "d.rdl").exists()
    assert out.count("novel ") >= 4  # three item lines and the summary row
    assert sqlite3.connect(store_path).execute("SELECT count(*) FROM results WHERE exported_ns IS NOT NULL").fetchone()[0] == 0
    code, out, err = run_main(["--store", str(store_path), "--budget-bytes", "30000", "--out", str(tmp_path / "p.rdl")])
    assert code == 0, err
    pkg = read_package(tmp_path / "p.rdl")
    for kind in KINDS:
        assert f"{kind:<10} {pkg.header['counts'][kind]:>7} {pkg.header['bytes'][kind]:>10}" in out
    assert f"wrote {tmp_path / 'p.rdl'} ({(tmp_path / 'p.rdl').stat().st_size} bytes)" in out


@pytest.mark.parametrize(("case", "expect"), [
    ("missing", "no store at"),
    ("text", "is not a raman-edge store"),
    ("other-db", "is not a raman-edge store: no such table: meta"),
    ("budget", "does not hold the package header"),
    ("zero-budget", "--budget-bytes: must be a positive integer"),
    ("huge-budget", "above the 1073741824-byte limit"),
    ("out-exists", "exists: a package not yet sent down would be lost"),
    ("out-folder", "cannot write the package"),
])
def test_user_errors_are_one_line_and_exit_1(tmp_path, case, expect):
    good = tmp_path / "store.sqlite"
    make_store(good, n_nominal=5)
    (tmp_path / "text.sqlite").write_text("not a database\n" * 200)
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (x)").connection.close()
    (tmp_path / "taken.rdl").write_bytes(b"an earlier package")
    store, budget, out = str(good), "100000", str(tmp_path / "p.rdl")
    store = {"missing": str(tmp_path / "none.sqlite"), "text": str(tmp_path / "text.sqlite"),
             "other-db": str(tmp_path / "other.sqlite")}.get(case, store)
    budget = {"budget": "100", "zero-budget": "0", "huge-budget": str(2**31)}.get(case, budget)
    out = {"out-exists": str(tmp_path / "taken.rdl"), "out-folder": str(tmp_path / "no" / "such" / "p.rdl")}.get(case, out)
    code, stdout, err = run_main(["--store", store, "--budget-bytes", budget, "--out", out])
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 1 and len(errors) == 1 and expect in errors[0], err
    assert "Traceback" not in err + stdout
    assert (tmp_path / "taken.rdl").read_bytes() == b"an earlier package"
    assert sqlite3.connect(good).execute("SELECT count(*) FROM results WHERE exported_ns IS NOT NULL").fetchone()[0] == 0


def test_a_file_that_is_not_a_package_is_refused(tmp_path):
    (tmp_path / "x.rdl").write_bytes(msgpack.packb({"format": "something-else"}))
    with pytest.raises(DataError, match="not a raman-edge downlink package"):
        read_package(tmp_path / "x.rdl")
    with pytest.raises(DataError, match="cannot read"):
        read_package(tmp_path / "none.rdl")


def test_a_damaged_package_is_refused(store_path, tmp_path):
    make_store(store_path)
    plan = plan_downlink(store_path, 30_000)
    write_package(plan, tmp_path / "p.rdl")
    data = (tmp_path / "p.rdl").read_bytes()
    (tmp_path / "cut.rdl").write_bytes(data[:-200])
    with pytest.raises(DataError):
        read_package(tmp_path / "cut.rdl")


def test_marking_waits_for_the_daemons_write_transaction(store_path):
    make_store(store_path)
    plan = plan_downlink(store_path, 30_000)
    writer = sqlite3.connect(store_path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # the daemon in the middle of a micro-batch
    threading.Timer(0.5, lambda: writer.execute("COMMIT")).start()
    t = time.monotonic()
    assert mark_exported(store_path, plan, busy_timeout_s=10) > 0
    assert time.monotonic() - t >= 0.4
    writer.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError, match="next package will carry these items again"):
        mark_exported(store_path, plan, busy_timeout_s=0.2)
    writer.execute("ROLLBACK")


def test_budget_and_options_are_checked(store_path):
    make_store(store_path, n_nominal=5)
    with pytest.raises(ConfigError, match="max_rejected"):
        plan_downlink(store_path, 10_000, max_rejected=-1)


def test_downlink_beside_a_running_daemon(synthetic_bundle, tmp_path):
    """While a daemon classifies a steady stream into the store, packages are planned, written and marked; the
    daemon keeps answering every spectrum and everything it stored is carried exactly once over the packages."""
    path = tmp_path / "store.sqlite"
    with RunningDaemon(synthetic_bundle, store=str(path)) as d:
        stop = threading.Event()

        def send() -> None:
            i = 0
            while not stop.is_set() and i < 400:
                d.tx.send(SPECTRA.intensities[i % len(SPECTRA.intensities)], SPECTRA.raman_shift_cm1, id=f"c{i}",
                          instrument_id="rover")
                i += 1
                time.sleep(0.002)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.3)
        seen: list[int] = []
        for k in range(3):
            code, _out, err = run_main(["--store", str(path), "--budget-bytes", "200000",
                                       "--out", str(tmp_path / f"{k}.rdl"), "--busy-timeout-s", "10"])
            assert code == 0, err
            seen += [r["result_row"] for r in read_package(tmp_path / f"{k}.rdl").records]
            time.sleep(0.2)
        sender.join()
        preds, _ = d.collect(400, timeout_s=30)
        assert len(preds) == 400  # the daemon answered everything while packages were taken
    code, _out, err = run_main(["--store", str(path), "--budget-bytes", "100000000", "--out", str(tmp_path / "z.rdl")])
    assert code == 0, err
    seen += [r["result_row"] for r in read_package(tmp_path / "z.rdl").records]
    db = sqlite3.connect(path)
    assert len(seen) == len(set(seen))  # nothing carried twice
    assert set(seen) == {r for (r,) in db.execute("SELECT row FROM results")}  # ... and nothing missed
    assert db.execute("SELECT count(*) FROM results WHERE exported_ns IS NULL").fetchone()[0] == 0
