"""Lossless reconstruction files: Gaussians as safetensors, the relative pose as JSON.

``gaussians.safetensors`` holds float32 tensors
  means (N, 3), scales (N, 3), rotations (N, 4) quaternion (x, y, z, w), opacities (N,) in (0, 1),
  harmonics (N, 3, K) colour-major SH, covariances (N, 3, 3)
plus string metadata: ``format``, ``sh_degree``, ``quaternion_order`` (xyzw), ``frame`` (camera-0
optical: +x right, +y down, +z forward) and, when known, ``scale_kind``, ``frame_id``, ``grid_hw``.
Unlike the PLY, values are stored as they are (no logit/log) and SH are never truncated.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from noposplat_ros.types import Gaussians, PairReconstruction

FORMAT_NAME = "noposplat_ros.gaussians.v1"
FRAME_CONVENTION = "camera-0 optical (OpenCV/ROS: +x right, +y down, +z forward)"
_TENSOR_NAMES = {
    "means": "means",
    "scales": "scales",
    "rotations": "rotations_xyzw",
    "opacities": "opacities",
    "harmonics": "harmonics",
    "covariances": "covariances",
}


def save_gaussians(
    path: str | os.PathLike, gaussians: Gaussians, *, metadata: dict[str, str] | None = None
) -> None:
    """Write ``gaussians`` to a safetensors file (float32, CPU, see module doc).

    metadata: extra string entries (e.g. ``scale_kind``); they override the defaults.
    """
    tensors = {
        key: getattr(gaussians, attr).detach().to("cpu", torch.float32).contiguous()
        for key, attr in _TENSOR_NAMES.items()
    }
    meta = {
        "format": FORMAT_NAME,
        "sh_degree": str(gaussians.sh_degree),
        "quaternion_order": "xyzw",
        "frame": FRAME_CONVENTION,
    }
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def load_gaussians(path: str | os.PathLike, device: str | torch.device = "cpu") -> Gaussians:
    """Read a file written by :func:`save_gaussians` back into Gaussians."""
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        keys = set(f.keys())
        missing = sorted(set(_TENSOR_NAMES) - keys)
        if missing:
            raise ValueError(f"{path}: not a Gaussians file, missing tensors {missing}")
        return Gaussians(**{attr: f.get_tensor(key) for key, attr in _TENSOR_NAMES.items()})


def load_gaussians_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a Gaussians file."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def pose_to_dict(recon: PairReconstruction) -> dict[str, Any]:
    """JSON-ready summary of a pair's relative pose (T row-major, covariance 6x6)."""
    pose = recon.pose
    return {
        "T_cam0_from_cam1": np.asarray(pose.T_cam0_from_cam1, np.float64).tolist(),
        "scale_kind": recon.scale_kind.value,
        "backend": recon.backend,
        "status": pose.status.name,
        "status_code": int(pose.status),
        "num_inliers": int(pose.num_inliers),
        "residual_px": None if not np.isfinite(pose.residual_px) else float(pose.residual_px),
        "covariance": np.asarray(pose.covariance, np.float64).tolist(),
        "covariance_order": ["tx", "ty", "tz", "rx", "ry", "rz"],
        "message": pose.message,
        "stamp0_ns": int(recon.stamp0_ns),
        "stamp1_ns": int(recon.stamp1_ns),
        "frame_id": recon.frame_id,
        "grid_hw": [int(x) for x in recon.grid_hw],
        "K_grid": np.asarray(recon.K_grid, np.float64).tolist(),
        "num_gaussians": recon.gaussians.num,
        "timings_s": {k: float(v) for k, v in recon.timings_s.items()},
    }


def write_pose_json(path: str | os.PathLike, recon: PairReconstruction) -> None:
    """Write :func:`pose_to_dict` of ``recon`` as indented JSON."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(pose_to_dict(recon), f, indent=2)
        f.write("\n")
