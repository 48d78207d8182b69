"""`noposplat-ros soak`: the node under a long faulty camera stream, with a pass/fail report.

Three processes: the node (``noposplat_node``, default backend, default parameters except a
small scene-map cap ``--map-max-gaussians``), a publisher process streaming a real moving image
sequence with faults mixed in at random (wrong encoding, truncated data, NaN intrinsics, size
changes, stamps going backwards, bursts), and this process, which monitors the node's
``/diagnostics`` and outputs and its resident memory (psutil), then prints the report. Node and
publisher run at ``--nice`` (10) so a long soak does not starve a shared machine.

Streams (``--stream``): ``room`` (default; 320x240 at 15 Hz) renders one lap of a closed loop in
front of the general-motion scene (sideways, forward/back, a small pan; ``fixtures.room_loop``)
once and replays it lap after lap: real parallax, so the node keeps making keyframe pairs and its
scene map fills up to the cap while the camera revisits the same room. ``slide`` (640x480 at 30 Hz)
is the Motorcycle image sliding across the frame.

Pass criteria (exit 0), otherwise exit 1 naming each failure:
- the node process is alive at the end and its diagnostics say ``state active``;
- every injected fault shows up in the node's fault counter of that kind (count >= injected);
- no ``worker_error``;
- stamp age of the outputs (odometry receive time - its header stamp, i.e. keyframe 1's stamp)
  has p99 <= ``--max-stamp-age-s``, and the median of the last third of the run is not above
  that bound either (no growing backlog);
- resident memory of the node grows by at most ``--max-rss-growth-mb``: median RSS over the last
  10 % of the run (at least 5 s) minus the median over the same span after the first pair
  (predictor warm). RSS swings by tens of MiB with each pair, so single samples are not compared;
- scene map (from the node's ``map.gaussians`` diagnostics, sampled every 0.5 s): never above the
  cap; not empty (room stream); the cap is *reached* at the first sample >= 95 % of it (eviction
  keeps the map 1 % under the cap after each pair); runs of ``CAP_REQUIRED_AFTER_S`` or more with the
  room stream must reach it;
- RSS flat after the cap: median RSS over the last 10 % of the time after the cap was reached (at
  least 5 s) minus the median over the first 10 % after it is at most ``--max-rss-growth-after-cap-mb``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

HELP = "Soak test: stream a faulty 30 Hz camera into noposplat_node for a while and report health."

NODE_NAME = "noposplat_node"
CAP_FRACTION = 0.95  # the map counts as at its cap from this fill on (eviction keeps it 1 % under)
CAP_REQUIRED_AFTER_S = 300.0  # room-stream runs at least this long must reach the cap
# RSS swings by tens of MiB per pair and the allocator warms up for minutes: flatness after the cap is
# judged only over at least this long after it (a 30-s CI run reports the growth, does not judge it)
RSS_FLAT_MIN_AFTER_CAP_S = 60.0
STREAM_DEFAULTS = {"room": (320, 240, 15.0), "slide": (640, 480, 30.0)}  # width, height, rate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration-s", type=float, default=600.0, help="streaming time (default 600 s)")
    p.add_argument("--stream", choices=tuple(STREAM_DEFAULTS), default="room",
                   help="room: a closed loop revisiting one room (keyframe pairs, map fills; default); "
                        "slide: the Motorcycle image sliding across the frame")
    p.add_argument("--room-lap-s", type=float, default=20.0, help="room stream: seconds per lap (frames rendered = lap x rate)")
    p.add_argument("--rate-hz", type=float, default=None, help="default 15 (room) / 30 (slide)")
    p.add_argument("--width", type=int, default=None, help="default 320 (room) / 640 (slide)")
    p.add_argument("--height", type=int, default=None, help="default 240 (room) / 480 (slide)")
    p.add_argument("--map-max-gaussians", type=int, default=100_000,
                   help="node parameter map_max_gaussians (small, so the cap is reached within minutes; 0 = node default)")
    p.add_argument("--max-rss-growth-after-cap-mb", type=float, default=50.0,
                   help="allowed node RSS growth (MiB) after the map reached its cap, median of the last vs the first 10%% of that time")
    p.add_argument("--nice", type=int, default=10, help="niceness added to the node and publisher processes (0 = none)")
    p.add_argument("--fault-prob", type=float, default=0.02, help="chance per frame slot of a fault (>= 8 frames apart)")
    p.add_argument("--seed", type=int, default=None, help="fault schedule seed (default random, printed)")
    p.add_argument("--max-rss-growth-mb", type=float, default=100.0, help="allowed node RSS growth (MiB), median over the last 10%% of the run vs after the first pair")
    p.add_argument("--max-stamp-age-s", type=float, default=10.0, help="bound on output stamp age p99 (s)")
    p.add_argument("--max-output-gap-s", type=float, default=60.0, help="bound on the time from the last output to the end (s)")
    p.add_argument("--namespace", default="/soak", help="ROS namespace of the node and the camera topics")
    p.add_argument("--node-arg", action="append", default=[], help="extra `-p name:=value` for the node (repeatable)")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")


def _percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 99)} | {"max": float(a.max()), "n": int(a.size)}


def _median(values: list[float]) -> float:
    v = sorted(values)
    return float(v[len(v) // 2]) if v else float("nan")


def window_growth(samples: list[tuple[float, float]], t_start: float, window_s: float,
                  ) -> tuple[float, float, float]:
    """(first, last, last - first) for (seconds, value) samples such as RSS in MiB: ``first`` is the
    median over [t_start, t_start + window_s], ``last`` the median over the last ``window_s`` of the
    samples (NaN where a window is empty). RSS swings by tens of MiB with each pair (allocator), so
    medians over windows are compared, never two single samples."""
    t_last = samples[-1][0] if samples else t_start
    first = _median([v for t, v in samples if t_start <= t <= t_start + window_s])
    last = _median([v for t, v in samples if t >= max(t_start, t_last - window_s)])
    return first, last, last - first


def _timeline(samples: list[tuple[float, float]], duration_s: float, points: int = 10) -> list[tuple[int, float]]:
    """About ``points`` (seconds since streaming began, RSS MiB) samples spread over the run."""
    out: list[tuple[int, float]] = []
    step = max(duration_s / points, 0.5)
    next_t = 0.0
    for t, rss in samples:
        if t >= next_t:
            out.append((int(round(t)), round(rss, 1)))
            next_t = t + step
    if samples and (not out or out[-1][0] != int(round(samples[-1][0]))):
        out.append((int(round(samples[-1][0])), round(samples[-1][1], 1)))
    return out


def _niced(cmd: list[str], nice: int) -> list[str]:
    """``cmd`` run with ``nice`` added to its niceness (``nice`` execs it: same pid)."""
    exe = shutil.which("nice") if nice else None
    return [exe, "-n", str(nice), *cmd] if exe else cmd


def _map_timeline(samples: list[tuple[float, int, float, int]], duration_s: float, points: int = 12,
                  ) -> list[tuple[int, int, float, int]]:
    """About ``points`` (seconds since streaming began, map Gaussians, map MiB, pairs published)
    samples spread over the run, the first non-empty one and the last one included."""
    out: list[tuple[int, int, float, int]] = []
    step = max(duration_s / points, 0.5)
    next_t = 0.0
    for t, g, mib, n in samples:
        if t >= next_t or (g and not any(o[1] for o in out)):
            out.append((int(round(t)), g, round(mib, 1), n))
            next_t = t + step
    if samples and out[-1][0] != int(round(samples[-1][0])):
        t, g, mib, n = samples[-1]
        out.append((int(round(t)), g, round(mib, 1), n))
    return out


def _node_command(namespace: str, extra: list[str]) -> list[str]:
    exe = shutil.which(NODE_NAME, path=str(pathlib.Path(sys.executable).parent)) or shutil.which(NODE_NAME)
    cmd = [exe] if exe else [sys.executable, "-c", "import sys; from noposplat_ros.ros.node import main; sys.exit(main())"]
    cmd += ["--ros-args", "-r", f"__ns:={namespace}", "-p", "diagnostics_period_s:=1.0"]
    for p in extra:
        cmd += ["-p", p]
    return cmd


def _stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _rss_mb(pid: int) -> float:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


def evaluate_run(
    *, alive: bool, diag: dict[str, str], expected: dict[str, int], ages_s: list[float],
    rss_samples: list[tuple[float, float]], t_first_pair: float, rss_ready: float, duration_s: float,
    max_stamp_age_s: float, max_rss_growth_mb: float,
    map_samples: list[tuple[float, int, float, int]] = (), map_cap: int | None = None, expect_map: bool = False,
    require_cap: bool = False, max_rss_growth_after_cap_mb: float = 50.0,
    last_output_gap_s: float | None = None, max_output_gap_s: float = 60.0,
) -> dict[str, Any]:
    """The pass/fail rules of the soak on what was measured (pure; see the module docstring).

    diag: the node's last /diagnostics key/values; expected: fault counter -> counts the injected
    faults must at least produce; ages_s: output stamp ages in arrival order; rss_samples:
    (seconds since streaming began, RSS MiB). map_samples: (seconds since streaming began, map
    Gaussians, map memory MiB, pairs published) from the node's diagnostics; map_cap: the node's
    map_max_gaussians (None: map rules off); expect_map: the map must not stay empty; require_cap:
    the map must reach the cap. last_output_gap_s: time from the last odometry to the end of the
    run (a worker that died leaves the node alive and active, but silent). Returns failures (list of one-line reasons) and the derived numbers.
    """
    failures: list[str] = []
    faults = {k[len("fault."):]: int(v) for k, v in diag.items() if k.startswith("fault.")}
    fault_check = {k: {"injected_counts": n, "node_counted": faults.get(k, 0)} for k, n in sorted(expected.items())}
    for k, n in sorted(expected.items()):
        if faults.get(k, 0) < n:
            failures.append(f"fault {k}: injected {n}, node counted {faults.get(k, 0)}")
    if faults.get("worker_error", 0):
        failures.append(f"worker_error {faults['worker_error']} (a bug in the pipeline)")

    age_stats = _percentiles(ages_s)
    last_third = ages_s[len(ages_s) * 2 // 3 :]
    age_stats["median_last_third"] = _median(last_third)
    if not ages_s:
        failures.append("no outputs (odometry) received: stamp age unknown")
    elif last_output_gap_s is not None and last_output_gap_s > max_output_gap_s:
        failures.append(f"outputs stopped: the last odometry came {last_output_gap_s:.0f} s before the end "
                        f"(> {max_output_gap_s:g} s)")
    if ages_s and (age_stats["p99"] > max_stamp_age_s or age_stats["median_last_third"] > max_stamp_age_s):
        failures.append(f"stamp age unbounded: p99 {age_stats['p99']:.2f} s, last-third median "
                        f"{age_stats['median_last_third']:.2f} s > {max_stamp_age_s:g} s")

    # RSS swings by tens of MiB with each pair (allocator): compare medians over windows, not two samples
    window_s = max(5.0, 0.1 * duration_s)
    rss_start, rss_late, growth = window_growth(rss_samples, t_first_pair, window_s)
    if math.isnan(rss_start):  # no sample after the first pair: the RSS when the node was ready
        rss_start, growth = rss_ready, rss_late - rss_ready
    if not alive:
        failures.append("node not alive at the end")
    elif diag.get("state") != "active":
        failures.append(f"node state {diag.get('state')!r} at the end, not active")
    if alive and not growth <= max_rss_growth_mb:
        failures.append(f"node RSS grew {growth:.0f} MiB (> {max_rss_growth_mb:g} MiB)")
    out = {"failures": failures, "faults": faults, "fault_check": fault_check, "stamp_age_s": age_stats,
           "rss_start": rss_start, "rss_late": rss_late, "growth": growth, "window_s": window_s}
    if map_cap is not None:
        out["map"] = m = _map_rules(map_samples, map_cap, rss_samples, expect_map, require_cap, max_rss_growth_after_cap_mb)
        failures += m.pop("failures")
    return out


def _map_rules(map_samples, map_cap: int, rss_samples, expect_map: bool, require_cap: bool,
               max_growth_mb: float) -> dict[str, Any]:
    """Scene-map part of ``evaluate_run``: cap never exceeded, cap reached, RSS flat after it."""
    failures: list[str] = []
    sizes = [g for _, g, _, _ in map_samples]
    g_max = max(sizes, default=0)
    never_above = g_max <= map_cap
    if not never_above:
        failures.append(f"map above the cap: {g_max} > {map_cap} Gaussians")
    if expect_map and g_max == 0:
        failures.append("scene map stayed empty")
    t_cap = next((t for t, g, _, _ in map_samples if g >= CAP_FRACTION * map_cap), None)
    pairs_at_cap = next((n for t, g, _, n in map_samples if g >= CAP_FRACTION * map_cap), None)
    out: dict[str, Any] = {"cap": map_cap, "max_gaussians_seen": g_max, "never_above_cap": never_above,
                           "cap_reached_s": t_cap, "pairs_at_cap": pairs_at_cap, "rss_flat_after_cap": None}
    if t_cap is None:
        if require_cap:
            failures.append(f"map never reached its cap ({CAP_FRACTION:.0%} of {map_cap}; max {g_max})")
        out["failures"] = failures
        return out
    after = [(t, r) for t, r in rss_samples if t >= t_cap]
    t_last = after[-1][0] if after else t_cap
    window_s = max(5.0, 0.1 * (t_last - t_cap))
    at_cap, at_end, growth = window_growth(after, t_cap, window_s)
    flat = bool(growth <= max_growth_mb)  # NaN (no samples) is not flat
    if t_last - t_cap < RSS_FLAT_MIN_AFTER_CAP_S:
        flat = None  # too short after the cap to tell
    elif not flat:
        failures.append(f"node RSS not flat after the map cap: {at_cap:.0f} -> {at_end:.0f} MiB "
                        f"(+{growth:.0f} > {max_growth_mb:g} MiB)")
    out.update({"rss_flat_after_cap": flat, "rss_at_cap_mb": at_cap, "rss_end_mb": at_end,
                "rss_growth_after_cap_mb": growth, "rss_window_s": window_s, "after_cap_s": t_last - t_cap,
                "failures": failures})
    return out


def run_soak(args: argparse.Namespace, log=lambda s: print(s, file=sys.stderr, flush=True)) -> dict[str, Any]:
    """Run the soak; returns the report dict (``report["ok"]``, ``report["failures"]``)."""
    import rclpy
    from rclpy.node import Node

    from noposplat_ros.ros.soak_nodes import OutputMonitor, Spinner

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    node_args = list(args.node_arg)
    map_cap: int | None = None
    if not any(a.split(":=", 1)[0].strip() == "map_enabled" and a.split(":=", 1)[1].strip().lower() == "false"
               for a in node_args if ":=" in a):
        given = [a.split(":=", 1)[1] for a in node_args if a.split(":=", 1)[0].strip() == "map_max_gaussians"]
        if given:
            map_cap = int(given[-1])
        elif args.map_max_gaussians > 0:
            map_cap = int(args.map_max_gaussians)
            node_args.append(f"map_max_gaussians:={map_cap}")
        else:
            from noposplat_ros.mapping.scene_map import MapConfig

            map_cap = MapConfig().max_gaussians
    ns = "/" + args.namespace.strip("/")
    node_fqn = f"{ns}/{NODE_NAME}"
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(102, 200)))
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    log_dir = pathlib.Path(env.get("ROS_LOG_DIR") or pathlib.Path(env.get("ROS_HOME", pathlib.Path.home() / ".ros")) / "log")
    log_dir.mkdir(parents=True, exist_ok=True)
    node_log = open(log_dir / f"soak_node_{os.getpid()}.log", "w")
    pub_log = open(log_dir / f"soak_publisher_{os.getpid()}.log", "w+")

    report: dict[str, Any] = {
        "duration_s": args.duration_s, "rate_hz": args.rate_hz, "size": f"{args.width}x{args.height}",
        "seed": seed, "ros_domain_id": int(env["ROS_DOMAIN_ID"]), "cpu_count": os.cpu_count(),
        "stream": args.stream, "nice": args.nice, "map_cap": map_cap,
        "bounds": {"max_rss_growth_mb": args.max_rss_growth_mb, "max_stamp_age_s": args.max_stamp_age_s,
                   "max_output_gap_s": args.max_output_gap_s,
                   "max_rss_growth_after_cap_mb": args.max_rss_growth_after_cap_mb},
        "node_log": node_log.name,
    }
    t_wall0 = time.monotonic()
    node_proc = subprocess.Popen(_niced(_node_command(ns, node_args), args.nice), stdout=node_log,
                                 stderr=subprocess.STDOUT, env=env)
    rclpy.init(args=[])  # not sys.argv: its --node-arg values are not ROS arguments of this process
    mon_node = Node("soak_monitor")
    monitor = OutputMonitor(mon_node, node_fqn)
    spinner = Spinner(mon_node)
    pub_proc = None
    rss_samples: list[tuple[float, float]] = []
    map_samples: list[tuple[float, int, float, int]] = []  # (t, Gaussians, memory MiB, pairs published)
    fusion_s: list[float] = []
    load_1min: list[float] = []
    failures: list[str] = []
    try:
        # the publisher starts at once (its imports overlap the node's start) and waits for the
        # node's subscriptions before streaming
        pub_cmd = _niced([
            sys.executable, "-m", "noposplat_ros.ros.soak_nodes", "--duration-s", str(args.duration_s),
            "--rate-hz", str(args.rate_hz), "--width", str(args.width), "--height", str(args.height),
            "--fault-prob", str(args.fault_prob), "--seed", str(seed),
            "--image-topic", f"{ns}/image", "--camera-info-topic", f"{ns}/camera_info", "--wait-subscriber-s", "90",
            "--stream", args.stream, "--room-lap-s", str(args.room_lap_s),
        ], args.nice)
        pub_proc = subprocess.Popen(pub_cmd, stdout=subprocess.PIPE, stderr=pub_log, text=True, env=env)
        # node up: its diagnostics say active
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and node_proc.poll() is None:
            diag, _, _ = monitor.snapshot()
            if diag.get("state") == "active":
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"node did not become active (exit code {node_proc.poll()}); see {node_log.name}")
        report["node_start_s"] = round(time.monotonic() - t_wall0, 2)
        rss_ready = _rss_mb(node_proc.pid)
        log(f"soak: node active after {report['node_start_s']} s (RSS {rss_ready:.0f} MiB); {args.stream} stream "
            f"{args.width}x{args.height} @ {args.rate_hz:g} Hz for {args.duration_s:g} s (seed {seed}, map cap {map_cap})")
        # the publisher renders its stream first (room: ~0.1-0.2 s a frame): the run starts with its first frame
        deadline = time.monotonic() + 900
        while pub_proc.poll() is None and node_proc.poll() is None and time.monotonic() < deadline:
            if int(monitor.snapshot()[0].get("frames_in", 0) or 0) > 0:
                break
            time.sleep(0.1)
        report["stream_start_s"] = round(time.monotonic() - t_wall0, 2)
        rss_ready = _rss_mb(node_proc.pid)
        t_stream0 = time.monotonic()
        next_load = t_stream0
        rss_first_pair = None
        t_first_pair = 0.0
        next_log = t_stream0 + 30
        while pub_proc.poll() is None:
            time.sleep(0.5)
            now = time.monotonic()
            rss_samples.append((now - t_stream0, _rss_mb(node_proc.pid)))
            diag, odom, _ = monitor.snapshot()
            if "map.gaussians" in diag:
                map_samples.append((now - t_stream0, int(diag["map.gaussians"]), float(diag.get("map.memory_mib", "nan")),
                                    int(diag.get("pairs_published", 0) or 0)))
                if "map.fusion_s" in diag and (not fusion_s or diag["map.fusion_s"] != fusion_s[-1][1]):
                    fusion_s.append((now, diag["map.fusion_s"]))
            if now >= next_load:
                next_load += 30
                load_1min.append(os.getloadavg()[0])
            if rss_first_pair is None and odom:
                rss_first_pair = rss_samples[-1][1]
                t_first_pair = rss_samples[-1][0]
            if node_proc.poll() is not None:
                failures.append(f"node died during the run (exit code {node_proc.returncode})")
                break
            if now >= next_log:
                next_log += 30
                diag, odom, _ = monitor.snapshot()
                log(f"soak: {now - t_stream0:.0f} s: frames_in {diag.get('frames_in')} pairs "
                    f"{diag.get('pairs_published')} map {diag.get('map.gaussians', 0)} RSS {rss_samples[-1][1]:.0f} MiB "
                    f"load {os.getloadavg()[0]:.1f}")
            if now - t_stream0 > args.duration_s + 120:
                failures.append("publisher did not finish")
                break
        pub_out = pub_proc.communicate(timeout=30)[0] if pub_proc.poll() is not None else ""
        time.sleep(2.0)  # the last pair and a fresh diagnostics message (1 s period)
        alive = node_proc.poll() is None
        rss_end = _rss_mb(node_proc.pid) if alive else float("nan")
        diag, odom, _ = monitor.snapshot()
        t_end_ns = time.time_ns()
    finally:
        spinner.stop()
        mon_node.destroy_node()
        rclpy.try_shutdown()
        if pub_proc is not None and pub_proc.poll() is None:
            _stop(pub_proc)
        _stop(node_proc)
        node_log.close()
        pub_log.seek(0)
        pub_err = pub_log.read()
        pub_log.close()

    try:
        published = json.loads(pub_out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        published = {}
        failures.append(f"publisher report missing (exit {pub_proc.returncode}): {pub_err.strip()[-300:]}")
    ev = evaluate_run(
        alive=alive, diag=diag, expected=published.get("expected_counts", {}),
        ages_s=[(recv - stamp) / 1e9 for recv, stamp in odom], rss_samples=rss_samples,
        t_first_pair=t_first_pair, rss_ready=rss_ready, duration_s=args.duration_s,
        max_stamp_age_s=args.max_stamp_age_s, max_rss_growth_mb=args.max_rss_growth_mb,
        last_output_gap_s=(t_end_ns - odom[-1][0]) / 1e9 if odom else None, max_output_gap_s=args.max_output_gap_s,
        map_samples=map_samples, map_cap=map_cap, expect_map=args.stream == "room",
        require_cap=args.stream == "room" and args.duration_s >= CAP_REQUIRED_AFTER_S,
        max_rss_growth_after_cap_mb=args.max_rss_growth_after_cap_mb,
    )
    failures += ev["failures"]
    faults, fault_check, age_stats = ev["faults"], ev["fault_check"], ev["stamp_age_s"]
    rss_start, rss_late, growth, window_s = ev["rss_start"], ev["rss_late"], ev["growth"], ev["window_s"]
    if faults.get("worker_error", 0):
        failures.append(f"see {report['node_log']} for the worker_error traceback")

    report.update({
        "node_alive_at_end": alive,
        "node_state": diag.get("state"),
        "publisher": published,
        "frames_published": published.get("published"),
        "frames_received": int(diag.get("frames_in", 0) or 0),
        "frames_decoded_used": int(diag.get("frames_used", 0) or 0),
        "faults_counted": faults,
        "fault_check": fault_check,
        "keyframes": int(diag.get("keyframes", 0) or 0),
        "pairs_selected": int(diag.get("pairs_selected", 0) or 0),
        "pairs_published": int(diag.get("pairs_published", 0) or 0),
        "pairs_dropped_superseded": int(diag.get("pairs_dropped", 0) or 0),
        "odometry_received": len(odom),
        "last_output_gap_s": round((t_end_ns - odom[-1][0]) / 1e9, 1) if odom else None,
        "stamp_age_s": age_stats,
        "rss_mb": {"node_ready": round(rss_ready, 1), "first_pair": None if rss_first_pair is None else round(rss_first_pair, 1),
                   "end": round(rss_end, 1), "max": round(max((r for _, r in rss_samples), default=float("nan")), 1),
                   "median_after_first_pair": round(rss_start, 1), "median_at_end": round(rss_late, 1),
                   "window_s": round(window_s, 1), "growth": round(growth, 1),
                   "timeline": _timeline(rss_samples, args.duration_s)},
        "latency_s": {k[len("latency_s."):]: float(v) for k, v in diag.items() if k.startswith("latency_s.")},
        "map": None if map_cap is None else ev["map"] | {
            "final_gaussians": int(diag.get("map.gaussians", 0) or 0),
            "final_memory_mib": float(diag.get("map.memory_mib", 0) or 0),
            "fusion_s": _percentiles([float(v) for _, v in fusion_s]),
            "timeline": _map_timeline(map_samples, args.duration_s)},
        "load_average_1min": _percentiles(load_1min) | {"min": min(load_1min, default=float("nan"))},
        "wall_s": round(time.monotonic() - t_wall0, 1),
        "failures": failures,
        "ok": not failures,
    })
    return report


def _format_map(r: dict[str, Any]) -> list[str]:
    m = r.get("map")
    if not m:
        return ["scene map: not monitored (map_enabled false)"]
    fus = m.get("fusion_s", {})
    lines = [
        f"scene map (cap {m['cap']} Gaussians): {r.get('pairs_published')} pairs published; at the end "
        f"{m.get('final_gaussians')} Gaussians, {m.get('final_memory_mib', 0):.1f} MiB; fusion per pair (s) "
        + (", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fus.items()) or "none"),
        "map size over the run (s: Gaussians / MiB / pairs): " + ", ".join(
            f"{t}: {g} / {mib:.1f} / {n}" for t, g, mib, n in m.get("timeline", [])),
    ]
    if m.get("cap_reached_s") is None:
        lines.append(f"cap reached: no (max {m.get('max_gaussians_seen')}); RSS flat after cap: not measured")
    else:
        lines.append(
            f"cap reached ({CAP_FRACTION:.0%}) at {m['cap_reached_s']:.1f} s after {m.get('pairs_at_cap')} pairs; node RSS "
            f"(MiB) at the cap {m['rss_at_cap_mb']:.1f} -> at the end {m['rss_end_mb']:.1f} (medians over the first / "
            f"last {m['rss_window_s']:.0f} s of the {m['after_cap_s']:.0f} s after the cap): {m['rss_growth_after_cap_mb']:+.1f}")
        verdict = {True: "PASS", False: "FAIL", None: f"not judged (< {RSS_FLAT_MIN_AFTER_CAP_S:g} s after the cap)"}
        lines.append(f"RSS flat after cap: {verdict[m['rss_flat_after_cap']]} "
                     f"(growth {m['rss_growth_after_cap_mb']:+.1f} MiB, bound {r['bounds']['max_rss_growth_after_cap_mb']:g})")
    lines.append(f"map never above the cap: {'PASS' if m['never_above_cap'] else 'FAIL'} "
                 f"(max {m.get('max_gaussians_seen')} <= {m['cap']})")
    return lines


def format_report(r: dict[str, Any]) -> str:
    age = r.get("stamp_age_s", {})
    rss = r.get("rss_mb", {})
    lines = [
        f"soak: {r['duration_s']:g} s of the {r.get('stream')} stream, {r['size']} rgb8 @ {r['rate_hz']:g} Hz, seed {r['seed']}, "
        f"nice +{r.get('nice')}, "
        f"{r['cpu_count']} CPU cores (shared), ROS_DOMAIN_ID {r['ros_domain_id']}",
        f"node alive at end: {r.get('node_alive_at_end')} (state {r.get('node_state')})",
        f"frames: published {r.get('frames_published')}, received {r.get('frames_received')}, "
        f"decoded+used {r.get('frames_decoded_used')}",
        "faults injected -> counted by the node: " + ", ".join(
            f"{k} {v['injected_counts']} -> {v['node_counted']}" for k, v in r.get("fault_check", {}).items()),
        "all fault counters: " + ", ".join(f"{k} {v}" for k, v in sorted(r.get("faults_counted", {}).items())),
        f"keyframes {r.get('keyframes')}, pairs selected {r.get('pairs_selected')}, published {r.get('pairs_published')} "
        f"(superseded before processing {r.get('pairs_dropped_superseded')}), odometry received {r.get('odometry_received')} "
        f"(the last {r.get('last_output_gap_s')} s before the end)",
        "stamp age of outputs (s): " + (", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in age.items()) or "none"),
        f"node RSS (MiB): ready {rss.get('node_ready')}, first pair {rss.get('first_pair')}, end {rss.get('end')}, "
        f"max {rss.get('max')}; median over {rss.get('window_s')} s after the first pair {rss.get('median_after_first_pair')} "
        f"-> over the last {rss.get('window_s')} s {rss.get('median_at_end')}: growth {rss.get('growth')} "
        f"(bound {r['bounds']['max_rss_growth_mb']:g})",
        "node RSS over the run (s: MiB): " + ", ".join(f"{t}: {m:.0f}" for t, m in rss.get("timeline", [])),
        *_format_map(r),
        "last stage latencies (s): " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(r.get("latency_s", {}).items())),
        "load average (1 min, every 30 s): " + ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.get("load_average_1min", {}).items()),
        f"wall time {r.get('wall_s')} s; node log {r.get('node_log')}",
        "RESULT: " + ("PASS" if r.get("ok") else "FAIL: " + "; ".join(r.get("failures", []))),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    w, h, rate = STREAM_DEFAULTS[args.stream]
    args.width = w if args.width is None else args.width
    args.height = h if args.height is None else args.height
    args.rate_hz = rate if args.rate_hz is None else args.rate_hz
    if args.duration_s <= 0 or args.rate_hz <= 0:
        print("soak: error: --duration-s and --rate-hz must be positive", file=sys.stderr)
        return 1
    try:
        report = run_soak(args)
    except RuntimeError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 1
    print(format_report(report), flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["ok"] else 1
