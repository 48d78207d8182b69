"""3D Gaussian splats as PLY in the INRIA 3DGS layout that common viewers open.

Vertex properties, all float32, binary little endian, in this order:
  x y z, nx ny nz (zeros), f_dc_0..2, f_rest_0..f_rest_{3*(K-1)-1}, opacity, scale_0..2, rot_0..3
with
- f_dc / f_rest: SH coefficients; f_rest is colour-major (all higher coefficients of R, then G,
  then B), which is exactly our ``harmonics (N, 3, K)`` layout flattened after dropping DC;
- opacity stored as its LOGIT (viewers apply a sigmoid; the official NoPoSplat helper wrote raw
  opacity, which viewers misread);
- scale stored as the LOG of the standard deviations (viewers apply exp);
- rot_0..3 = (w, x, y, z): scalar FIRST, unlike ``Gaussians.rotations_xyzw``.

SH degree 4 (NoPoSplat's 25 coefficients) is truncated to ``max_sh_degree`` = 3 by default: the
INRIA format, common viewers and the official renderer stop at degree 3.

Written with plyfile from a NumPy structured array. gsplat's ``export_splats`` runs on CPU too (the
tests check that it writes the same property values), but it expects the raw training parameters,
silently drops rows with non-finite values (which breaks the per-pixel grid order) and writes no
normals (some loaders expect them), so it is not used here.
"""
from __future__ import annotations

import os
import re

import numpy as np
import plyfile
import torch

from noposplat_ros.types import Gaussians, covariances_from_scales_rotations

# Opacity is clamped to [eps, 1 - eps] before the logit so that 0 and 1 stay finite.
OPACITY_EPS = 1e-6
# Scales are clamped to this minimum before the log so that 0 stays finite.
MIN_SCALE = 1e-12


def _property_names(num_rest: int) -> list[str]:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(num_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def gaussians_to_ply_array(
    gaussians: Gaussians, *, max_sh_degree: int = 3, pad_sh_degree: int | None = None
) -> np.ndarray:
    """Gaussians -> (N,) structured float32 array with the INRIA vertex properties (see module doc).

    max_sh_degree: coefficients above this degree are dropped.
    pad_sh_degree: if given, zero-pad the SH up to this degree (for loaders that require a fixed
      number of f_rest properties, e.g. the INRIA code with sh_degree 3).
    """
    if max_sh_degree < 0:
        raise ValueError(f"max_sh_degree must be >= 0, got {max_sh_degree}")
    n = gaussians.num
    means = gaussians.means.detach().cpu().to(torch.float64).numpy().reshape(n, 3)
    scales = gaussians.scales.detach().cpu().to(torch.float64).numpy().reshape(n, 3)
    quats = gaussians.rotations_xyzw.detach().cpu().to(torch.float64).numpy().reshape(n, 4)
    opac = gaussians.opacities.detach().cpu().to(torch.float64).numpy().reshape(n)
    sh = gaussians.harmonics.detach().cpu().to(torch.float64).numpy()
    if sh.ndim != 3 or sh.shape[:2] != (n, 3):
        raise ValueError(f"harmonics must be (N, 3, K), got {tuple(sh.shape)}")

    degree = min(gaussians.sh_degree, max_sh_degree)
    if pad_sh_degree is not None and pad_sh_degree > degree:
        k_out = (pad_sh_degree + 1) ** 2
        padded = np.zeros((n, 3, k_out))
        k_in = (degree + 1) ** 2
        padded[:, :, :k_in] = sh[:, :, :k_in]
        sh = padded
    else:
        sh = sh[:, :, : (degree + 1) ** 2]
    num_rest = 3 * (sh.shape[2] - 1)

    norm = np.linalg.norm(quats, axis=1, keepdims=True)
    quats = np.where(norm > 0, quats / np.where(norm > 0, norm, 1.0), np.array([0.0, 0.0, 0.0, 1.0]))
    p = np.clip(opac, OPACITY_EPS, 1.0 - OPACITY_EPS)

    columns = [
        means,
        np.zeros((n, 3)),
        sh[:, :, 0],
        sh[:, :, 1:].reshape(n, num_rest),  # colour-major: R's coefficients 1..K-1, then G, then B
        np.log(p / (1.0 - p))[:, None],
        np.log(np.maximum(scales, MIN_SCALE)),
        quats[:, [3, 0, 1, 2]],  # xyzw -> wxyz
    ]
    flat = np.concatenate(columns, axis=1).astype(np.float32)
    dtype = np.dtype([(name, "<f4") for name in _property_names(num_rest)])
    return np.ascontiguousarray(flat).view(dtype).reshape(n)


def write_ply(
    path: str | os.PathLike,
    gaussians: Gaussians,
    *,
    max_sh_degree: int = 3,
    pad_sh_degree: int | None = None,
) -> None:
    """Write ``gaussians`` as a binary little-endian INRIA-layout 3DGS PLY (see module doc)."""
    arr = gaussians_to_ply_array(gaussians, max_sh_degree=max_sh_degree, pad_sh_degree=pad_sh_degree)
    element = plyfile.PlyElement.describe(arr, "vertex")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    plyfile.PlyData([element], text=False, byte_order="<").write(str(path))


def read_ply(path: str | os.PathLike) -> Gaussians:
    """Read an INRIA-layout 3DGS PLY back into Gaussians (sigmoid, exp, wxyz -> xyzw)."""
    data = plyfile.PlyData.read(str(path))
    if "vertex" not in data:
        raise ValueError(f"{path}: no 'vertex' element")
    v = data["vertex"].data
    names = set(v.dtype.names or ())
    required = {"x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"}
    required |= {f"scale_{i}" for i in range(3)} | {f"rot_{i}" for i in range(4)}
    missing = sorted(required - names)
    if missing:
        raise ValueError(f"{path}: not a 3DGS PLY, missing vertex properties {missing}")

    def cols(keys: list[str]) -> np.ndarray:
        return np.stack([np.asarray(v[k], np.float64) for k in keys], axis=1)

    rest_keys = sorted((k for k in names if re.fullmatch(r"f_rest_\d+", k)), key=lambda k: int(k[7:]))
    num_rest = len(rest_keys)
    k_total = 1 + num_rest // 3
    if num_rest % 3 or round((k_total) ** 0.5) ** 2 != k_total:
        raise ValueError(f"{path}: {num_rest} f_rest properties do not form a full SH degree")
    n = len(v)
    sh = np.empty((n, 3, k_total))
    sh[:, :, 0] = cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    if num_rest:
        sh[:, :, 1:] = cols(rest_keys).reshape(n, 3, k_total - 1)

    means = cols(["x", "y", "z"])
    scales = np.exp(cols(["scale_0", "scale_1", "scale_2"]))
    q_wxyz = cols(["rot_0", "rot_1", "rot_2", "rot_3"])
    q_xyzw = q_wxyz[:, [1, 2, 3, 0]]
    q_xyzw /= np.linalg.norm(q_xyzw, axis=1, keepdims=True)
    opac = 1.0 / (1.0 + np.exp(-np.asarray(v["opacity"], np.float64)))
    cov = covariances_from_scales_rotations(torch.from_numpy(scales), torch.from_numpy(q_xyzw)).numpy()

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return Gaussians(t(means), t(scales), t(q_xyzw), t(opac), t(sh), t(cov))
