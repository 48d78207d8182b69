"""Node memory over many pairs: RSS with and without heap trimming (``heap_trim_period_s``), side by side.

Each variant runs the node's loop in its own process, concurrently (same machine state): an offer
thread feeds the room-loop stream (``fixtures.room_loop``, 320x240, lap after lap) to the pipeline's
keyframe selector, a worker thread reconstructs each pair (geometry backend), fuses it into the scene
map (cap ``--cap``), builds the ~/map PointCloud2 records as the node does, and then calls
``heap.HeapTrimmer.maybe_trim(period)`` as the node's worker does. Printed per variant: RSS after
25 pairs and at the end, the RSS range over the second half, glibc's heap in use and mapped
(mallinfo2) at the end, and the median worker time per pair (trim included).

    .venv/bin/python benchmarks/bench_node_memory.py [--pairs 200] [--trim-periods 0,5,1] [--cap 30000]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import queue
import statistics
import subprocess
import sys
import threading
import time

from machine_load import uptime  # benchmarks/machine_load.py (the script folder is on sys.path)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap_mib() -> tuple[float, float]:
    """(heap in use, heap mapped) MiB from glibc's mallinfo2 (NaN elsewhere)."""
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return float("nan"), float("nan")
    fn.restype = _MallInfo2
    m = fn()
    return m.uordblks / 2**20, m.arena / 2**20


def run_variant(pairs: int, period_s: float, cap: int) -> None:
    """One variant in this process; prints one JSON line per 25 pairs and a final one."""
    import numpy as np
    import psutil

    from noposplat_ros.fixtures.room_loop import room_loop
    from noposplat_ros.heap import HeapTrimmer
    from noposplat_ros.mapping.scene_map import MapConfig, rigid_transform
    from noposplat_ros.outputs import pointcloud
    from noposplat_ros.pipeline import Pipeline, PipelineConfig
    from noposplat_ros.types import Frame

    lap = room_loop((240, 320), n_frames=300)
    pipe = Pipeline(PipelineConfig(map=MapConfig(max_gaussians=cap)))
    proc, trimmer = psutil.Process(), HeapTrimmer()
    todo: queue.Queue = queue.Queue(maxsize=1)
    worker_s: list[float] = []
    samples: list[tuple[int, float]] = []

    def worker() -> None:
        while (pair := todo.get()) is not None:
            t0 = time.perf_counter()
            pipe.process(pair)
            g = rigid_transform(pipe.scene_map.fused(), np.eye(4)).to("cpu")
            pointcloud.gaussians_to_structured(g, include_sh=False).tobytes()  # the message's copy
            trimmer.maybe_trim(period_s)
            worker_s.append(time.perf_counter() - t0)
            rss = proc.memory_info().rss / 2**20
            samples.append((len(worker_s), rss))
            if len(worker_s) % 25 == 0:
                print(json.dumps({"pairs": len(worker_s), "rss_mib": round(rss, 1)}), flush=True)

    th = threading.Thread(target=worker)
    th.start()
    i = 0
    while len(worker_s) < pairs:
        f = Frame(rgb=np.ascontiguousarray(lap.rgb[i % lap.num_frames]), K=lap.K.copy(),
                  stamp_ns=int(1e9 * i / 15), frame_id="cam")
        pair = pipe.offer(f)
        if pair is not None:
            todo.put(pair)  # blocks while the worker is busy: every pair is processed
        i += 1
    todo.put(None)
    th.join()
    second = [r for n, r in samples if n > len(samples) // 2]
    inuse, mapped = _heap_mib()
    print(json.dumps({"final": True, "pairs": len(worker_s), "rss_at_25": next(r for n, r in samples if n >= 25),
                      "rss_end": samples[-1][1], "second_half_min": min(second), "second_half_max": max(second),
                      "heap_inuse": round(inuse, 1), "heap_mapped": round(mapped, 1),
                      "worker_ms": 1e3 * statistics.median(worker_s)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--trim-periods", default="0,5,1", help="heap_trim_period_s of each variant (0 = never)")
    ap.add_argument("--cap", type=int, default=30_000, help="scene map cap (reached within the first pairs)")
    ap.add_argument("--variant", type=float, default=None, help=argparse.SUPPRESS)  # internal: run one variant
    args = ap.parse_args()
    if args.variant is not None:
        run_variant(args.pairs, args.variant, args.cap)
        return
    if args.pairs < 50:
        ap.error("--pairs must be >= 50")
    periods = [float(p) for p in args.trim_periods.split(",")]
    print("before:", uptime(), f"| {len(periods)} variants side by side, {args.pairs} pairs each")
    procs = {p: subprocess.Popen([sys.executable, __file__, "--variant", str(p), "--pairs", str(args.pairs),
                                  "--cap", str(args.cap)], stdout=subprocess.PIPE, text=True) for p in periods}
    finals = {}
    for p, pr in procs.items():
        out, _ = pr.communicate()
        lines = [json.loads(s) for s in out.splitlines() if s.startswith("{")]
        finals[p] = next((d for d in lines if d.get("final")), None)
        timeline = ", ".join(f"{d['pairs']}: {d['rss_mib']:.0f}" for d in lines if not d.get("final"))
        print(f"heap_trim_period_s {p:g}: RSS (MiB) by pairs done: {timeline}")
    print("heap_trim_period_s | RSS after 25 pairs | RSS at the end | RSS over the 2nd half | heap in use / mapped | worker per pair")
    for p, d in finals.items():
        if d is None:
            print(f"{p:g} | failed (exit code {procs[p].returncode})")
            continue
        print(f"{p:g} | {d['rss_at_25']:.0f} MiB | {d['rss_end']:.0f} MiB | {d['second_half_min']:.0f}-"
              f"{d['second_half_max']:.0f} MiB | {d['heap_inuse']:.0f} / {d['heap_mapped']:.0f} MiB | "
              f"{d['worker_ms']:.0f} ms")
    print("after:", uptime())


if __name__ == "__main__":
    main()
