"""`noposplat-ros play`: publish images + camera_info from a file source (a camera stand-in).

Sources: the bundled Motorcycle pair (default), a folder of images + a calibration file, a video
file + a calibration file, or a rosbag2 bag (decoded and undistorted with the shared modules, then
re-published as rgb8 with pinhole camera_info). Topics are relative (`image`, `camera_info`, or
`image/compressed` with --compressed) so `--ros-args -r image:=/cam/image_raw` remaps them.

The player waits until the topics have subscribers before it publishes (DDS discovery takes a
moment), publishes each frame's camera_info just before its image, and stamps frames with the
source's stamps (or the wall clock with --restamp).
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time
from typing import Iterator

import numpy as np

HELP = "Publish images + camera_info (Motorcycle pair, image folder, video or bag) over ROS 2"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_STAMP0_NS = 1_700_000_000_000_000_000


@dataclasses.dataclass
class PlayFrame:
    """One frame to publish. rgb: (H, W, 3) uint8; K: (3, 3) px; d: distortion (plumb_bob etc.)."""

    rgb: np.ndarray
    K: np.ndarray
    stamp_ns: int
    d: np.ndarray | None = None
    distortion_model: str = "plumb_bob"
    T_odom_from_cam: np.ndarray | None = None  # (4, 4) true camera pose, when the source knows it


@dataclasses.dataclass
class Calibration:
    K: np.ndarray
    d: np.ndarray | None = None
    distortion_model: str = "plumb_bob"


def load_calibration(path: str | pathlib.Path, width: int, height: int) -> Calibration:
    """Intrinsics (and distortion, when the file has a full calibration) for width x height images.

    Files: see ``noposplat_ros.io.intrinsics_file`` (camera_info YAML, CameraInfo dump, fx/fy/cx/cy).
    """
    from noposplat_ros.ingest.camera_model import CameraInfoError
    from noposplat_ros.io.intrinsics_file import IntrinsicsFileError, load_intrinsics

    try:
        intr = load_intrinsics([path])[0]
        if intr.camera is None:
            return Calibration(np.asarray(intr.K_px, dtype=np.float64))
        cam = intr.camera
        return Calibration(cam.K_raw_for_image(height, width), np.asarray(cam.d, dtype=np.float64),
                           cam.distortion_model)
    except (IntrinsicsFileError, CameraInfoError) as exc:
        raise SystemExit(f"play: calibration {path}: {exc}") from exc


def motorcycle_frames() -> list[PlayFrame]:
    """The two views of the Middlebury Motorcycle pair with their own intrinsics (cx differs)."""
    from noposplat_ros.fixtures.motorcycle import load_motorcycle

    gt = load_motorcycle()
    return [PlayFrame(gt.left.rgb, gt.left.K, gt.left.stamp_ns, T_odom_from_cam=np.eye(4)),
            PlayFrame(gt.right.rgb, gt.right.K, gt.right.stamp_ns, T_odom_from_cam=gt.T_cam0_from_cam1)]


def folder_frames(folder: str | pathlib.Path, calibration: str, rate_hz: float) -> Iterator[PlayFrame]:
    import cv2

    paths = sorted(p for p in pathlib.Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"play: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    calib = None
    for i, p in enumerate(paths):
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"play: cannot read image {p}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if calib is None:
            calib = load_calibration(calibration, rgb.shape[1], rgb.shape[0])
        yield PlayFrame(rgb, calib.K, DEFAULT_STAMP0_NS + int(i * 1e9 / rate_hz), calib.d, calib.distortion_model)


def video_frames(path: str, calibration: str, rate_hz: float | None) -> Iterator[PlayFrame]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"play: cannot open video {path}")
    fps = rate_hz or cap.get(cv2.CAP_PROP_FPS) or 30.0
    calib = None
    i = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if calib is None:
                calib = load_calibration(calibration, rgb.shape[1], rgb.shape[0])
            yield PlayFrame(rgb, calib.K, DEFAULT_STAMP0_NS + int(i * 1e9 / fps), calib.d, calib.distortion_model)
            i += 1
    finally:
        cap.release()
    if i == 0:
        raise SystemExit(f"play: no frames could be read from {path}")


def bag_frames(path: str, image_topic: str | None, camera_info_topic: str | None) -> Iterator[PlayFrame]:
    from noposplat_ros.io.bag_io import FrameSource, InputBag, Rejected, select_topics

    with InputBag(path) as bag:
        topics = select_topics(bag.topics(), image_topic, camera_info_topic)
        src = FrameSource()
        for topic, _, msg in bag.messages([topics.image, topics.camera_info]):
            if topic == topics.camera_info:
                src.camera_info(msg)
                continue
            out = src.image(msg, topics.image_type)
            if isinstance(out, Rejected):
                print(f"play: skipping image at {out.stamp_ns}: {out.kind}: {out.message}", file=sys.stderr)
                continue
            yield PlayFrame(out.rgb, out.K, out.stamp_ns)


def frames_from_args(args: argparse.Namespace) -> Iterator[PlayFrame]:
    if args.bag:
        return bag_frames(args.bag, args.bag_image_topic, args.bag_camera_info_topic)
    if args.images:
        if not args.calibration:
            raise SystemExit("play: --images needs --calibration FILE")
        return folder_frames(args.images, args.calibration, args.rate)
    if args.video:
        if not args.calibration:
            raise SystemExit("play: --video needs --calibration FILE")
        return video_frames(args.video, args.calibration, args.rate)
    return iter(motorcycle_frames())


def _odometry_msg(T_odom_from_cam: np.ndarray, stamp_ns: int, frame_id: str):
    from nav_msgs.msg import Odometry

    from noposplat_ros.ros.conversions import ns_to_time
    from noposplat_ros.transforms import T_to_translation_quat_xyzw

    t, q = T_to_translation_quat_xyzw(T_odom_from_cam)
    msg = Odometry()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = ns_to_time(stamp_ns), "odom", frame_id
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    p.x, p.y, p.z = (float(v) for v in t)
    o.x, o.y, o.z, o.w = (float(v) for v in q)
    return msg


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", metavar="DIR", help="folder of images (sorted by name)")
    src.add_argument("--video", metavar="FILE", help="video file (anything OpenCV reads)")
    src.add_argument("--bag", metavar="PATH", help="rosbag2 directory (image + camera_info topics)")
    p.add_argument("--calibration", metavar="FILE", help="intrinsics file for --images/--video")
    p.add_argument("--bag-image-topic", help="image topic in --bag (default: the only one)")
    p.add_argument("--bag-camera-info-topic", help="camera_info topic in --bag (default: guessed)")
    p.add_argument("--rate", type=float, default=2.0, help="frames per second to publish (default 2)")
    p.add_argument("--repeat", type=int, default=1, help="play the source this many times (stamps keep increasing)")
    p.add_argument("--frame-id", default="camera_optical_frame", help="header.frame_id (the optical frame)")
    p.add_argument("--compressed", action="store_true", help="publish sensor_msgs/CompressedImage (PNG) on image/compressed")
    p.add_argument("--odometry", metavar="TOPIC", help="also publish the true camera poses (nav_msgs/Odometry, "
                   "odom -> the camera frame) on TOPIC, like a robot's odometry; only sources that know "
                   "them (the Motorcycle rig)")
    p.add_argument("--restamp", action="store_true", help="stamp with the wall clock instead of the source stamps")
    p.add_argument("--wait-subscribers", type=float, default=30.0, metavar="S",
                   help="wait up to S seconds for a subscriber on both topics before publishing (0: don't wait)")
    p.add_argument("--linger", type=float, default=1.0, metavar="S", help="keep the process up S seconds after the last frame")
    p.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=None,
                   help="everything after it goes to ROS (e.g. --ros-args -r image:=/cam/image_raw); last argument")


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from noposplat_ros.ros import conversions as conv
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    frames = list(frames_from_args(args))
    if not frames:
        print("play: the source has no frames", file=sys.stderr)
        return 1
    rclpy.init(args=["play"] + (["--ros-args", *args.ros_args] if args.ros_args is not None else []))
    node = rclpy.create_node("noposplat_player")
    # Reliable publisher: matches both best-effort (sensor-data) and reliable subscribers.
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    if args.compressed:
        img_pub = node.create_publisher(CompressedImage, "image/compressed", qos)
    else:
        img_pub = node.create_publisher(Image, "image", qos)
    info_pub = node.create_publisher(CameraInfo, "camera_info", qos)
    odom_pub = None
    if args.odometry:
        if any(f.T_odom_from_cam is None for f in frames):
            print("play: --odometry needs a source with known camera poses (the Motorcycle pair)", file=sys.stderr)
            rclpy.try_shutdown()
            return 2
        from nav_msgs.msg import Odometry

        odom_pub = node.create_publisher(Odometry, args.odometry, qos)
    log = node.get_logger()
    try:
        if args.wait_subscribers > 0:
            deadline = time.monotonic() + args.wait_subscribers
            pubs = [img_pub, info_pub] + ([odom_pub] if odom_pub is not None else [])
            while any(p.get_subscription_count() < 1 for p in pubs) and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.05)
            if img_pub.get_subscription_count() < 1:
                log.error(f"no subscriber on {img_pub.topic_name} after {args.wait_subscribers:.0f} s; publishing anyway")
            else:
                time.sleep(0.3)  # let the reverse discovery settle too
        period = 1.0 / max(args.rate, 1e-3)
        span_ns = (frames[-1].stamp_ns - frames[0].stamp_ns) + int(period * 1e9)
        n = 0
        for rep in range(max(args.repeat, 1)):
            for f in frames:
                t0 = time.monotonic()
                stamp = node.get_clock().now().nanoseconds if args.restamp else f.stamp_ns + rep * span_ns
                h, w = f.rgb.shape[:2]
                if odom_pub is not None:
                    odom_pub.publish(_odometry_msg(f.T_odom_from_cam, stamp, args.frame_id))
                info_pub.publish(conv.camera_info_msg(f.K, w, h, stamp, args.frame_id, f.d, f.distortion_model))
                time.sleep(0.01)  # camera_info first, so the node has it when the image arrives
                if args.compressed:
                    import cv2

                    ok, buf = cv2.imencode(".png", f.rgb[:, :, ::-1])
                    msg = CompressedImage(format="rgb8; png compressed bgr8", data=buf.tobytes())
                    msg.header.stamp, msg.header.frame_id = conv.ns_to_time(stamp), args.frame_id
                    img_pub.publish(msg)
                else:
                    img_pub.publish(conv.rgb_to_image_msg(f.rgb, stamp, args.frame_id))
                n += 1
                rclpy.spin_once(node, timeout_sec=0.0)
                time.sleep(max(0.0, period - (time.monotonic() - t0)))
        log.info(f"published {n} frames")
        img_pub.wait_for_all_acked(rclpy.duration.Duration(seconds=5.0))
        time.sleep(max(args.linger, 0.0))
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
