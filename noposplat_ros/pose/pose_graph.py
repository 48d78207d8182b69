"""A small pose graph over recent keyframes: GTSAM Levenberg-Marquardt on a sliding window (no rclpy).

Variables: keyframe poses ``T_world_from_cam`` (GTSAM ``Pose3``), one key per keyframe in the order
added. Factors: a prior on the window's first pose, relative poses between keyframes
(``BetweenFactorPose3`` with a Huber loss, so one bad edge cannot drag the window), and camera-centre
distances from odometry (``RangeFactorPose3``).

Bounded cost: each ``optimise()`` solves only the last ``window`` keyframes. The oldest pose of the
window is held by a prior at its current estimate with its last marginal covariance; factors that
reach further back are dropped (a marginalisation that ignores cross-correlations: simple and
bounded, slightly over-confident about what left the window). Older poses stay frozen.

Covariance conventions (see docs/libraries.md):
- ours (PoseEstimate, TrajectoryStep): (tx, ty, tz, rx, ry, rz), translation and small rotation in
  the *parent* frame's axes (camera 0 for a relative pose, world for a world pose);
- GTSAM's ``Pose3`` tangent: (rx, ry, rz, tx, ty, tz), right perturbation in the *child* frame:
  T' = T Exp(xi). With T' = (Exp(dtheta) R, t + dt): omega = R^T dtheta, v = R^T dt.
  :func:`to_tangent_cov` / :func:`from_tangent_cov` convert.
"""
from __future__ import annotations

import dataclasses

import gtsam
import numpy as np

_MIN_VAR = 1e-12  # keeps a degenerate covariance invertible


def _perm_rot(T: np.ndarray) -> np.ndarray:
    """(6, 6) M with xi_tangent = M @ [dt; dtheta] for pose T (see module docstring)."""
    Rt = np.asarray(T, dtype=np.float64)[:3, :3].T
    M = np.zeros((6, 6))
    M[:3, 3:] = Rt
    M[3:, :3] = Rt
    return M


