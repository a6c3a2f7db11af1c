"""edge-bench crash, short: the real edge-daemon SIGKILLed twice under an acknowledged flood, restarted on its
store; nothing is lost, nothing predicted twice, no seq given twice."""

from __future__ import annotations

from bench.bench_crash import HAS_CATCHUP, run


def test_a_short_crash_run_loses_nothing_and_predicts_nothing_twice(synthetic_bundle, tmp_path):
    r = run(synthetic_bundle, kills=2, per_kill=300, seed=1, data="synthetic:test", work_dir=tmp_path)
    assert r["sent"] == 600 and r["unacknowledged"] == 0 and r["sender_error"] is None
    assert (r["lost"], r["duplicated"], r["seq_reused"]) == (0, 0, 0)
    assert r["predicted"] == 600 and r["unanswered_rows"] == 0 and r["last_seq"] == 600
    assert r["daemon_starts"] == 3 and len(r["kill_points"]) == 2 and r["final_exit_code"] == 0
    assert r["subscriber_duplicated"] == 0 and r["subscriber_seen"] + r["subscriber_missing"] == 600
    assert r["subscriber_catch_up"] is HAS_CATCHUP
    if HAS_CATCHUP:  # a subscriber connected throughout, catching up after each restart, misses nothing
        assert r["subscriber_missing"] == 0 and r["subscriber_seen"] == 600
