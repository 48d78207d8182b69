"""Pose error metrics and the AUC of the NoPoSplat evaluation."""
from __future__ import annotations

import numpy as np
import pytest

from noposplat_ros.pose.metrics import pose_auc, pose_error_deg, rotation_error_deg, translation_direction_error_deg
from noposplat_ros.pose.se3 import exp_se3_np


def test_errors_of_known_perturbations():
    T = np.eye(4)
    T[:3, 3] = [1.0, 0, 0]
    R = exp_se3_np(np.zeros(3), np.radians([0, 0, 4.0]))
    T2 = T.copy()
    T2[:3, :3] = R[:3, :3]
    T2[:3, 3] = [np.cos(np.radians(7)), np.sin(np.radians(7)), 0]
    assert rotation_error_deg(T2, T) == pytest.approx(4.0)
    assert translation_direction_error_deg(T2, T) == pytest.approx(7.0)
    assert pose_error_deg(T2, T) == pytest.approx(7.0)
    T3 = T.copy()
    T3[:3, 3] = [-1.0, 0.0, 0.0]  # opposite direction folds to 0
    assert translation_direction_error_deg(T3, T) == pytest.approx(0.0, abs=1e-6)


def test_auc():
    assert pose_auc(np.zeros(10))[5.0] == pytest.approx(1.0)
    assert pose_auc(np.full(10, 30.0))[20.0] == pytest.approx(0.0)
    # Uniform errors on [0, 10]: recall(e) = e / 10; AUC@10 = 0.5, AUC@20 = (5 + 10) / 20 = 0.75.
    e = np.linspace(0, 10, 100001)[1:]
    auc = pose_auc(e, (10.0, 20.0))
    assert auc[10.0] == pytest.approx(0.5, abs=1e-3)
    assert auc[20.0] == pytest.approx(0.75, abs=1e-3)
