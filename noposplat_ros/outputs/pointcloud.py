"""Gaussian splats <-> PointCloud2 payload, splat schema v1 (no rclpy).

Schema v1 (little-endian float32, one record per Gaussian, ``height = 1``, ``is_dense = True``):

=======  ==========================  ============================================================
offset   field                       meaning
=======  ==========================  ============================================================
0, 4, 8  x, y, z                     centre, in the cloud's frame and scale units
12       rgb                         float32 bit pattern of uint32 0x00RRGGBB, colour of the SH DC
                                     term: clamp(0.28209479 * dc + 0.5, 0, 1) * 255, rounded
16       opacity                     activated, in (0, 1)
20..28   scale_x, scale_y, scale_z   standard deviations along the Gaussian's local axes (linear)
32..44   rot_x, rot_y, rot_z, rot_w  unit quaternion (x, y, z, w), local axes -> cloud frame
48..     sh_0 .. sh_{3K-1}           optional: all K = (degree + 1)^2 SH coefficients per colour,
                                     colour-major (sh_{c*K + k} = harmonics[:, c, k], c in R, G, B)
=======  ==========================  ============================================================

Datatype codes are sensor_msgs/PointField's (FLOAT32 = 7), every field has count 1.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from noposplat_ros.types import SH_C0, Gaussians, covariances_from_scales_rotations, rgb_to_sh_dc

SPLAT_SCHEMA_VERSION = 1
SPLAT_SCHEMA_NAME = "noposplat/gaussian_v1"

# sensor_msgs/PointField datatype codes.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
_POINTFIELD_DTYPES = {
    INT8: "i1", UINT8: "u1", INT16: "i2", UINT16: "u2", INT32: "i4", UINT32: "u4", FLOAT32: "f4", FLOAT64: "f8",
}

BASE_FIELD_NAMES: tuple[str, ...] = (
    "x", "y", "z", "rgb", "opacity", "scale_x", "scale_y", "scale_z", "rot_x", "rot_y", "rot_z", "rot_w",
)


def _field_names(include_sh: bool, sh_coeffs: int) -> list[str]:
    names = list(BASE_FIELD_NAMES)
    if include_sh:
        if sh_coeffs <= 0:
            raise ValueError(f"include_sh needs sh_coeffs > 0 (coefficients per colour), got {sh_coeffs}")
        names += [f"sh_{i}" for i in range(3 * sh_coeffs)]
    return names


def splat_fields(include_sh: bool = False, sh_coeffs: int = 0) -> list[tuple[str, int, int, int]]:
    """PointField descriptions ``(name, offset_bytes, datatype, count)`` of schema v1.

    sh_coeffs: SH coefficients per colour channel, K = (sh_degree + 1) ** 2; used with include_sh.
    """
    return [(name, 4 * i, FLOAT32, 1) for i, name in enumerate(_field_names(include_sh, sh_coeffs))]


def point_step(include_sh: bool = False, sh_coeffs: int = 0) -> int:
    """Bytes per splat record."""
    return 4 * len(_field_names(include_sh, sh_coeffs))


def splat_dtype(include_sh: bool = False, sh_coeffs: int = 0) -> np.dtype:
    """Structured little-endian dtype of one schema-v1 record."""
    return np.dtype([(name, "<f4") for name in _field_names(include_sh, sh_coeffs)])


def dtype_from_fields(fields: list[tuple[str, int, int, int]], point_step_bytes: int, is_bigendian: bool = False) -> np.dtype:
    """Structured dtype for PointField tuples ``(name, offset, datatype, count)``, e.g. from a message."""
    order = ">" if is_bigendian else "<"
    names, formats, offsets = [], [], []
    for name, offset, datatype, count in fields:
        if datatype not in _POINTFIELD_DTYPES:
            raise ValueError(f"PointField {name!r} has unknown datatype {datatype}")
        base = np.dtype(order + _POINTFIELD_DTYPES[datatype])
        names.append(name)
        formats.append(base if count == 1 else np.dtype((base, (count,))))
        offsets.append(offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step_bytes})


def pack_rgb(rgb01: np.ndarray) -> np.ndarray:
    """(N, 3) float colours in [0, 1] (clamped) -> (N,) uint32 0x00RRGGBB."""
    c = np.rint(np.clip(rgb01, 0.0, 1.0) * 255.0).astype(np.uint32)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """(N,) uint32 0x00RRGGBB -> (N, 3) uint8 RGB."""
    p = np.asarray(packed, dtype=np.uint32)
    return np.stack([(p >> 16) & 0xFF, (p >> 8) & 0xFF, p & 0xFF], axis=-1).astype(np.uint8)


def rgb_bits(arr: np.ndarray) -> np.ndarray:
    """(N,) uint32 view of the ``rgb`` field of a structured cloud array (its bits, never its value)."""
    field_dtype, offset = arr.dtype.fields["rgb"][:2]
    return arr.getfield(np.dtype(np.uint32).newbyteorder(field_dtype.byteorder), offset)


def _np32(t: torch.Tensor) -> np.ndarray:
    """float32 NumPy array on the CPU (no copy when the tensor already is one)."""
    return t.detach().to(device="cpu", dtype=torch.float32).numpy()


def _pack_dc_rgb(harmonics: torch.Tensor) -> np.ndarray:
    """(N, 3, K) harmonics -> (N,) uint32 0x00RRGGBB of the DC colour, the same float32 operations
    as ``pack_rgb(types.sh_dc_to_rgb(dc))`` (bit-identical, NaN included), one colour at a time over
    (N,) rows into reused buffers (an (N, 3) layout runs NumPy inner loops of 3)."""
    dc = _np32(harmonics.detach()[:, :, 0])
    n = dc.shape[0]
    packed = np.zeros(n, np.uint32)
    v = np.empty(n, np.float32)
    for shift, c in zip((16, 8, 0), range(3)):
        np.multiply(dc[:, c], np.float32(SH_C0), out=v)
        np.add(v, np.float32(0.5), out=v)
        np.clip(v, np.float32(0.0), np.float32(1.0), out=v)
        np.multiply(v, np.float32(255.0), out=v)
        np.rint(v, out=v)
        packed |= v.astype(np.uint32) << np.uint32(shift)
    return packed


def gaussians_to_structured(g: Gaussians, include_sh: bool = False) -> np.ndarray:
    """Gaussians -> (N,) structured array of schema v1 (no per-point loop).

    With include_sh all (sh_degree + 1)^2 coefficients per colour are appended (colour-major).
    Each group of adjacent fields (x..z, rgb, opacity, scales, rotation, SH) is copied in one pass as
    an opaque item of 4 x width bytes, so NumPy runs one strided loop per group (not one tiny inner
    loop per record). NumPy only: its speed does not depend on torch's thread count (torch ops on a
    loaded 2-core machine spun ~6x longer with 2 threads than with 1).
    """
    n = g.num
    k = int(g.harmonics.shape[-1])
    dtype = splat_dtype(include_sh, k)
    groups = [_np32(g.means).reshape(n, 3), _pack_dc_rgb(g.harmonics).view(np.float32).reshape(n, 1),
              _np32(g.opacities).reshape(n, 1), _np32(g.scales).reshape(n, 3), _np32(g.rotations_xyzw).reshape(n, 4)]
    if include_sh:
        groups.append(_np32(g.harmonics).reshape(n, 3 * k))
    groups = [np.ascontiguousarray(x) for x in groups]
    widths = [x.shape[1] for x in groups]
    offsets = [4 * sum(widths[:i]) for i in range(len(groups))]  # the fields' order in schema v1
    opaque = np.dtype({"names": [f"g{i}" for i in range(len(groups))], "formats": [f"V{4 * w}" for w in widths],
                       "offsets": offsets, "itemsize": dtype.itemsize})
    arr = np.empty(n, dtype=opaque)
    for i, x in enumerate(groups):
        arr[f"g{i}"] = x.view(f"V{4 * x.shape[1]}").reshape(n)  # raw bytes: rgb's bit pattern stays as is
    return arr.view(dtype)


def cloud_bytes(arr: np.ndarray) -> bytes:
    """Payload for ``PointCloud2.data``: the records as little-endian bytes (assign bytes, not arrays)."""
    return np.ascontiguousarray(arr).tobytes()


def structured_to_gaussians(arr: np.ndarray) -> Gaussians:
    """(N,) structured array (e.g. ``np.frombuffer(msg.data, dtype_from_fields(...))``) -> Gaussians.

    Harmonics come from the ``sh_*`` fields when present; otherwise a degree-0 DC term is rebuilt from
    ``rgb`` (8-bit precision). Covariances are rebuilt from scales and rotations.
    """
    names = arr.dtype.names or ()
    missing = [f for f in BASE_FIELD_NAMES if f not in names]
    if missing:
        raise ValueError(f"not a splat schema v1 cloud: missing fields {missing}")

    def col(*fields: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([arr[f].astype(np.float32) for f in fields], axis=-1))

    means = col("x", "y", "z")
    scales = col("scale_x", "scale_y", "scale_z")
    rotations = col("rot_x", "rot_y", "rot_z", "rot_w")
    opacities = col("opacity").reshape(-1)
    sh_names = sorted((f for f in names if f.startswith("sh_")), key=lambda f: int(f[3:]))
    if sh_names:
        k = len(sh_names) // 3
        if 3 * k != len(sh_names) or int(math.isqrt(k)) ** 2 != k:
            raise ValueError(f"{len(sh_names)} sh_* fields is not 3 * (degree + 1)^2")
        harmonics = col(*sh_names).reshape(-1, 3, k)
    else:
        rgb01 = unpack_rgb(rgb_bits(arr)).astype(np.float32) / 255.0
        harmonics = torch.from_numpy(rgb_to_sh_dc(rgb01)).reshape(-1, 3, 1)
    covariances = covariances_from_scales_rotations(scales, rotations)
    return Gaussians(means, scales, rotations, opacities, harmonics, covariances)
