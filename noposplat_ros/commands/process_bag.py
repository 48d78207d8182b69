"""`noposplat-ros process-bag INPUT OUTPUT`: run the node's pipeline over a recorded rosbag2 bag.

Output layout (OUTPUT is a directory the command creates):

    OUTPUT/bag/            rosbag2 v9 bag (mcap or sqlite3) with /noposplat/splats,
                           /noposplat/splat_pair, /noposplat/odometry and /tf at the keyframe stamps
    OUTPUT/ply/pair_NNNNNN_<stamp0_ns>.ply   one 3DGS PLY per pair with splats (``_lost.ply``: pose LOST,
                           splats in the predictor's unit-baseline scale)
    OUTPUT/trajectory.tum  camera trajectory (TUM: stamp_s tx ty tz qx qy qz qw)
    OUTPUT/map.ply         the fused scene map of the newest trajectory segment (odom frame, INRIA 3DGS
                           layout); the bag's /noposplat/map carries it every map_publish_period_s of
                           bag time and at the end
    OUTPUT/summary.json    counts (frames, decoded, rejected by kind, keyframes, pairs), interrupted flag

Exit codes: 0 done; 1 bad input / usage (one line on stderr naming the problem); 130 interrupted by
Ctrl-C (the partial output bag is closed properly and readable).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import shutil
import signal
import sys
import time
from collections import Counter
from typing import Any, TextIO

from noposplat_ros.heap import HeapTrimmer

HELP = "Run the pipeline over a rosbag2 bag (MCAP/sqlite3): output bag + PLY per pair + trajectory."

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

BAG_DIR = "bag"
PLY_DIR = "ply"
TRAJECTORY_FILE = "trajectory.tum"
MAP_FILE = "map.ply"
SUMMARY_FILE = "summary.json"
_OUR_ENTRIES = {BAG_DIR, PLY_DIR, TRAJECTORY_FILE, SUMMARY_FILE}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="rosbag2 directory (metadata.yaml + .mcap or .db3)")
    p.add_argument("output", help="output directory (created; see --overwrite)")
    add_run_options(p)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Every option but INPUT and OUTPUT (process-bags shares them)."""
    p.add_argument("--image-topic", default=None, help="Image or CompressedImage topic (default: auto-detect)")
    p.add_argument("--camera-info-topic", default=None, help="CameraInfo topic (default: next to the image topic, or the only one)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output bag storage (default mcap)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT written by process-bag")
    p.add_argument("--params-file", default=None,
                   help="the node's parameter YAML (e.g. config/noposplat.yaml): predictor, keyframe.*, splat and frame "
                        "settings are taken from it, so the bag runs exactly like the node; flags below override it")
    p.add_argument("--predictor", default=None, help="geometry | noposplat | auto (noposplat if a checkpoint is given; default auto)")
    p.add_argument("--checkpoint", default=None, help="NoPoSplat checkpoint (.ckpt or .safetensors) for --predictor noposplat")
    p.add_argument("--model-config", default=None, help="NoPoSplat model config JSON (default: from the checkpoint name)")
    p.add_argument("--device", default=None, help="torch device for the noposplat predictor (default auto)")
    p.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16", "fp16", "int8"), help="noposplat precision")
    p.add_argument("--allow-pickle", action="store_true", default=None, help="let a pickled official .ckpt load (trusted files only)")
    p.add_argument("--metric-baseline-m", type=float, default=None, help="known distance between keyframe cameras (m)")
    p.add_argument("--scale-odometry-topic", default=None,
                   help="nav_msgs/Odometry topic in the bag (robot odometry): each pair becomes metric from the "
                        "distance the camera moved between its keyframes, as the node's scale_odometry_topic")
    p.add_argument("--scale-odometry-max-gap-s", type=float, default=None,
                   help="largest gap between odometry samples around a keyframe stamp (default 0.5)")
    p.add_argument("--scale-odometry-min-m", type=float, default=None,
                   help="camera motion below this stays chained (default 0.02)")
    p.add_argument("--keyframe", action="append", default=[], metavar="NAME=VALUE",
                   help="keyframe selection parameter (as the node's keyframe.NAME), repeatable")
    p.add_argument("--include-sh", action="store_true", default=None, help="add higher-order SH to the splat clouds")
    p.add_argument("--min-opacity", type=float, default=None, help="drop splats below this opacity from the clouds")
    p.add_argument("--odom-frame", default=None, help="parent frame of /tf and odometry (default odom)")
    p.add_argument("--base-frame", default=None,
                   help="child frame of /tf and odometry (default: the camera frame); its mount to the camera is "
                        "read from the bag's /tf_static")
    p.add_argument("--no-tf", dest="publish_tf", action="store_const", const=False, default=None,
                   help="do not write /tf (as the node's publish_tf: false); odometry is still written")
    p.add_argument("--no-ply", action="store_true", help="do not write PLY files")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many image messages")
    p.add_argument("--progress-interval-s", type=float, default=None,
                   help="seconds between progress lines (default 0.2 on a terminal, else 2)")


