"""Two-view pose accuracy and speed on the general-motion fixture, side by side in one run.

Rows (all on the SAME SIFT matches of each pair, so only the pose estimator differs):
- ours:           ``pose.two_view.estimate_two_view`` with the geometry backend's defaults
                  (PoseLib LO-RANSAC + Cauchy refinement, rotation-only model selection);
- poselib-default: ``poselib.estimate_relative_pose`` with PoseLib's default options;
- opencv-E:       ``cv2.findEssentialMat`` (RANSAC, 1 px, 0.9999) + ``cv2.recoverPose``.

Per row: AUC@5/10/20 of max(rotation error, translation-direction error) (the literature's AUC: the
recall curve integrated up to the threshold, normalised), median rotation / translation-direction
errors, failures (no pose, or LOST/rotation-only on a pair that truly translates), ms per pair (pose
stage only; the shared SIFT time is printed once). For ours also the mean NEES of the 5 observable
DoF against the true pose (5 = consistent covariance).

    .venv/bin/python benchmarks/bench_two_view.py [--hw 360 480] [--pairs N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import cv2
import numpy as np
import poselib

from noposplat_ros.fixtures.general_motion import pure_rotation_pair, standard_pairs
from noposplat_ros.pose.metrics import pose_auc, rotation_error_deg, translation_direction_error_deg
from noposplat_ros.pose.two_view import estimate_two_view, gauge_basis, normalise_points, pinhole_camera
from noposplat_ros.predictors.geometry import GeometryConfig, sift_matches
from noposplat_ros.transforms import make_T


def nees5(T_est: np.ndarray, cov: np.ndarray, T_true: np.ndarray) -> float:
    """Normalised error squared of the 5 observable DoF (unit t; rotation error about camera 0's axes)."""
    t_true = T_true[:3, 3] / np.linalg.norm(T_true[:3, 3])
    e = np.zeros(6)
    e[:3] = T_est[:3, 3] - t_true
    e[3:] = cv2.Rodrigues(T_est[:3, :3] @ T_true[:3, :3].T)[0].ravel()
    B = gauge_basis(t_true)
    e5 = B.T @ e
    return float(e5 @ np.linalg.solve(B.T @ cov @ B, e5))


def opencv_essential(p0, p1, K0, K1):
    x0 = normalise_points(p0, K0)
    x1 = normalise_points(p1, K1)
    f = float(np.mean([K0[0, 0], K1[0, 0]]))
    E, mask = cv2.findEssentialMat(x0, x1, np.eye(3), method=cv2.RANSAC, prob=0.9999, threshold=1.0 / f)
    if E is None or E.shape[0] < 3:
        return None
    _, R_10, t_10, _ = cv2.recoverPose(E[:3], x0, x1, np.eye(3), mask=mask)
    return make_T(R_10.T, (-R_10.T @ t_10).ravel())


def poselib_default(p0, p1, K0, K1, hw):
    pose, info = poselib.estimate_relative_pose(p0, p1, pinhole_camera(K0, hw), pinhole_camera(K1, hw), {}, {})
    if info["num_inliers"] < 5:
        return None
    R_10, t_10 = np.asarray(pose.R), np.asarray(pose.t)
    return make_T(R_10.T, -R_10.T @ t_10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hw", type=int, nargs=2, default=(360, 480))
    ap.add_argument("--pairs", type=int, default=0, help="first N pairs only (0: all)")
    args = ap.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"cores: {os.cpu_count()}, OpenCV threads {cv2.getNumThreads()}")
    t0 = time.perf_counter()
    pairs = list(standard_pairs(tuple(args.hw)))
    if args.pairs:
        pairs = pairs[: args.pairs]
    print(f"{len(pairs)} fixture pairs rendered at {tuple(args.hw)} in {time.perf_counter() - t0:.1f} s")
    cfg = GeometryConfig()
    sift = cv2.SIFT_create(nfeatures=cfg.max_features, contrastThreshold=cfg.contrast_threshold)  # the backend's SIFT

    rows: dict[str, dict[str, list]] = {k: {"rot": [], "tdir": [], "err": [], "ms": [], "fail": []}
                                        for k in ("ours", "poselib-default", "opencv-E")}
    sift_ms, nees = [], []
    for p in pairs:
        f0, f1 = p.frame0, p.frame1
        hw = (f0.height, f0.width)
        t = time.perf_counter()
        p0, p1 = sift_matches(sift, f0, f1, cfg)
        sift_ms.append(1e3 * (time.perf_counter() - t))
        for name in rows:
            t = time.perf_counter()
            if name == "ours":
                r = estimate_two_view(p0, p1, f0.K, f1.K, hw, hw, cfg.two_view)
                T = r.estimate.T_cam0_from_cam1 if r.kind == "general" else None
                if T is not None:
                    nees.append(nees5(T, r.estimate.covariance, p.T_cam0_from_cam1))
            elif name == "poselib-default":
                T = poselib_default(p0, p1, f0.K, f1.K, hw) if len(p0) >= 5 else None
            else:
                T = opencv_essential(p0, p1, f0.K, f1.K) if len(p0) >= 5 else None
            rows[name]["ms"].append(1e3 * (time.perf_counter() - t))
            if T is None:
                rows[name]["fail"].append(p.name)
                rot = tdir = 180.0
            else:
                rot = rotation_error_deg(T, p.T_cam0_from_cam1)
                tdir = translation_direction_error_deg(T, p.T_cam0_from_cam1)
            rows[name]["rot"].append(rot)
            rows[name]["tdir"].append(tdir)
            rows[name]["err"].append(max(rot, tdir))

    print(f"\nSIFT matching (shared by all rows): median {statistics.median(sift_ms):.0f} ms per pair")
    print(f"\n{'method':<16} {'AUC@5':>6} {'AUC@10':>6} {'AUC@20':>6} {'med rot':>8} {'med tdir':>8} "
          f"{'p95 rot':>8} {'fails':>5} {'ms/pair':>8}")
    for name, r in rows.items():
        auc = pose_auc(np.array(r["err"]))
        print(f"{name:<16} {100 * auc[5.0]:6.1f} {100 * auc[10.0]:6.1f} {100 * auc[20.0]:6.1f} "
              f"{np.median(r['rot']):8.3f} {np.median(r['tdir']):8.3f} {np.percentile(r['rot'], 95):8.3f} "
              f"{len(r['fail']):5d} {statistics.median(r['ms']):8.1f}")
    for name, r in rows.items():
        if r["fail"]:
            print(f"  {name} failed on: {', '.join(r['fail'])}")
    print(f"\nours: mean NEES (5 observable DoF, real SIFT matches) {np.mean(nees):.2f} (5 = consistent), "
          f"median {np.median(nees):.2f}")
    print("\nper pair (ours): name, rot err deg, t-dir err deg")
    for p, rot, td in zip(pairs, rows["ours"]["rot"], rows["ours"]["tdir"]):
        print(f"  {p.name:<32} {rot:7.3f} {td:7.3f}")
    rp = pure_rotation_pair(tuple(args.hw))
    p0, p1 = sift_matches(sift, rp.frame0, rp.frame1, cfg)
    r = estimate_two_view(p0, p1, rp.frame0.K, rp.frame1.K, tuple(args.hw), tuple(args.hw), cfg.two_view)
    print(f"\npure rotation pair: ours kind={r.kind} status={r.estimate.status.name} "
          f"rot err {rotation_error_deg(r.estimate.T_cam0_from_cam1, rp.T_cam0_from_cam1):.3f} deg")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
