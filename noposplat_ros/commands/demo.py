"""`noposplat-ros demo`: the main job, end to end through the live node over DDS on loopback.

Starts the node (`noposplat_node`, geometry backend unless a checkpoint is given) and the player
(`noposplat-ros play`) as two processes, receives the node's outputs here with an rclpy subscriber,
and writes to --out. Default input (``--source scene``): scene capture — a 20-frame camera tour
(sideways, then forward while panning) over a real scene with known depth (Middlebury Motorcycle,
re-rendered from each pose by ``fixtures.general_motion``; written to OUT/input/ and played as an
image folder), fused by the node into its scene map:
  map.ply          the fused scene map (from the node's ~/save_map; INRIA 3DGS layout, odom frame)
  map_view.png     an input frame | the map rendered from a viewpoint no keyframe had
  splats.ply       the latest pair's splats
  trajectory.tum   camera poses from /tf (TUM: stamp tx ty tz qx qy qz qw)
``--source pair`` plays the Motorcycle stereo pair (metric baseline) and also writes preview.png
(input | rendered novel view | rendered depth). Then a summary is printed.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import random
import subprocess
import sys
import time

import numpy as np

HELP = "Main job: play a camera tour through the live node over DDS and write map.ply, map_view.png, trajectory.tum"
NODE_NAME = "noposplat_node"
REPO = pathlib.Path(__file__).resolve().parents[2]


def default_params_file() -> pathlib.Path | None:
    """config/noposplat.yaml of the source tree, else the installed share directory's copy."""
    for cand in (REPO / "config" / "noposplat.yaml", pathlib.Path(sys.prefix) / "share" / "noposplat_ros" / "config" / "noposplat.yaml"):
        if cand.is_file():
            return cand
    return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", metavar="DIR", help="folder of images instead of the Motorcycle pair")
    src.add_argument("--video", metavar="FILE", help="video file instead of the Motorcycle pair")
    src.add_argument("--bag", metavar="PATH", help="rosbag2 directory instead of the Motorcycle pair")
    p.add_argument("--calibration", metavar="FILE", help="intrinsics file for --images/--video")
    p.add_argument("--source", choices=("scene", "pair"), default="scene",
                   help="built-in input when no --images/--video/--bag: scene (camera tour, the scene map; "
                        "default) or pair (the Motorcycle stereo pair)")
    p.add_argument("--rate", type=float, default=None,
                   help="player frames per second (default 0.25 for the scene tour, so the node keeps up on a "
                        "2-core CPU; 2 otherwise)")
    p.add_argument("--checkpoint", help="NoPoSplat checkpoint: use the noposplat backend")
    p.add_argument("--model-config", help="NoPoSplat model config JSON (with --checkpoint)")
    p.add_argument("--device", default="auto", help="predictor device (noposplat backend)")
    p.add_argument("--metric-baseline-m", type=float, default=None,
                   help="known camera distance of each pair in metres (default: the Motorcycle rig's "
                        "0.193001 m for the bundled pair, none otherwise)")
    p.add_argument("--params-file", help="node parameters YAML (default config/noposplat.yaml)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter (repeatable), e.g. -p keyframe.target_overlap:=0.95")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds (default 300)")
    p.add_argument("--preview-width", type=int, default=480, help="width of each preview panel in px")
    p.add_argument("--quiet-node", action="store_true", help="do not echo the node's log")


def _node_command(args: argparse.Namespace, params_file: pathlib.Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "noposplat_ros.ros.node", "--ros-args", "-r", f"__node:={NODE_NAME}"]
    if params_file:
        cmd += ["--params-file", str(params_file)]
    params = {"include_sh": "true", "auto_activate": "true", "save_dir": str(pathlib.Path(args.out).resolve()),
              "map_publish_period_s": "0.5"}
    if args.checkpoint:
        params.update(predictor="noposplat", checkpoint=str(args.checkpoint), device=args.device)
        if args.model_config:
            params["model_config"] = str(args.model_config)
    else:
        params["predictor"] = "geometry"
    baseline = args.metric_baseline_m
    if baseline is None and not (args.images or args.video or args.bag):
        from noposplat_ros.fixtures.motorcycle import MOTORCYCLE_BASELINE_M

        baseline = MOTORCYCLE_BASELINE_M
    if baseline:
        params["metric_baseline_m"] = repr(float(baseline))
    for kv in args.param:
        if ":=" not in kv:
            raise SystemExit(f"demo: -p expects NAME:=VALUE, got {kv!r}")
        k, v = kv.split(":=", 1)
        params[k] = v
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    return cmd


