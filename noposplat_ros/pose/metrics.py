"""Relative-pose error metrics of the NoPoSplat evaluation (spec §11): geodesic rotation angle,
folded translation-direction angle, pose error = their max, AUC of the recall curve."""
from __future__ import annotations

import numpy as np

from noposplat_ros.transforms import direction_angle_deg, rotation_angle_deg


def rotation_error_deg(T_est: np.ndarray, T_true: np.ndarray) -> float:
    """Geodesic angle between the two rotations, degrees."""
    return rotation_angle_deg(np.asarray(T_est)[:3, :3].T @ np.asarray(T_true)[:3, :3])


def translation_direction_error_deg(T_est: np.ndarray, T_true: np.ndarray) -> float:
    """Angle between translation directions, folded to [0, 90] like the official metric."""
    e = direction_angle_deg(np.asarray(T_est)[:3, 3], np.asarray(T_true)[:3, 3])
    return min(e, 180.0 - e)


def pose_error_deg(T_est: np.ndarray, T_true: np.ndarray) -> float:
    """max(rotation error, translation-direction error), degrees."""
    return max(rotation_error_deg(T_est, T_true), translation_direction_error_deg(T_est, T_true))


def pose_auc(errors_deg: np.ndarray, thresholds_deg=(5.0, 10.0, 20.0)) -> dict[float, float]:
    """Area under the recall-vs-error curve up to each threshold, normalised by the threshold."""
    e = np.sort(np.asarray(errors_deg, dtype=np.float64))
    n = e.size
    recall = np.arange(1, n + 1) / n
    e = np.concatenate([[0.0], e])
    recall = np.concatenate([[0.0], recall])
    out = {}
    for t in thresholds_deg:
        k = int(np.searchsorted(e, t))
        xs = np.concatenate([e[:k], [t]])
        ys = np.concatenate([recall[:k], [recall[k - 1]]])
        out[float(t)] = float(np.trapezoid(ys, xs) / t)
    return out
