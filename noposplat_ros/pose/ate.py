"""Absolute trajectory error of camera centres after a similarity alignment (Umeyama), no rclpy.

The alignment is scikit-image's ``SimilarityTransform.from_estimate`` (Umeyama's least squares);
only the bookkeeping around it is ours.
"""
from __future__ import annotations

import numpy as np
from skimage.transform import SimilarityTransform


def ate_similarity(centres_est: np.ndarray, centres_true: np.ndarray) -> tuple[float, np.ndarray]:
    """(N, 3) estimated and true camera centres (same order) -> (RMS of the residual distances after
    the best similarity est -> true, in the true units; (N, 3) aligned estimates). N >= 3."""
    est = np.asarray(centres_est, dtype=np.float64)
    tru = np.asarray(centres_true, dtype=np.float64)
    if est.shape != tru.shape or est.ndim != 2 or est.shape[1] != 3 or est.shape[0] < 3:
        raise ValueError(f"need two (N >= 3, 3) arrays of centres, got {est.shape} and {tru.shape}")
    tf = SimilarityTransform.from_estimate(est, tru)
    if not tf:
        raise ValueError(f"similarity alignment failed: {tf}")
    aligned = tf(est)
    return float(np.sqrt(np.mean(np.sum((aligned - tru) ** 2, axis=1)))), aligned
