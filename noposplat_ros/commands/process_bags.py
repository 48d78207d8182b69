"""`noposplat-ros process-bags BAG [BAG ...] --out DIR`: process-bag over many bags on a Ray cluster.

One Ray actor per worker slot (``--cpus-per-bag`` / ``--gpus-per-bag`` of the cluster) loads the
predictor once and runs process-bag's core on one bag after another. Output:

    DIR/<bag name>/   exactly what process-bag writes for that bag, plus fleet_done.json (written last)
    DIR/summary.json  per bag: status (done|failed|skipped|cancelled), frames, pairs, map size, seconds, error

Without --ray-address a local Ray starts on this machine (a Ray already initialised in this process
is used as is); with one (``auto`` or HOST:PORT) the run joins that cluster, and DIR and the bags must
be on storage every node sees. Ray is imported here only (optional extra ``noposplat_ros[fleet]``).

Exit codes: 0 every bag done or skipped; 1 bad usage (nothing processed); 2 some bags failed (the
others are done); 130 Ctrl-C (running bags cancelled, no partial output left in DIR).
"""
from __future__ import annotations

import argparse
import collections
import math
import pathlib
import sys
import time
import uuid
from typing import Any

from noposplat_ros.commands import process_bag
from noposplat_ros.fleet import output_dirs
from noposplat_ros.fleet.summary import (
    CANCELLED, DONE, FAILED, SKIPPED, BagOutcome, FleetProgress, build_summary, one_line, write_summary,
)

HELP = "Run process-bag over many bags on a Ray cluster (or a local Ray): one output dir per bag + summary.json."

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAGS_FAILED = 2
EXIT_INTERRUPTED = 130

_FLEET_ONLY = ("bags", "out", "ray_address", "num_cpus", "cpus_per_bag", "gpus_per_bag", "workers", "resume",
               "command", "_run")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 directories")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory: DIR/<bag name>/ per bag, DIR/summary.json")
    p.add_argument("--ray-address", default=None,
                   help="join a running Ray cluster (auto, or HEAD:6379); default: start a local Ray on this machine")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all; not with --ray-address)")
    p.add_argument("--cpus-per-bag", type=float, default=1.0, help="CPUs reserved per running bag (default 1)")
    p.add_argument("--gpus-per-bag", type=float, default=0.0, help="GPUs reserved per running bag (default 0; 0.5 shares a GPU)")
    p.add_argument("--workers", type=int, default=None,
                   help="bag workers (each loads the predictor once; default: as many as the cluster's resources fit)")
    p.add_argument("--resume", action="store_true", help="skip bags whose output in DIR is complete")
    process_bag.add_run_options(p)  # the per-bag options, exactly process-bag's (--overwrite: replace complete outputs)


def bag_options(args: argparse.Namespace) -> dict[str, Any]:
    """process-bag's options for every bag: all but the fleet's own; each bag's progress line only at its end."""
    opts = {k: v for k, v in vars(args).items() if k not in _FLEET_ONLY}
    opts["progress_interval_s"] = math.inf
    return opts


def _validate(args: argparse.Namespace) -> None:
    if not args.cpus_per_bag > 0:
        raise ValueError(f"--cpus-per-bag must be positive, got {args.cpus_per_bag}")
    if not args.gpus_per_bag >= 0:
        raise ValueError(f"--gpus-per-bag must be >= 0, got {args.gpus_per_bag}")
    if args.num_cpus is not None and (args.num_cpus <= 0 or args.ray_address):
        raise ValueError("--num-cpus must be positive, and is for the local Ray only (not with --ray-address)")
    if args.workers is not None and args.workers <= 0:
        raise ValueError(f"--workers must be positive, got {args.workers}")
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    process_bag.check_options(argparse.Namespace(**bag_options(args)))


def _sort_jobs(args: argparse.Namespace, jobs: list[output_dirs.BagJob]) -> tuple[list[output_dirs.BagJob], list[BagOutcome]]:
    """(jobs to run, outcomes of bags skipped by --resume); ValueError for outputs in the way."""
    todo, skipped, blocked = [], [], []
    for job in jobs:
        state = output_dirs.output_state(job)
        marker = output_dirs.read_marker(job.final_dir) if state != output_dirs.ABSENT else None
        if state == output_dirs.COMPLETE and args.resume:
            skipped.append(BagOutcome.from_dict({**marker, "name": job.name, "input": str(job.input_path), "status": SKIPPED}))
        elif state == output_dirs.ABSENT or (marker is not None and args.overwrite):
            todo.append(job)
        elif marker is None:
            blocked.append(f"{job.final_dir} (not written by process-bags; move it away)")
        elif state == output_dirs.OTHER:
            blocked.append(f"{job.final_dir} (the output of {marker.get('input')}; --overwrite replaces it)")
        else:
            blocked.append(f"{job.final_dir} (use --resume to skip it or --overwrite to replace it)")
    if blocked:
        raise ValueError(f"output exists: {'; '.join(blocked[:3])}" + (f"; and {len(blocked) - 3} more" if len(blocked) > 3 else ""))
    return todo, skipped