@dataclasses.dataclass
class RunStats:
    frames: int = 0  # image messages read
    decoded: int = 0  # turned into Frames
    rejected: Counter = dataclasses.field(default_factory=Counter)  # fault kind -> count (bag_io.REJECT_KINDS)
    keyframes: int = 0
    pairs: int = 0
    pairs_lost: int = 0
    ply_files: int = 0
    interrupted: bool = False
    seconds: float = 0.0  # wall time of process_bag, predictor load excluded when one is passed in

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rejected"] = dict(self.rejected)
        return d


class Progress:
    """A progress line on stderr: frames done/total, frames/s, ETA, keyframes and pairs.

    Hand-written because it is a dozen lines (no tqdm dependency). On a terminal the line is
    redrawn in place; otherwise one line is printed per ``interval_s``.
    """

    def __init__(self, total: int, stream: TextIO | None = None, interval_s: float | None = None) -> None:
        self.total = max(int(total), 0)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval_s = interval_s if interval_s is not None else (0.2 if self.tty else 2.0)
        self.t_start = time.monotonic()
        self._t_last = -math.inf

    def line(self, done: int, stats: RunStats) -> str:
        elapsed = max(time.monotonic() - self.t_start, 1e-9)
        rate = done / elapsed
        if rate > 0 and self.total >= done:
            eta_s = (self.total - done) / rate
            eta = time.strftime("%H:%M:%S", time.gmtime(eta_s))
        else:
            eta = "--:--:--"
        pct = 100.0 * done / self.total if self.total else 100.0
        return (
            f"process-bag: {done}/{self.total} frames ({pct:.0f}%) {rate:.1f} frames/s ETA {eta}"
            f" | keyframes {stats.keyframes} pairs {stats.pairs} rejected {sum(stats.rejected.values())}"
        )

    def update(self, done: int, stats: RunStats, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._t_last < self.interval_s:
            return
        self._t_last = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line(done, stats))
        else:
            self.stream.write(self.line(done, stats) + "\n")
        self.stream.flush()

    def finish(self, done: int, stats: RunStats) -> None:
        self.update(done, stats, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class StopOnSigint:
    """Ctrl-C sets ``requested``, which the caller's loop checks. With ``escalate`` (process-bag) the
    first Ctrl-C finishes the current frame, then stops and closes the output cleanly, and a second
    raises KeyboardInterrupt; without it (process-bags, which polls ray.wait) every Ctrl-C only sets
    the flag. ``notice`` is written to stderr on the first one."""

    def __init__(self, notice: str | None = "\nprocess-bag: Ctrl-C: stopping after the current frame (again to abort)\n",
                 escalate: bool = True) -> None:
        self.requested = False
        self._notice, self._escalate = notice, escalate
        self._previous: Any = None

    def __enter__(self) -> "StopOnSigint":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave the default handling
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and self._escalate:
            raise KeyboardInterrupt
        if not self.requested and self._notice:
            sys.stderr.write(self._notice)
            sys.stderr.flush()
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def prepare_output_dir(output: pathlib.Path, input_path: pathlib.Path, overwrite: bool) -> None:
    """Refuse an existing OUTPUT unless --overwrite, and then only delete what process-bag writes."""
    from noposplat_ros.io.bag_io import BagError

    out_r, in_r = output.resolve(), input_path.resolve()
    if out_r == in_r or in_r in out_r.parents or out_r in in_r.parents:
        raise BagError(f"output {output} must not be inside, or contain, the input bag {input_path}")
    if output.exists() or output.is_symlink():
        if not overwrite:
            raise BagError(f"output {output} exists (use --overwrite to replace it)")
        if not output.is_dir():
            raise BagError(f"output {output} exists and is not a directory; not replacing it")
        foreign = sorted(p.name for p in output.iterdir() if p.name not in _OUR_ENTRIES)
        if foreign:
            raise BagError(
                f"output {output} contains files process-bag did not write ({', '.join(foreign[:5])}); not deleting it"
            )
        for name in _OUR_ENTRIES:
            p = output / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    output.mkdir(parents=True, exist_ok=True)


def load_node_params(path: str | pathlib.Path) -> dict[str, Any]:
    """The node's ``ros__parameters`` from a ROS 2 params YAML, flattened (``keyframe.min_overlap``).

    Takes the section of ``/**``, ``noposplat_node`` or ``/noposplat_node`` (the first found)."""
    import yaml

    from noposplat_ros.io.bag_io import BagError

    try:
        doc = yaml.safe_load(pathlib.Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BagError(f"cannot read params file {path}: {' '.join(str(exc).split())}") from exc
    section = None
    for key in ("/**", "noposplat_node", "/noposplat_node"):
        if isinstance(doc.get(key), dict) and isinstance(doc[key].get("ros__parameters"), dict):
            section = doc[key]["ros__parameters"]
            break
    if section is None:
        raise BagError(f"params file {path} has no '/**' or 'noposplat_node' section with ros__parameters")
    flat: dict[str, Any] = {}

    def walk(prefix: str, d: dict) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                flat[f"{prefix}{k}"] = v

    walk("", section)
    return flat


def _pipeline_config(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """PipelineConfig the way the node builds it from its parameters (file, then flags), and the
    shell settings {odom_frame, base_frame, scale_odometry_topic, scale_odometry_max_gap_s,
    scale_odometry_min_m, publish_tf, map_publish_period_s, heap_trim_period_s}."""
    from noposplat_ros.keyframes.selector import KeyframeConfig
    from noposplat_ros.pipeline import PipelineConfig

    p: dict[str, Any] = load_node_params(args.params_file) if args.params_file else {}
    flags = {
        "predictor": args.predictor, "checkpoint": args.checkpoint, "model_config": args.model_config,
        "device": args.device, "precision": args.precision, "allow_pickle": args.allow_pickle,
        "metric_baseline_m": args.metric_baseline_m, "include_sh": args.include_sh,
        "min_opacity": args.min_opacity, "odom_frame": args.odom_frame, "base_frame": args.base_frame,
        "scale_odometry_topic": args.scale_odometry_topic, "scale_odometry_max_gap_s": args.scale_odometry_max_gap_s,
        "scale_odometry_min_m": args.scale_odometry_min_m, "publish_tf": args.publish_tf,
    }
    p.update({k: v for k, v in flags.items() if v is not None})
    for item in args.keyframe:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--keyframe expects NAME=VALUE, got {item!r}")
        p[f"keyframe.{name.strip()}"] = value.strip()
    kf = {k[len("keyframe."):]: v for k, v in p.items() if k.startswith("keyframe.")}
    keyframes = KeyframeConfig.from_dict(kf)  # validates names and ranges
    checkpoint = p.get("checkpoint") or None
    backend_choice = str(p.get("predictor") or "auto")
    resolved = "noposplat" if backend_choice == "noposplat" or (backend_choice == "auto" and checkpoint) else "geometry"
    options: dict[str, Any] = {}
    if resolved == "noposplat":  # the node passes these to the noposplat backend only
        if p.get("model_config"):
            options["model_config"] = p["model_config"]
        options["device"] = str(p.get("device") or "auto")
        options["precision"] = str(p.get("precision") or "auto")
        if p.get("allow_pickle"):
            options["allow_pickle"] = True
    refine = {"auto": None, "enabled": True, "disabled": False, "on": True, "off": False}.get(str(p.get("refine", "auto")))
    baseline = float(p.get("metric_baseline_m") or 0.0)
    from noposplat_ros.mapping.scene_map import map_config_from_params

    map_cfg, map_enabled = map_config_from_params(p)
    cfg = PipelineConfig(
        keyframes=keyframes, predictor=backend_choice, predictor_options=options, checkpoint=checkpoint,
        metric_baseline_m=baseline if baseline > 0 else None, refine=refine,
        include_sh=bool(p.get("include_sh", False)), min_opacity=float(p.get("min_opacity", 0.0)),
        map=map_cfg, map_enabled=map_enabled,
    )
    cfg.validate()
    frames = {
        "odom_frame": str(p.get("odom_frame") or "odom"), "base_frame": str(p.get("base_frame") or ""),
        "scale_odometry_topic": str(p.get("scale_odometry_topic") or ""),
        "scale_odometry_max_gap_s": float(p.get("scale_odometry_max_gap_s", 0.5)),
        "scale_odometry_min_m": float(p.get("scale_odometry_min_m", 0.02)),
        "publish_tf": bool(p.get("publish_tf", True)),
        "map_publish_period_s": float(p.get("map_publish_period_s", 1.0)),
        "heap_trim_period_s": float(p.get("heap_trim_period_s", 1.0)),
    }
    if not 0 < frames["scale_odometry_max_gap_s"] <= 10.0:
        raise ValueError(f"scale_odometry_max_gap_s must be in (0, 10], got {frames['scale_odometry_max_gap_s']}")
    return cfg, frames


class _StaticTf:
    """Static transforms from the bag's ``/tf_static`` (the node keeps the same from its subscription)."""

    def __init__(self) -> None:
        self.edges: dict[str, tuple[str, Any]] = {}  # child -> (parent, T_parent_from_child)

    def on_msg(self, msg: Any) -> None:
        from noposplat_ros.transforms import translation_quat_xyzw_to_T

        for tr in msg.transforms:
            t, r = tr.transform.translation, tr.transform.rotation
            self.edges[tr.child_frame_id] = (
                tr.header.frame_id, translation_quat_xyzw_to_T([t.x, t.y, t.z], [r.x, r.y, r.z, r.w]))

    def T_base_from_cam(self, base: str, cam: str) -> Any:
        """(4, 4) T_base_from_cam composed from ``cam`` up to ``base``; None when ``base`` is not above ``cam``."""
        import numpy as np

        T, frame = np.eye(4), cam
        for _ in range(64):  # a tf tree is shallow; guards against cycles
            if frame == base:
                return T
            if frame not in self.edges:
                return None
            parent, T_parent_from_frame = self.edges[frame]
            T, frame = np.asarray(T_parent_from_frame) @ T, parent
        return None


class _OdometryScale:
    """The node's metric scale from robot odometry, fed from the bag (``scale_odometry_topic``).

    Odometry samples go into the node's own ``OdometryBuffer``; the camera mount (odometry child
    frame <- camera frame) comes from the bag's ``/tf_static``.
    """

    def __init__(self, topic: str, max_gap_s: float, min_m: float, static_tf: _StaticTf) -> None:
        from noposplat_ros.ros.odometry_buffer import OdometryBuffer  # plain NumPy, no rclpy

        self.topic, self.gap_ns, self.min_m = topic, int(max_gap_s * 1e9), float(min_m)
        self.buffer = OdometryBuffer()
        self.child_frame = ""
        self.static_tf = static_tf

    def on_odometry(self, msg: Any) -> None:
        import numpy as np

        from noposplat_ros.io.bag_io import stamp_ns

        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        self.child_frame = msg.child_frame_id
        self.buffer.add(stamp_ns(msg.header), np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))

    def baseline_m(self, pair: Any) -> tuple[float | None, str]:
        """(camera motion in metres between the keyframes or None, fault message if missing)."""
        cam, base = pair.kf0.frame_id, self.child_frame
        T_bc = None
        if base and base != cam:
            T_bc = self.static_tf.T_base_from_cam(base, cam)
            if T_bc is None:
                return None, f"no static transform {base} <- {cam} on /tf_static; pair not metric"
        baseline = self.buffer.camera_baseline_m(pair.kf0.stamp_ns, pair.kf1.stamp_ns, T_bc, self.gap_ns)
        if baseline is None:
            return None, (f"no odometry on '{self.topic}' covering keyframe stamps {pair.kf0.stamp_ns} and "
                          f"{pair.kf1.stamp_ns}; pair not metric")
        return (baseline if baseline >= self.min_m else None), ""


def check_options(args: argparse.Namespace) -> None:
    """Raise ValueError/BagError for bad options (flags, params file) before any bag is opened."""
    from noposplat_ros.io.bag_io import BagError

    if args.max_frames is not None and args.max_frames <= 0:
        raise BagError(f"--max-frames must be positive, got {args.max_frames}")
    _pipeline_config(args)


def load_predictor(args: argparse.Namespace) -> Any:
    """The predictor process_bag would build for ``args``; load it once and pass it to many runs."""
    from noposplat_ros.io.bag_io import BagError
    from noposplat_ros.predictors import make_predictor

    cfg, _ = _pipeline_config(args)
    try:
        return make_predictor(cfg.resolved_backend(), **cfg.predictor_kwargs())
    except Exception as exc:  # noqa: BLE001 - checkpoint/predictor load errors of any kind: one line
        raise BagError(f"cannot load the {cfg.resolved_backend()} predictor: {' '.join(str(exc).split())}") from exc


def process_bag(args: argparse.Namespace, stop: StopOnSigint | None = None, predictor: Any = None) -> RunStats:
    """The whole run; raises BagError/ValueError for bad input (before anything is written where possible).

    predictor: one already loaded by ``load_predictor(args)`` (the fleet runner reuses it across bags);
    None loads it here."""
    from noposplat_ros.io import bag_io
    from noposplat_ros.outputs.records import OutputFrames, build_outputs

    input_path, output = pathlib.Path(args.input), pathlib.Path(args.output)
    if args.max_frames is not None and args.max_frames <= 0:
        raise bag_io.BagError(f"--max-frames must be positive, got {args.max_frames}")
    cfg, shell = _pipeline_config(args)
    stats = RunStats()
    t_start = time.monotonic()
    with bag_io.InputBag(input_path) as bag:
        bag_topics = bag.topics()
        topics = bag_io.select_topics(bag_topics, args.image_topic, args.camera_info_topic)
        read = [topics.image, topics.camera_info]
        static_tf = _StaticTf()
        if bag_topics.get("/tf_static", ("", 0))[0] == "tf2_msgs/msg/TFMessage":
            read.append("/tf_static")
        odom: _OdometryScale | None = None
        if shell["scale_odometry_topic"]:
            name = shell["scale_odometry_topic"]
            if bag_topics.get(name, ("", 0))[0] != "nav_msgs/msg/Odometry":
                found = bag_topics[name][0] if name in bag_topics else "not in the bag"
                raise bag_io.BagError(f"scale odometry topic {name}: {found} (needs nav_msgs/msg/Odometry)")
            odom = _OdometryScale(name, shell["scale_odometry_max_gap_s"], shell["scale_odometry_min_m"], static_tf)
            read.append(name)
        from noposplat_ros.pipeline import Pipeline

        if output.exists() and not args.overwrite:  # fail before the (slow) predictor load
            prepare_output_dir(output, input_path, args.overwrite)
        try:
            pipeline = Pipeline(cfg, predictor=predictor)
        except Exception as exc:  # noqa: BLE001 - checkpoint/predictor load errors of any kind: one line
            raise bag_io.BagError(f"cannot load the {cfg.resolved_backend()} predictor: {' '.join(str(exc).split())}") from exc
        prepare_output_dir(output, input_path, args.overwrite)
        out_bag: Any = None
        pending: list[Any] = []  # pairs waiting for odometry past keyframe 1's stamp (as the node waits)
        ply_dir = output / PLY_DIR
        heap = HeapTrimmer()

        def process(pair: Any) -> None:
            baseline = None
            if odom is not None:
                baseline, why = odom.baseline_m(pair)
                if why:
                    source.faults["scale_odometry_missing"] += 1
            result = pipeline.process(pair, odom_baseline_m=baseline)
            stats.pairs += 1
            stats.pairs_lost += not result.ok
            frames_cfg = output_frames(result.frame_id)
            # keyframe 0's transform too (as the node): repeats of a written stamp are dropped
            outs = build_outputs(result, frames_cfg or OutputFrames(publish_tf=False), first_pair=True)
            if frames_cfg is None:  # no mount: as the node, no odometry / tf for this pair
                outs.odometry = None
            bag_io.write_pair_outputs(out_bag, outs)
            if frames_cfg is not None and frames_cfg.T_base_from_cam is not None:
                map_state["T_odom_from_world"] = frames_cfg.T_base_from_cam
            if result.stamp0_ns - map_state["written_ns"] >= shell["map_publish_period_s"] * 1e9:
                write_map()
            if result.gaussians is not None and result.gaussians.num > 0 and not args.no_ply:
                from noposplat_ros.io.ply import write_ply

                ply_dir.mkdir(exist_ok=True)
                suffix = "" if result.ok else "_lost"  # LOST: splats in predictor units, pose untrusted
                write_ply(ply_dir / f"pair_{result.index:06d}_{result.stamp0_ns}{suffix}.ply", result.gaussians)
                stats.ply_files += 1
            heap.maybe_trim(shell["heap_trim_period_s"])  # freed pair buffers back to the OS (long bags)

        map_state: dict[str, Any] = {"T_odom_from_world": None, "written_ns": -(1 << 62), "version": -1}

        def map_in_odom() -> Any:
            from noposplat_ros.mapping.scene_map import rigid_transform

            g = pipeline.scene_map.fused()
            T = map_state["T_odom_from_world"]
            return rigid_transform(g, T).to("cpu") if T is not None else g.to("cpu")

        def write_map() -> None:
            """The map on /noposplat/map as the node publishes ~/map: only when it changed."""
            smap = pipeline.scene_map
            if not cfg.map_enabled or smap.version == map_state["version"] or smap.num_gaussians == 0:
                return
            from noposplat_ros.outputs import pointcloud
            from noposplat_ros.outputs.records import cloud_record

            arr = pointcloud.gaussians_to_structured(map_in_odom())
            bag_io.write_map(out_bag, cloud_record(arr, smap.last_stamp_ns, shell["odom_frame"]))
            map_state["version"], map_state["written_ns"] = smap.version, smap.last_stamp_ns

        def output_frames(camera_frame: str) -> Any:
            """As the node's _output_frames: None (and a fault) when base_frame has no mount."""
            base = shell["base_frame"]
            T_base_from_cam = None
            if base and base != camera_frame:
                T_base_from_cam = static_tf.T_base_from_cam(base, camera_frame)
                if T_base_from_cam is None:
                    source.faults["extrinsic_missing"] += 1
                    return None
            return OutputFrames(odom_frame=shell["odom_frame"], base_frame=base, T_base_from_cam=T_base_from_cam,
                                publish_tf=shell["publish_tf"])

        def flush(until_log_ns: int | None = None) -> None:
            while pending and (until_log_ns is None or pending[0].kf1.stamp_ns + odom.gap_ns < until_log_ns):
                process(pending.pop(0))

        def restart() -> None:  # as the node's _reset_pipeline (waiting pairs belong to the old trajectory)
            flush()
            pipeline.reset()
            if out_bag is not None:
                out_bag.reset_tf()

        source = bag_io.FrameSource(on_reset=restart)
        total = min(topics.image_count, args.max_frames or topics.image_count)
        progress = Progress(total, interval_s=args.progress_interval_s)
        out_bag = bag_io.OutputBag(output / BAG_DIR, storage=args.storage, typestore=None)
        try:
            for topic, log_ns, msg in bag.messages(read):
                if stop is not None and stop.requested:
                    break
                if pending:
                    flush(log_ns)
                if topic == topics.camera_info:
                    source.camera_info(msg)
                elif odom is not None and topic == odom.topic:
                    odom.on_odometry(msg)
                elif topic == "/tf_static":
                    static_tf.on_msg(msg)
                else:
                    if args.max_frames is not None and stats.frames >= args.max_frames:
                        break
                    stats.frames += 1
                    item = source.image(msg, topics.image_type)
                    if not isinstance(item, bag_io.Rejected):
                        stats.decoded += 1
                        pair = pipeline.offer(item)
                        if pair is not None:
                            if odom is None:
                                process(pair)
                            else:
                                pending.append(pair)
                        stats.keyframes = pipeline.selector.stats.keyframes
                    progress.update(stats.frames, stats)
                stats.rejected = source.faults
            if stop is not None and stop.requested:
                stats.interrupted = True
            else:
                flush()  # end of the bag: no more odometry will come
                stats.rejected = source.faults
                write_map()
                if cfg.map_enabled and pipeline.scene_map.num_gaussians:
                    from noposplat_ros.io.ply import write_ply

                    write_ply(output / MAP_FILE, map_in_odom())
        finally:
            # Always close: the storage index and metadata.yaml make a partial bag a valid bag.
            out_bag.close()
            progress.finish(stats.frames, stats)
            pipeline.trajectory.to_tum(output / TRAJECTORY_FILE)
            stats.seconds = round(time.monotonic() - t_start, 3)
            (output / SUMMARY_FILE).write_text(
                json.dumps({**stats.as_dict(), "image_topic": topics.image, "camera_info_topic": topics.camera_info,
                            "scale_odometry_topic": odom.topic if odom else None,
                            "output_counts": out_bag.counts, "storage": args.storage}, indent=2) + "\n"
            )
    return stats


def run(args: argparse.Namespace) -> int:
    from noposplat_ros.io.bag_io import BagError

    try:
        with StopOnSigint() as stop:
            stats = process_bag(args, stop)
    except (BagError, ValueError, FileNotFoundError) as exc:
        print(f"process-bag: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"process-bag: aborted by a second Ctrl-C; output in {args.output} may be incomplete", file=sys.stderr)
        return EXIT_INTERRUPTED
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(stats.rejected.items())) or "none"
    summary = (
        f"{stats.frames} frames, {stats.decoded} decoded, rejected: {rejected}; {stats.keyframes} keyframes, "
        f"{stats.pairs} pairs ({stats.pairs_lost} lost), {stats.ply_files} PLY"
    )
    if stats.interrupted:
        print(f"process-bag: interrupted: partial output bag {pathlib.Path(args.output) / BAG_DIR} closed and valid; {summary}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"process-bag: done: {summary}; output in {args.output}", file=sys.stderr)
    return EXIT_OK
