"""The scene map (noposplat_ros.mapping) against the general-motion fixture's true depth and poses.

Pairs here are per-pixel Gaussians from each keyframe's true depth with 0.5% multiplicative depth
noise, placed with the true poses: this isolates the map (association, merging, bounds) from pose
and predictor error. Depth error and coverage are measured by projecting the map into every
keyframe and comparing with the fixture's true depth.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from noposplat_ros.fixtures import general_motion as gm
from noposplat_ros.mapping import fusion
from noposplat_ros.mapping.scene_map import MapConfig, SceneMap
from noposplat_ros.render.from_depth import gaussians_from_depth

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HW = (96, 128)
CELL = 4  # coverage is counted on 4x4-px cells


@pytest.fixture(scope="module")
def views():
    """8 keyframes: sideways + forward + pan; (K, [(T_world_from_cam, rgb, depth_m)])."""
    K = gm.camera_K(34.0, HW)
    zc = gm.load_scene().median_depth_m
    poses = [gm.pose(gm.rotation("y", -2.0 * i), np.array([(-0.12 + 0.03 * i) * zc, 0.0, 0.02 * i * zc]))
             for i in range(8)]
    T0_inv = np.linalg.inv(poses[0])
    out = []
    for i, T in enumerate(poses):
        v = gm.render_view(T, K, HW, noise_std=1.0, seed=i)
        out.append((T0_inv @ T, v.rgb, v.depth_m))
    return K, out


def noisy_gaussians(rgb, depth, K, seed, rel=0.005):
    rng = np.random.default_rng(seed)
    return gaussians_from_depth(rgb, depth * (1 + rel * rng.standard_normal(depth.shape)), K)


def build(views, cfg=None):
    K, vs = views
    smap = SceneMap(cfg or MapConfig())
    for i, (T, rgb, depth) in enumerate(vs):
        smap.insert(noisy_gaussians(rgb, depth, K, seed=i), K, HW, stamp_ns=i, T_world_from_cam0=T)
    return smap


def depth_error_and_coverage(g, K, T_world_from_cam, depth_true):
    """(median |z - z_true| / z_true of the map's nearest opaque Gaussian per pixel, covered fraction
    of the 4x4 cells with true depth)."""
    sel = g.opacities >= 0.5
    T_cw = torch.as_tensor(np.linalg.inv(T_world_from_cam), dtype=torch.float32)
    p = g.means[sel] @ T_cw[:3, :3].T + T_cw[:3, 3]
    pix, z = fusion.project(p, torch.as_tensor(K, dtype=torch.float32), HW)
    zb, _ = fusion.zbuffer(pix, z, HW[0] * HW[1])
    zt = torch.as_tensor(depth_true.reshape(-1), dtype=torch.float32)
    both = torch.isfinite(zt) & torch.isfinite(zb)
    err = float(((zb[both] - zt[both]).abs() / zt[both]).median())

    def cells(a):
        return a.reshape(HW[0] // CELL, CELL, HW[1] // CELL, CELL).any((1, 3))

    hit = torch.isfinite(zb).numpy().reshape(HW)
    valid = np.isfinite(depth_true)
    return err, float((cells(hit) & cells(valid)).sum() / cells(valid).sum())


def test_map_depth_and_coverage_against_truth(views):
    K, vs = views
    smap = build(views)
    g = smap.fused()
    assert g.num > 0.5 * HW[0] * HW[1]
    for T, _, depth in vs:
        err, cov = depth_error_and_coverage(g, K, T, depth)
        assert err <= 0.02, err
        assert cov >= 0.80, cov
    # fusion merged the overlapping views instead of stacking them: far fewer than 8 views' worth
    assert g.num < 2.0 * HW[0] * HW[1]


def test_same_pair_twice_and_still_camera_add_almost_nothing(views):
    K, vs = views
    smap = build(views)
    n0 = smap.num_gaussians
    T, rgb, depth = vs[3]
    g = noisy_gaussians(rgb, depth, K, seed=3)
    smap.insert(g, K, HW, stamp_ns=3, T_world_from_cam0=T)
    assert smap.num_gaussians <= 1.02 * n0
    # a still camera: 100 keyframes at one pose, fresh sensor noise each time
    for k in range(100):
        smap.insert(noisy_gaussians(rgb, depth, K, seed=100 + k), K, HW, stamp_ns=100 + k, T_world_from_cam0=T)
    grown = smap.num_gaussians / n0 - 1
    assert grown < 0.02, grown
    assert smap.last_stats.merged > 0.9 * smap.last_stats.offered


def test_cap_holds_and_evicts(views):
    K, vs = views
    cap = 6000  # below one view's Gaussians
    smap = SceneMap(MapConfig(max_gaussians=cap))
    for i, (T, rgb, depth) in enumerate(vs):
        st = smap.insert(noisy_gaussians(rgb, depth, K, seed=i), K, HW, stamp_ns=i, T_world_from_cam0=T)
        assert smap.num_gaussians <= cap and st.total <= cap
        assert smap.fused().num <= cap
    assert smap.fused().num > 0.9 * cap
    assert smap.memory_bytes() < 200 * cap  # storage is sized by the cap, not by what was offered


def test_radius_bounds_the_map(views):
    K, vs = views
    smap = SceneMap(MapConfig(radius_m=2.5))
    T, rgb, depth = vs[0]
    smap.insert(noisy_gaussians(rgb, depth, K, 0), K, HW, stamp_ns=0, T_world_from_cam0=T)
    g = smap.fused()
    d = (g.means - torch.as_tensor(T[:3, 3], dtype=torch.float32)).norm(dim=1)
    assert g.num > 0 and float(d.max()) <= 2.5
    assert float(torch.as_tensor(depth[np.isfinite(depth)]).max()) > 2.5  # the radius did cut something


def test_moving_a_keyframe_moves_its_gaussians(views):
    K, vs = views
    smap = SceneMap(MapConfig())
    for i in (0, 6):  # far apart: keyframe 6 adds Gaussians of its own
        T, rgb, depth = vs[i]
        smap.insert(noisy_gaussians(rgb, depth, K, i), K, HW, stamp_ns=i, T_world_from_cam0=T)
    added_by_6 = smap.last_stats.added
    assert added_by_6 > 100
    before = smap.fused().means.clone()
    shift = np.array([0.2, -0.1, 0.05])
    T6 = vs[6][0].copy()
    T6[:3, 3] += shift
    assert smap.update_poses([(0, vs[0][0]), (6, T6)])
    after = smap.fused().means
    d = after - before
    moved = d.norm(dim=1) > 1e-4
    assert int(moved.sum()) == added_by_6
    assert torch.allclose(d[moved], torch.as_tensor(shift, dtype=torch.float32).expand_as(d[moved]), atol=1e-4)
    assert not smap.update_poses([(6, T6)])  # unchanged pose: nothing to do


def test_lost_gap_starts_a_new_submap(views):
    K, vs = views
    smap = SceneMap(MapConfig())
    T, rgb, depth = vs[2]
    smap.insert(noisy_gaussians(rgb, depth, K, 0), K, HW, stamp_ns=0, T_world_from_cam0=T, segment=0)
    n0 = smap.num_gaussians
    # after a LOST the same place comes back with an unknown pose: its own submap, nothing merged
    st = smap.insert(noisy_gaussians(rgb, depth, K, 1), K, HW, stamp_ns=1, T_world_from_cam0=T, segment=1)
    assert st.merged == 0 and st.added > 0.9 * n0
    assert smap.segments() == [0, 1] and smap.current_segment == 1
    assert smap.fused().num == st.added  # the newest submap
    assert smap.fused(segment=0).num == n0  # the old one, in its own frame, untouched


def test_bad_input_is_refused(views):
    K, vs = views
    T, rgb, depth = vs[0]
    g = noisy_gaussians(rgb, depth, K, 0)
    smap = SceneMap()
    with pytest.raises(ValueError, match="K must be"):
        smap.insert(g, np.zeros((3, 3)), HW, 0, T)
    with pytest.raises(ValueError, match="T_world_from_cam0"):
        smap.insert(g, K, HW, 0, np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="max_gaussians"):
        MapConfig(max_gaussians=0).validate()
    smap.reset()
    assert smap.num_gaussians == 0 and smap.fused().num == 0


def test_non_finite_gaussians_never_enter_the_map(views):
    """Inf/NaN in any coordinate: pruned on the way in (the rest of the pair is fused as usual)."""
    K, vs = views
    T, rgb, depth = vs[0]
    clean = noisy_gaussians(rgb, depth, K, 0)
    g = noisy_gaussians(rgb, depth, K, 0)
    bad = torch.arange(0, g.num, 97)
    values = torch.tensor([float("inf"), -float("inf"), float("nan")])
    for j in range(3):  # x, y, z each get inf, -inf and NaN
        g.means[bad[j::3], j] = values[torch.arange(bad[j::3].numel()) % 3]
    smap, ref = SceneMap(), SceneMap()
    st, st_ref = smap.insert(g, K, HW, 0, T), ref.insert(clean, K, HW, 0, T)
    fused = smap.fused()
    assert torch.isfinite(fused.means).all() and torch.isfinite(fused.covariances).all()
    assert 0 < st.added <= st_ref.added and st.pruned >= bad.numel()
    assert st_ref.added - st.added <= bad.numel()


def test_project_rejects_non_finite_points():
    """insert relies on it: a pixel index >= 0 implies a finite x, y and z."""
    K = torch.tensor([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    inf, nan = float("inf"), float("nan")
    bad = [[inf, 0, 1], [-inf, 0, 1], [nan, 0, 1], [0, inf, 1], [0, -inf, 1], [0, nan, 1], [0, 0, inf],
           [0, 0, nan], [0, 0, -inf], [1e38, 0, 1], [0, 0, -1]]
    pix, _ = fusion.project(torch.tensor(bad + [[0.1, -0.2, 2.0]]), K, HW)
    assert (pix[:-1] == -1).all()
    assert int(pix[-1]) == 38 * HW[1] + 69  # u = 100 * 0.05 + 64, v = 100 * -0.1 + 48
