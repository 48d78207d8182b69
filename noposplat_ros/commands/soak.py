"""`noposplat-ros soak`: the node under a long faulty camera stream, with a pass/fail report.

Three processes: the node (``noposplat_node``, default backend, default parameters), a publisher
process streaming a real moving image sequence (640x480 rgb8 at 30 Hz by default) with faults
mixed in at random (wrong encoding, truncated data, NaN intrinsics, size changes, stamps going
backwards, bursts), and this process, which monitors the node's ``/diagnostics`` and outputs and
its resident memory (psutil), then prints the report.

Pass criteria (exit 0), otherwise exit 1 naming each failure:
- the node process is alive at the end and its diagnostics say ``state active``;
- every injected fault shows up in the node's fault counter of that kind (count >= injected);
- no ``worker_error``;
- stamp age of the outputs (odometry receive time - its header stamp, i.e. keyframe 1's stamp)
  has p99 <= ``--max-stamp-age-s``, and the median of the last third of the run is not above
  that bound either (no growing backlog);
- resident memory of the node grows by at most ``--max-rss-growth-mb``: median RSS over the last
  10 % of the run (at least 5 s) minus the median over the same span after the first pair
  (predictor warm). RSS swings by tens of MiB with each pair, so single samples are not compared.
"""
from __future__ import annotations

