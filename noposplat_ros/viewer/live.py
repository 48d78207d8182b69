"""The live viewer's state: what the node sent last, and the display scene built from it (no rclpy).

ROS callbacks only *store* (``LiveScene.set_map`` / ``add_pair`` / ``add_pose`` / ``set_camera``:
a lock and a few assignments, zero-copy views of the message data); the heavy part -- Gaussians from
the cloud, poses into odom, thinning -- runs in ``build_display`` on the pusher thread.

Frames: the map is in odom; a pair's splats are in its camera 0's optical frame and are placed in
odom with camera 0's pose, ``T_odom_from_cam0 = T_odom_from_cam1 @ inv(T_cam0_from_cam1)`` where
``T_odom_from_cam1`` is the node's odometry at the pair's ``stamp1`` (exact when the node's
``base_frame`` is the camera's optical frame, its default).
"""
from __future__ import annotations

import collections
import dataclasses
import threading

import numpy as np

from noposplat_ros.outputs.pointcloud import structured_to_gaussians
from noposplat_ros.viewer.scene import SplatArrays, ViewCamera, empty_splats, fov_from_splats, gaussians_to_splats, \
    median_depth, view_from_pose

DEFAULT_FOV_DEG = 60.0


@dataclasses.dataclass
class PairInput:
    """One SplatPair as the viewer needs it. cloud: (N,) splat schema v1 structured array (cam0 frame)."""

    cloud: np.ndarray
    T_cam0_from_cam1: np.ndarray
    stamp0_ns: int
    stamp1_ns: int
    status: str
    scale_kind: str
    backend: str
    num_inliers: int = 0


@dataclasses.dataclass
class DisplayScene:
    """What the browser shows. Splats and poses in odom.

    map_splats / pair_splats: SplatArrays (not thinned; map_key / pair_key identify their content). keyframe_poses: (M, 4, 4) T_odom_from_cam,
    oldest first. initial_view: the first keyframe's camera, once known. fov_rad, aspect: the input
    camera's vertical field of view and width / height (the first view's fov, the frustums' shape).
    """

    map_splats: SplatArrays
    pair_splats: SplatArrays
    keyframe_poses: np.ndarray
    initial_view: ViewCamera | None
    fov_rad: float
    aspect: float
    status_markdown: str
    version: int
    map_key: tuple = ()  # equal keys: the layer did not change since the last push
    pair_key: tuple = ()


class LiveScene:
    """Thread-safe store of the latest inputs; ``version`` grows with every change."""

    def __init__(self, max_pairs: int = 100) -> None:
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self.version = 0
        self.map_cloud: np.ndarray | None = None
        self.pairs: collections.deque[PairInput] = collections.deque(maxlen=max(int(max_pairs), 1))
        self.poses_by_stamp: dict[int, np.ndarray] = {}
        self.K_px: np.ndarray | None = None
        self.image_hw: tuple[int, int] | None = None
        self.num_pairs_seen = 0

    def _bump(self) -> None:
        self.version += 1
        self.changed.notify_all()

    def set_map(self, cloud: np.ndarray) -> None:
        with self._lock:
            self.map_cloud = cloud
            self._bump()

    def add_pair(self, pair: PairInput) -> None:
        with self._lock:
            self.pairs.append(pair)
            self.num_pairs_seen += 1
            self._bump()

    def add_pose(self, stamp_ns: int, T_odom_from_cam: np.ndarray) -> None:
        with self._lock:
            self.poses_by_stamp[int(stamp_ns)] = np.asarray(T_odom_from_cam, np.float64)
            self._bump()

    def set_camera(self, K_px: np.ndarray, height_px: int, width_px: int) -> None:
        """Intrinsics of the node's input camera (for the view's fov and the frustums' aspect).

        camera_info comes with every frame: only the first one, or other intrinsics, are a change
        (so intrinsics that arrive after the last pair still reach the browser).
        """
        K, hw = np.asarray(K_px, np.float64), (int(height_px), int(width_px))
        with self._lock:
            changed = self.K_px is None or self.image_hw != hw or not np.array_equal(self.K_px, K)
            self.K_px, self.image_hw = K, hw
            if changed:
                self._bump()

    def clear(self) -> None:
        """Forget everything (the node restarted with a new odom frame origin)."""
        with self._lock:
            self.map_cloud = None
            self.pairs.clear()
            self.poses_by_stamp.clear()
            self._bump()

    def snapshot(self) -> tuple[int, np.ndarray | None, list[PairInput], dict[int, np.ndarray],
                                np.ndarray | None, tuple[int, int] | None, int]:
        with self._lock:
            return (self.version, self.map_cloud, list(self.pairs), dict(self.poses_by_stamp),
                    self.K_px, self.image_hw, self.num_pairs_seen)

    def wait_for_change(self, seen_version: int, timeout_s: float) -> int:
        """Block until ``version != seen_version`` or the timeout; returns the current version."""
        with self._lock:
            self.changed.wait_for(lambda: self.version != seen_version, timeout=timeout_s)
            return self.version


def pair_pose_in_odom(pair: PairInput, poses_by_stamp: dict[int, np.ndarray]) -> np.ndarray | None:
    """T_odom_from_cam0 of a pair (4, 4), from the pose at stamp1 (or stamp0); None when neither is known."""
    T1 = poses_by_stamp.get(pair.stamp1_ns)
    if T1 is not None:
        return T1 @ np.linalg.inv(pair.T_cam0_from_cam1)
    return poses_by_stamp.get(pair.stamp0_ns)


