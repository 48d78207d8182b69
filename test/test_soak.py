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
