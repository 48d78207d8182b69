"""Compare gsplat (CUDA) with our pure-PyTorch rasterizer on the same scenes (needs a CUDA GPU).

Scenes: random anisotropic Gaussians with SH degree 3 at several sizes, and the Motorcycle scene from
ground-truth depth (real colours). Both renderers get identical inputs (``render(..., backend=...)``);
the CPU rasterizer runs on CUDA tensors too (it is plain PyTorch), and again on CPU for the timing
ratio. Prints max / mean absolute differences of rgb, alpha and depth (where alpha > 0.5), the pose
gradient of both, and median timings after warm-up.

Usage: python benchmarks/compare_gsplat_cpu.py [--sizes 64 128 256]
Expected differences (see docs/readme_pose_render.md): gsplat cuts each splat at 3 sigma of the larger
2D axis (ours at the exact 1/255 alpha boundary), so differences of order 1/255 at splat fringes are
expected; anything systematic (shifts, colour offsets) is a bug.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from noposplat_ros.pose.se3 import exp_se3_torch
from noposplat_ros.render import render
from noposplat_ros.render.sh import SH_C0
from noposplat_ros.types import Gaussians


def random_scene(n: int, seed: int, device: str) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    z = torch.empty(n).uniform_(2.0, 6.0, generator=g)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * 0.9 * z[:, None]
    means = torch.cat([xy, z[:, None]], 1)
    scales = torch.empty(n, 3).uniform_(0.005, 0.05, generator=g)
    q = torch.randn(n, 4, generator=g)
    q = q / q.norm(dim=-1, keepdim=True)
    x, y, zq, w = q.unbind(-1)
    R = torch.stack([1 - 2 * (y * y + zq * zq), 2 * (x * y - zq * w), 2 * (x * zq + y * w),
                     2 * (x * y + zq * w), 1 - 2 * (x * x + zq * zq), 2 * (y * zq - x * w),
                     2 * (x * zq - y * w), 2 * (y * zq + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)
    cov = R @ torch.diag_embed(scales**2) @ R.transpose(1, 2)
    sh = torch.randn(n, 3, 16, generator=g) * 0.1
    sh[..., 0] = (torch.rand(n, 3, generator=g) - 0.5) / SH_C0
    op = torch.empty(n).uniform_(0.1, 0.99, generator=g)
    return Gaussians(means, scales, q, op, sh, cov).to(device)


def motorcycle_scene(device: str):
    import cv2

    from noposplat_ros.fixtures.motorcycle import load_motorcycle
    from noposplat_ros.ingest.camera_model import scale_intrinsics
    from noposplat_ros.render.from_depth import gaussians_from_depth

    m = load_motorcycle()
    H, W = m.left.rgb.shape[:2]
    h, w = H // 2, W // 2
    L = cv2.resize(m.left.rgb, (w, h), interpolation=cv2.INTER_AREA)
    z = m.depth_left_m()[1::2, 1::2][:h, :w]
    K = scale_intrinsics(m.left.K, w / W, h / H)
    return gaussians_from_depth(L, z, K, footprint_px=0.5).to(device), scale_intrinsics(m.right.K, w / W, h / H), np.linalg.inv(m.T_cam0_from_cam1), h, w


def timed(fn, reps: int = 5, cuda: bool = True) -> float:
    fn()
    ts = []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def compare(name: str, gs: Gaussians, K: np.ndarray, T: np.ndarray, h: int, w: int) -> None:
    Tt = torch.as_tensor(T, dtype=torch.float32, device="cuda")
    a = render(gs, K, Tt, h, w, backend="gsplat")
    b = render(gs, K, Tt, h, w, backend="cpu")  # our rasterizer, on the GPU tensors
    d_rgb = (a.rgb - b.rgb).abs()
    d_a = (a.alpha - b.alpha).abs()
    m = (a.alpha > 0.5) & (b.alpha > 0.5)
    d_d = (a.depth - b.depth).abs()[m]
    print(f"{name}: {gs.num} Gaussians {w}x{h}")
    print(f"  rgb   max {d_rgb.max():.2e} mean {d_rgb.mean():.2e}   (coverage {float(a.alpha.mean()):.2f})")
    print(f"  alpha max {d_a.max():.2e} mean {d_a.mean():.2e}")
    if m.any():
        print(f"  depth max {d_d.max():.2e} mean {d_d.mean():.2e} (alpha > 0.5; scene depth ~{float(a.depth[m].median()):.2f})")

    def grad(backend: str) -> torch.Tensor:
        xi = torch.zeros(6, dtype=torch.float32, device="cuda", requires_grad=True)
        o = render(gs, K, exp_se3_torch(xi[:3], xi[3:]) @ Tt, h, w, backend=backend)
        o.rgb.square().mean().backward()
        return xi.grad

    ga, gb = grad("gsplat"), grad("cpu")
    print(f"  pose gradient gsplat {ga.cpu().numpy()}\n                ours   {gb.cpu().numpy()}"
          f"\n  relative difference {float((ga - gb).norm() / ga.norm()):.2e}")
    t_g = timed(lambda: render(gs, K, Tt, h, w, backend="gsplat"))
    t_o = timed(lambda: render(gs, K, Tt, h, w, backend="cpu"))
    gs_cpu = gs.to("cpu")
    t_c = timed(lambda: render(gs_cpu, K, Tt.cpu(), h, w, backend="cpu"), reps=3, cuda=False)
    print(f"  forward median: gsplat {1e3 * t_g:.2f} ms, ours on CUDA {1e3 * t_o:.1f} ms (x{t_o / t_g:.0f}), "
          f"ours on CPU {1e3 * t_c:.0f} ms (x{t_c / t_g:.0f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("compare_gsplat_cpu.py needs a CUDA GPU (gsplat has no CPU rasterizer)")
    for s in a.sizes:
        n = 2 * s * s
        K = np.array([[1.1 * s, 0, s / 2 - 0.3], [0, 1.1 * s, s / 2 + 0.2], [0, 0, 1.0]])
        T = np.eye(4)
        T[:3, 3] = [0.05, -0.02, 0.1]
        compare(f"random scene {s}", random_scene(n, s, "cuda"), K, T, s, s)
    gs, K, T, h, w = motorcycle_scene("cuda")
    compare("Motorcycle (GT depth, half resolution), right camera", gs, K, T, h, w)


if __name__ == "__main__":
    main()
