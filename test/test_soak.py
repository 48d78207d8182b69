"""The soak in short (30 s): node process + faulty publisher process (room stream: a closed loop
with parallax, 320x240 at 15 Hz) + monitor.

Asserts what the 30-minute run asserts: node alive, every injected fault counted by kind, bounded
stamp age and resident memory, keyframe pairs made and a non-empty scene map within its cap (bounds
are the command's defaults, stated in its report). Only the "RSS flat after the cap" rule needs the
long run; its arithmetic is unit-tested below.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from noposplat_ros.ros.soak_nodes import FAULTS


def test_soak_30s(tmp_path):
    report_path = tmp_path / "soak.json"
    exe = pathlib.Path(sys.executable).parent / "noposplat-ros"
    # seed 7 with a fault chance of 0.1 injects every kind at least once in 30 s (450 slots at 15 Hz);
    # a 4-s lap (60 frames) renders in ~10 s, while the node starts
    cap = 50_000
    proc = subprocess.run(
        [str(exe), "soak", "--duration-s", "30", "--fault-prob", "0.1", "--seed", "7", "--room-lap-s", "4",
         "--map-max-gaussians", str(cap), "--json", str(report_path)],
        capture_output=True, text=True, timeout=240,
    )
    assert report_path.is_file(), proc.stdout + proc.stderr
    r = json.loads(report_path.read_text())
    text = proc.stdout + proc.stderr[-2000:]
    assert r["node_alive_at_end"] and r["node_state"] == "active", text
    injected = r["publisher"]["injected"]
    assert set(injected) == set(FAULTS), f"every fault kind injected: {injected}"
    for counter, check in r["fault_check"].items():
        assert check["node_counted"] >= check["injected_counts"] > 0, (counter, check, text)
    assert r["faults_counted"].get("worker_error", 0) == 0, text
    assert r["frames_received"] > 0.8 * r["frames_published"], text
    assert r["stream"] == "room" and r["publisher"]["cycle_frames"] == 60, text
    assert r["pairs_published"] >= 1 and r["odometry_received"] >= 1, text
    m = r["map"]
    assert m["cap"] == cap and 0 < m["final_gaussians"] <= cap and m["never_above_cap"], text
    assert 0 < m["max_gaussians_seen"] <= cap and m["timeline"] and m["final_memory_mib"] > 0, text
    assert "map never above the cap: PASS" in proc.stdout
    assert r["stamp_age_s"]["p99"] <= r["bounds"]["max_stamp_age_s"], text
    assert r["rss_mb"]["growth"] <= r["bounds"]["max_rss_growth_mb"], text
    assert proc.returncode == 0 and r["ok"], text
    assert "RESULT: PASS" in proc.stdout


def _evaluate(**over):
    from noposplat_ros.commands.soak import evaluate_run

    kw = dict(
        alive=True, diag={"state": "active", "fault.short_data": "3", "fault.size_change": "4", "fault.worker_error": "0"},
        expected={"short_data": 3, "size_change": 4}, ages_s=[0.5, 0.7, 0.6, 0.9, 0.8, 0.6],
        rss_samples=[(float(t), 450.0 + (t % 7)) for t in range(100)], t_first_pair=2.0, rss_ready=300.0,
        duration_s=100.0, max_stamp_age_s=10.0, max_rss_growth_mb=100.0,
    )
    kw.update(over)
    return evaluate_run(**kw)["failures"]


def test_soak_rules_pass_and_fail_for_each_reason():
    assert _evaluate() == []
    assert any("not alive" in f for f in _evaluate(alive=False))
    assert any("not active" in f for f in _evaluate(diag={"state": "inactive", "fault.short_data": "3", "fault.size_change": "4"}))
    assert any("short_data: injected 3, node counted 2" in f
               for f in _evaluate(diag={"state": "active", "fault.short_data": "2", "fault.size_change": "4"}))
    assert any("worker_error" in f for f in _evaluate(diag={"state": "active", "fault.short_data": "3",
                                                            "fault.size_change": "4", "fault.worker_error": "1"}))
    growing = [(float(t), 450.0 + 3.0 * t) for t in range(100)]  # +300 MiB over the run
    assert any("RSS grew" in f for f in _evaluate(rss_samples=growing))
    backlog = [0.5 + 0.2 * i for i in range(90)]  # falling further behind with every output
    assert any("stamp age unbounded" in f for f in _evaluate(ages_s=backlog))
    assert any("no outputs" in f for f in _evaluate(ages_s=[]))


def _map_failures(**over):
    flat_rss = [(float(t), 500.0 + (t % 7)) for t in range(100)]
    filling = [(float(t), min(100_000, 10_000 * t), 8.0, t) for t in range(100)]  # at the cap from t = 10 s
    kw = dict(map_samples=filling, map_cap=100_000, expect_map=True, require_cap=True, rss_samples=flat_rss)
    kw.update(over)
    return _evaluate(**kw)


def test_soak_map_rules():
    from noposplat_ros.commands.soak import evaluate_run

    assert _map_failures() == []
    m = evaluate_run(alive=True, diag={"state": "active"}, expected={}, ages_s=[0.5] * 10,
                     rss_samples=[(float(t), 500.0) for t in range(100)], t_first_pair=2.0, rss_ready=300.0,
                     duration_s=100.0, max_stamp_age_s=10.0, max_rss_growth_mb=100.0,
                     map_samples=[(float(t), min(100_000, 10_000 * t), 8.0, t) for t in range(100)], map_cap=100_000)["map"]
    assert m["cap_reached_s"] == 10.0 and m["pairs_at_cap"] == 10 and m["never_above_cap"] and m["rss_flat_after_cap"]
    assert abs(m["rss_window_s"] - 8.9) < 1e-9 and abs(m["rss_growth_after_cap_mb"]) < 1e-9
    # +1 MiB per second after the cap: the medians over the first / last 10 % differ by ~80 MiB
    creeping = [(float(t), 500.0 + max(0, t - 10)) for t in range(100)]
    assert any("not flat after the map cap" in f for f in _map_failures(rss_samples=creeping))
    over_cap = [(float(t), 100_500 if t == 50 else min(100_000, 10_000 * t), 8.0, t) for t in range(100)]
    assert any("map above the cap: 100500 > 100000" in f for f in _map_failures(map_samples=over_cap))
    empty = [(float(t), 0, 0.0, 0) for t in range(100)]
    fails = _map_failures(map_samples=empty)
    assert any("stayed empty" in f for f in fails) and any("never reached its cap" in f for f in fails)
    half = [(float(t), min(50_000, 10_000 * t), 4.0, t) for t in range(100)]
    assert _map_failures(map_samples=half, require_cap=False) == []
    assert any("never reached its cap" in f for f in _map_failures(map_samples=half))
    # a worker that died: node alive and active, outputs stopped long before the end
    assert any("outputs stopped" in f for f in _evaluate(last_output_gap_s=120.0))
    assert _evaluate(last_output_gap_s=5.0) == []
