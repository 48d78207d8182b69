"""The node's output stage for one pair: PairResult -> output records -> rclpy messages.

131,072 random splats (the size of a 256x256 NoPoSplat pair): ``outputs.build_outputs`` (records,
cloud bytes as a view), then ``conversions.cloud_to_msg`` + ``splat_pair_to_msg`` (one memcpy into
``array.array('B')``) — what the worker does before publishing. Side by side, in the same run and
round-robin: the same messages with ``data`` filled from ``ndarray.tobytes()``. Prints medians after a warm-up and the ratio.

    .venv/bin/python benchmarks/bench_node_outputs.py [--splats 131072] [--repeat 30]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch


def random_result(n: int):
    from noposplat_ros.outputs import pointcloud
    from noposplat_ros.pipeline import PairResult
    from noposplat_ros.types import Gaussians, PoseStatus, ScaleKind

    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=1)
    scales = torch.rand(n, 3, generator=g) * 0.01
    gauss = Gaussians(torch.randn(n, 3, generator=g), scales, q, torch.rand(n, generator=g) * 0.98 + 0.01,
                      torch.randn(n, 3, 1, generator=g), torch.zeros(n, 3, 3))
    T = np.eye(4)
    T[0, 3] = 1.0
    return PairResult(index=0, stamp0_ns=1, stamp1_ns=2, frame_id="cam", status=PoseStatus.OK,
                      scale_kind=ScaleKind.UNIT_BASELINE, scale_factor=1.0, backend="geometry",
                      T_cam0_from_cam1=T, covariance=np.eye(6) * 1e-4, T_world_from_cam0=np.eye(4),
                      T_world_from_cam1=T, gaussians=gauss, cloud=pointcloud.gaussians_to_structured(gauss))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--splats", type=int, default=131_072)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    from noposplat_ros.outputs.records import OutputFrames, build_outputs
    from noposplat_ros.ros import conversions as conv

    result = random_result(args.splats)
    frames = OutputFrames()

    def ours() -> None:
        out = build_outputs(result, frames, first_pair=True)
        cloud = conv.cloud_to_msg(out.cloud)
        conv.splat_pair_to_msg(out.splat_pair, cloud)
        conv.odometry_to_msg(out.odometry)

    memcpy_fill = conv.bytes_to_array

    def naive() -> None:
        # the same messages, but the uint8[] fields are filled with a bytes object
        conv.bytes_to_array = lambda buf: buf.tobytes() if isinstance(buf, np.ndarray) else bytes(buf)
        try:
            ours()
        finally:
            conv.bytes_to_array = memcpy_fill

    runs = {"records -> messages, data via array('B') memcpy": ours,
            "records -> messages, data = ndarray.tobytes()": naive}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(args.repeat + 3):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            if i >= 3:  # warm-up
                times[name].append(time.perf_counter() - t0)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{args.splats} splats, {result.cloud.nbytes / 1e6:.1f} MB, {args.repeat} runs")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"  {k:45s} median {v * 1e3:8.2f} ms")
    a, b = med.values()
    print(f"  ratio tobytes / memcpy: {b / a:.2f}x")


if __name__ == "__main__":
    main()
