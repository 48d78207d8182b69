"""SE(3) exponential and the official NoPoSplat pose update, in NumPy (float64) and PyTorch.

Twist order is [rho; omega] (translation part first), matching the spec (§11):
  R = I + sin(t)/t W + (1 - cos t)/t^2 W^2,   V = I + (1 - cos t)/t^2 W + (t - sin t)/t^3 W^2,
  with the series I + W + W^2/2 and I + W/2 + W^2/6 below theta = 1e-5.
The update is ``w2c_new = Exp([rho; omega]) @ w2c`` (left multiplication on the world-to-camera matrix).
Hand-written because no library here offers an SE(3) exponential with these exact small-angle branches.
"""
from __future__ import annotations

import numpy as np
import torch

SMALL_ANGLE_RAD = 1e-5


def hat_np(w: np.ndarray) -> np.ndarray:
    """(3,) -> (3, 3) skew-symmetric matrix."""
    x, y, z = np.asarray(w, dtype=np.float64).reshape(3)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def exp_se3_np(rho: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """SE(3) exponential: translation twist rho (3,), rotation vector omega (3,) -> (4, 4) float64."""
    rho = np.asarray(rho, dtype=np.float64).reshape(3)
    W = hat_np(omega)
    W2 = W @ W
    theta = float(np.linalg.norm(np.asarray(omega, dtype=np.float64)))
    I = np.eye(3)
    if theta < SMALL_ANGLE_RAD:
        R = I + W + 0.5 * W2
        V = I + 0.5 * W + W2 / 6.0
    else:
        R = I + np.sin(theta) / theta * W + (1.0 - np.cos(theta)) / theta**2 * W2
        V = I + (1.0 - np.cos(theta)) / theta**2 * W + (theta - np.sin(theta)) / theta**3 * W2
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = V @ rho
    return T


def perturbed_pose_np(T: np.ndarray, rot_deg: float, trans_frac: float, rng: np.random.Generator) -> np.ndarray:
    """A start pose for refinement tests and benchmarks: T (4, 4) with its rotation turned by
    ``rot_deg`` about a random axis and its translation moved by ``trans_frac * |t|`` perpendicular
    to t (so the baseline length stays about the same)."""
    ax = rng.normal(size=3)
    ax /= np.linalg.norm(ax)
    t = T[:3, 3]
    dt = rng.normal(size=3)
    dt -= (dt @ t) / (t @ t) * t
    dt *= trans_frac * np.linalg.norm(t) / np.linalg.norm(dt)
    out = T.copy()
    out[:3, :3] = exp_se3_np(np.zeros(3), ax * np.radians(rot_deg))[:3, :3] @ T[:3, :3]
    out[:3, 3] = t + dt
    return out


def so3_log_np(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (3,) rotation vector (angle < pi)."""
    R = np.asarray(R, dtype=np.float64)
    c = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    theta = float(np.arccos(c))
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if theta < 1e-8:
        return 0.5 * v
    return theta / (2.0 * np.sin(theta)) * v


def official_update_np(w2c: np.ndarray, trans_delta: np.ndarray, rot_delta: np.ndarray) -> np.ndarray:
    """Official refinement step: ``Exp([trans_delta; rot_delta]) @ w2c`` -> (4, 4) float64."""
    return exp_se3_np(trans_delta, rot_delta) @ np.asarray(w2c, dtype=np.float64)


def official_update_c2w_np(c2w: np.ndarray, trans_delta: np.ndarray, rot_delta: np.ndarray) -> np.ndarray:
    """Same update expressed on camera-to-world matrices: c2w_new = inv(Exp(tau) @ inv(c2w))."""
    w2c = np.linalg.inv(np.asarray(c2w, dtype=np.float64))
    return np.linalg.inv(official_update_np(w2c, trans_delta, rot_delta))


def hat_torch(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) skew-symmetric matrices (differentiable)."""
    x, y, z = w.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(w.shape[:-1] + (3, 3))


def exp_se3_torch(rho: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """Differentiable SE(3) exponential: rho (3,), omega (3,) -> (4, 4), dtype of the inputs.

    Gradients are finite at omega = 0 (the refinement differentiates exactly there): theta is computed
    from a guarded square root, and the series branch is selected with torch.where.
    """
    W = hat_torch(omega)
    W2 = W @ W
    theta2 = (omega * omega).sum()
    small = theta2 < SMALL_ANGLE_RAD**2
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    I = torch.eye(3, dtype=omega.dtype, device=omega.device)
    a = torch.where(small, torch.ones_like(theta), torch.sin(theta) / theta)
    b = torch.where(small, torch.full_like(theta, 0.5), (1.0 - torch.cos(theta)) / (theta * theta))
    c = torch.where(small, torch.full_like(theta, 1.0 / 6.0), (theta - torch.sin(theta)) / (theta * theta * theta))
    R = I + a * W + b * W2
    V = I + b * W + c * W2
    t = V @ rho
    top = torch.cat([R, t[:, None]], dim=1)
    bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=omega.dtype, device=omega.device)
    return torch.cat([top, bottom], dim=0)


def official_update_torch(w2c: torch.Tensor, trans_delta: torch.Tensor, rot_delta: torch.Tensor) -> torch.Tensor:
    """Differentiable official update ``Exp([trans_delta; rot_delta]) @ w2c`` (4, 4)."""
    return exp_se3_torch(trans_delta, rot_delta) @ w2c
