"""The NoPoSplat network: backbone + 2 point heads + 2 Gaussian heads + Gaussian adapter.

Top-level keys match the official state_dict without the Lightning ``encoder.`` prefix:
``backbone.*``, ``downstream_head1/2.*``, ``gaussian_param_head``/``gaussian_param_head2``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings

import torch
from torch import nn

from noposplat_ros.predictors.network.backbone import Backbone
from noposplat_ros.predictors.network.blocks import CrossAttention, SelfAttention
from noposplat_ros.predictors.network.config import NoPoSplatConfig
from noposplat_ros.predictors.network.dpt import GaussianHead, PointHead
from noposplat_ros.predictors.network.gaussian_adapter import GaussianAdapter, GaussianParams


@dataclasses.dataclass
class NetOutput(GaussianParams):
    """Network output for a batch of pairs, all float32; G = 2*H*W, g = v*H*W + y*W + x.

    means (B, G, 3) in camera-0's optical frame (unit-baseline units), covariances (B, G, 3, 3),
    harmonics (B, G, 3, d_sh), opacities (B, G), scales (B, G, 3) std devs,
    rotations_xyzw (B, G, 4); pts3d (B, 2, H, W, 3); gs_raw (B, 2, C, H, W);
    intermediates: name -> tensor (conformance names without the ``inter.`` prefix) or None.
    """

    # GaussianParams' fields first (means ... rotations_xyzw), then:
    pts3d: torch.Tensor
    gs_raw: torch.Tensor
    intermediates: dict[str, torch.Tensor] | None = None


class NoPoSplatNet(nn.Module):
    def __init__(self, cfg: NoPoSplatConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        self.downstream_head1 = PointHead(cfg)
        self.downstream_head2 = PointHead(cfg)
        self.gaussian_param_head = GaussianHead(cfg)
        self.gaussian_param_head2 = GaussianHead(cfg)
        self.gaussian_adapter = GaussianAdapter(cfg.sh_degree, cfg.scale_multiplier, cfg.scale_max)
        self._warned_portrait = False
        self.eval()  # inference network: the Gaussian heads carry a Dropout

    def set_fused_attention(self, fused: bool) -> None:
        """fused=True: scaled_dot_product_attention (default); False: explicit softmax reference."""
        for m in self.modules():
            if isinstance(m, (SelfAttention, CrossAttention)):
                m.fused = fused

    def rebuild_buffers(self, device: torch.device | str | None = None) -> None:
        """Recreate non-persistent buffers on ``device`` (default: the parameters' device)."""
        if device is None:
            device = next(self.parameters()).device
        self.gaussian_adapter.rebuild_buffers(device)

    def forward(
        self, image: torch.Tensor, intrinsics_norm: torch.Tensor, return_intermediates: bool = False
    ) -> NetOutput:
        """image (B, 2, 3, H, W) in [-1, 1]; intrinsics_norm (B, 2, 3, 3), K with row 0 / W, row 1 / H.

        H and W must be multiples of the patch size. Runs under the caller's autocast for the
        backbone; the heads and the adapter always run in float32 (as the official code does).
        """
        if image.ndim != 5 or image.shape[1] != 2 or image.shape[2] != 3:
            raise ValueError(f"image must be (B, 2, 3, H, W), got {tuple(image.shape)}")
        B, V, _, H, W = image.shape
        if intrinsics_norm.shape != (B, V, 3, 3):
            raise ValueError(f"intrinsics_norm must be ({B}, 2, 3, 3), got {tuple(intrinsics_norm.shape)}")
        p = self.cfg.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} must be a multiple of the patch size {p}")
        if H > W and not self._warned_portrait:
            # The official code transposes the point map of portrait inputs (means column-major, the
            # rest row-major). We keep every output row-major; the released models were trained on
            # square inputs only, so quality on portrait grids is unknown.
            warnings.warn(
                f"portrait network input {H}x{W}: the released models expect W >= H (square); outputs are "
                "consistently row-major here (the official code would scramble the means)",
                stacklevel=2,
            )
            self._warned_portrait = True

        inter: dict[str, torch.Tensor] | None = {} if return_intermediates else None
        layers0, layers1 = self.backbone(image, intrinsics_norm, inter)

        device_type = image.device.type
        with torch.autocast(device_type=device_type, enabled=False) if _autocast_capable(device_type) else contextlib.nullcontext():
            l0 = [t.float() for t in layers0]
            l1 = [t.float() for t in layers1]
            img = image.float()
            hw = (H, W)
            pts0 = self.downstream_head1(l0, hw)
            pts1 = self.downstream_head2(l1, hw)
            raw0 = self.gaussian_param_head(l0, hw, img[:, 0])
            raw1 = self.gaussian_param_head2(l1, hw, img[:, 1])
            pts3d = torch.stack([pts0, pts1], dim=1)
            gs_raw = torch.stack([raw0, raw1], dim=1)
            g = self.gaussian_adapter(gs_raw, pts3d)
        if inter is not None:
            inter = {k: (v if v.dtype == torch.int64 else v.float()) for k, v in inter.items()}
            inter["pts3d"] = pts3d
            inter["gs_raw"] = gs_raw
        return NetOutput(
            **{f.name: getattr(g, f.name) for f in dataclasses.fields(g)}, pts3d=pts3d, gs_raw=gs_raw,
            intermediates=inter,
        )


def _autocast_capable(device_type: str) -> bool:
    return device_type in ("cpu", "cuda", "xpu", "mps", "hpu")


def build_model(cfg: NoPoSplatConfig, device: torch.device | str = "cpu") -> NoPoSplatNet:
    """Build the network; ``device="meta"`` allocates no parameter memory."""
    with torch.device(device):
        model = NoPoSplatNet(cfg)
    return model.eval()
