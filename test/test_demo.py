"""The README's first command (`noposplat-ros demo`, via tools/run_demo.sh) on the bundled input:
node + player processes over DDS, outputs written and summarised."""
from __future__ import annotations

import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from noposplat_ros.fixtures.motorcycle import MOTORCYCLE_BASELINE_M, load_motorcycle
from noposplat_ros.io.ply import read_ply
from noposplat_ros.transforms import direction_angle_deg, is_rigid, translation_quat_xyzw_to_T


def test_demo_writes_three_files_and_summary(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "noposplat_ros.cli", "demo", "--out", str(out), "--quiet-node",
                           "--timeout", "240"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout
    assert "noposplat_ros demo summary" in summary

    # splats.ply: readable, as many splats as the summary says, finite
    g = read_ply(out / "splats.ply")
    n = int(re.search(r"splats\s*:\s*(\d+)", summary).group(1))
    assert g.num == n > 10_000
    assert np.isfinite(g.means.numpy()).all() and ((g.opacities > 0) & (g.opacities < 1)).all()
    assert re.search(r"scale kind\s*:\s*metric", summary)
    assert re.search(r"backend\s*:\s*geometry", summary)

    # trajectory.tum: both keyframes, stamped with the input stamps, metric baseline along +x
    gt = load_motorcycle()
    rows = [ln.split() for ln in (out / "trajectory.tum").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(rows) == 2 and all(len(r) == 8 for r in rows)
    stamps = [int(r[0].replace(".", "")) for r in rows]
    assert stamps == [gt.left.stamp_ns, gt.right.stamp_ns]
    T0, T1 = (translation_quat_xyzw_to_T(np.array(r[1:4], float), np.array(r[4:8], float)) for r in rows)
    assert is_rigid(T0) and is_rigid(T1)
    rel = np.linalg.inv(T0) @ T1
    assert np.linalg.norm(rel[:3, 3]) == pytest.approx(MOTORCYCLE_BASELINE_M, rel=1e-3)
    assert direction_angle_deg(rel[:3, 3], [1, 0, 0]) < 5.0

    # preview.png: input | novel view | depth, side by side, not blank
    img = cv2.imread(str(out / "preview.png"))
    assert img is not None and img.shape[1] == 3 * (img.shape[1] // 3) and img.shape[0] > 100
    w = img.shape[1] // 3
    for i in range(3):
        panel = img[30:, i * w:(i + 1) * w]
        assert panel.std() > 10, f"panel {i} is blank"
