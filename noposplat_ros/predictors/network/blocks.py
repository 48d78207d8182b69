"""Transformer blocks of the NoPoSplat backbone (CroCo/DUSt3R layout, our own code).

Key names follow the official state_dict: ``attn.qkv``, ``attn.proj``, ``cross_attn.projq/k/v``,
``cross_attn.proj``, ``mlp.fc1``, ``mlp.fc2``, ``norm1..3``, ``norm_y``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from noposplat_ros.predictors.network.rope import apply_rope

Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin) tables (N, head_dim)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fused: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v for (B, heads, N, D) tensors.

    fused=True uses torch's scaled_dot_product_attention (flash / memory-efficient kernels);
    fused=False is the explicit reference computation (used by tests and the benchmark baseline).
    """
    if fused:
        return F.scaled_dot_product_attention(q, k, v)
    scale = q.shape[-1] ** -0.5
    weights = (q @ k.transpose(-2, -1)) * scale
    return weights.softmax(dim=-1) @ v


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as the official blocks
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    """Fused qkv projection (output ordered q | k | v, each head-major), RoPE on q and k."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.fused = True

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        """x: (B, N, C) -> (B, N, C)."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = apply_rope(q, *rope)
        k = apply_rope(k, *rope)
        out = attention(q, k, v, self.fused)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class CrossAttention(nn.Module):
    """Separate q/k/v projections; queries rotated by their own positions, keys by the memory's."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.fused = True

    def forward(self, x: torch.Tensor, mem: torch.Tensor, rope_x: Rope, rope_mem: Rope) -> torch.Tensor:
        """x: (B, Nq, C) queries, mem: (B, Nk, C) keys/values -> (B, Nq, C)."""
        B, Nq, C = x.shape
        Nk = mem.shape[1]
        h, hd = self.heads, C // self.heads
        q = self.projq(x).reshape(B, Nq, h, hd).transpose(1, 2)
        k = self.projk(mem).reshape(B, Nk, h, hd).transpose(1, 2)
        v = self.projv(mem).reshape(B, Nk, h, hd).transpose(1, 2)
        q = apply_rope(q, *rope_x)
        k = apply_rope(k, *rope_mem)
        out = attention(q, k, v, self.fused)
        return self.proj(out.transpose(1, 2).reshape(B, Nq, C))


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: x += attn(norm1(x)); x += mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention to the other view (normed by norm_y), MLP; all pre-norm."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, rope_x: Rope, rope_mem: Rope) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope_x)
        m = self.norm_y(mem)
        x = x + self.cross_attn(self.norm2(x), m, rope_x, rope_mem)
        return x + self.mlp(self.norm3(x))
