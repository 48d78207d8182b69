"""Fusion maths of the scene map: projective association and confidence-weighted merging (torch,
vectorised, any device). No state: ``scene_map.SceneMap`` owns the storage.

Association is projective (FreeSplat-style, chosen over voxel hashing because a voxel grid turns
depth noise into new voxels behind and in front of the surface, so a still camera keeps growing the
map; a per-pixel depth test with a relative tolerance does not): the map's Gaussians are projected
into the new keyframe's pixel grid with a z-buffer, and a new Gaussian matches the map Gaussian that
its pixel (or a pixel within ``radius_px``) shows when their depths agree within ``tol_rel * depth``.
Hand-written: no installed library associates Gaussians projectively.
"""
from __future__ import annotations

import numpy as np
import torch

_INF = float("inf")


def flatnonzero(mask: torch.Tensor) -> torch.Tensor:
    """(N,) bool -> (K,) int64 indices of the True entries, ascending (``torch.nonzero(mask).squeeze(1)``).
    On the CPU through NumPy: torch.nonzero there is 1.3-8x slower (single thread, measured on 131k and
    1M masks), and the map calls it over a dozen times per pair."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).squeeze(1)


def quat_multiply_xyzw(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """(..., 4) x (..., 4) Hamilton product a * b, quaternions (x, y, z, w); rotation a after b.
    dim: the dimension holding (x, y, z, w), e.g. 0 for column-major (4, N) quaternions."""
    ax, ay, az, aw = a.unbind(dim)
    bx, by, bz, bw = b.unbind(dim)
    return torch.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        dim=dim,
    )


def quat_conjugate_xyzw(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> inverse rotation of unit quaternions."""
    return q * q.new_tensor([-1.0, -1.0, -1.0, 1.0])


def project(points_cam: torch.Tensor, K: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) points in a camera's optical frame -> (pixel index (N,) int64 into H*W, -1 outside or
    behind; depth (N,) = z). K: (3, 3) pixel intrinsics of the grid (pixel (u, v) centred at (u, v))."""
    return project_xyz(points_cam[:, 0], points_cam[:, 1], points_cam[:, 2], K, hw)


def transform_project(points_w: torch.Tensor, T_cam_from_world: np.ndarray, K: torch.Tensor,
                      hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``project`` of column-major world points (3, N) seen from a camera, T_cam_from_world (4, 4).
    The rigid transform runs as fused multiply-adds over contiguous rows (an (N, 3) x (3, 3) matmul
    is slow on the CPU) and only the camera coordinates are kept."""
    T = np.asarray(T_cam_from_world, dtype=np.float64)
    x, y, z = points_w[0], points_w[1], points_w[2]
    cam = []
    for i in range(3):
        c = torch.mul(x, float(T[i, 0]))
        c.add_(y, alpha=float(T[i, 1])).add_(z, alpha=float(T[i, 2])).add_(float(T[i, 3]))
        cam.append(c)
    return project_xyz(*cam, K, hw)


