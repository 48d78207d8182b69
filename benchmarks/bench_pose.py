"""Pose benchmark: PnP + our fast refinement vs the official 200-step Adam recipe, side by side.

Scene (real, with ground truth): the Middlebury Motorcycle pair, centre-cropped to 500x500 and resized
to 256x256 like a NoPoSplat input. A NoPoSplat-like pair of per-pixel Gaussian grids is built from the
ground-truth disparity: view 0 = the left image's pixels, view 1 = the same points forward-warped into
the right image's grid (holes have opacity 0), colours from each image. PnP runs on the view-1 grid as
the official code does; refinement starts from the true pose perturbed by ``--rot-deg`` degrees and
``--trans-frac`` of the baseline (a network's PnP is never exact) and is scored against the truth.

Usage: python benchmarks/bench_pose.py [--device cpu|cuda] [--trials 3] [--official-trials 2]
Prints medians after one warm-up per method; timings are per pair.
"""
from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
import torch

from noposplat_ros.fixtures.motorcycle import load_motorcycle
from noposplat_ros.pose.metrics import rotation_error_deg, translation_direction_error_deg
from noposplat_ros.pose.pnp import solve_pnp_official
from noposplat_ros.ingest.camera_model import scale_intrinsics
from noposplat_ros.pose.refine import RefineConfig, refine_pose, refine_pose_official
from noposplat_ros.pose.se3 import perturbed_pose_np
from noposplat_ros.types import rgb_to_sh_dc
from noposplat_ros.types import Gaussians

S = 256


def _crop_resize(img: np.ndarray, x0: int, side: int) -> np.ndarray:
    return cv2.resize(img[:, x0 : x0 + side], (S, S), interpolation=cv2.INTER_AREA)


