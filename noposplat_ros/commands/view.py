"""`noposplat-ros view`: the Gaussian splats in any web browser (viser), from PLY files or live from the node.

    noposplat-ros view out/demo/splats.ply              # files (INRIA 3DGS layout)
    noposplat-ros view --live                           # the running node's map, pairs and keyframes
    noposplat-ros view --live --host 0.0.0.0 --ros-args -r __ns:=/robot1

Serves on 127.0.0.1 unless --host says otherwise; prints the URL to open.
"""
from __future__ import annotations

import argparse
import pathlib
import signal
import sys
import threading

import numpy as np

HELP = "show Gaussian splats in a web browser: PLY files, or --live from the running node"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ply", nargs="*", type=pathlib.Path, help="3DGS PLY files (INRIA layout) to show")
    p.add_argument("--live", action="store_true", help="subscribe to the running node instead of reading files")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, default=8080, help="HTTP/websocket port (default 8080)")
    p.add_argument("--next-free-port", action="store_true",
                   help="if --port is taken, serve on the next free port (printed) instead of failing")
    p.add_argument("--max-splats", type=int, default=500_000,
                   help="most splats sent per layer; thinned by opacity x size for display only (0: all)")
    p.add_argument("--period", type=float, default=1.0,
                   help="live: at least this many seconds between pushes to the browser (default 1)")
    p.add_argument("--fov-deg", type=float, default=60.0,
                   help="vertical field of view of the first view of PLY files; live, only until the camera's "
                        "is known (from camera_info or the first pair's splats) (default 60)")
    p.add_argument("--node", default="noposplat_node",
                   help="live: name of the splat node whose <node>/map, splat_pair, odometry are read")
    p.add_argument("--max-pairs", type=int, default=100,
                   help="live, without a map topic: show at most this many recent pairs")
    p.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=None,
                   help="ROS arguments (remapping, namespace), e.g. --ros-args -r camera_info:=/cam/camera_info")


def _fail(message: str) -> int:
    print(f"view: error: {message}", file=sys.stderr)
    return 2


def _wait_for_stop() -> threading.Event:
    """An event set by SIGINT or SIGTERM (a clean exit when a launch system or a test stops us)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _start_viewer(args: argparse.Namespace):
    from noposplat_ros.viewer.server import PortInUseError, SplatViewer

    try:
        viewer = SplatViewer(args.host, args.port, next_free_port=args.next_free_port, max_splats=args.max_splats)
    except PortInUseError as exc:
        raise SystemExit(_fail(str(exc)))
    except OSError as exc:
        raise SystemExit(_fail(f"cannot serve on {args.host}:{args.port}: {exc}"))
    if viewer.port != args.port:
        print(f"view: port {args.port} was in use, serving on {viewer.port}", flush=True)
    shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
    print(f"view: open http://{shown}:{viewer.port} in a browser", flush=True)
    return viewer


def run_files(args: argparse.Namespace) -> int:
    from noposplat_ros.io.ply import read_ply
    from noposplat_ros.viewer.scene import SplatArrays, gaussians_to_splats, median_depth, view_from_pose

    layers = []
    for path in args.ply:
        if not path.is_file():
            return _fail(f"{path}: no such file")
        try:
            layers.append(gaussians_to_splats(read_ply(path)))
        except Exception as exc:  # noqa: BLE001 - plyfile raises several kinds for a broken file
            return _fail(f"{path}: not a readable 3DGS PLY ({type(exc).__name__}: {exc})")
        if layers[-1].num == 0:
            return _fail(f"{path}: has no (finite) Gaussians")
    viewer = _start_viewer(args)
    stop = _wait_for_stop()
    # our PLYs are in camera 0's optical frame: the first view is that camera (identity pose)
    T_world_from_cam0 = np.eye(4)
    fy = 0.5 / np.tan(0.5 * np.deg2rad(args.fov_deg))
    view = view_from_pose(T_world_from_cam0, np.diag([fy, fy, 1.0]), 1,
                          median_depth(SplatArrays.concat(layers), T_world_from_cam0))
    viewer.set_initial_view(view)
    for i, (path, splats) in enumerate(zip(args.ply, layers)):
        viewer.show_splats(f"/ply/{i}", splats)
    viewer.set_status("  \n".join(f"**{p.name}**: {s.num:,} splats" for p, s in zip(args.ply, layers)))
    viewer.mark_pushed()
    print(f"view: showing {sum(s.num for s in layers):,} splats from {len(layers)} file(s); Ctrl-C to stop", flush=True)
    stop.wait()
    viewer.stop()
    return 0


def run_live(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from noposplat_ros.ros.viewer_node import ViewerNode
    from noposplat_ros.viewer.live import LayerCache, LiveScene, build_display
    from noposplat_ros.viewer.scene import view_from_pose
    from noposplat_ros.viewer.server import Pusher

    rclpy.init(args=["view"] + (["--ros-args", *args.ros_args] if args.ros_args is not None else []),
               signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    live = LiveScene(max_pairs=args.max_pairs)
    node = ViewerNode(live, splat_node=args.node)
    viewer = _start_viewer(args)
    stop = _wait_for_stop()
    log = node.get_logger()
    cache = LayerCache()
    viewer.set_status(f"waiting for the node: `{node.resolve_topic_name(args.node.strip('/') + '/splat_pair')}`")

    def push() -> int:
        scene = build_display(live, args.fov_deg, node.map_topic, cache)
        if scene.initial_view is not None:
            viewer.set_initial_view(scene.initial_view)
        viewer.show_splats("/map", scene.map_splats, key=scene.map_key)
        viewer.show_splats("/pair", scene.pair_splats, visible=bool(viewer.show_pair.value), key=scene.pair_key)
        size = 0.1 * float(np.linalg.norm(scene.initial_view.look_at - scene.initial_view.position)) \
            if scene.initial_view is not None else 0.1
        viewer.show_cameras_and_path(scene.keyframe_poses, scene.fov_rad, scene.aspect, size)
        viewer.set_status(scene.status_markdown)
        if len(scene.keyframe_poses) and scene.initial_view is not None:
            fy = 0.5 / np.tan(0.5 * scene.fov_rad)
            dist = float(np.linalg.norm(scene.initial_view.look_at - scene.initial_view.position))
            viewer.follow_latest(view_from_pose(scene.keyframe_poses[-1], np.diag([fy, fy, 1.0]), 1, dist))
        viewer.mark_pushed()
        log.info(f"pushed: map {scene.map_splats.num} splats, pair {scene.pair_splats.num}, "
                 f"{len(scene.keyframe_poses)} keyframes")
        return scene.version

    pusher = Pusher(live.wait_for_change, push, args.period,
                    on_error=lambda exc: log.error(f"push failed: {type(exc).__name__}: {exc}")).start()
    try:
        while not stop.is_set():  # our own loop: SIGINT/SIGTERM set ``stop``, rclpy's handlers are off
            rclpy.spin_once(node, timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        pusher.stop()
        viewer.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def run(args: argparse.Namespace) -> int:
    if args.live and args.ply:
        return _fail("give PLY files or --live, not both")
    if not args.live and not args.ply:
        return _fail("give one or more PLY files, or --live")
    if not 0 < args.port < 65536:
        return _fail(f"--port must be 1..65535, got {args.port}")
    if args.period < 0 or args.max_splats < 0 or not 1.0 <= args.fov_deg <= 170.0:
        return _fail("--period and --max-splats must be >= 0, --fov-deg within 1..170")
    try:
        return run_live(args) if args.live else run_files(args)
    except SystemExit as exc:
        return int(exc.code or 0)