def project_xyz(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, K: torch.Tensor,
                hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``project`` with the camera coordinates as three (N,) tensors."""
    H, W = hw
    zs = z.clamp_min(1e-12)
    # same arithmetic as round(fx * x / z + cx), in place: one temporary per coordinate
    u = torch.mul(x, K[0, 0]).div_(zs).add_(K[0, 2]).round_()
    v = torch.mul(y, K[1, 1]).div_(zs).add_(K[1, 2]).round_()
    ok = (z > 0) & torch.isfinite(z)
    ok &= u >= 0
    ok &= u <= W - 1
    ok &= v >= 0
    ok &= v <= H - 1
    pix = v.clamp_(0, H - 1).long().mul_(W).add_(u.clamp_(0, W - 1).long())
    return pix.masked_fill_(~ok, -1), z


def zbuffer(pix: torch.Tensor, depth: torch.Tensor, num_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest point per pixel. pix (N,) int64 (-1 = none), depth (N,).
    Returns (zbuf (P,) float, inf where empty; idx (P,) int64 into the N points, -1 where empty)."""
    ids = flatnonzero(pix >= 0)
    if ids.numel() == pix.numel():  # every point lands in the grid: no gather
        p, d, ids = pix, depth, None
    else:
        p, d = pix.index_select(0, ids), depth.index_select(0, ids)
    zb = torch.full((num_pixels,), _INF, dtype=depth.dtype, device=depth.device)
    zb.scatter_reduce_(0, p, d, reduce="amin")
    idx = torch.full((num_pixels,), -1, dtype=torch.long, device=depth.device)
    win = flatnonzero(d == zb.index_select(0, p))
    src = win if ids is None else ids.index_select(0, win)
    idx.scatter_(0, p.index_select(0, win), src)  # ties: any of the nearest
    return zb, idx


def associate(
    pix: torch.Tensor,
    depth: torch.Tensor,
    zbuf: torch.Tensor,
    idx: torch.Tensor,
    hw: tuple[int, int],
    tol_rel: float,
    radius_px: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Match points (pix (N,), depth (N,)) against a z-buffer (zbuf, idx (H*W,)) in a
    (2 radius_px + 1)^2 window. Returns (target (N,) int64 index from ``idx``, -1 = unmatched;
    signed depth gap (N,) = depth - zbuf at the centre pixel, inf where the map shows nothing;
    matched pixel (N,) int64, the z-buffer pixel whose ``idx`` is the target, -1 = unmatched).
    Every target shows in exactly one pixel, so the matched pixel groups points by target."""
    H, W = hw
    valid = pix >= 0
    all_valid = bool(valid.all())  # the map's own callers pass only points inside the grid
    pc = pix if all_valid else pix.clamp_min(0)
    zc = zbuf.index_select(0, pc)
    tol = depth * tol_rel
    # the centre pixel first (a revisit matches there), the window only for the rest
    best = (zc - depth).abs_()
    if not all_valid:
        best.masked_fill_(~valid, _INF)
    qbest = pc.clone()
    rest = flatnonzero(~(best <= tol) if all_valid else valid & ~(best <= tol))
    if radius_px > 0 and rest.numel():
        p0 = pc.index_select(0, rest)
        v0, u0 = p0 // W, p0 % W
        d = depth.index_select(0, rest)
        b, qb = best.index_select(0, rest), p0
        for dv in range(-radius_px, radius_px + 1):  # a handful of offsets, each vectorised
            for du in range(-radius_px, radius_px + 1):
                if dv == 0 and du == 0:
                    continue
                v, u = v0 + dv, u0 + du
                inside = (v >= 0) & (v < H) & (u >= 0) & (u < W)
                q = v.clamp(0, H - 1) * W + u.clamp(0, W - 1)
                gap = (zbuf.index_select(0, q) - d).abs_()
                better = inside & (gap < b)
                b = torch.where(better, gap, b)
                qb = torch.where(better, q, qb)
        best.index_copy_(0, rest, b)
        qbest.index_copy_(0, rest, qb)
    matched = best <= tol
    target = idx.index_select(0, qbest)
    matched &= target >= 0  # a finite gap always has a z-buffer point; belt and braces
    target.masked_fill_(~matched, -1)
    qbest.masked_fill_(~matched, -1)
    centre_gap = depth - zc
    if not all_valid:
        centre_gap.masked_fill_(~valid, _INF)
    return target, centre_gap, qbest


def weighted_merge_packed(
    base: torch.Tensor,
    base_w: torch.Tensor,
    add: torch.Tensor,
    add_w: torch.Tensor,
    group: torch.Tensor,
    rot: slice,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``weighted_merge`` on packed columns: base (D, G) with weights base_w (G,), add (D, N) with
    weights add_w (N,) and group (N,) int64 in [0, G); rows ``rot`` hold (x, y, z, w) quaternions (sign-
    aligned to the base, averaged, normalised), every other row is a plain weighted mean.
    Column-major because index_add_ along the last dimension of contiguous rows is fast on the CPU.
    Returns (merged (D, G), summed weights (G,))."""
    W = base_w.clone().index_add_(0, group, add_w)
    wa = add * add_w
    sign = torch.sign(row_dot(add[rot], take_columns(base[rot], group)))
    wa[rot] *= sign.masked_fill_(sign == 0, 1.0)  # (a s) w == (a w) s exactly for s = +-1
    acc = (base * base_w).index_add_(1, group, wa)
    out = acc.div_(W.clamp_min(1e-12))
    normalize_columns_(out[rot])
    return out, W


def take_columns(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (D, C) -> x[:, index] (D, N), one 1-D gather per row (faster on the CPU than index_select
    along dimension 1, which gathers D-strided elements one by one)."""
    out = torch.empty(x.shape[0], index.numel(), dtype=x.dtype, device=x.device)
    for i in range(x.shape[0]):
        torch.index_select(x[i], 0, index, out=out[i])
    return out


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(D, N) x (D, N) -> (N,) column-wise dot products, over contiguous rows (a reduction over a
    short first dimension is slow on the CPU)."""
    out = torch.mul(a[0], b[0])
    for i in range(1, a.shape[0]):
        out.addcmul_(a[i], b[i])
    return out


def normalize_columns_(q: torch.Tensor) -> torch.Tensor:
    """(D, N) columns scaled to unit length in place (like ``torch.nn.functional.normalize(q, dim=0)``)."""
    return q.div_(row_dot(q, q).sqrt_().clamp_min_(1e-12))


def weighted_merge(
    base: dict[str, torch.Tensor],
    base_w: torch.Tensor,
    add: dict[str, torch.Tensor],
    add_w: torch.Tensor,
    group: torch.Tensor,
    num_groups: int,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Confidence-weighted means (AnySplat / MASt3R-SLAM running average, X <- (C X + c x) / (C + c)).

    base: fields of ``num_groups`` Gaussians with weights base_w (G,); add: fields of N Gaussians with
    weights add_w (N,) and group (N,) int64 in [0, G). Fields: "means" (·, 3), "log_scales" (·, 3),
    "rotations_xyzw" (·, 4), "opacities" (·,), "dc" (·, 3), all in one frame. Positions, log-scales
    (i.e. the covariance's extent), opacity and colour are averaged; quaternions are sign-aligned to
    the base and averaged, then normalised (exact for the small angles between observations of one
    surface). Returns (merged fields (G, ·), summed weights (G,)). Packs the fields into rows and
    calls ``weighted_merge_packed`` (the map stores its Gaussians packed already, column-major)."""
    names = list(base)
    widths = [base[n].reshape(num_groups, -1).shape[1] for n in names]
    start = [sum(widths[:i]) for i in range(len(names))]
    r = names.index("rotations_xyzw")
    rot = slice(start[r], start[r] + widths[r])
    b = torch.cat([base[n].reshape(num_groups, -1) for n in names], 1).T.contiguous()
    a = torch.cat([add[n].reshape(add_w.shape[0], -1) for n in names], 1).T.contiguous()
    out, W = weighted_merge_packed(b, base_w, a, add_w, group, rot)
    return {n: out[s0:s0 + k].T.reshape(base[n].shape) for n, s0, k in zip(names, start, widths)}, W
