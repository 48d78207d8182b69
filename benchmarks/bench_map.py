"""Scene map speed: fusing one pair (2 x 256 x 256 = 131k Gaussians) into a ~1M-Gaussian map, and the
PointCloud2 records (splat schema v1) of a 1M map. Prints medians and ``uptime`` before and after.

The map is filled with disjoint copies of a real view (general-motion fixture, true depth) placed
10 m apart, so ~1M Gaussians take part in every association; the timed pair overlaps the copy at the
origin (mostly merged), each repeat with a slightly moved camera, after ``--warmup`` untimed ones.

    .venv/bin/python benchmarks/bench_map.py [--device cpu|cuda] [--map 1000000] [--repeats 7] [--threads 0]

``--soak-s S``: instead, a long synthetic run that keeps revisiting a room — 12 viewpoints of the
scene in turn, each visit slightly moved, fresh depth noise, a new keyframe every insert — into a
map capped at ``--soak-cap`` Gaussians; prints the map size and this process's RSS every 15 s and
the RSS change after the cap was reached (median of the last 10 % vs the 10 % after the cap).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from noposplat_ros.fixtures import general_motion as gm
from noposplat_ros.commands.soak import window_growth
from noposplat_ros.mapping.scene_map import MapConfig, SceneMap
from noposplat_ros.outputs import pointcloud
from noposplat_ros.render.from_depth import gaussians_from_depth
from noposplat_ros.types import Gaussians
from machine_load import uptime  # benchmarks/machine_load.py (the script folder is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--map", type=int, default=1_000_000, help="Gaussians in the map before timing")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=3,
                    help="untimed revisit inserts first (the first inserts into a just-filled map page-fault "
                         "their fresh buffers; a running node is past that)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--soak-s", type=float, default=0.0, help="run the revisit soak for this many seconds")
    ap.add_argument("--soak-cap", type=int, default=30_000)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.soak_s > 0:
        soak(args)
        return
    print("before:", uptime(), f"| torch threads {torch.get_num_threads()}, device {args.device}")
    hw = (256, 256)
    K = gm.camera_K(40.0, hw)
    zc = gm.load_scene().median_depth_m
    T0 = gm.pose(None, np.array([-0.1 * zc, 0.0, 0.0]))
    T1 = gm.pose(None, np.array([-0.06 * zc, 0.0, 0.0]))
    v0, v1 = gm.render_view(T0, K, hw), gm.render_view(T1, K, hw)
    T01 = np.linalg.inv(T0) @ T1
    # every pixel a Gaussian (holes at a constant far depth), as a predictor gives 2 x H x W
    d0 = np.where(np.isfinite(v0.depth_m), v0.depth_m, 3 * zc)
    d1 = np.where(np.isfinite(v1.depth_m), v1.depth_m, 3 * zc)
    g0 = gaussians_from_depth(v0.rgb, d0, K)
    g1 = gaussians_from_depth(v1.rgb, d1, K)
    R, t = torch.as_tensor(T01[:3, :3], dtype=torch.float32), torch.as_tensor(T01[:3, 3], dtype=torch.float32)
    g1.means = g1.means @ R.T + t  # view 1 into camera 0's frame
    pair = Gaussians.concat([g0, g1]).to(args.device)
    cfg = MapConfig(max_gaussians=max(args.map + 2 * pair.num, 1), device=args.device)
    smap = SceneMap(cfg)
    copies = 0
    t_fill = time.perf_counter()
    while smap.num_gaussians < args.map:
        T = np.eye(4)
        T[0, 3] = 10.0 * copies
        smap.insert(pair, K, hw, stamp_ns=copies, T_world_from_cam0=T)
        copies += 1
    print(f"map filled: {smap.num_gaussians} Gaussians from {copies} disjoint copies in "
          f"{time.perf_counter() - t_fill:.1f} s, {smap.memory_bytes() / 2**20:.0f} MiB")
    times, cpu, merged, warm = [], [], [], []
    rng = np.random.default_rng(0)
    for i in range(-args.warmup, args.repeats):
        T = np.eye(4)
        T[:3, 3] = rng.normal(0, 0.002 * zc, 3)  # a revisit of the copy at the origin
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        c0 = time.process_time()
        st = smap.insert(pair, K, hw, stamp_ns=10_000 + i, T_world_from_cam0=T)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if i < 0:
            warm.append(st.fusion_s)
            continue
        cpu.append(time.process_time() - c0)  # this process's CPU seconds: less sensitive to other jobs' load
        times.append(st.fusion_s)
        merged.append(st.merged)
    print(f"fusion of a {pair.num}-Gaussian pair into a {smap.num_gaussians}-Gaussian map: median "
          f"{1e3 * statistics.median(times):.1f} ms wall (min {1e3 * min(times):.1f}, n={len(times)}), "
          f"{1e3 * statistics.median(cpu):.1f} ms process CPU ("
          f"merged {int(statistics.median(merged))}, last added {st.added}); "
          f"the {len(warm)} warm-up inserts before: {', '.join(f'{1e3 * w:.1f}' for w in warm)} ms")
    g = smap.fused()
    g1m = g.subset(torch.arange(min(args.map, g.num), device=g.means.device)).to("cpu")
    pc_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        c0 = time.process_time()
        arr = pointcloud.gaussians_to_structured(g1m)
        pc_times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(f"PointCloud2 records of a {arr.shape[0]}-Gaussian map: median {1e3 * statistics.median(pc_times):.1f} ms "
          f"wall (min {1e3 * min(pc_times):.1f}), {1e3 * statistics.median(cpu[-len(pc_times):]):.1f} ms process CPU")
    fb = []
    for _ in range(3):
        smap.version += 1  # force a rebuild of the world-frame Gaussians
        t0 = time.perf_counter()
        smap.fused()
        fb.append(time.perf_counter() - t0)
    print(f"fused() world-frame map build: median {1e3 * statistics.median(fb):.1f} ms")
    print("after:", uptime())


def soak(args: argparse.Namespace) -> None:
    import psutil

    print("before:", uptime())
    hw = (96, 128)
    K = gm.camera_K(40.0, hw)
    zc = gm.load_scene().median_depth_m
    views = []
    for i in range(12):  # a loop through the "room": sideways and pan
        a = -10.0 + 20.0 * (i % 6) / 5
        T = gm.pose(gm.rotation("y", a if i < 6 else -a), np.array([(-0.2 + 0.4 * (i % 6) / 5) * zc, 0.0,
                                                                     0.05 * zc * (i >= 6)]))
        v = gm.render_view(T, K, hw)
        views.append((T, v.rgb, v.depth_m))
    T0_inv = np.linalg.inv(views[0][0])
    smap = SceneMap(MapConfig(max_gaussians=args.soak_cap, device=args.device))
    proc = psutil.Process()
    rng = np.random.default_rng(0)
    t0 = time.monotonic()
    samples: list[tuple[float, float, int]] = []
    cap_at, k, next_print = None, 0, 0.0
    while time.monotonic() - t0 < args.soak_s:
        T, rgb, depth = views[k % len(views)]
        Tw = T0_inv @ T
        Tw[:3, 3] += rng.normal(0, 0.005 * zc, 3)  # a revisit is never exactly the same pose
        g = gaussians_from_depth(rgb, depth * (1 + 0.005 * rng.standard_normal(depth.shape)), K)
        smap.insert(g, K, hw, stamp_ns=k, T_world_from_cam0=Tw)
        if smap.num_gaussians > args.soak_cap:
            raise AssertionError(f"cap broken: {smap.num_gaussians} > {args.soak_cap}")
        k += 1
        t = time.monotonic() - t0
        rss = proc.memory_info().rss / 2**20
        samples.append((t, rss, smap.num_gaussians))
        if cap_at is None and smap.num_gaussians >= 0.95 * args.soak_cap:
            cap_at = t
        if t >= next_print:
            print(f"  {t:6.0f} s: {k} keyframes, map {smap.num_gaussians} Gaussians, RSS {rss:.1f} MiB, "
                  f"last fusion {1e3 * smap.last_stats.fusion_s:.1f} ms", flush=True)
            next_print += 15.0
    if cap_at is None:
        print(f"the cap ({args.soak_cap}) was not reached in {args.soak_s:.0f} s: RSS flatness not measured")
    else:
        after = [(t, r) for t, r, _ in samples if t >= cap_at]
        # medians over the first and the last 10 % of the time after the cap (the soak's rule)
        first, last, _ = window_growth(after, cap_at, max(5.0, 0.1 * (after[-1][0] - cap_at)))
        print(f"cap reached at {cap_at:.0f} s; {k} keyframes in {samples[-1][0]:.0f} s; map max "
              f"{max(m for _, _, m in samples)} <= cap {args.soak_cap}; RSS after the cap: {first:.1f} -> {last:.1f} MiB "
              f"({last - first:+.1f} MiB over {samples[-1][0] - cap_at:.0f} s)")
    print("after:", uptime())


if __name__ == "__main__":
    main()
