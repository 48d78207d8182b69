"""Per-pixel Gaussians from a depth map: geometry, colour and the render round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from noposplat_ros.render import render
from noposplat_ros.render.from_depth import gaussians_from_depth


# small renders: single-threaded torch (see conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_backprojection_colour_and_round_trip():
    H, W = 10, 14
    K = np.array([[12.0, 0, 6.5], [0, 12.0, 4.5], [0, 0, 1]])
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    # Smooth colours: splats blend with their neighbours (0.3 px^2 low-pass), as in every 3DGS renderer.
    rgb = np.stack([u * 255 // (W - 1), v * 255 // (H - 1), 128 + 0 * u], -1).astype(np.uint8)
    z = np.full((H, W), 2.0)
    z[0, 0] = np.nan
    g = gaussians_from_depth(rgb, z, K, footprint_px=0.3, opacity=0.99)
    assert g.num == H * W - 1
    # Pixel (u=3, v=2) lies on its ray at depth 2.
    i = 2 * W + 3 - 1  # row-major index among valid pixels (pixel 0 is invalid)
    np.testing.assert_allclose(g.means[i].numpy(), [(3 - 6.5) / 12 * 2, (2 - 4.5) / 12 * 2, 2.0], atol=1e-6)
    full = gaussians_from_depth(rgb, z, K, keep_invalid=True)
    assert full.num == H * W and float(full.opacities[0]) == 0.0
    # Rendering from the same camera gives back the image (small footprints, opaque).
    out = render(g, K, torch.eye(4), H, W)
    ok = out.alpha > 0.95
    assert ok.float().mean() > 0.9
    err = (out.rgb - torch.as_tensor(rgb / 255.0, dtype=torch.float32)).abs()[ok]
    assert float(err.max()) < 0.05
    with pytest.raises(ValueError):
        gaussians_from_depth(rgb[:5], z, K)
