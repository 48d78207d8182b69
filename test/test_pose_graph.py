"""PoseGraph (GTSAM sliding window): covariance conventions and what the optimiser recovers."""
from __future__ import annotations

import numpy as np
import pytest

from noposplat_ros.pose.pose_graph import PoseGraph, from_tangent_cov, to_tangent_cov
from noposplat_ros.pose.se3 import exp_se3_np
from noposplat_ros.transforms import invert_T


def _chain(n: int, rng) -> list[np.ndarray]:
    Ts = [np.eye(4)]
    for _ in range(n):
        d = exp_se3_np(rng.normal(0, 0.05, 3), rng.normal(0, 0.3, 3))
        Ts.append(Ts[-1] @ d)
    return Ts


def test_covariance_conversion_round_trip_and_axes():
    rng = np.random.default_rng(0)
    T = exp_se3_np(np.array([0.3, -0.2, 0.5]), np.array([1.0, 2.0, 3.0]))
    A = rng.normal(size=(6, 6))
    C = A @ A.T
    np.testing.assert_allclose(from_tangent_cov(to_tangent_cov(C, T), T), C, atol=1e-12)
    # our order is (t, r) in the parent's axes; GTSAM's is (r, t) in the child's: a variance on
    # parent-x translation only becomes a variance along R^T e_x in the tangent's translation block
    C = np.zeros((6, 6))
    C[0, 0] = 4.0
    G = to_tangent_cov(C, T)
    v = T[:3, :3].T[:, 0]
    np.testing.assert_allclose(G[3:, 3:], 4.0 * np.outer(v, v), atol=1e-12)
    np.testing.assert_allclose(G[:3, :3], 0.0, atol=1e-12)


def test_graph_recovers_a_chain_from_noisy_starts_and_a_loop_of_edges():
    rng = np.random.default_rng(1)
    Ts = _chain(12, rng)
    g = PoseGraph(window=50)
    g.add_keyframe(0, Ts[0], np.eye(6) * 1e-12)
    cov = np.diag([1e-6] * 3 + [1e-8] * 3)
    for k in range(1, len(Ts)):
        start = Ts[k] @ exp_se3_np(rng.normal(0, 0.05, 3), rng.normal(0, 0.1, 3))  # a bad initial guess
        g.add_keyframe(k, start)
        g.add_relative(k - 1, k, invert_T(Ts[k - 1]) @ Ts[k], cov)
        if k >= 2:
            g.add_relative(k - 2, k, invert_T(Ts[k - 2]) @ Ts[k], 2 * cov)
        g.optimise()
    for (stamp, T), T_true in zip(g.poses(), Ts):
        np.testing.assert_allclose(T, T_true, atol=1e-6)
    # the marginal of the newest pose is a real covariance that grows along the chain
    c = g.covariance(len(Ts) - 1)
    assert np.all(np.linalg.eigvalsh(c) > 0) and np.trace(c[:3, :3]) > 11 * 1e-6 * 0.5


def test_huber_keeps_one_wrong_edge_from_dragging_the_chain():
    rng = np.random.default_rng(2)
    Ts = _chain(6, rng)
    cov = np.diag([1e-4] * 3 + [1e-6] * 3)
    errs = {}
    for robust in (True, False):
        g = PoseGraph()
        g.add_keyframe(0, Ts[0], np.eye(6) * 1e-12)
        for k in range(1, len(Ts)):
            g.add_keyframe(k, Ts[k])
            g.add_relative(k - 1, k, invert_T(Ts[k - 1]) @ Ts[k], cov, robust=robust)
            if k >= 2:
                meas = invert_T(Ts[k - 2]) @ Ts[k]
                if k == 4:
                    meas = meas.copy()
                    meas[:3, 3] += 1.0  # one wrong edge, 100 sigma off
                g.add_relative(k - 2, k, meas, cov, robust=robust)
        g.optimise()
        errs[robust] = max(np.linalg.norm(g.pose(k)[:3, 3] - Ts[k][:3, 3]) for k in range(len(Ts)))
    assert errs[True] < 0.5 * errs[False], errs


def test_distance_factor_and_bad_input():
    g = PoseGraph(window=2)
    g.add_keyframe(0, np.eye(4), np.eye(6) * 1e-12)
    T1 = np.eye(4)
    T1[0, 3] = 0.5
    g.add_keyframe(1, T1)
    direction_only = np.diag([1e-8, 1.0, 1.0, 1e-8, 1e-8, 1e-8])  # length along x unknown
    g.add_relative(0, 1, T1, np.diag([1.0, 1e-8, 1e-8, 1e-8, 1e-8, 1e-8]))
    g.add_distance(0, 1, 2.0, 0.001)
    g.optimise()
    assert g.pose(1)[0, 3] == pytest.approx(2.0, abs=0.01)  # the distance sets the length
    with pytest.raises(ValueError):
        g.add_distance(0, 1, -1.0, 0.1)
    with pytest.raises(ValueError):
        g.add_relative(0, 5, T1, direction_only)
    with pytest.raises(ValueError):
        PoseGraph(window=1)
    with pytest.raises(ValueError):
        PoseGraph().add_keyframe(0, np.eye(4))  # the first keyframe needs its prior