def _player_command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "noposplat_ros.cli", "play", "--rate", str(args.rate), "--wait-subscribers", "120"]
    for flag in ("images", "video", "bag", "calibration"):
        v = getattr(args, flag)
        if v:
            cmd += [f"--{flag}", str(v)]
    return cmd


SCENE_FRAMES = 20
SCENE_HW = (180, 240)


def write_scene_tour(folder: pathlib.Path) -> tuple[pathlib.Path, np.ndarray]:
    """Render the default scene-capture input into ``folder``: frame_NNN.png (20 frames: 10 sideways
    steps, then 10 forward steps while panning) + calibration.yaml. Returns (calibration path, the
    (N, 4, 4) true poses T_first_from_cam, in metres)."""
    import cv2
    import yaml

    from noposplat_ros.fixtures import general_motion as gm

    folder.mkdir(parents=True, exist_ok=True)
    K = gm.camera_K(40.0, SCENE_HW)
    zc = gm.load_scene().median_depth_m
    R, c, poses = np.eye(3), np.array([-0.22 * zc, 0.0, 0.0]), []
    for i in range(SCENE_FRAMES):
        poses.append(gm.pose(R.copy(), c.copy()))
        if i < SCENE_FRAMES // 2:
            c = c + R @ np.array([0.045 * zc, 0.0, 0.0])
        else:
            c = c + R @ np.array([0.0, 0.0, 0.04 * zc])
            R = R @ gm.rotation("y", -2.5)
    for i, T in enumerate(poses):
        v = gm.render_view(T, K, SCENE_HW, noise_std=1.0, seed=i)
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), v.rgb[:, :, ::-1])
    calib = folder / "calibration.yaml"
    calib.write_text(yaml.safe_dump({"fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]),
                                     "cy": float(K[1, 2])}))
    T0_inv = np.linalg.inv(poses[0])
    return calib, np.stack([T0_inv @ T for T in poses])


