"""The README's first command (`noposplat-ros demo`, via tools/run_demo.sh) on the bundled input:
the scene-capture tour through node + player processes over DDS, the scene map saved through the
node's ~/save_map, rendered from a new viewpoint, and summarised."""
from __future__ import annotations

import re
import subprocess
import sys

import cv2
import numpy as np

from noposplat_ros.io.ply import read_ply
from noposplat_ros.transforms import is_rigid, translation_quat_xyzw_to_T


def test_demo_scene_capture_writes_map_view_and_trajectory(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "noposplat_ros.cli", "demo", "--out", str(out), "--quiet-node",
                           "--timeout", "540"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout
    assert "noposplat_ros demo summary" in summary
    assert re.search(r"backend\s*:\s*geometry", summary)

    # map.ply: the node's ~/save_map output, as many Gaussians as the summary says, finite
    g = read_ply(out / "map.ply")
    m = re.search(r"scene map\s*:\s*(\d+) Gaussians from (\d+) keyframes", summary)
    assert m, summary
    assert g.num == int(m.group(1)) > 10_000
    assert np.isfinite(g.means.numpy()).all() and ((g.opacities > 0) & (g.opacities < 1)).all()

    # trajectory.tum: the keyframes of the tour (>= 10), rigid poses, increasing stamps, a real path
    rows = [ln.split() for ln in (out / "trajectory.tum").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(rows) >= 10 and all(len(r) == 8 for r in rows)
    assert int(m.group(2)) == len(rows)
    stamps = [int(r[0].replace(".", "")) for r in rows]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    Ts = [translation_quat_xyzw_to_T(np.array(r[1:4], float), np.array(r[4:8], float)) for r in rows]
    assert all(is_rigid(T) for T in Ts)
    assert np.linalg.norm(Ts[-1][:3, 3] - Ts[0][:3, 3]) > 0

    # map_view.png: input | map from a new viewpoint, side by side, neither blank, and not the same image
    img = cv2.imread(str(out / "map_view.png"))
    assert img is not None and img.shape[0] > 100 and img.shape[1] % 2 == 0
    w = img.shape[1] // 2
    left, right = img[20:, :w].astype(float), img[20:, w:].astype(float)
    assert left.std() > 10 and right.std() > 10
    assert np.abs(left - right).mean() > 5