class LayerCache:
    """Splats already built from earlier pushes: each pair's (keyed by stamps and placement) and the map's.

    Only the pusher thread touches it, so it needs no lock.
    """

    def __init__(self) -> None:
        self.pairs: dict[tuple, SplatArrays] = {}
        self.map_cloud: np.ndarray | None = None
        self.map_splats: SplatArrays | None = None
        self.fov_key: tuple | None = None  # the pair the fov estimate below came from
        self.fov_aspect: tuple[float, float] | None = None


def _pair_key(pair: PairInput, T_odom_from_cam0: np.ndarray) -> tuple:
    return (pair.stamp0_ns, pair.stamp1_ns, len(pair.cloud), T_odom_from_cam0.tobytes())


def build_display(live: LiveScene, fov_deg: float = DEFAULT_FOV_DEG,
                  map_topic: str = "map", cache: LayerCache | None = None) -> DisplayScene:
    """Snapshot ``live`` and build the display scene (the slow part; runs off the ROS callbacks).

    The map layer is the node's map when one arrived; until then, every pair seen so far (at most
    ``max_pairs`` of ``LiveScene``) placed in odom, so the view grows with the first pairs either way.
    The first view is the first keyframe's pose with the camera's vertical fov (from camera_info, or
    estimated from the first pair's splats until one arrived; ``fov_deg`` before any pair), so the
    first picture is the familiar one. ``cache`` keeps the splats of unchanged layers between pushes.
    """
    cache = cache if cache is not None else LayerCache()
    version, map_cloud, pairs, poses, K, hw, seen = live.snapshot()
    placed: list[tuple[PairInput, np.ndarray]] = []
    for pair in pairs:
        T = pair_pose_in_odom(pair, poses)
        if T is None and not placed:
            T = np.eye(4)  # the first pair defines odom (its camera 0 is the odom origin)
        if T is not None:
            placed.append((pair, T))
    first_pose = placed[0][1] if placed else None
    # per-pair splats in odom (built once per pair and placement); the latest pair is its own layer
    keys = [_pair_key(p, T) for p, T in placed]
    cache.pairs = {k: cache.pairs.get(k) or gaussians_to_splats(structured_to_gaussians(p.cloud)).transformed(T)
                   for k, (p, T) in zip(keys, placed)}
    pair_layers = [cache.pairs[k] for k in keys]
    latest = pair_layers[-1] if pair_layers else empty_splats()
    if map_cloud is not None:
        if cache.map_cloud is not map_cloud:
            cache.map_cloud, cache.map_splats = map_cloud, gaussians_to_splats(structured_to_gaussians(map_cloud))
        map_splats, map_key = cache.map_splats, ("map", id(map_cloud))
        map_source = f"`{map_topic}` ({len(map_cloud):,} splats)"
    else:
        map_splats, map_key = SplatArrays.concat(pair_layers), ("pairs", tuple(keys))
        map_source = f"pairs so far ({map_splats.num:,} splats; no `{map_topic}` received)"

    keyframes = sorted(poses.items())
    if placed:  # the first pair's camera 0 is a keyframe too (odometry only gives camera 1)
        s0 = placed[0][0].stamp0_ns
        if s0 not in poses:
            keyframes = sorted(keyframes + [(s0, placed[0][1])])
    keyframe_poses = np.stack([T for _, T in keyframes]) if keyframes else np.zeros((0, 4, 4))
    if first_pose is None and len(keyframe_poses):
        first_pose = keyframe_poses[0]

    # the camera's own fov: per-pixel splats (about a pixel wide in the input image) then keep their
    # on-screen size; a much wider view draws them sub-pixel, i.e. not at all (a blank page). From
    # camera_info when one arrived; else from the first pair's splats (camera_info is best effort and
    # volatile: a viewer that discovers the camera late misses it, or a short input is over before);
    # ``fov_deg`` only before any pair.
    fov_rad, aspect = float(np.deg2rad(fov_deg)), 4.0 / 3.0
    if K is not None and hw is not None:
        fov_rad, aspect = float(2.0 * np.arctan(0.5 * hw[0] / K[1, 1])), hw[1] / hw[0]
    elif placed:
        if cache.fov_key != keys[0]:
            cloud = placed[0][0].cloud
            cache.fov_key = keys[0]
            cache.fov_aspect = fov_from_splats(np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1))
        if cache.fov_aspect is not None:
            fov_rad, aspect = cache.fov_aspect
    view = None
    if first_pose is not None:
        fy = 0.5 / np.tan(0.5 * fov_rad)
        view = view_from_pose(first_pose, np.diag([fy, fy, 1.0]), 1, median_depth(map_splats, first_pose))

    lines = [f"**map**: {map_source}", f"**keyframes**: {len(keyframe_poses)}", f"**pairs received**: {seen}"]
    if pairs:
        last = pairs[-1]
        lines.append(f"**last pair**: status `{last.status}`, scale `{last.scale_kind}`, backend `{last.backend}`, "
                     f"{len(last.cloud):,} splats, {last.num_inliers} inliers")
    else:
        lines.append("**last pair**: none yet (waiting for the node)")
    return DisplayScene(
        map_splats=map_splats, pair_splats=latest,
        keyframe_poses=keyframe_poses, initial_view=view, fov_rad=fov_rad, aspect=float(aspect),
        status_markdown="  \n".join(lines), version=version,
        map_key=map_key, pair_key=(keys[-1] if keys else None,),
    )