def make_map_view(rgb: np.ndarray, K: np.ndarray, gaussians, T_world_from_kf: np.ndarray, panel_w: int) -> np.ndarray:
    """(H, 2W, 3) uint8: an input frame | the map rendered from a viewpoint no keyframe had: behind
    and above the keyframes' mean position (by 0.35 and 0.12 of the map's median depth), turned 8 deg.

    T_world_from_kf: (N, 4, 4) keyframe poses in the map's frame."""
    import cv2
    import torch

    from noposplat_ros.render import render
    from noposplat_ros.transforms import invert_T, make_T

    h0, w0 = rgb.shape[:2]
    s = min(1.0, panel_w / w0)
    h, w = int(round(h0 * s)), int(round(w0 * s))
    Ks = np.asarray(K, dtype=np.float64).copy()
    Ks[:2] *= s
    centre = T_world_from_kf[:, :3, 3].mean(0)
    R0 = T_world_from_kf[0, :3, :3]
    depth = float(torch.median((gaussians.means - torch.as_tensor(centre, dtype=gaussians.means.dtype)).norm(dim=1)))
    a, b = np.radians(8.0), np.radians(-6.0)
    Ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    R = R0 @ Ry @ Rx
    eye = centre + R0 @ np.array([0.0, -0.12 * depth, -0.35 * depth])
    with torch.no_grad():
        out = render(gaussians, Ks, invert_T(make_T(R, eye)), h, w, background=(0.1, 0.1, 0.1))
    novel = (out.rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    inp = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    panel = np.ascontiguousarray(np.concatenate([inp, novel], axis=1))
    for i, label in enumerate(("input frame", "scene map, new viewpoint")):
        cv2.putText(panel, label, (i * w + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def make_preview(rgb0: np.ndarray, K0: np.ndarray, gaussians, T_cam0_from_cam1: np.ndarray, panel_w: int) -> np.ndarray:
    """(H, 3W, 3) uint8: input | novel view (between the two cameras, turned 5 deg) | depth."""
    import cv2
    import torch

    from noposplat_ros.render import render
    from noposplat_ros.transforms import invert_T, make_T

    h0, w0 = rgb0.shape[:2]
    s = min(1.0, panel_w / w0)
    h, w = int(round(h0 * s)), int(round(w0 * s))
    K = np.asarray(K0, dtype=np.float64).copy()
    K[:2] *= s
    # novel camera: halfway along the baseline, yawed by 5 degrees (a view no input had)
    a = np.radians(5.0)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    T_cam0_from_novel = make_T(R, 0.5 * T_cam0_from_cam1[:3, 3])
    with torch.no_grad():
        out = render(gaussians, K, invert_T(T_cam0_from_novel), h, w)
    novel = (out.rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    depth = out.depth.cpu().numpy().astype(np.float64)
    alpha = out.alpha.cpu().numpy()
    valid = (alpha > 0.5) & (depth > 0)
    depth_vis = np.zeros((h, w, 3), np.uint8)
    if valid.any():
        lo, hi = np.percentile(depth[valid], [2, 98])
        norm = np.clip((depth - lo) / max(hi - lo, 1e-9), 0, 1)
        colored = cv2.applyColorMap((255 * (1 - norm)).astype(np.uint8), cv2.COLORMAP_TURBO)[:, :, ::-1]
        depth_vis[valid] = colored[valid]
    inp = cv2.resize(rgb0, (w, h), interpolation=cv2.INTER_AREA)
    panel = np.concatenate([inp, novel, depth_vis], axis=1)
    for i, label in enumerate(("input (keyframe 0)", "rendered novel view", "rendered depth")):
        cv2.putText(panel, label, (i * w + 8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return panel


def _save_and_view_map(rx, args: argparse.Namespace, out_dir: pathlib.Path, got: dict, spin_until) -> tuple[str, str]:
    """~/save_map (the node writes OUT/map.ply), then map_view.png. Returns (summary line, outputs
    text); ("", "") after printing the reason when it failed."""
    import cv2
    import rclpy
    from std_srvs.srv import Trigger

    from noposplat_ros.io.ply import read_ply
    from noposplat_ros.transforms import translation_quat_xyzw_to_T

    client = rx.create_client(Trigger, f"/{NODE_NAME}/save_map")
    if not spin_until(lambda: client.service_is_ready(), "the node's ~/save_map service"):
        return "", ""
    fut = client.call_async(Trigger.Request())
    if not spin_until(fut.done, "~/save_map to answer"):
        return "", ""
    res = fut.result()
    if not res.success:
        print(f"[demo] ~/save_map failed: {res.message}", file=sys.stderr)
        return "", ""
    map_path = pathlib.Path(res.message)
    g = read_ply(map_path)
    poses = np.stack([translation_quat_xyzw_to_T(*got["tf"][ns]) for ns in sorted(got["tf"])])
    first = sorted(pathlib.Path(args.images).glob("*.png"))[0]
    from noposplat_ros.commands.play import load_calibration

    rgb = cv2.imread(str(first))[:, :, ::-1].copy()
    K = load_calibration(args.calibration, rgb.shape[1], rgb.shape[0]).K
    panel = make_map_view(rgb, K, g, poses, args.preview_width)
    view_path = out_dir / "map_view.png"
    cv2.imwrite(str(view_path), panel[:, :, ::-1])
    pipe = got["diag"][f"{NODE_NAME}: pipeline"]
    line = (f"scene map        : {g.num} Gaussians from {len(poses)} keyframes, {pipe.get('map.submaps', '?')} submap(s), "
            f"{float(pipe.get('map.memory_mib', 'nan')):.1f} MiB, last fusion {1e3 * float(pipe.get('map.fusion_s', 'nan')):.0f} ms")
    return line, f"{map_path}, {view_path}, "


def run(args: argparse.Namespace) -> int:  # noqa: C901 - one linear script
    t_start = time.monotonic()
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("ROS_DOMAIN_ID"):
        # a private domain, so two demos on one machine do not mix; set ROS_DOMAIN_ID to watch in RViz
        os.environ["ROS_DOMAIN_ID"] = str(random.Random().randint(1, 101))
    env = os.environ.copy()
    scene = args.source == "scene" and not (args.images or args.video or args.bag)
    if scene:
        t0 = time.monotonic()
        args.calibration, _ = write_scene_tour(out_dir / "input")
        args.images = str(out_dir / "input")
        print(f"[demo] scene tour: {SCENE_FRAMES} frames rendered to {args.images} in {time.monotonic() - t0:.1f} s",
              flush=True)
    if args.rate is None:
        args.rate = 0.25 if scene else 2.0
    params_file = pathlib.Path(args.params_file) if args.params_file else default_params_file()

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from noposplat_msgs.msg import SplatPair
    from tf2_msgs.msg import TFMessage

    from noposplat_ros.io.ply import write_ply
    from noposplat_ros.outputs.pointcloud import structured_to_gaussians
    from noposplat_ros.ros import conversions as conv
    from noposplat_ros.ros.diagnostics import diagnostics_values
    from noposplat_ros.ros.node import LATCHED_QOS, RELIABLE_QOS
    from noposplat_ros.ros.tf import TF_QOS
    from noposplat_ros.pose.trajectory import write_tum
    from noposplat_ros.transforms import rotation_angle_deg

    rclpy.init(args=[])
    rx = rclpy.create_node("noposplat_demo_receiver")
    got: dict = {"pairs": [], "odom": [], "tf": {}, "diag": None, "diag_time": 0.0}
    rx.create_subscription(SplatPair, f"/{NODE_NAME}/splat_pair", lambda m: got["pairs"].append(m), LATCHED_QOS)
    rx.create_subscription(Odometry, f"/{NODE_NAME}/odometry", lambda m: got["odom"].append(m), RELIABLE_QOS)

    def on_tf(msg: TFMessage) -> None:
        for tr in msg.transforms:
            t, r = tr.transform.translation, tr.transform.rotation
            got["tf"][conv.time_to_ns(tr.header.stamp)] = (np.array([t.x, t.y, t.z]), np.array([r.x, r.y, r.z, r.w]))

    rx.create_subscription(TFMessage, "/tf", on_tf, TF_QOS)

    def on_diag(msg: DiagnosticArray) -> None:
        vals = diagnostics_values(msg)
        if any(name.startswith(NODE_NAME) for name in vals):
            got["diag"], got["diag_time"] = vals, time.monotonic()

    rx.create_subscription(DiagnosticArray, "/diagnostics", on_diag, RELIABLE_QOS)

    node_cmd = _node_command(args, params_file)
    print(f"[demo] ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}; starting the node: {' '.join(node_cmd[1:])}", flush=True)
    node_proc = subprocess.Popen(node_cmd, env=env, stdout=subprocess.DEVNULL if args.quiet_node else None,
                                 stderr=subprocess.STDOUT if args.quiet_node else None)
    player_proc = None
    rc = 1
    try:
        deadline = t_start + args.timeout

        def spin_until(cond, what: str) -> bool:
            while time.monotonic() < deadline:
                rclpy.spin_once(rx, timeout_sec=0.1)
                if cond():
                    return True
                if node_proc.poll() is not None:
                    print(f"[demo] the node exited with code {node_proc.returncode} while waiting for {what}",
                          file=sys.stderr)
                    return False
            print(f"[demo] timed out after {args.timeout:.0f} s waiting for {what}", file=sys.stderr)
            return False

        def node_state() -> str:
            d = got["diag"] or {}
            return d.get(f"{NODE_NAME}: pipeline", {}).get("state", "")

        if not spin_until(lambda: node_state() in ("active", "unconfigured") and got["diag"] and
                          (node_state() == "active" or got["diag"][f"{NODE_NAME}: pipeline"]["_level"] == 2),
                          "the node to become active"):
            return 1
        if node_state() != "active":
            print(f"[demo] the node did not activate: {got['diag'][f'{NODE_NAME}: pipeline']['_message']}",
                  file=sys.stderr)
            return 1
        player_cmd = _player_command(args)
        print(f"[demo] node active; starting the player: {' '.join(player_cmd[1:])}", flush=True)
        player_proc = subprocess.Popen(player_cmd, env=env)
        if not spin_until(lambda: player_proc.poll() is not None, "the player to finish"):
            return 1
        if player_proc.returncode != 0:
            print(f"[demo] the player failed (exit code {player_proc.returncode})", file=sys.stderr)
            return 1
        t_player_done = time.monotonic()

        def node_idle() -> bool:
            d = got["diag"]
            if not d or got["diag_time"] < t_player_done + 0.5:
                return False
            p = d[f"{NODE_NAME}: pipeline"]
            return int(p["pairs_published"]) + int(p["pairs_dropped"]) >= int(p["pairs_selected"]) \
                and len(got["pairs"]) >= min(1, int(p["pairs_selected"]))

        if not spin_until(node_idle, "the node to finish the last pair"):
            return 1
        for _ in range(5):  # drain what is still in flight
            rclpy.spin_once(rx, timeout_sec=0.1)
        diag = got["diag"]
        pipe, inp = diag[f"{NODE_NAME}: pipeline"], diag[f"{NODE_NAME}: input"]
        if not got["pairs"]:
            print(f"[demo] no keyframe pair was made from {inp['frames_in']} frames "
                  f"({pipe['pairs_selected']} pairs selected); try -p keyframe.target_overlap:=0.95", file=sys.stderr)
            return 1
        ok_pairs = [m for m in got["pairs"] if m.status != 2]
        last = (ok_pairs or got["pairs"])[-1]
        if last.status == 2:
            print(f"[demo] every pair failed (LOST); last faults: {inp.get('last_fault.prediction_lost', '')}",
                  file=sys.stderr)
            return 1

        cloud = conv.cloud_msg_to_structured(last.splats)
        gaussians = structured_to_gaussians(np.array(cloud))
        ply_path = out_dir / "splats.ply"
        write_ply(ply_path, gaussians)
        tum_path = out_dir / "trajectory.tum"
        write_tum(tum_path, ((ns, *got["tf"][ns]) for ns in sorted(got["tf"])))

        from noposplat_ros.commands.play import frames_from_args

        stamp0 = conv.time_to_ns(last.stamp0)
        play_args = argparse.Namespace(bag=args.bag, images=args.images, video=args.video,
                                       calibration=args.calibration, rate=args.rate,
                                       bag_image_topic=None, bag_camera_info_topic=None)
        frame0 = next((f for f in frames_from_args(play_args) if f.stamp_ns == stamp0), None)
        tr, ro = last.t_cam0_from_cam1.translation, last.t_cam0_from_cam1.rotation
        from noposplat_ros.transforms import translation_quat_xyzw_to_T

        T_rel = translation_quat_xyzw_to_T(np.array([tr.x, tr.y, tr.z]), np.array([ro.x, ro.y, ro.z, ro.w]))
        preview_path = out_dir / "preview.png"
        t0 = time.perf_counter()
        map_line, map_outputs = "", ""
        if scene:
            map_line, map_outputs = _save_and_view_map(rx, args, out_dir, got, spin_until)
            if not map_line:
                return 1
        elif frame0 is not None:
            import cv2

            panel = make_preview(frame0.rgb, frame0.K, gaussians, T_rel, args.preview_width)
            cv2.imwrite(str(preview_path), panel[:, :, ::-1])
        else:
            print("[demo] keyframe 0's image was not found in the source: preview.png not written", file=sys.stderr)
        t_preview = time.perf_counter() - t0

        scale = {0: "unit_baseline", 1: "chained", 2: "metric"}.get(last.scale_kind, str(last.scale_kind))
        unit = "m" if scale == "metric" else "units"
        t = T_rel[:3, 3]
        lat = {k[len("latency_s."):]: float(v) for k, v in pipe.items() if k.startswith("latency_s.")}
        print("\n=== noposplat_ros demo summary ===")
        print(f"input            : {inp['frames_in']} frames received by the node, {pipe['pairs_selected']} keyframe "
              f"pair(s), {len(got['pairs'])} published ({len(ok_pairs)} with a pose)")
        print(f"backend          : {last.backend}")
        print(f"pose cam0<-cam1  : t = [{t[0]:+.4f} {t[1]:+.4f} {t[2]:+.4f}] {unit} (|t| = {np.linalg.norm(t):.4f}), "
              f"rotation {rotation_angle_deg(T_rel[:3, :3]):.3f} deg, q_xyzw = [{ro.x:+.4f} {ro.y:+.4f} {ro.z:+.4f} {ro.w:+.4f}]")
        print(f"pose quality     : status {['OK', 'DEGRADED', 'LOST'][last.status]}, {last.num_inliers} inliers, "
              f"residual {last.residual_px:.3f} px")
        print(f"scale kind       : {scale}")
        print(f"splats           : {gaussians.num} (sh degree {gaussians.sh_degree}) in frame '{last.header.frame_id}'")
        print("timings (node)   : " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in lat.items()
                                                if k in ("decode_undistort", "keyframe_test", "predict", "cloud",
                                                         "to_messages", "publish", "pair_total")))
        if map_line:
            print(map_line)
        print(f"timings (demo)   : {'map view' if scene else 'preview'} render {t_preview:.2f} s, "
              f"total {time.monotonic() - t_start:.1f} s")
        print(f"outputs          : {map_outputs}{ply_path}, {tum_path} ({len(got['tf'])} poses)"
              + ("" if scene else f", {preview_path if frame0 is not None else '(no preview)'}"))
        rc = 0
        return rc
    finally:
        for proc in (player_proc, node_proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        rx.destroy_node()
        rclpy.try_shutdown()
