"""Throughput of many bags: process-bag's core in a loop (one bag after another, in this process)
vs ``noposplat-ros process-bags`` on a local Ray on the same machine, side by side.

N Motorcycle moving-sequence bags (real images) of M frames each are written to a temp dir. Serial:
``process_bag.process_bag`` per bag (each loads its predictor, as process-bag does). Fleet: the
command as a user runs it (a subprocess: Ray start-up included in "end to end"; "scheduled" is the
command's own wall time from its summary, workers' start-up included). Prints frames/s and
``uptime`` before and after (a figure taken under load is re-taken, not published).

    .venv/bin/python benchmarks/bench_fleet.py [--bags 4] [--frames 30] [--num-cpus 2] [--cpus-per-bag 1]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from machine_load import uptime  # benchmarks/machine_load.py (the script folder is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bags", type=int, default=4)
    ap.add_argument("--frames", type=int, default=30, help="frames per bag")
    ap.add_argument("--scale", type=float, default=0.5, help="image scale of the 640x480 crops (0.5: 320x240)")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    ap.add_argument("--cpus-per-bag", type=float, default=1.0)
    ap.add_argument("--predictor", default="geometry")
    args = ap.parse_args()

    from noposplat_ros.cli import build_parser
    from noposplat_ros.commands.process_bag import process_bag
    from noposplat_ros.fixtures.moving_sequence import MotorcycleSequence
    from noposplat_ros.io import bag_io

    print(f"load before: {uptime()}")
    with tempfile.TemporaryDirectory(prefix="bench_fleet_") as tmp:
        root = pathlib.Path(tmp)
        bags = []
        for i in range(args.bags):
            seq = MotorcycleSequence(scale=args.scale, frames_per_view=4, start_ns=1_700_000_000_000_000_000 + i * 10**9)
            bags.append(root / f"robot{i}")
            bag_io.frames_to_bag(bags[-1], seq.frames(args.frames))
        total_frames = args.bags * args.frames

        parser = build_parser()
        t0 = time.perf_counter()
        for bag in bags:
            ns = parser.parse_args(["process-bag", str(bag), str(root / "serial" / bag.name), "--predictor", args.predictor,
                                    "--progress-interval-s", "1e9"])
            process_bag(ns)
        serial_s = time.perf_counter() - t0

        cmd = [str(pathlib.Path(sys.executable).parent / "noposplat-ros"), "process-bags", *map(str, bags),
               "--out", str(root / "fleet"), "--num-cpus", str(args.num_cpus), "--cpus-per-bag", str(args.cpus_per_bag),
               "--predictor", args.predictor]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        fleet_e2e_s = time.perf_counter() - t0
        if res.returncode != 0:
            sys.exit(f"process-bags failed ({res.returncode}):\n{res.stderr[-3000:]}")
        totals = json.loads((root / "fleet" / "summary.json").read_text())["totals"]
        fleet_sched_s = float(totals["seconds"])

    print(f"{args.bags} bags x {args.frames} frames ({total_frames} frames), predictor {args.predictor}, "
          f"local Ray {args.num_cpus} CPUs, {args.cpus_per_bag:g} CPU per bag, {os.cpu_count()} cores")
    print(f"{'run':<34}{'seconds':>9}{'frames/s':>10}")
    print(f"{'serial (process-bag core loop)':<34}{serial_s:>9.1f}{total_frames / serial_s:>10.2f}")
    print(f"{'process-bags, scheduled':<34}{fleet_sched_s:>9.1f}{total_frames / fleet_sched_s:>10.2f}")
    print(f"{'process-bags, end to end':<34}{fleet_e2e_s:>9.1f}{total_frames / fleet_e2e_s:>10.2f}")
    print(f"load after: {uptime()}")


if __name__ == "__main__":
    main()
