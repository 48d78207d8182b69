"""The viewer's core (no browser, no ROS): Gaussians -> display arrays, thinning, camera geometry,
the live scene built from pairs/odometry/map, the push throttle, and the command's bad-input paths."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from noposplat_ros.outputs.pointcloud import gaussians_to_structured
from noposplat_ros.transforms import make_T, quat_xyzw_to_matrix
from noposplat_ros.types import Gaussians, covariances_from_scales_rotations, rgb_to_sh_dc
from noposplat_ros.viewer.live import LayerCache, LiveScene, PairInput, build_display
from noposplat_ros.viewer.scene import SplatArrays, display_score, fov_from_splats, gaussians_to_splats, \
    thin_for_display, trajectory_segments, view_from_pose
from noposplat_ros.viewer.server import Pusher, seconds_until_push


def random_gaussians(n: int, seed: int = 0, depth: float = 3.0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.5 + torch.tensor([0.0, 0.0, depth])
    scales = torch.rand(n, 3, generator=g) * 0.05 + 0.005
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=1)
    opac = torch.rand(n, generator=g) * 0.9 + 0.05
    rgb = torch.rand(n, 3, generator=g)
    sh = torch.zeros(n, 3, 4)
    sh[:, :, 0] = rgb_to_sh_dc(rgb)
    return Gaussians(means, scales, q, opac, sh, covariances_from_scales_rotations(scales, q))


def test_gaussians_to_splats_colour_opacity_and_non_finite():
    g = random_gaussians(50)
    g.means[3, 1] = float("nan")
    s = gaussians_to_splats(g)
    keep = np.ones(50, bool)
    keep[3] = False
    assert s.num == 49 and s.centers.dtype == np.float32 and s.opacities.shape == (49, 1)
    rgb = (0.28209479177387814 * g.harmonics[:, :, 0] + 0.5).numpy()[keep]
    np.testing.assert_allclose(s.rgbs, rgb, atol=1e-6)
    np.testing.assert_allclose(s.opacities[:, 0], g.opacities.numpy()[keep])
    np.testing.assert_allclose(s.covariances, g.covariances.numpy()[keep], atol=1e-7)
    assert s.rgbs.min() >= 0 and s.rgbs.max() <= 1
    assert gaussians_to_splats(g.subset(torch.zeros(50, dtype=torch.bool))).num == 0  # an empty map is no error


def test_thinning_keeps_what_shows_most_and_leaves_data_alone():
    s = gaussians_to_splats(random_gaussians(1000, seed=1))
    before = s.centers.copy()
    t = thin_for_display(s, 100)
    assert t.num == 100 and np.array_equal(s.centers, before)
    score = display_score(s)
    kept = np.isin(s.centers[:, 0], t.centers[:, 0])
    assert score[kept].min() >= score[~kept].max()  # the 100 most visible, none of the rest
    idx = np.flatnonzero(kept)
    np.testing.assert_array_equal(t.centers, s.centers[idx])  # input order kept
    assert thin_for_display(s, 0) is s and thin_for_display(s, 5000) is s


def test_transformed_matches_moving_the_gaussians():
    g = random_gaussians(20, seed=2)
    q = np.array([0.1, -0.3, 0.2, 0.9])
    T = make_T(quat_xyzw_to_matrix(q), np.array([1.0, -2.0, 0.5]))
    moved = gaussians_to_splats(g).transformed(T)
    # rotate each Gaussian's axes: q_world = q_T * q_local; covariance from scales and the new axes
    R = torch.from_numpy(quat_xyzw_to_matrix(q)).float()
    R_local = torch.from_numpy(quat_xyzw_to_matrix(g.rotations_xyzw.double().numpy())).float()
    cov = (R @ R_local) @ torch.diag_embed(g.scales ** 2) @ (R @ R_local).transpose(1, 2)
    np.testing.assert_allclose(moved.covariances, cov.numpy(), atol=1e-6)
    np.testing.assert_allclose(moved.centers, (g.means.double().numpy() @ T[:3, :3].T + T[:3, 3]), atol=1e-5)


def test_view_from_pose_opencv_convention():
    # a camera at (1, 2, 3) rotated 90 deg about y: its +z (forward) is world +x, its +y (down) is world +y
    R = quat_xyzw_to_matrix(np.array([0.0, np.sin(np.pi / 4), 0.0, np.cos(np.pi / 4)]))
    T = make_T(R, np.array([1.0, 2.0, 3.0]))
    K = np.array([[500.0, 0, 320], [0, 400.0, 240], [0, 0, 1]])
    v = view_from_pose(T, K, 480, look_distance=2.0)
    np.testing.assert_allclose(v.position, [1, 2, 3])
    np.testing.assert_allclose(v.look_at, [3, 2, 3], atol=1e-12)
    np.testing.assert_allclose(v.up, [0, -1, 0], atol=1e-12)  # image up is -y of the optical frame
    assert v.fov_rad == pytest.approx(2 * np.arctan(240 / 400))
    with pytest.raises(ValueError):
        view_from_pose(np.eye(3), K, 480)
    np.testing.assert_array_equal(trajectory_segments(np.arange(9.0).reshape(3, 3))[1], [[3, 4, 5], [6, 7, 8]])
    assert trajectory_segments(np.zeros((1, 3))).shape == (0, 2, 3)


def _pair(seed: int, stamp0: int, stamp1: int, T_cam0_from_cam1: np.ndarray, n: int = 30) -> PairInput:
    return PairInput(gaussians_to_structured(random_gaussians(n, seed)), T_cam0_from_cam1, stamp0, stamp1,
                     "OK", "chained", "geometry", 123)


def test_live_scene_places_pairs_in_odom_and_prefers_the_map():
    live = LiveScene()
    step = make_T(np.eye(3), np.array([1.0, 0.0, 0.0]))  # each keyframe one unit to the right
    live.add_pair(_pair(0, 0, 10, step))
    live.add_pose(10, step)  # odometry of camera 1 of pair 1
    live.add_pair(_pair(1, 10, 20, step))
    live.add_pose(20, step @ step)
    live.set_camera(np.array([[400.0, 0, 320], [0, 400.0, 240], [0, 0, 1]]), 480, 640)
    scene = build_display(live, fov_deg=30.0)
    assert scene.map_splats.num == 60 and scene.pair_splats.num == 30
    # the second pair's splats moved by its camera 0's pose (x + 1), the first stay where they are
    second = gaussians_to_splats(random_gaussians(30, 1))
    np.testing.assert_allclose(scene.pair_splats.centers, second.centers + [1, 0, 0], atol=1e-5)
    np.testing.assert_allclose(scene.map_splats.centers[:30], gaussians_to_splats(random_gaussians(30, 0)).centers,
                               atol=1e-6)
    assert len(scene.keyframe_poses) == 3 and np.allclose(scene.keyframe_poses[:, 0, 3], [0, 1, 2])
    assert scene.fov_rad == pytest.approx(2 * np.arctan(240 / 400))  # the frustums have the camera's fov
    assert scene.initial_view.fov_rad == pytest.approx(2 * np.arctan(240 / 400))  # and so has the first view
    no_info = LiveScene()
    no_info.add_pair(_pair(0, 0, 10, step))  # too few splats to tell the camera's fov: the option's
    assert build_display(no_info, fov_deg=50.0).initial_view.fov_rad == pytest.approx(np.deg2rad(50.0))
    assert scene.initial_view is not None and np.allclose(scene.initial_view.position, 0)
    assert "`chained`" in scene.status_markdown and "pairs received**: 2" in scene.status_markdown

    cache = LayerCache()
    first = build_display(live, cache=cache)
    again = build_display(live, cache=cache)
    assert again.map_key == first.map_key and again.pair_key == first.pair_key  # nothing new: nothing to send
    live.set_map(gaussians_to_structured(random_gaussians(7, 5)))
    with_map = build_display(live, map_topic="/n/map", cache=cache)
    assert with_map.map_splats.num == 7 and with_map.map_key != first.map_key and "`/n/map`" in with_map.status_markdown
    live.clear()
    empty = build_display(live)
    assert empty.map_splats.num == 0 and empty.initial_view is None and "none yet" in empty.status_markdown


def test_first_view_has_the_cameras_fov_without_camera_info(motorcycle):
    """camera_info is best effort and volatile: a viewer that discovers the camera late misses it.
    The first view then takes the fov from the first pair's own splats (the real Motorcycle pair
    through the geometry backend), not the 60 deg default that drew them sub-pixel (a blank page);
    a camera_info that arrives after the last pair still changes the view."""
    from noposplat_ros.predictors.geometry import GeometryConfig, GeometryPredictor
    from noposplat_ros.types import KeyframePair

    rec = GeometryPredictor(GeometryConfig(grid_long_side=128)).predict(KeyframePair(motorcycle.left, motorcycle.right))
    K, (h, w) = motorcycle.left.K, motorcycle.left.rgb.shape[:2]
    true_fov, true_aspect = 2 * np.arctan(0.5 * h / K[1, 1]), w / h
    live = LiveScene()
    live.add_pair(PairInput(gaussians_to_structured(rec.gaussians), np.eye(4), 0, 10, "OK", "chained", "geometry"))
    scene = build_display(live, fov_deg=60.0)
    print(f"fov from the splats {np.rad2deg(scene.initial_view.fov_rad):.1f} deg (camera {np.rad2deg(true_fov):.1f}), "
          f"aspect {scene.aspect:.3f} ({true_aspect:.3f})")
    assert scene.initial_view.fov_rad == pytest.approx(true_fov, rel=0.1)
    assert scene.fov_rad == pytest.approx(scene.initial_view.fov_rad)
    assert scene.aspect == pytest.approx(true_aspect, rel=0.1)

    # camera_info: its first arrival (and only a change) is a change to push
    seen = live.version
    live.set_camera(K, h, w)
    assert live.version == seen + 1
    live.set_camera(K.copy(), h, w)
    assert live.version == seen + 1
    assert build_display(live, fov_deg=60.0).initial_view.fov_rad == pytest.approx(true_fov)
    live.set_camera(K * [[2], [2], [1]], h, w)
    assert live.version == seen + 2

    # per-pixel slopes of a known pinhole; a few stray splats do not widen it; nothing in front: None
    rng = np.random.default_rng(0)
    u, v = np.meshgrid(np.arange(320) + 0.5, np.arange(240) + 0.5)
    rays = np.stack([(u.ravel() - 160) / 300.0, (v.ravel() - 120) / 300.0, np.ones(u.size)], axis=-1)
    pts = rays * rng.uniform(1.0, 5.0, (len(rays), 1))
    pts[:50] = rng.normal(0.0, 20.0, (50, 3))
    fov, aspect = fov_from_splats(pts)
    assert fov == pytest.approx(2 * np.arctan(120 / 300), rel=0.02) and aspect == pytest.approx(320 / 240, rel=0.02)
    assert fov_from_splats(pts * [1, 1, -1]) is None and fov_from_splats(pts[:10]) is None


def test_pusher_pushes_latest_only_and_throttles():
    assert seconds_until_push(10.0, 9.5, 1.0) == pytest.approx(0.5) and seconds_until_push(10.0, 5.0, 1.0) == 0.0
    live = LiveScene()
    pushed: list[int] = []

    def push() -> int:
        pushed.append(live.version)
        return pushed[-1]

    pusher = Pusher(live.wait_for_change, push, period_s=0.5).start()
    try:
        for i in range(40):  # a burst of changes
            live.add_pose(i, np.eye(4))
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while (not pushed or pushed[-1] != live.version) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pushed and pushed[-1] == 40  # the last state arrives
        assert len(pushed) < 10  # not one push per change (40 changes in ~0.4 s, period 0.5 s)
        n = len(pushed)
        time.sleep(0.8)
        assert len(pushed) == n  # nothing changed: nothing pushed
    finally:
        pusher.stop()


def _view(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "noposplat_ros.cli", "view", *args], capture_output=True, text=True,
                          timeout=timeout_s)


@pytest.mark.parametrize("content", [None, b"not a ply at all\n", b"ply\nformat ascii 1.0\nelement vertex 1\n"
                                     b"property float x\nend_header\n0\n"])
def test_bad_ply_gives_one_clear_error(tmp_path, content):
    path = tmp_path / "scene.ply"
    if content is not None:
        path.write_bytes(content)
    r = _view(str(path), "--port", "1")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("view: error: ") and "scene.ply" in lines[0], r.stderr
    assert ("no such file" if content is None else "3DGS PLY") in lines[0]


def test_port_in_use_is_an_error_or_the_next_free_port(tmp_path):
    from noposplat_ros.io.ply import write_ply

    ply = tmp_path / "s.ply"
    write_ply(ply, random_gaussians(10))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _view(str(ply), "--port", str(port))
        assert r.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in r.stderr, r.stderr
        proc = subprocess.Popen([sys.executable, "-m", "noposplat_ros.cli", "view", str(ply), "--port", str(port),
                                 "--next-free-port"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 60
            while not any("in a browser" in ln for ln in lines) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            text = "".join(lines)
            assert f"port {port} was in use, serving on " in text, text
            served = int(text.split("serving on ")[1].split()[0])
            assert served != port
            with socket.create_connection(("127.0.0.1", served), timeout=5):
                pass  # something really listens there
        finally:
            proc.terminate()
            proc.wait(20)
        assert proc.returncode == 0  # SIGTERM is a clean stop


def test_view_argument_errors():
    assert _view().returncode == 2
    r = _view("x.ply", "--live")
    assert r.returncode == 2 and "not both" in r.stderr
