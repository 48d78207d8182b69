"""Pure-PyTorch tiled rasterizer of 3D Gaussians (EWA splatting, front-to-back alpha compositing).

Runs on any torch device (used on CPU), differentiable by autograd with respect to everything
(in particular the camera pose). Hand-written because gsplat's rasterizer exists only as CUDA kernels.

Algorithm (vectorised, no per-pixel or per-Gaussian Python loop):
1. project: camera-space means, EWA 2D covariance J W Sigma W^T J^T + 0.3 px^2, conic, depth;
2. bin: each Gaussian's exact support box (where alpha can reach 1/255, i.e. the ellipse
   q <= 2 ln(255 opacity)) is intersected with square pixel tiles; (tile, depth) keys are sorted;
3. composite: tiles are processed in chunks bounded by ``budget_elems`` (tiles x Gaussians x pixels),
   each chunk a dense (tiles, K, pixels) tensor; a tile whose list exceeds the budget is processed in
   K-blocks with the transmittance carried over. Under autograd each chunk is gradient-checkpointed,
   so memory stays at one chunk plus the outputs.

Pixel convention: OpenCV (pixel (u, v) has its centre at (u, v)), the convention of ``K_px``.
Rules shared with the official rasterizer / gsplat: alpha = min(0.99, o exp(-q/2)), skipped below 1/255,
front-to-back by camera-space z of the centre per tile, stop before a Gaussian that would take the
transmittance below 1e-4, 0.3 px^2 low-pass, the Jacobian's x/z, y/z clamped to 1.3x the image's
half extent (3DGS-style). Differences are listed in docs/readme_pose_render.md.
"""
from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
LOWPASS_PX2 = 0.3


