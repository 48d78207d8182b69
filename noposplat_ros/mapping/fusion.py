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

import torch

_INF = float("inf")


def quat_multiply_xyzw(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., 4) x (..., 4) Hamilton product a * b, quaternions (x, y, z, w); rotation a after b."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        dim=-1,
    )


def quat_conjugate_xyzw(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> inverse rotation of unit quaternions."""
    return q * q.new_tensor([-1.0, -1.0, -1.0, 1.0])


def project(points_cam: torch.Tensor, K: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) points in a camera's optical frame -> (pixel index (N,) int64 into H*W, -1 outside or
    behind; depth (N,) = z). K: (3, 3) pixel intrinsics of the grid (pixel (u, v) centred at (u, v))."""
    H, W = hw
    z = points_cam[:, 2]
    zs = z.clamp_min(1e-12)
    u = torch.round(K[0, 0] * points_cam[:, 0] / zs + K[0, 2])
    v = torch.round(K[1, 1] * points_cam[:, 1] / zs + K[1, 2])
    ok = (z > 0) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1) & torch.isfinite(z)
    pix = torch.where(ok, v.clamp(0, H - 1).long() * W + u.clamp(0, W - 1).long(), torch.full_like(z, -1, dtype=torch.long))
    return pix, z


def zbuffer(pix: torch.Tensor, depth: torch.Tensor, num_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest point per pixel. pix (N,) int64 (-1 = none), depth (N,).
    Returns (zbuf (P,) float, inf where empty; idx (P,) int64 into the N points, -1 where empty)."""
    ok = pix >= 0
    p, d = pix[ok], depth[ok]
    ids = torch.nonzero(ok).squeeze(1)
    zb = torch.full((num_pixels,), _INF, dtype=depth.dtype, device=depth.device)
    zb.scatter_reduce_(0, p, d, reduce="amin")
    idx = torch.full((num_pixels,), -1, dtype=torch.long, device=depth.device)
    win = d == zb[p]
    idx.scatter_(0, p[win], ids[win])  # ties: any of the nearest
    return zb, idx


def associate(
    pix: torch.Tensor,
    depth: torch.Tensor,
    zbuf: torch.Tensor,
    idx: torch.Tensor,
    hw: tuple[int, int],
    tol_rel: float,
    radius_px: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match points (pix (N,), depth (N,)) against a z-buffer (zbuf, idx (H*W,)) in a
    (2 radius_px + 1)^2 window. Returns (target (N,) int64 index from ``idx``, -1 = unmatched;
    signed depth gap (N,) = depth - zbuf at the centre pixel, inf where the map shows nothing)."""
    H, W = hw
    n = pix.shape[0]
    valid = pix >= 0
    pc = pix.clamp_min(0)
    # the centre pixel first (a revisit matches there), the window only for the rest
    best = torch.where(valid, (zbuf[pc] - depth).abs(), torch.full_like(depth, _INF))
    target = torch.where(valid, idx[pc], torch.full((n,), -1, dtype=torch.long, device=depth.device))
    rest = torch.nonzero(valid & ~(best <= tol_rel * depth)).squeeze(1)
    if radius_px > 0 and rest.numel():
        v0, u0 = pc[rest] // W, pc[rest] % W
        d = depth[rest]
        b, t = best[rest], target[rest]
        for dv in range(-radius_px, radius_px + 1):  # a handful of offsets, each vectorised
            for du in range(-radius_px, radius_px + 1):
                if dv == 0 and du == 0:
                    continue
                v, u = v0 + dv, u0 + du
                inside = (v >= 0) & (v < H) & (u >= 0) & (u < W)
                q = v.clamp(0, H - 1) * W + u.clamp(0, W - 1)
                gap = (zbuf[q] - d).abs()
                better = inside & (gap < b)
                b = torch.where(better, gap, b)
                t = torch.where(better, idx[q], t)
        best[rest], target[rest] = b, t
    matched = best <= tol_rel * depth
    target = torch.where(matched, target, torch.full_like(target, -1))
    centre_gap = torch.where(valid, depth - zbuf[pc], torch.full_like(depth, _INF))
    return target, centre_gap


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
    surface). Returns (merged fields (G, ·), summed weights (G,))."""
    W = base_w.clone().index_add_(0, group, add_w)
    out: dict[str, torch.Tensor] = {}
    for name, b in base.items():
        a = add[name]
        if name == "rotations_xyzw":
            sign = torch.sign((a * b[group]).sum(-1, keepdim=True))
            a = a * torch.where(sign == 0, torch.ones_like(sign), sign)
        wb = base_w.view(-1, *([1] * (b.dim() - 1)))
        wa = add_w.view(-1, *([1] * (a.dim() - 1)))
        acc = (b * wb).index_add_(0, group, a * wa)
        out[name] = acc / W.view(-1, *([1] * (b.dim() - 1))).clamp_min(1e-12)
    out["rotations_xyzw"] = torch.nn.functional.normalize(out["rotations_xyzw"], dim=-1)
    return out, W
