"""Trajectory benchmark: scale carried by PnP + pose graph (today's code) beside the chained
depth-ratio method it replaced, on the general-motion tour (still, sideways, pan, forward, blur, still).

Both methods get the same keyframe pairs (our selector) and the same geometry-backend reconstructions.
ATE = RMS distance of keyframe camera centres after a similarity (Umeyama) alignment to the truth,
as a percentage of the true path length; without odometry and with true odometry baselines.
The chained-ratio method is the trajectory module as of commit ``--old-ref`` (read with ``git show``).
Also: pose-graph update time per keyframe with ``--window`` keyframes in the window.

Usage: python benchmarks/bench_trajectory.py [--hw 240 320] [--old-ref 795aea7] [--window 50] [--dense-only]
Prints ``uptime`` before and after: numbers taken under load are slower, not different.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types

import numpy as np

from noposplat_ros.fixtures.general_motion import tour_sequence
from noposplat_ros.keyframes.selector import KeyframeSelector
from noposplat_ros.pose.ate import ate_similarity
from noposplat_ros.pose.pose_graph import PoseGraph
from noposplat_ros.pose.se3 import exp_se3_np
from noposplat_ros.pose.trajectory import Trajectory
from noposplat_ros.predictors import make_predictor
from noposplat_ros.transforms import invert_T
from noposplat_ros.types import PoseStatus
from machine_load import uptime  # benchmarks/machine_load.py (the script folder is on sys.path)


DENSE_ONLY = False  # --dense-only: the noposplat backend's path (per-pixel Gaussians, no matches)


def load_old_trajectory(ref: str) -> types.ModuleType | None:
    """The chained depth-ratio trajectory module as of ``ref`` (None when git cannot show it)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run(["git", "-C", root, "show", f"{ref}:noposplat_ros/pose/trajectory.py"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        print(f"cannot read the old trajectory at {ref}: {res.stderr.strip()}", file=sys.stderr)
        return None
    mod = types.ModuleType("old_trajectory")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(res.stdout, f"{ref}:trajectory.py", "exec"), mod.__dict__)
    return mod


def keyframe_pairs(seq):
    sel = KeyframeSelector()
    return [p for p in (sel.offer(f) for f in seq.frames) if p is not None]


def run_trajectory(traj, recons, pairs, index_of, seq, odom: bool, new_api: bool):
    """-> (ATE % of path, number of LOST steps, keyframe count)."""
    for recon, pair in zip(recons, pairs):
        ob = None
        if odom:
            i0, i1 = index_of[pair.kf0.stamp_ns], index_of[pair.kf1.stamp_ns]
            ob = float(np.linalg.norm(seq.T_world_from_cam[i1][:3, 3] - seq.T_world_from_cam[i0][:3, 3]))
        if new_api:
            traj.add_pair(recon, odom_baseline_m=ob, K_px=None if DENSE_ONLY else (pair.kf0.K, pair.kf1.K))
        else:
            traj.add_pair(recon, odom_baseline_m=ob)
    poses = traj.poses()
    est = np.array([T[:3, 3] for _, T in poses])
    tru = np.array([seq.T_world_from_cam[index_of[s]][:3, 3] for s, _ in poses])
    ate, _ = ate_similarity(est, tru)
    lost = sum(s.status == PoseStatus.LOST for s in traj.steps)
    return 100.0 * ate / seq.path_length_m(), lost, len(poses)


def bench_graph(window: int, n: int = 80) -> float:
    """Median ms per keyframe (add + k-1/k-2 edges + optimise + marginal) once the window is full."""
    rng = np.random.default_rng(0)
    g = PoseGraph(window=window)
    g.add_keyframe(0, np.eye(4), np.eye(6) * 1e-12)
    Ts = [np.eye(4)]
    cov = np.diag([1e-4] * 3 + [1e-6] * 3)
    times = []
    for k in range(1, n):
        d = exp_se3_np(rng.normal(0, 0.05, 3), rng.normal(0, 0.02, 3))
        d[:3, 3] = rng.normal(0, 0.3, 3)
        Ts.append(Ts[-1] @ d)
        t0 = time.perf_counter()
        g.add_keyframe(k, g.pose(k - 1) @ d)
        g.add_relative(k - 1, k, d, cov)
        if k >= 2:
            g.add_relative(k - 2, k, invert_T(Ts[k - 2]) @ Ts[k], 2 * cov)
        g.optimise()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[window:]) if n > window else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hw", type=int, nargs=2, default=(240, 320))
    ap.add_argument("--old-ref", default="795aea7", help="commit of the chained depth-ratio trajectory")
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--dense-only", action="store_true", help="carry the scale from the Gaussians only")
    args = ap.parse_args()
    global DENSE_ONLY
    DENSE_ONLY = bool(args.dense_only)
    print(f"load before: {uptime()}")
    t0 = time.perf_counter()
    seq = tour_sequence(hw=tuple(args.hw))
    print(f"tour {args.hw[1]}x{args.hw[0]}: {len(seq.frames)} frames, path {seq.path_length_m():.3f} m "
          f"(rendered in {time.perf_counter() - t0:.0f} s)")
    index_of = {f.stamp_ns: i for i, f in enumerate(seq.frames)}
    pairs = keyframe_pairs(seq)
    kf = [index_of[pairs[0].kf0.stamp_ns]] + [index_of[p.kf1.stamp_ns] for p in pairs]
    print(f"keyframes at frames {kf} ({len(pairs)} pairs)")
    predictor = make_predictor("geometry")
    recons, times = [], []
    for p in pairs:
        t0 = time.perf_counter()
        recons.append(predictor.predict(p))
        times.append(time.perf_counter() - t0)
    print(f"geometry backend: {statistics.median(times):.2f} s median per pair")
    old = load_old_trajectory(args.old_ref)
    print(f"{'method':60s} {'ATE % path':>10s} {'LOST':>5s} {'keyframes':>9s}")
    for odom in (False, True):
        rows = [("PnP-carried scale + pose graph (today)", Trajectory(), True)]
        if old is not None:
            rows.append((f"chained depth ratios ({args.old_ref})", old.Trajectory(), False))
        for name, traj, new_api in rows:
            t0 = time.perf_counter()
            ate, lost, n = run_trajectory(traj, recons, pairs, index_of, seq, odom, new_api)
            label = f"{name}, {'true odometry' if odom else 'no odometry'}"
            print(f"{label:60s} {ate:10.2f} {lost:5d} {n:9d}   ({1e3 * (time.perf_counter() - t0) / len(pairs):.1f} ms/pair)")
    print(f"pose-graph update with {args.window} keyframes in the window: {bench_graph(args.window):.1f} ms median per keyframe")
    print(f"load after: {uptime()}")


if __name__ == "__main__":
    main()
