"""Refinement on a self-consistent synthetic scene (the target is rendered from the same Gaussians,
so the true pose is the exact optimum): every method and Jacobian mode must return to it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from noposplat_ros.ingest.camera_model import scale_intrinsics
from noposplat_ros.pose.metrics import rotation_error_deg
from noposplat_ros.pose.refine import RefineConfig, refine_pose, ssim_structure
from noposplat_ros.pose.se3 import exp_se3_np
from noposplat_ros.render import render
from noposplat_ros.render.from_depth import gaussians_from_depth


# small renders: single-threaded torch (see conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W = 48, 64
K = np.array([[40.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1]])


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    # A textured, slanted, bumpy surface seen from camera 0.
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    z = 2.0 + 3.0 * u / W + 1.0 * (v > H // 2) + 0.3 * np.sin(u / 7.0) * np.cos(v / 5.0)
    tex = np.stack([np.sin(u / 3.0 + c) * np.cos(v / 4.0 - c) for c in range(3)], -1) * 0.4 + 0.5
    tex = np.clip(tex + 0.05 * rng.standard_normal(tex.shape), 0, 1)
    gs = gaussians_from_depth(tex, z, K, footprint_px=0.6, opacity=0.98)
    T_true = np.eye(4)
    T_true[:3, :3] = exp_se3_np(np.zeros(3), [0.01, -0.03, 0.005])[:3, :3]
    T_true[:3, 3] = [0.3, 0.02, 0.05]
    with torch.no_grad():
        img = render(gs, K, torch.as_tensor(np.linalg.inv(T_true)), H, W).rgb
    T0 = T_true.copy()
    T0[:3, :3] = exp_se3_np(np.zeros(3), np.radians(1.0) * np.array([0.6, -0.8, 0.0]))[:3, :3] @ T_true[:3, :3]
    T0[:3, 3] += [0.0, 0.03, -0.02]
    return gs, img, T_true, T0


@pytest.mark.parametrize(
    "cfg",
    [
        RefineConfig(levels=(2, 1), adam_steps_per_level=15),  # hybrid (default levels suit 256 px images)
        RefineConfig(method="lm", levels=(2, 1), steps_per_level=4, jacobian="forward"),
        RefineConfig(method="lm", levels=(2, 1), steps_per_level=4, jacobian="central"),
        RefineConfig(method="adam", levels=(2, 1), adam_steps_per_level=30, adam_lr=0.01),
    ],
    ids=["hybrid", "lm-forward", "lm-central", "adam"],
)
def test_refinement_returns_to_the_true_pose(scene, cfg):
    gs, img, T_true, T0 = scene
    e0 = rotation_error_deg(T0, T_true)
    T, info = refine_pose(gs, img, K, T0, cfg)
    e = rotation_error_deg(T, T_true)
    assert e < 0.25 * e0, (e0, e, info.levels)
    assert info.final_loss < info.initial_loss
    assert T.dtype == np.float64 and T.shape == (4, 4)


def test_forward_and_central_jacobians_agree(scene):
    gs, img, T_true, T0 = scene
    a, _ = refine_pose(gs, img, K, T0, RefineConfig(method="lm", levels=(2,), steps_per_level=1, jacobian="forward"))
    b, _ = refine_pose(gs, img, K, T0, RefineConfig(method="lm", levels=(2,), steps_per_level=1, jacobian="central"))
    step = np.abs(a - T0).max()
    assert step > 1e-3  # it did move
    # Forward mode differentiates the smooth part; central differences over 0.3 px also see the
    # renderer's small discontinuities: close, not identical.
    assert np.abs(a - b).max() < 0.25 * step, (np.abs(a - b).max(), step)


def test_config_validation_and_helpers():
    with pytest.raises(ValueError):
        RefineConfig(method="sgd")
    with pytest.raises(ValueError):
        RefineConfig(levels=(0,))
    with pytest.raises(ValueError):
        RefineConfig(levels=(4, 2), level_methods=("adam",))
    with pytest.raises(ValueError):
        RefineConfig(jacobian="numeric")
    # Pixel-centre convention of the pyramid: halving a 4-px-wide image maps u = 1.5 -> u' = 0.5.
    Ks = scale_intrinsics(np.array([[10.0, 0, 1.5], [0, 10.0, 1.5], [0, 0, 1]]), 0.5, 0.5)
    assert Ks[0, 2] == pytest.approx(0.5) and Ks[0, 0] == pytest.approx(5.0)
    x = torch.rand(20, 20, 3, generator=torch.Generator().manual_seed(0))
    assert float(ssim_structure(x, x)) == pytest.approx(0.98, abs=1e-6)  # identical images hit the clamp
    assert float(ssim_structure(x, 1 - x)) < 0.0