def build_pair(device: str):
    """-> (gaussians (2*S*S), view-1 means (S,S,3), view-1 opacities (S,S), image1 (S,S,3) float,
    K1 (3,3), T_true (4,4))."""
    m = load_motorcycle()
    H, W = m.left.rgb.shape[:2]
    side = min(H, W)
    x0 = (W - side) // 2
    s = S / side
    K0 = m.left.K.copy()
    K0[0, 2] -= x0
    K1 = m.right.K.copy()
    K1[0, 2] -= x0
    K0s, K1s = scale_intrinsics(K0, s, s), scale_intrinsics(K1, s, s)
    L, R = _crop_resize(m.left.rgb, x0, side), _crop_resize(m.right.rgb, x0, side)
    z = m.depth_left_m()
    v, u = np.meshgrid(np.arange(H, dtype=float), np.arange(W, dtype=float), indexing="ij")
    X = np.stack([(u - m.left.K[0, 2]) / m.left.K[0, 0] * z, (v - m.left.K[1, 2]) / m.left.K[1, 1] * z, z], -1)
    # View 0: nearest full-resolution sample at each grid pixel centre.
    g = (np.arange(S) + 0.5) / s - 0.5
    rows = np.clip(np.rint(g), 0, H - 1).astype(int)
    cols = np.clip(np.rint(g + x0), 0, W - 1).astype(int)
    means0 = X[rows[:, None], cols[None, :]]
    op0 = np.where(np.isfinite(means0).all(-1), 0.95, 0.0)
    # View 1: forward-warp every valid left pixel to the right image (column u - d), into the grid.
    ok = np.isfinite(z)
    ur = u - m.disparity_left.astype(float)
    gu = np.rint((ur - x0 + 0.5) * s - 0.5)
    gv = np.rint((v + 0.5) * s - 0.5)
    ok &= (gu >= 0) & (gu < S) & (gv >= 0) & (gv < S)
    idx = np.nonzero(ok)
    order = np.argsort(-z[idx])  # far first: nearer points overwrite
    rr, cc = gv[idx][order].astype(int), gu[idx][order].astype(int)
    means1 = np.zeros((S, S, 3))
    op1 = np.zeros((S, S))
    means1[rr, cc] = X[idx][order]
    op1[rr, cc] = 0.95
    means = np.concatenate([np.nan_to_num(means0, nan=1.0).reshape(-1, 3), means1.reshape(-1, 3)])
    zc = np.maximum(means[:, 2], 1e-3)
    sigma = 0.5 * zc / K0s[0, 0]
    cols_rgb = np.concatenate([L.reshape(-1, 3), R.reshape(-1, 3)]).astype(np.float32) / 255.0
    n = means.shape[0]
    sh = torch.zeros(n, 3, 1)
    sh[..., 0] = rgb_to_sh_dc(torch.as_tensor(cols_rgb))
    sc = torch.as_tensor(np.repeat(sigma[:, None], 3, 1), dtype=torch.float32)
    gs = Gaussians(
        torch.as_tensor(means, dtype=torch.float32), sc, torch.tensor([[0, 0, 0, 1.0]]).repeat(n, 1),
        torch.as_tensor(np.concatenate([op0.reshape(-1), op1.reshape(-1)]), dtype=torch.float32), sh,
        torch.diag_embed(sc**2),
    ).to(device)
    img1 = (torch.as_tensor(R, dtype=torch.float32) / 255.0).to(device)
    return gs, means1, op1, img1, K1s, m.T_cam0_from_cam1


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--official-trials", type=int, default=1)
    ap.add_argument("--official-steps", type=int, default=200)
    ap.add_argument("--rot-deg", type=float, default=2.0)
    ap.add_argument("--trans-frac", type=float, default=0.15)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    gs, means1, op1, img1, K1, T_true = build_pair(a.device)
    print(f"device {a.device}, torch threads {torch.get_num_threads()}, {gs.num} Gaussians, image {S}x{S}")

    # PnP (CPU, OpenCV) on the view-1 grid.
    solve_pnp_official(means1, op1, K1)  # warm-up
    t_pnp, est = [], None
    for _ in range(max(3, a.trials)):
        t0 = time.perf_counter()
        est = solve_pnp_official(means1, op1, K1)
        t_pnp.append(time.perf_counter() - t0)
    print(
        f"PnP: median {1e3 * statistics.median(t_pnp):.1f} ms, rotation err "
        f"{rotation_error_deg(est.T_cam0_from_cam1, T_true):.4f} deg, translation-direction err "
        f"{translation_direction_error_deg(est.T_cam0_from_cam1, T_true):.4f} deg, inliers {est.num_inliers}"
    )

    methods = {
        "ours default: hybrid adam 20 @1/4 + lm 3 @1/2": lambda T0: refine_pose(gs, img1, K1, T0, RefineConfig()),
        "ours hybrid adam 20,20 + lm 3 @1": lambda T0: refine_pose(gs, img1, K1, T0, RefineConfig(levels=(4, 2, 1))),
        "ours lm only (4,2) x4": lambda T0: refine_pose(gs, img1, K1, T0, RefineConfig(method="lm", levels=(4, 2), steps_per_level=4)),
        "ours adam only (4,2) x30,15": lambda T0: refine_pose(gs, img1, K1, T0, RefineConfig(method="adam", levels=(4, 2), level_steps=(30, 15))),
        f"official adam {a.official_steps} (MSE+SSIM, our renderer)": lambda T0: refine_pose_official(gs, img1, K1, T0, steps=a.official_steps),
    }
    rng = np.random.default_rng(0)
    starts = [perturbed_pose_np(T_true, a.rot_deg, a.trans_frac, rng) for _ in range(max(a.trials, a.official_trials))]
    r0 = statistics.median(rotation_error_deg(T, T_true) for T in starts)
    t0e = statistics.median(translation_direction_error_deg(T, T_true) for T in starts)
    print(f"refinement starts: rotation err {r0:.2f} deg, translation-direction err {t0e:.2f} deg (median)")
    print(f"{'method':52s} {'time/pair':>10s} {'rot err':>9s} {'t-dir err':>9s} {'steps':>6s}")
    results = {}
    for name, fn in methods.items():
        n = a.official_trials if name.startswith("official") else a.trials
        if n <= 0:
            continue
        if not name.startswith("official"):
            fn(starts[0])  # warm-up
        times, rerr, terr, steps = [], [], [], []
        for T0 in starts[:n]:
            _sync(a.device)
            t = time.perf_counter()
            T, info = fn(T0)
            _sync(a.device)
            times.append(time.perf_counter() - t)
            rerr.append(rotation_error_deg(T, T_true))
            terr.append(translation_direction_error_deg(T, T_true))
            steps.append(info.steps)
        results[name] = statistics.median(times)
        print(
            f"{name:52s} {statistics.median(times):9.2f}s {statistics.median(rerr):8.4f}° "
            f"{statistics.median(terr):8.3f}° {statistics.median(steps):6.0f}   (n={n})"
        )
    off = [k for k in results if k.startswith("official")]
    if off:
        for k, v in results.items():
            if k not in off:
                print(f"speed-up of {k!r} over the official recipe: x{results[off[0]] / v:.1f}")


if __name__ == "__main__":
    main()