def project(
    means: torch.Tensor,
    covariances: torch.Tensor,
    T_cam_from_world: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    near: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EWA projection of all N Gaussians (no culling).

    means (N, 3), covariances (N, 3, 3) in world; T (4, 4); K (3, 3) px.
    Returns mean2d (N, 2), cov2d (N, 3) [xx, xy, yy] incl. the low-pass, conic (N, 3), depth (N,),
    valid (N,) bool (z > near and finite, positive-definite 2D covariance).
    """
    R = T_cam_from_world[:3, :3]
    t = T_cam_from_world[:3, 3]
    p = means @ R.T + t
    x, y, z = p.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    valid = (z > near) & torch.isfinite(p).all(-1)
    zs = torch.where(valid, z, torch.ones_like(z))  # keep culled entries finite (their gradient is masked)
    # Clamp the direction used in the Jacobian (not the mean) to 1.3x the visible half extent, as 3DGS does,
    # so Gaussians far outside the view do not get huge, smeared footprints.
    lim_x_neg = (cx + 0.5) / fx * 1.3
    lim_x_pos = (width - 0.5 - cx) / fx * 1.3
    lim_y_neg = (cy + 0.5) / fy * 1.3
    lim_y_pos = (height - 0.5 - cy) / fy * 1.3
    xz = torch.minimum(torch.maximum(x / zs, -lim_x_neg), lim_x_pos)
    yz = torch.minimum(torch.maximum(y / zs, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [fx / zs, zero, -fx * xz / zs, zero, fy / zs, -fy * yz / zs], dim=-1
    ).reshape(-1, 2, 3)
    M = J @ R  # (N, 2, 3): d(pixel)/d(world) up to the depth division
    cov = M @ covariances @ M.transpose(1, 2)
    a = cov[:, 0, 0] + LOWPASS_PX2
    b = cov[:, 0, 1]
    c = cov[:, 1, 1] + LOWPASS_PX2
    det = a * c - b * b
    valid = valid & (det > 0) & torch.isfinite(det)
    det_s = torch.where(valid, det, torch.ones_like(det))
    conic = torch.stack([c / det_s, -b / det_s, a / det_s], dim=-1)
    mean2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)
    return mean2d, torch.stack([a, b, c], dim=-1), conic, z, valid


def _composite_chunk(
    mean2d: torch.Tensor,
    conic: torch.Tensor,
    opac: torch.Tensor,
    feat: torch.Tensor,
    gid: torch.Tensor,
    gvalid: torch.Tensor,
    px: torch.Tensor,
    py: torch.Tensor,
    k_block: int,
) -> torch.Tensor:
    """Composite a chunk of tiles.

    mean2d (M, 2), conic (M, 3), opac (M,), feat (M, F) per-Gaussian features (colour, depth);
    gid (n, K) long indices into M (padded), gvalid (n, K) bool; px, py (n, P) pixel coordinates.
    Returns (n, P, F + 1): composited features, then the accumulated alpha.
    """
    n, K = gid.shape
    P = px.shape[1]
    F = feat.shape[1]
    out = torch.zeros(n, P, F, dtype=feat.dtype, device=feat.device)
    T_carry = torch.ones(n, 1, P, dtype=feat.dtype, device=feat.device)
    done = torch.zeros(n, 1, P, dtype=torch.bool, device=feat.device)
    acc = torch.zeros(n, P, dtype=feat.dtype, device=feat.device)
    for k0 in range(0, K, k_block):
        g = gid[:, k0 : k0 + k_block]
        v = gvalid[:, k0 : k0 + k_block]
        m = mean2d[g]  # (n, k, 2)
        co = conic[g]
        dx = px[:, None, :] - m[..., 0:1]
        dy = py[:, None, :] - m[..., 1:2]
        q = co[..., 0:1] * dx * dx + co[..., 2:3] * dy * dy + 2.0 * co[..., 1:2] * dx * dy
        alpha = torch.clamp_max(opac[g][..., None] * torch.exp(-0.5 * q), ALPHA_MAX)
        alpha = torch.where(v[..., None] & (alpha >= ALPHA_MIN), alpha, 0.0)
        one_m = 1.0 - alpha  # >= 0.01, so the division below is safe
        T_incl = torch.cumprod(one_m, dim=1) * T_carry  # transmittance after each Gaussian
        stop = T_incl < T_MIN  # monotone along k: this Gaussian and all behind it are not composited
        w = torch.where(stop | done, 0.0, alpha * (T_incl / one_m))  # (n, k, P)
        out = out + torch.einsum("nkp,nkf->npf", w, feat[g])
        acc = acc + w.sum(1)
        done = done | stop[:, -1:, :]
        T_carry = T_incl[:, -1:, :]
    return torch.cat([out, acc[..., None]], dim=-1)


def rasterize(
    mean2d: torch.Tensor,
    conic: torch.Tensor,
    cov2d: torch.Tensor,
    depth: torch.Tensor,
    opacities: torch.Tensor,
    features: torch.Tensor,
    valid: torch.Tensor,
    height: int,
    width: int,
    *,
    tile_px: int = 4,
    budget_elems: int = 1 << 21,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alpha-composite projected Gaussians front to back.

    mean2d (N, 2), conic (N, 3), cov2d (N, 3), depth (N,), opacities (N,), features (N, F),
    valid (N,) bool. Returns features (H, W, F) = sum_i w_i f_i, depth (H, W) = sum_i w_i z_i (not
    normalised) and alpha (H, W) = sum_i w_i, with w_i = alpha_i prod_{j<i} (1 - alpha_j).
    """
    device, dtype = mean2d.device, mean2d.dtype
    F = features.shape[1]
    ts = int(tile_px)
    ntx, nty = math.ceil(width / ts), math.ceil(height / ts)
    n_tiles, P = ntx * nty, ts * ts

    with torch.no_grad():
        op = opacities.detach()
        qmax = 2.0 * torch.log(torch.clamp_min(op * 255.0, 1e-30))  # alpha >= 1/255  <=>  q <= qmax
        ok = valid & (qmax > 0) & torch.isfinite(mean2d.detach()).all(-1)
        cv = cov2d.detach()
        q_safe = torch.clamp_min(qmax, 0.0)
        hx = torch.sqrt(q_safe * cv[:, 0])
        hy = torch.sqrt(q_safe * cv[:, 2])
        m = mean2d.detach()
        u0 = torch.ceil(m[:, 0] - hx).clamp(min=0)
        u1 = torch.floor(m[:, 0] + hx).clamp(max=width - 1)
        v0 = torch.ceil(m[:, 1] - hy).clamp(min=0)
        v1 = torch.floor(m[:, 1] + hy).clamp(max=height - 1)
        ok = ok & (u0 <= u1) & (v0 <= v1)
        idx = torch.nonzero(ok).squeeze(1)
        tx0 = (u0[idx] // ts).long()
        tx1 = (u1[idx] // ts).long()
        ty0 = (v0[idx] // ts).long()
        ty1 = (v1[idx] // ts).long()
        wt = tx1 - tx0 + 1
        counts = wt * (ty1 - ty0 + 1)
        M = idx.numel()
        total = int(counts.sum()) if M else 0
    if total == 0:
        zero = 0.0 * features.sum()  # keeps the graph connected for callers that backpropagate
        feat_img = torch.zeros(height, width, F, dtype=dtype, device=device) + zero
        plane = torch.zeros(height, width, dtype=dtype, device=device) + zero
        return feat_img, plane, plane.clone()

    with torch.no_grad():
        loc = torch.repeat_interleave(torch.arange(M, device=device), counts)
        start = torch.cumsum(counts, 0) - counts
        j = torch.arange(total, device=device) - start[loc]
        tile = (ty0[loc] + j // wt[loc]) * ntx + tx0[loc] + j % wt[loc]
        rank = torch.empty(M, dtype=torch.long, device=device)
        rank[torch.argsort(depth.detach()[idx], stable=True)] = torch.arange(M, device=device)
        order = torch.argsort(tile * M + rank[loc])
        sorted_loc = loc[order]
        per_tile = torch.bincount(tile, minlength=n_tiles)
        tile_start = torch.cumsum(per_tile, 0) - per_tile
        # Chunks of tiles with similar list lengths (largest first) so padding stays small.
        by_count = torch.argsort(per_tile, descending=True)
        cnt_sorted = per_tile[by_count].tolist()
        by_count_l = by_count.tolist()
        lin = torch.arange(P, device=device)

    # Compact per-Gaussian tensors of the kept set, differentiable.
    mean_k = mean2d[idx]
    conic_k = conic[idx]
    op_k = opacities[idx]
    feat_k = torch.cat([features[idx], depth[idx, None]], dim=1)  # depth composited as a feature

    need_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (mean_k, conic_k, op_k, feat_k)
    )
    results, tile_ids = [], []
    a = 0
    n_active = sum(1 for c in cnt_sorted if c > 0)
    while a < n_active:
        kmax = cnt_sorted[a]
        n = max(1, min(budget_elems // max(kmax * P, 1), n_active - a))
        tiles = by_count_l[a : a + n]
        a += n
        with torch.no_grad():
            tt = torch.tensor(tiles, device=device)
            ar = torch.arange(kmax, device=device)
            pos = tile_start[tt][:, None] + ar[None, :]
            gvalid = ar[None, :] < per_tile[tt][:, None]
            gid = sorted_loc[torch.where(gvalid, pos, torch.zeros_like(pos))]
            px = ((tt % ntx) * ts)[:, None] + (lin % ts)[None, :]
            py = ((tt // ntx) * ts)[:, None] + (lin // ts)[None, :]
            px, py = px.to(dtype), py.to(dtype)
            k_block = max(1, budget_elems // (n * P))
        args = (mean_k, conic_k, op_k, feat_k, gid, gvalid, px, py, k_block)
        if need_grad:
            res = checkpoint(_composite_chunk, *args, use_reentrant=False)
        else:
            res = _composite_chunk(*args)
        results.append(res)
        tile_ids.append(tt)
    res_all = torch.cat(results, 0)
    ids = torch.cat(tile_ids, 0)
    full = torch.zeros(n_tiles, P, F + 2, dtype=dtype, device=device).index_copy(0, ids, res_all)
    img = full.reshape(nty, ntx, ts, ts, F + 2).permute(0, 2, 1, 3, 4).reshape(nty * ts, ntx * ts, F + 2)
    img = img[:height, :width]
    return img[..., :F], img[..., F], img[..., F + 1]
