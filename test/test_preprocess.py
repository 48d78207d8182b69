"""Input preparation: resize + centre crop, exact intrinsics, and the inverse pixel mapping."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from noposplat_ros.predictors.network.preprocess import prepare_pair, prepare_view


def _K(fx, fy, cx, cy):
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _blob(hw, center_uv, sigma=5.0):
    """Float image with a Gaussian blob centred at pixel (u, v) (OpenCV pixel-centre convention)."""
    v, u = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float64)
    g = np.exp(-((u - center_uv[0]) ** 2 + (v - center_uv[1]) ** 2) / (2 * sigma**2))
    return np.repeat(g[..., None], 3, axis=2).astype(np.float32)


def _centroid(img):
    w = img[..., 0].astype(np.float64)
    v, u = np.mgrid[0 : w.shape[0], 0 : w.shape[1]]
    return np.array([(w * u).sum() / w.sum(), (w * v).sum() / w.sum()])


def test_model_resolution_image_used_as_is():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    K = _K(40.0, 41.0, 20.0, 17.0)
    v = prepare_view(rgb, K, (32, 48))
    assert not v.resized and v.offset_xy == (0, 0)
    np.testing.assert_array_equal(v.rgb01, rgb.astype(np.float32) / 255.0)
    np.testing.assert_allclose(v.K_grid_px, K, atol=1e-12)
    np.testing.assert_allclose(v.K_norm[0], [40 / 48, 0, 20.5 / 48])
    np.testing.assert_allclose(v.K_norm[1], [0, 41 / 32, 17.5 / 32])
    # float images in [0, 1] are passed through bit-exactly (the lossless .npy path)
    f = rng.random((32, 48, 3), dtype=np.float32)
    np.testing.assert_array_equal(prepare_view(f, K, (32, 48)).rgb01, f)


@pytest.mark.parametrize(
    "hw, target, uv",
    [
        ((360, 640), (256, 256), (350.3, 170.7)),  # RE10K-like landscape, shrink
        ((640, 360), (256, 256), (170.2, 352.6)),  # portrait camera: rows cropped
        ((100, 120), (256, 256), (64.4, 47.8)),  # enlarge (LANCZOS4)
        ((480, 640), (32, 48), (300.0, 250.0)),  # non-square grid
    ],
)
def test_resize_crop_geometry_matches_image_content(hw, target, uv):
    sigma = 0.04 * min(hw)
    v = prepare_view(_blob(hw, uv, sigma), _K(500, 500, hw[1] / 2, hw[0] / 2), target)
    assert v.rgb01.shape == (*target, 3)
    expected = v.original_to_grid(np.array(uv))
    found = _centroid(v.rgb01)
    # 0.01 px: a half-pixel convention slip (0.14-0.8 px in these cases) would fail
    np.testing.assert_allclose(found, expected, atol=0.01)
    # crop offset is floor((scaled - target) / 2)
    Hs, Ws = round(hw[0] * v.scale_xy[1]), round(hw[1] * v.scale_xy[0])
    assert v.offset_xy == ((Ws - target[1]) // 2, (Hs - target[0]) // 2)


def test_intrinsics_exact_for_off_centre_principal_point():
    K = _K(520.0, 515.0, 250.0, 300.0)  # far from the image centre (320, 180)
    v = prepare_view(np.zeros((360, 640, 3), np.uint8), K, (256, 256))
    rng = np.random.default_rng(1)
    X = rng.uniform([-1, -1, 2], [1, 1, 6], (50, 3))
    uv_orig = (X @ K.T)[:, :2] / X[:, 2:]
    uv_grid = (X @ v.K_grid_px.T)[:, :2] / X[:, 2:]
    np.testing.assert_allclose(v.original_to_grid(uv_orig), uv_grid, atol=1e-9)
    np.testing.assert_allclose(v.grid_to_original(uv_grid), uv_orig, atol=1e-9)
    # normalised K follows cx_n' = (cx_n * W_scaled - col_offset) / W with cx_n = (cx + 0.5) / W0
    Ws = round(640 * v.scale_xy[0])
    assert v.K_norm[0, 2] == pytest.approx(((250.5 / 640) * Ws - v.offset_xy[0]) / 256)
    # the official formula (cx_n unchanged) would be off by tens of pixels here
    assert abs(v.K_norm[0, 2] - 250.5 / 640) * 256 > 10
    # the grid's intrinsics in original-resolution pixels: shift by the crop corner
    x0, y0, x1, y1 = v.crop_box_original
    uv_crop = (X @ v.K_crop_original_px.T)[:, :2] / X[:, 2:]
    np.testing.assert_allclose(uv_crop + [x0, y0], uv_orig, atol=1e-9)
    assert x1 - x0 == pytest.approx(256 / v.scale_xy[0]) and (y0, y1) == (0.0, 360.0)


def test_prepare_pair_tensors_and_mismatch_warning():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    pair = prepare_pair(a, b, _K(500, 500, 320, 240), _K(250, 250, 160, 120), (256, 256))
    assert pair.image.shape == (1, 2, 3, 256, 256) and pair.image.dtype == torch.float32
    assert pair.image.min() >= -1 and pair.image.max() <= 1
    assert pair.intrinsics_norm.shape == (1, 2, 3, 3)
    torch.testing.assert_close(pair.intrinsics_norm[0, 0], pair.intrinsics_norm[0, 1], rtol=1e-2, atol=1e-2)
    assert pair.K_grid_px.shape == (2, 3, 3)
    with pytest.warns(UserWarning, match="different normalised focal lengths"):
        prepare_pair(a, a, _K(500, 500, 320, 240), _K(800, 800, 320, 240), (256, 256))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        prepare_view(np.zeros((10, 10), np.uint8), _K(1, 1, 1, 1), (32, 32))
    with pytest.raises(ValueError, match="fx, fy > 0"):
        prepare_view(np.zeros((10, 10, 3), np.uint8), _K(0, 1, 1, 1), (32, 32))
    with pytest.raises(ValueError, match="dtype"):
        prepare_view(np.zeros((10, 10, 3), np.int32), _K(1, 1, 1, 1), (32, 32))
