"""2-D rotary position embedding ("RoPE100") as used in every NoPoSplat attention layer.

The head dimension D is split in halves: the first half is rotated by the token's row y, the second
by its column x. Within a half of size d the frequencies are base^(-2j/d), j < d/2, the angle table is
duplicated (not interleaved) and pairs element i with i + d/2 ("rotate half").
"""
from __future__ import annotations

import torch


def token_positions_yx(grid_h: int, grid_w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(grid_h*grid_w + 1, 2) int64 (y, x) positions: patches row-major, then the intrinsics token.

    The intrinsics token sits at (grid_h, 0): one row below the last patch row, column 0 (official).
    """
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, device=device), torch.arange(grid_w, device=device), indexing="ij"
    )
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=-1)
    extra = torch.tensor([[grid_h, 0]], device=device, dtype=pos.dtype)
    return torch.cat([pos, extra], dim=0)


def rope_tables(pos_yx: torch.Tensor, head_dim: int, base: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables (N, head_dim) float32 for positions (N, 2) = (y, x).

    Columns [0, D/2) carry the y angles, [D/2, D) the x angles; each half is [p*inv, p*inv].
    """
    d = head_dim // 2
    inv_freq = base ** (-torch.arange(0, d, 2, device=pos_yx.device, dtype=torch.float64) / d)
    halves = []
    for axis in (0, 1):
        ang = pos_yx[:, axis].to(torch.float64)[:, None] * inv_freq[None, :]  # (N, d/2)
        halves.append(torch.cat([ang, ang], dim=-1))
    angles = torch.cat(halves, dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate t (B, heads, N, D) with tables (N, D); computed in float32, returned in t's dtype."""
    D = t.shape[-1]
    d, q = D // 2, D // 4
    tf = t.float()
    # rotate_half inside each of the two halves: (a, b) -> (-b, a) with a, b of size d/2
    rot = torch.cat([-tf[..., q:d], tf[..., :q], -tf[..., d + q:], tf[..., d:d + q]], dim=-1)
    return (tf * cos + rot * sin).to(t.dtype)
