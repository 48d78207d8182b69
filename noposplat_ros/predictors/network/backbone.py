"""Shared ViT encoder with the intrinsics token, and the two cross-attention decoders."""
from __future__ import annotations

import torch
from torch import nn

from noposplat_ros.predictors.network.blocks import DecoderBlock, EncoderBlock
from noposplat_ros.predictors.network.config import NoPoSplatConfig
from noposplat_ros.predictors.network.rope import rope_tables, token_positions_yx


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, dim), tokens row-major."""
        return self.proj(image).flatten(2).transpose(1, 2)


class Backbone(nn.Module):
    """Keys: ``mask_token``, ``patch_embed.proj``, ``enc_blocks.i``, ``enc_norm``, ``decoder_embed``,
    ``dec_blocks.i`` (view 0), ``dec_blocks2.i`` (view 1), ``dec_norm``, ``intrinsic_encoder``."""

    def __init__(self, cfg: NoPoSplatConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # CroCo pre-training leftover: unused at inference but present in the checkpoints
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_dim))
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.enc_dim)
        self.enc_blocks = nn.ModuleList(
            EncoderBlock(cfg.enc_dim, cfg.enc_heads, cfg.mlp_ratio, cfg.norm_eps) for _ in range(cfg.enc_depth)
        )
        self.enc_norm = nn.LayerNorm(cfg.enc_dim, eps=cfg.norm_eps)
        self.decoder_embed = nn.Linear(cfg.enc_dim, cfg.dec_dim)
        self.dec_blocks = nn.ModuleList(
            DecoderBlock(cfg.dec_dim, cfg.dec_heads, cfg.mlp_ratio, cfg.norm_eps) for _ in range(cfg.dec_depth)
        )
        self.dec_norm = nn.LayerNorm(cfg.dec_dim, eps=cfg.norm_eps)
        self.dec_blocks2 = nn.ModuleList(
            DecoderBlock(cfg.dec_dim, cfg.dec_heads, cfg.mlp_ratio, cfg.norm_eps) for _ in range(cfg.dec_depth)
        )
        self.intrinsic_encoder = nn.Linear(9, cfg.resolved_intrinsics_dim)
        # (grid_h, grid_w, device) -> (positions, encoder RoPE, decoder RoPE): built once per grid, so
        # a forward makes no host->device copy (none to wait for; CUDA graphs can capture it)
        self._rope_cache: dict[tuple[int, int, str], tuple[torch.Tensor, tuple, tuple]] = {}

    def rope(self, gh: int, gw: int, device: torch.device) -> tuple[torch.Tensor, tuple, tuple]:
        """Token positions (N+1, 2) and the (cos, sin) tables of the encoder and decoder heads."""
        key = (gh, gw, str(device))
        if key not in self._rope_cache:
            # plain tensors even when called under inference_mode (usable in any later mode)
            with torch.inference_mode(False), torch.no_grad():
                pos = token_positions_yx(gh, gw, device=device)
                self._rope_cache[key] = (
                    pos,
                    rope_tables(pos, self.cfg.enc_dim // self.cfg.enc_heads, self.cfg.rope_base),
                    rope_tables(pos, self.cfg.dec_dim // self.cfg.dec_heads, self.cfg.rope_base),
                )
        return self._rope_cache[key]

    def forward(
        self, image: torch.Tensor, intrinsics_norm: torch.Tensor, inter: dict[str, torch.Tensor] | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """image (B, 2, 3, H, W) in [-1, 1], intrinsics_norm (B, 2, 3, 3).

        Returns the per-view layer lists [encoder out, dec block 1, ..., dec block L (normed)], each
        entry (B, N, C) with the intrinsics token removed. ``inter`` (optional) collects intermediates.
        """
        B, V, _, H, W = image.shape
        p = self.cfg.patch_size
        gh, gw = H // p, W // p
        N = gh * gw
        pos, enc_rope, dec_rope = self.rope(gh, gw, image.device)

        # both views through the shared encoder as one batch (B*V)
        patches = self.patch_embed(image.reshape(B * V, 3, H, W))
        k_token = self.intrinsic_encoder(intrinsics_norm.reshape(B * V, 9).to(patches.dtype))
        x = torch.cat([patches, k_token[:, None, :]], dim=1)
        for blk in self.enc_blocks:
            x = blk(x, enc_rope)
        enc = self.enc_norm(x)  # (B*V, N+1, enc_dim)
        if inter is not None:
            inter["token_pos_yx"] = pos
            inter["patch_tokens"] = patches.reshape(B, V, N, -1)
            inter["intrinsic_token"] = k_token.reshape(B, V, -1)
            inter["enc_out_with_intrinsic_token"] = enc.reshape(B, V, N + 1, -1)

        enc = enc.reshape(B, V, N + 1, -1)
        f0 = self.decoder_embed(enc[:, 0])
        f1 = self.decoder_embed(enc[:, 1])
        layers0, layers1 = [enc[:, 0]], [enc[:, 1]]
        depth = len(self.dec_blocks)
        for i, (blk0, blk1) in enumerate(zip(self.dec_blocks, self.dec_blocks2)):
            # both views advance from the previous layer's outputs
            f0, f1 = blk0(f0, f1, dec_rope, dec_rope), blk1(f1, f0, dec_rope, dec_rope)
            if i == depth - 1:
                f0, f1 = self.dec_norm(f0), self.dec_norm(f1)
            layers0.append(f0)
            layers1.append(f1)
        layers0 = [t[:, :N] for t in layers0]
        layers1 = [t[:, :N] for t in layers1]
        if inter is not None:
            for i, (a, b) in enumerate(zip(layers0, layers1)):
                inter[f"dec_tokens.{i:02d}"] = torch.stack([a, b], dim=1)
        return layers0, layers1
