"""DPT heads: the point-map heads (``downstream_head1/2``) and the Gaussian-parameter heads
(``gaussian_param_head``/``gaussian_param_head2``). Each head's trunk lives under ``.dpt``.

The scratch projection convs are registered twice, as ``scratch.layerK_rn`` and
``scratch.layer_rn.(K-1)`` (one module, two names), because the official checkpoints carry both keys.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from noposplat_ros.predictors.network.config import NoPoSplatConfig


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Upsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2x(x)


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x))))."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """out = a (+ RCU1(b)); out = RCU2(out); bilinear x2 (align_corners); 1x1 out_conv."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(ch, ch, 1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(ch)
        self.resConfUnit2 = ResidualConvUnit(ch)

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        out = a if b is None else a + self.resConfUnit1(b)
        out = self.resConfUnit2(out)
        return self.out_conv(upsample2x(out))


class Scratch(nn.Module):
    def __init__(self, layer_dims: tuple[int, ...], feature_dim: int) -> None:
        super().__init__()
        convs = [nn.Conv2d(c, feature_dim, 3, padding=1, bias=False) for c in layer_dims]
        # the same modules under both official names (aliased keys in the checkpoints)
        self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn = convs
        self.layer_rn = nn.ModuleList(convs)
        self.refinenet1 = FusionBlock(feature_dim)
        self.refinenet2 = FusionBlock(feature_dim)
        self.refinenet3 = FusionBlock(feature_dim)
        self.refinenet4 = FusionBlock(feature_dim)


def _act_postprocess(dim_tokens: list[int], layer_dims: tuple[int, ...]) -> nn.ModuleList:
    d = layer_dims
    return nn.ModuleList([
        nn.Sequential(nn.Conv2d(dim_tokens[0], d[0], 1), nn.ConvTranspose2d(d[0], d[0], 4, stride=4)),
        nn.Sequential(nn.Conv2d(dim_tokens[1], d[1], 1), nn.ConvTranspose2d(d[1], d[1], 2, stride=2)),
        nn.Sequential(nn.Conv2d(dim_tokens[2], d[2], 1)),
        nn.Sequential(nn.Conv2d(dim_tokens[3], d[3], 1), nn.Conv2d(d[3], d[3], 3, stride=2, padding=1)),
    ])


class DPTTrunk(nn.Module):
    """Hooked token layers -> fused feature map p1 (B, feature_dim, H/2, W/2)."""

    def __init__(self, cfg: NoPoSplatConfig, head: nn.Sequential, with_merger: bool) -> None:
        super().__init__()
        self.hooks = cfg.resolved_hooks
        self.patch_size = cfg.patch_size
        dim_tokens = [cfg.enc_dim if h == 0 else cfg.dec_dim for h in self.hooks]
        self.scratch = Scratch(cfg.layer_dims, cfg.feature_dim)
        self.head = head
        self.act_postprocess = _act_postprocess(dim_tokens, cfg.layer_dims)
        if with_merger:
            self.input_merger = nn.Sequential(nn.Conv2d(3, cfg.resolved_merger_dim, 7, stride=1, padding=3), nn.ReLU())

    def fuse(self, layers: list[torch.Tensor], hw: tuple[int, int]) -> torch.Tensor:
        """layers: per-view list of (B, N, C) tokens; hw: image (H, W). Returns p1."""
        gh, gw = hw[0] // self.patch_size, hw[1] // self.patch_size
        feats = []
        for i, hook in enumerate(self.hooks):
            t = layers[hook]
            t = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], gh, gw)
            feats.append(self.act_postprocess[i](t))
        l1, l2, l3, l4 = (self.scratch.layer_rn[i](f) for i, f in enumerate(feats))
        p4 = self.scratch.refinenet4(l4)[:, :, : l3.shape[2], : l3.shape[3]]
        p3 = self.scratch.refinenet3(p4, l3)
        p2 = self.scratch.refinenet2(p3, l2)
        return self.scratch.refinenet1(p2, l1)


class PointHead(nn.Module):
    """Point map (``downstream_head*``): (B, H, W, 3) after the unbounded 'exp' depth mode."""

    def __init__(self, cfg: NoPoSplatConfig) -> None:
        super().__init__()
        f = cfg.feature_dim
        head = nn.Sequential(
            nn.Conv2d(f, f // 2, 3, padding=1),
            Upsample2x(),
            nn.Conv2d(f // 2, cfg.last_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(cfg.last_dim, 3, 1),
        )
        self.dpt = DPTTrunk(cfg, head, with_merger=False)

    def forward(self, layers: list[torch.Tensor], hw: tuple[int, int]) -> torch.Tensor:
        v = self.dpt.head(self.dpt.fuse(layers, hw)).permute(0, 2, 3, 1)  # (B, H, W, 3)
        n = v.norm(dim=-1, keepdim=True)
        return v / n.clamp(min=1e-8) * torch.expm1(n)


class GaussianHead(nn.Module):
    """Raw Gaussian parameters (``gaussian_param_head*``): (B, 83, H, W)."""

    def __init__(self, cfg: NoPoSplatConfig) -> None:
        super().__init__()
        f = cfg.feature_dim
        head = nn.Sequential(
            nn.Conv2d(f, f, 3, padding=1, bias=False),
            nn.Identity(),
            nn.ReLU(),
            nn.Dropout(0.1),  # inactive in eval()
            nn.Conv2d(f, cfg.gaussian_channels, 1),
        )
        self.dpt = DPTTrunk(cfg, head, with_merger=True)

    def forward(self, layers: list[torch.Tensor], hw: tuple[int, int], image: torch.Tensor) -> torch.Tensor:
        """image: (B, 3, H, W) in [-1, 1] of this view."""
        x = upsample2x(self.dpt.fuse(layers, hw)) + self.dpt.input_merger(image)
        return self.dpt.head(x)