import argparse
import json
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration-s", type=float, default=600.0, help="streaming time (default 600 s)")
    p.add_argument("--rate-hz", type=float, default=30.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fault-prob", type=float, default=0.02, help="chance per frame slot of a fault (>= 8 frames apart)")
    p.add_argument("--seed", type=int, default=None, help="fault schedule seed (default random, printed)")
    p.add_argument("--max-rss-growth-mb", type=float, default=100.0, help="allowed node RSS growth (MiB), median over the last 10%% of the run vs after the first pair")
    p.add_argument("--max-stamp-age-s", type=float, default=10.0, help="bound on output stamp age p99 (s)")
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
) -> dict[str, Any]:
    """The pass/fail rules of the soak on what was measured (pure; see the module docstring).

    diag: the node's last /diagnostics key/values; expected: fault counter -> counts the injected
    faults must at least produce; ages_s: output stamp ages in arrival order; rss_samples:
    (seconds since streaming began, RSS MiB). Returns failures (list of one-line reasons) and the
    derived numbers.
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
    elif age_stats["p99"] > max_stamp_age_s or age_stats["median_last_third"] > max_stamp_age_s:
        failures.append(f"stamp age unbounded: p99 {age_stats['p99']:.2f} s, last-third median "
                        f"{age_stats['median_last_third']:.2f} s > {max_stamp_age_s:g} s")

    # RSS swings by tens of MiB with each pair (allocator): compare medians over windows, not two samples
    window_s = max(5.0, 0.1 * duration_s)
    early = [m for t, m in rss_samples if t_first_pair <= t <= t_first_pair + window_s]
    t_last = rss_samples[-1][0] if rss_samples else 0.0
    late = [m for t, m in rss_samples if t >= t_last - window_s]
    rss_start = _median(early) if early else rss_ready
    rss_late = _median(late) if late else float("nan")
    growth = rss_late - rss_start
    if not alive:
        failures.append("node not alive at the end")
    elif diag.get("state") != "active":
        failures.append(f"node state {diag.get('state')!r} at the end, not active")
    if alive and not growth <= max_rss_growth_mb:
        failures.append(f"node RSS grew {growth:.0f} MiB (> {max_rss_growth_mb:g} MiB)")
    return {"failures": failures, "faults": faults, "fault_check": fault_check, "stamp_age_s": age_stats,
            "rss_start": rss_start, "rss_late": rss_late, "growth": growth, "window_s": window_s}


def run_soak(args: argparse.Namespace, log=lambda s: print(s, file=sys.stderr, flush=True)) -> dict[str, Any]:
    """Run the soak; returns the report dict (``report["ok"]``, ``report["failures"]``)."""
    import rclpy
    from rclpy.node import Node

    from noposplat_ros.ros.soak_nodes import OutputMonitor, Spinner

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
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
        "bounds": {"max_rss_growth_mb": args.max_rss_growth_mb, "max_stamp_age_s": args.max_stamp_age_s},
        "node_log": node_log.name,
    }
    t_wall0 = time.monotonic()
    node_proc = subprocess.Popen(_node_command(ns, args.node_arg), stdout=node_log, stderr=subprocess.STDOUT, env=env)
    rclpy.init()
    mon_node = Node("soak_monitor")
    monitor = OutputMonitor(mon_node, node_fqn)
    spinner = Spinner(mon_node)
    pub_proc = None
    rss_samples: list[tuple[float, float]] = []
    failures: list[str] = []
    try:
        # the publisher starts at once (its imports overlap the node's start) and waits for the
        # node's subscriptions before streaming
        pub_cmd = [
            sys.executable, "-m", "noposplat_ros.ros.soak_nodes", "--duration-s", str(args.duration_s),
            "--rate-hz", str(args.rate_hz), "--width", str(args.width), "--height", str(args.height),
            "--fault-prob", str(args.fault_prob), "--seed", str(seed),
            "--image-topic", f"{ns}/image", "--camera-info-topic", f"{ns}/camera_info", "--wait-subscriber-s", "90",
        ]
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
        log(f"soak: node active after {report['node_start_s']} s (RSS {rss_ready:.0f} MiB); streaming "
            f"{args.width}x{args.height} @ {args.rate_hz:g} Hz for {args.duration_s:g} s (seed {seed})")
        t_stream0 = time.monotonic()
        rss_first_pair = None
        t_first_pair = 0.0
        next_log = t_stream0 + 30
        while pub_proc.poll() is None:
            time.sleep(0.5)
            now = time.monotonic()
            rss_samples.append((now - t_stream0, _rss_mb(node_proc.pid)))
            _, odom, _ = monitor.snapshot()
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
                    f"{diag.get('pairs_published')} RSS {rss_samples[-1][1]:.0f} MiB")
            if now - t_stream0 > args.duration_s + 120:
                failures.append("publisher did not finish")
                break
        pub_out = pub_proc.communicate(timeout=30)[0] if pub_proc.poll() is not None else ""
        time.sleep(2.0)  # the last pair and a fresh diagnostics message (1 s period)
        alive = node_proc.poll() is None
        rss_end = _rss_mb(node_proc.pid) if alive else float("nan")
        diag, odom, _ = monitor.snapshot()
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
        "stamp_age_s": age_stats,
        "rss_mb": {"node_ready": round(rss_ready, 1), "first_pair": None if rss_first_pair is None else round(rss_first_pair, 1),
                   "end": round(rss_end, 1), "max": round(max((r for _, r in rss_samples), default=float("nan")), 1),
                   "median_after_first_pair": round(rss_start, 1), "median_at_end": round(rss_late, 1),
                   "window_s": round(window_s, 1), "growth": round(growth, 1),
                   "timeline": _timeline(rss_samples, args.duration_s)},
        "latency_s": {k[len("latency_s."):]: float(v) for k, v in diag.items() if k.startswith("latency_s.")},
        "wall_s": round(time.monotonic() - t_wall0, 1),
        "failures": failures,
        "ok": not failures,
    })
    return report


def format_report(r: dict[str, Any]) -> str:
    age = r.get("stamp_age_s", {})
    rss = r.get("rss_mb", {})
    lines = [
        f"soak: {r['duration_s']:g} s of {r['size']} rgb8 @ {r['rate_hz']:g} Hz, seed {r['seed']}, "
        f"{r['cpu_count']} CPU cores (shared), ROS_DOMAIN_ID {r['ros_domain_id']}",
        f"node alive at end: {r.get('node_alive_at_end')} (state {r.get('node_state')})",
        f"frames: published {r.get('frames_published')}, received {r.get('frames_received')}, "
        f"decoded+used {r.get('frames_decoded_used')}",
        "faults injected -> counted by the node: " + ", ".join(
            f"{k} {v['injected_counts']} -> {v['node_counted']}" for k, v in r.get("fault_check", {}).items()),
        "all fault counters: " + ", ".join(f"{k} {v}" for k, v in sorted(r.get("faults_counted", {}).items())),
        f"keyframes {r.get('keyframes')}, pairs selected {r.get('pairs_selected')}, published {r.get('pairs_published')} "
        f"(superseded before processing {r.get('pairs_dropped_superseded')}), odometry received {r.get('odometry_received')}",
        "stamp age of outputs (s): " + (", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in age.items()) or "none"),
        f"node RSS (MiB): ready {rss.get('node_ready')}, first pair {rss.get('first_pair')}, end {rss.get('end')}, "
        f"max {rss.get('max')}; median over {rss.get('window_s')} s after the first pair {rss.get('median_after_first_pair')} "
        f"-> over the last {rss.get('window_s')} s {rss.get('median_at_end')}: growth {rss.get('growth')} "
        f"(bound {r['bounds']['max_rss_growth_mb']:g})",
        "node RSS over the run (s: MiB): " + ", ".join(f"{t}: {m:.0f}" for t, m in rss.get("timeline", [])),
        "last stage latencies (s): " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(r.get("latency_s", {}).items())),
        f"wall time {r.get('wall_s')} s; node log {r.get('node_log')}",
        "RESULT: " + ("PASS" if r.get("ok") else "FAIL: " + "; ".join(r.get("failures", []))),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
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
