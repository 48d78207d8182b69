"""Rigid-transform helpers on NumPy (float64): quaternions (x, y, z, w) <-> matrices.

Hand-written because the alternatives here are heavy (scipy is not a dependency) and these few
formulas are needed on hot paths of both shells (tf, odometry, bags).
"""
from __future__ import annotations

import numpy as np


def quat_xyzw_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """(4,) or (N, 4) quaternion (x, y, z, w), any norm -> (3, 3) or (N, 3, 3) rotation."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    R = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )
    return R.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (4,) unit quaternion (x, y, z, w) with w >= 0 (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = [0.0, 0.0, 0.0, (R[k, j] - R[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(3, 3) rotation + (3,) translation -> (4, 4) homogeneous transform."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_T(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform: T_b_from_a from T_a_from_b."""
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def T_to_translation_quat_xyzw(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) -> ((3,) translation, (4,) quaternion xyzw)."""
    return np.asarray(T[:3, 3], dtype=np.float64).copy(), matrix_to_quat_xyzw(T[:3, :3])


def translation_quat_xyzw_to_T(t: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    return make_T(quat_xyzw_to_matrix(q_xyzw), t)


def is_rigid(T: np.ndarray, atol: float = 1e-6) -> bool:
    """True if T is a finite (4, 4) rigid transform (orthonormal R, det +1, last row 0 0 0 1)."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    return (
        np.allclose(R @ R.T, np.eye(3), atol=atol)
        and abs(np.linalg.det(R) - 1.0) < atol
        and np.allclose(T[3], [0, 0, 0, 1], atol=atol)
    )


def rotation_angle_deg(R: np.ndarray) -> float:
    """Geodesic angle of a (3, 3) rotation in degrees."""
    c = (np.trace(R) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def direction_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle in degrees between two 3-vectors' directions."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    c = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))