def to_tangent_cov(cov_ours: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(6, 6) covariance in our order/parent axes for pose T -> GTSAM tangent order/child axes."""
    M = _perm_rot(T)
    out = M @ np.asarray(cov_ours, dtype=np.float64) @ M.T
    return 0.5 * (out + out.T)


def from_tangent_cov(cov_tangent: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_tangent_cov`."""
    M = _perm_rot(T)
    out = M.T @ np.asarray(cov_tangent, dtype=np.float64) @ M  # M is orthogonal
    return 0.5 * (out + out.T)


def _noise(cov_tangent: np.ndarray) -> gtsam.noiseModel.Base:
    c = 0.5 * (cov_tangent + cov_tangent.T)
    w, V = np.linalg.eigh(c)
    c = (V * np.maximum(w, _MIN_VAR)) @ V.T  # clip: GTSAM needs positive definite
    return gtsam.noiseModel.Gaussian.Covariance(c)


@dataclasses.dataclass
class _Factor:
    kind: str  # "between" | "range"
    a: int
    b: int
    measured: object  # Pose3 or float
    noise: gtsam.noiseModel.Base


class PoseGraph:
    """Sliding-window pose graph (see module docstring). Not thread-safe.

    window: keyframes optimised per update (>= 2). huber_k: Huber threshold in standard deviations.
    """

    def __init__(self, window: int = 50, huber_k: float = 1.345) -> None:
        if int(window) < 2:
            raise ValueError(f"pose graph window must be >= 2 keyframes, got {window}")
        if not huber_k > 0:
            raise ValueError(f"huber_k must be > 0, got {huber_k}")
        self.window = int(window)
        self.huber_k = float(huber_k)
        self._T: list[np.ndarray] = []  # current estimates, (4, 4) T_world_from_cam
        self._cov_tangent: list[np.ndarray] = []  # last marginal per key, GTSAM order
        self._stamps: list[int] = []
        self._factors: list[_Factor] = []
        self._prior: tuple[np.ndarray, np.ndarray] | None = None  # (T, cov_tangent) of key 0

    def __len__(self) -> int:
        return len(self._T)

    # ------------------------------------------------------------------ building
    def add_keyframe(self, stamp_ns: int, T_world_from_cam: np.ndarray,
                     prior_cov_ours: np.ndarray | None = None) -> int:
        """New variable at an initial guess; the first needs ``prior_cov_ours`` (its anchor). Returns its key."""
        T = np.asarray(T_world_from_cam, dtype=np.float64).copy()
        if not self._T:
            if prior_cov_ours is None:
                raise ValueError("the first keyframe of a pose graph needs a prior covariance")
            self._prior = (T.copy(), to_tangent_cov(prior_cov_ours, T))
            self._cov_tangent.append(self._prior[1])
        else:
            self._cov_tangent.append(np.eye(6) * 1e6)
        self._T.append(T)
        self._stamps.append(int(stamp_ns))
        return len(self._T) - 1

    def add_relative(self, a: int, b: int, T_a_from_b: np.ndarray, cov: np.ndarray, robust: bool = True,
                     tangent: bool = False) -> None:
        """Measured T_a_from_b with its (6, 6) covariance: in our order (parent = a's axes), or in
        GTSAM's tangent order of T_a_from_b when ``tangent``. Huber-robust unless ``robust=False``."""
        self._check_keys(a, b)
        T = np.asarray(T_a_from_b, dtype=np.float64)
        noise = _noise(np.asarray(cov, dtype=np.float64) if tangent else to_tangent_cov(cov, T))
        if robust:
            noise = gtsam.noiseModel.Robust.Create(gtsam.noiseModel.mEstimator.Huber.Create(self.huber_k), noise)
        self._factors.append(_Factor("between", a, b, gtsam.Pose3(T), noise))

    def add_distance(self, a: int, b: int, distance: float, sigma: float) -> None:
        """Camera centres of a and b are ``distance`` apart (e.g. metres from odometry), std ``sigma``."""
        self._check_keys(a, b)
        if not (np.isfinite(distance) and distance >= 0 and np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"bad distance factor: distance {distance}, sigma {sigma}")
        self._factors.append(_Factor("range", a, b, float(distance), gtsam.noiseModel.Isotropic.Sigma(1, float(sigma))))

    def _check_keys(self, a: int, b: int) -> None:
        n = len(self._T)
        if not (0 <= a < n and 0 <= b < n and a != b):
            raise ValueError(f"pose graph keys {a}, {b} not two distinct keys of {n}")

    # ------------------------------------------------------------------ solving
    def optimise(self) -> None:
        """Solve the window; updates poses and the newest key's marginal covariance."""
        n = len(self._T)
        if n == 0:
            return
        first = max(0, n - self.window)
        graph = gtsam.NonlinearFactorGraph()
        values = gtsam.Values()
        for k in range(first, n):
            values.insert(k, gtsam.Pose3(self._T[k]))
        if first == 0 and self._prior is not None:
            T0, c0 = self._prior
        else:
            T0, c0 = self._T[first], self._cov_tangent[first]
        graph.add(gtsam.PriorFactorPose3(first, gtsam.Pose3(T0), _noise(c0)))
        for f in self._factors:
            if f.a < first or f.b < first:
                continue  # reaches out of the window (see module docstring)
            if f.kind == "between":
                graph.add(gtsam.BetweenFactorPose3(f.a, f.b, f.measured, f.noise))
            else:
                graph.add(gtsam.RangeFactorPose3(f.a, f.b, f.measured, f.noise))
        params = gtsam.LevenbergMarquardtParams()
        params.setMaxIterations(50)
        result = gtsam.LevenbergMarquardtOptimizer(graph, values, params).optimize()
        for k in range(first, n):
            self._T[k] = result.atPose3(k).matrix()
        try:
            self._cov_tangent[n - 1] = np.asarray(gtsam.Marginals(graph, result).marginalCovariance(n - 1))
        except RuntimeError:  # indeterminant system: keep the huge placeholder (honest: unknown)
            self._cov_tangent[n - 1] = np.eye(6) * 1e6

    # ------------------------------------------------------------------ reading
    def pose(self, key: int) -> np.ndarray:
        """(4, 4) current estimate of T_world_from_cam of ``key``."""
        return self._T[key].copy()

    def covariance(self, key: int) -> np.ndarray:
        """(6, 6) marginal covariance of ``key`` in our order (world axes), from its last update."""
        return from_tangent_cov(self._cov_tangent[key], self._T[key])

    def poses(self) -> list[tuple[int, np.ndarray]]:
        """[(stamp_ns, T_world_from_cam)] of every keyframe, current estimates."""
        return [(s, T.copy()) for s, T in zip(self._stamps, self._T)]
