"""The soak in short (30 s): node process + faulty 30 Hz publisher process + monitor.

Asserts what the 10-minute run asserts: node alive, every injected fault counted by kind, bounded
stamp age and resident memory (bounds are the command's defaults, stated in its report).
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
    # seed 7 with a fault chance of 0.1 injects every kind at least once in 30 s
    proc = subprocess.run(
        [str(exe), "soak", "--duration-s", "30", "--fault-prob", "0.1", "--seed", "7", "--json", str(report_path)],
        capture_output=True, text=True, timeout=150,
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
    assert r["pairs_published"] >= 3 and r["odometry_received"] >= 1, text
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