def _worker_count(ray: Any, args: argparse.Namespace, bags: int) -> int:
    if args.workers:
        return min(args.workers, bags)
    res = ray.cluster_resources()
    fit = int(res.get("CPU", 0) // args.cpus_per_bag + 1e-9)
    if args.gpus_per_bag > 0:
        fit = min(fit, int(res.get("GPU", 0) // args.gpus_per_bag + 1e-9))
    if fit < 1:
        raise ValueError(f"the Ray cluster ({res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs) cannot fit one bag "
                         f"({args.cpus_per_bag:g} CPUs, {args.gpus_per_bag:g} GPUs)")
    return min(fit, bags)


def _schedule(ray: Any, args: argparse.Namespace, jobs: list[output_dirs.BagJob], skipped: list[BagOutcome],
              all_names: list[str], out_dir: pathlib.Path, stop: process_bag.StopOnSigint) -> tuple[dict[str, BagOutcome], bool, float]:
    """Run the jobs on Ray actors; (outcomes by name, interrupted, wall seconds). The summary (bags in
    ``all_names`` order, as given on the command line) is rewritten after every bag."""
    from ray.exceptions import RayError, RayTaskError

    from noposplat_ros.fleet.worker import BagWorker

    outcomes: dict[str, BagOutcome] = {o.name: o for o in skipped}
    progress = FleetProgress(len(all_names), skipped=len(skipped))
    # a line whenever a bag finishes, and at least every interval_s while bags run
    interval_s = args.progress_interval_s if args.progress_interval_s is not None else 10.0
    t0 = time.monotonic()

    def save(interrupted: bool) -> None:
        order = {n: i for i, n in enumerate(all_names)}
        write_summary(out_dir / output_dirs.FLEET_SUMMARY,
                      build_summary(sorted(outcomes.values(), key=lambda o: order[o.name]), time.monotonic() - t0, interrupted))

    def show(running: int) -> None:
        done = sum(o.status == DONE for o in outcomes.values())
        failed = sum(o.status == FAILED for o in outcomes.values())
        frames = sum(o.frames for o in outcomes.values() if o.status == DONE)
        print(progress.line(done, running, failed, frames), file=sys.stderr, flush=True)

    if not jobs:
        save(False)
        show(0)
        return outcomes, False, 0.0
    n_workers = _worker_count(ray, args, len(jobs))
    # A worker that crashes (segfault, OOM kill) fails the bag it was running (not retried: it would
    # likely crash again) and is replaced by a new actor. Not Ray's max_restarts: a task sent while the
    # driver has not yet seen the death would fail too.
    actor_cls = ray.remote(num_cpus=args.cpus_per_bag, num_gpus=args.gpus_per_bag, max_restarts=0,
                           max_task_retries=0)(BagWorker)
    options = bag_options(args)
    workers = [actor_cls.remote(options) for _ in range(n_workers)]
    print(f"process-bags: {len(jobs)} bags on {n_workers} workers ({len(skipped)} skipped); output in {out_dir}",
          file=sys.stderr, flush=True)
    queue = collections.deque(jobs)
    idle = list(workers)
    running: dict[Any, tuple[output_dirs.BagJob, Any]] = {}
    last_line = -math.inf
    try:
        while (queue or running) and not stop.requested:
            while queue and idle:
                job, worker = queue.popleft(), idle.pop()
                running[worker.run.remote(job, bool(args.overwrite))] = (job, worker)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=max(min(interval_s, 0.5), 0.05))  # short: Ctrl-C reacts
            for ref in ready:
                job, worker = running.pop(ref)
                try:
                    outcomes[job.name] = BagOutcome.from_dict(ray.get(ref))
                except RayTaskError as exc:  # the bag's own error (corrupt bag, missing topic, crash in the core)
                    cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                    outcomes[job.name] = BagOutcome(job.name, str(job.input_path), FAILED, error=one_line(cause))
                except RayError as exc:  # the worker is gone: crashed, killed by Ray's OOM monitor, node lost
                    outcomes[job.name] = BagOutcome(job.name, str(job.input_path), FAILED,
                                                    error=f"worker died: {one_line(exc)}"[:600])
                    try:  # make sure it holds no resources before its replacement asks for them
                        ray.kill(worker, no_restart=True)
                    except Exception:  # noqa: BLE001 - already gone
                        pass
                    workers.remove(worker)
                    worker = actor_cls.remote(options)
                    workers.append(worker)
                idle.append(worker)
                if outcomes[job.name].status == FAILED:
                    output_dirs.discard(job)
                    print(f"process-bags: {job.name}: failed: {outcomes[job.name].error}", file=sys.stderr, flush=True)
                save(False)
            if ready or time.monotonic() - last_line >= interval_s:
                show(len(running))
                last_line = time.monotonic()
    finally:
        interrupted = bool(queue or running)
        if interrupted:
            # Kill the workers (force: a bag may be deep in the predictor), wait until they are gone so
            # nothing writes any more, then remove what they left half-done.
            # (Ctrl-C in a terminal also reaches Ray's own daemons: Ray may be going down under us.)
            try:
                for w in workers:
                    ray.kill(w, no_restart=True)
                if running:
                    ray.wait(list(running), num_returns=len(running), timeout=30)
            except Exception as exc:  # noqa: BLE001 - cleanup of our files below must still happen
                print(f"process-bags: while stopping the workers: {one_line(exc)}", file=sys.stderr)
            stopped = list(queue) + [j for j, _ in running.values()]
            for job in stopped:
                outcomes.setdefault(job.name, BagOutcome(job.name, str(job.input_path), CANCELLED))
                output_dirs.discard(job)
            # Ray kills asynchronously: a worker deep in a pair can still write for a moment after its
            # task is reported dead (seen once in a full-suite run: a partial dir re-created after the
            # discard), so look once more after a grace period
            time.sleep(1.0)
            for job in stopped:
                output_dirs.discard(job)
            output_dirs.recover(out_dir)  # an --overwrite swap cut in half: put the previous output back
            save(True)
    return outcomes, interrupted, time.monotonic() - t0


def run(args: argparse.Namespace) -> int:
    from noposplat_ros.io.bag_io import BagError

    out_dir = pathlib.Path(args.out).absolute()
    try:
        _validate(args)
        jobs = output_dirs.plan_jobs(args.bags, out_dir, run_id=uuid.uuid4().hex[:12])
        for line in output_dirs.recover(out_dir):
            print(f"process-bags: {line}", file=sys.stderr)
        todo, skipped = _sort_jobs(args, jobs)
    except (BagError, ValueError) as exc:
        print(f"process-bags: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        import ray
    except ModuleNotFoundError:
        print("process-bags: error: Ray is not installed (pip install 'noposplat_ros[fleet]' or -r requirements/fleet.txt)",
              file=sys.stderr)
        return EXIT_ERROR
    out_dir.mkdir(parents=True, exist_ok=True)
    own_ray = not ray.is_initialized()
    if own_ray:
        try:
            if args.ray_address:
                ray.init(address=args.ray_address)
            else:
                ray.init(num_cpus=args.num_cpus, include_dashboard=False)
        except Exception as exc:  # noqa: BLE001 - Ray raises several types (ConnectionError, RuntimeError, ...)
            where = f"join the Ray cluster at {args.ray_address}" if args.ray_address else "start a local Ray"
            print(f"process-bags: error: cannot {where}: {one_line(exc)}", file=sys.stderr)
            return EXIT_ERROR
    try:
        # after ray.init, so our handler is the one in place; ray.wait is polled, so Ctrl-C acts within a second
        with process_bag.StopOnSigint(notice=None, escalate=False) as stop:
            outcomes, interrupted, wall_s = _schedule(ray, args, todo, skipped, [j.name for j in jobs], out_dir, stop)
    except ValueError as exc:
        print(f"process-bags: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if own_ray:
            ray.shutdown()
    failed = sorted(o.name for o in outcomes.values() if o.status == FAILED)
    done = sum(o.status == DONE for o in outcomes.values())
    frames = sum(o.frames for o in outcomes.values() if o.status == DONE)
    rate = f", {frames / wall_s:.1f} frames/s" if wall_s > 0 else ""
    tally = f"{done} done, {len(skipped)} skipped, {len(failed)} failed ({frames} frames in {wall_s:.1f} s{rate})"
    if interrupted:
        cancelled = sum(o.status == CANCELLED for o in outcomes.values())
        print(f"process-bags: interrupted: {cancelled} bags cancelled, no partial output left; {tally}; "
              f"summary in {out_dir / output_dirs.FLEET_SUMMARY}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"process-bags: {tally}; summary in {out_dir / output_dirs.FLEET_SUMMARY}"
          + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return EXIT_BAGS_FAILED if failed else EXIT_OK
