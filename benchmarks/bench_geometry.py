"""Time the geometry backend per pair on CPU: medians per stage after warm-up.

Inputs (real images, no downloads):
- the Motorcycle pair at its native 741x500;
- the same pair resized and centre-cropped to 640x480 (K adjusted), the usual robot camera size.
Configurations are timed side by side in one run; ratios are relative to the default config.

    .venv/bin/python benchmarks/bench_geometry.py [--repeat 10] [--warmup 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics

import cv2
import numpy as np
import torch

from noposplat_ros.fixtures.motorcycle import load_motorcycle
from noposplat_ros.pose.metrics import rotation_error_deg, translation_direction_error_deg
from noposplat_ros.predictors.geometry import GeometryConfig, GeometryPredictor
from noposplat_ros.types import Frame, KeyframePair

STAGES = ("resize", "features", "pose", "flow", "triangulate", "gaussians", "total")


def to_640x480(f: Frame) -> Frame:
    """Resize so the height is 480, centre-crop the width to 640; K follows (pixel-centre convention)."""
    s = 480 / f.height
    w = int(round(f.width * s))
    img = cv2.resize(f.rgb, (w, 480), interpolation=cv2.INTER_AREA)
    x0 = (w - 640) // 2
    K = f.K.copy()
    K[:2] *= s
    K[0, 2] += 0.5 * s - 0.5 - x0
    K[1, 2] += 0.5 * s - 0.5
    return Frame(np.ascontiguousarray(img[:, x0 : x0 + 640]), K, f.stamp_ns, f.frame_id)


def bench(pred: GeometryPredictor, pair: KeyframePair, repeat: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        pred.predict(pair)
    runs = [pred.predict(pair).timings_s for _ in range(repeat)]
    return {k: statistics.median(r[k] for r in runs) for k in STAGES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()

    m = load_motorcycle()
    inputs = {
        "motorcycle 741x500": KeyframePair(m.left, m.right),
        "motorcycle 640x480": KeyframePair(to_640x480(m.left), to_640x480(m.right)),
    }
    configs = {
        "default (grid 256, DIS medium)": GeometryConfig(),
        "grid 128": dataclasses.replace(GeometryConfig(), grid_long_side=128),
        "grid 512": dataclasses.replace(GeometryConfig(), grid_long_side=512),
        "SIFT on full size": dataclasses.replace(GeometryConfig(), feature_long_side=0),
        "SIFT 2000 features": dataclasses.replace(GeometryConfig(), max_features=2000),
        "DIS fast": dataclasses.replace(GeometryConfig(), flow_preset="fast"),
        "SIFT contrast 0.04 (OpenCV's)": dataclasses.replace(GeometryConfig(), contrast_threshold=0.04),
        "SIFT contrast 0.01": dataclasses.replace(GeometryConfig(), contrast_threshold=0.01),
    }
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"torch threads {torch.get_num_threads()}, OpenCV threads {cv2.getNumThreads()}, load {os.getloadavg()}")
    print(f"median over {args.repeat} runs after {args.warmup} warm-up runs; seconds")
    header = (f"{'input':20s} {'config':32s} {'splats':>7s} " + " ".join(f"{s:>11s}" for s in STAGES)
              + "  ratio  rot_err_deg  tdir_err_deg")
    print(header)
    for in_name, pair in inputs.items():
        base = None
        for cfg_name, cfg in configs.items():
            pred = GeometryPredictor(cfg)
            med = bench(pred, pair, args.repeat, args.warmup)
            rec = pred.predict(pair)
            n = rec.gaussians.num
            T = rec.pose.T_cam0_from_cam1
            rot = rotation_error_deg(T, m.T_cam0_from_cam1)  # accuracy next to speed (true pose)
            tdir = translation_direction_error_deg(T, m.T_cam0_from_cam1)
            base = base or med["total"]
            print(f"{in_name:20s} {cfg_name:32s} {n:7d} " + " ".join(f"{med[s]:11.4f}" for s in STAGES)
                  + f"  {med['total'] / base:5.2f}x  {rot:11.4f}  {tdir:12.4f}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
