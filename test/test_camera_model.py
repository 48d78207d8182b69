"""CameraModel: undistortion of synthesised distorted checkerboards (corners back at their known pinhole
positions), binning/ROI intrinsics, identity fast path, every validation error."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from noposplat_ros.ingest.camera_model import CameraInfoError, CameraModel

W, H = 640, 480
K = np.array([[420.0, 0.0, 318.7], [0.0, 415.0, 243.2], [0.0, 0.0, 1.0]])
SQUARE_PX, NX, NY = 40.0, 12, 8  # checkerboard squares in the ideal (undistorted) image
ORIGIN_PX = (80.0, 80.0)  # top-left corner of the board in the ideal image
IDENTITY9 = [1, 0, 0, 0, 1, 0, 0, 0, 1]
MODELS = {
    "plumb_bob": np.array([-0.30, 0.09, 0.0012, -0.0008, -0.012]),
    "rational_polynomial": np.array([-0.25, 0.05, 0.001, -0.0006, 0.01, 0.05, -0.01, 0.01]),
    "equidistant": np.array([0.08, -0.02, 0.01, -0.003]),
}


def _ideal_corners(K_out: np.ndarray = K, roi_xy=(0, 0), binning=1) -> np.ndarray:
    """(M, 2) inner-corner positions, row-major, in an undistorted image with intrinsics K_out (pinhole)."""
    a, b = np.meshgrid(np.arange(1, NX), np.arange(1, NY))
    uv = np.stack([ORIGIN_PX[0] + SQUARE_PX * a.ravel(), ORIGIN_PX[1] + SQUARE_PX * b.ravel()], -1)
    # The board is drawn in K's ideal image; move to the output image's pixel grid.
    xn = (uv - K[:2, 2]) / np.diag(K)[:2]
    return xn * np.diag(K_out)[:2] + K_out[:2, 2]


_CACHE: dict[str, np.ndarray] = {}


def _render_distorted(model: str, d: np.ndarray, supersample: int = 2) -> np.ndarray:
    """Raw (distorted) (H, W, 3) image of the board: each raw pixel sample looks up the ideal board at
    its undistorted position, box-filtered over supersample^2 samples per pixel.

    Undistorted positions come from OpenCV's iterative undistortPoints, run to convergence on a
    4-px grid and bilinearly interpolated in between (the field is smooth; this keeps the test fast).
    """
    key = f"{model}{d.tobytes().hex()}"
    if key in _CACHE:
        return _CACHE[key]
    step = 4
    gy, gx = np.mgrid[0 : H + 2 * step : step, 0 : W + 2 * step : step].astype(np.float64) - step
    coarse = gx.shape
    pts = np.stack([gx, gy], -1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 60, 1e-12)
    if model == "equidistant":
        und = cv2.fisheye.undistortPoints(pts, K, d, P=K, criteria=crit)
    else:
        und = cv2.undistortPointsIter(pts, K, d, None, K, crit)
    map_u = und[:, 0, 0].reshape(coarse).astype(np.float32)
    map_v = und[:, 0, 1].reshape(coarse).astype(np.float32)
    s = supersample
    ys, xs = np.mgrid[0 : H * s, 0 : W * s].astype(np.float32)
    # fine sample position in raw pixels -> fractional index into the coarse grid
    fx, fy = ((xs + 0.5) / s - 0.5 + step) / step, ((ys + 0.5) / s - 0.5 + step) / step
    uu = cv2.remap(map_u, fx, fy, cv2.INTER_LINEAR).astype(np.float64)
    vv = cv2.remap(map_v, fx, fy, cv2.INTER_LINEAR).astype(np.float64)
    i, j = np.floor((uu - ORIGIN_PX[0]) / SQUARE_PX), np.floor((vv - ORIGIN_PX[1]) / SQUARE_PX)
    dark = (i >= 0) & (i < NX) & (j >= 0) & (j < NY) & ((i + j) % 2 == 0)
    val = np.where(dark, 0.0, 255.0).reshape(H, s, W, s).mean(axis=(1, 3))
    _CACHE[key] = out = np.repeat(np.round(val).astype(np.uint8)[:, :, None], 3, axis=2)
    out.flags.writeable = False
    return out


def _find_corners(rgb: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    ok, corners = cv2.findChessboardCornersSB(grey, (NX - 1, NY - 1), flags=cv2.CALIB_CB_ACCURACY)
    assert ok, "checkerboard not found"
    c = corners[:, 0].astype(np.float64)
    return c


def _match_order(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """findChessboardCorners may report the grid from the opposite end."""
    if np.linalg.norm(found[0] - expected[0]) > np.linalg.norm(found[0] - expected[-1]):
        found = found[::-1]
    return found


@pytest.fixture(scope="module", params=list(MODELS))
def distorted(request):
    model = request.param
    return model, MODELS[model], _render_distorted(model, MODELS[model])


def _fields(model="plumb_bob", d=None, k=None, r=None, p=None, **kw):
    args = dict(
        width=W, height=H, distortion_model=model,
        d=MODELS["plumb_bob"] if d is None else d,
        k=K.ravel() if k is None else k,
        r=IDENTITY9 if r is None else r,
        p=np.hstack([K, np.zeros((3, 1))]).ravel() if p is None else p,
    )
    args.update(kw)
    return args


def test_undistort_puts_corners_back(distorted):
    model, d, raw = distorted
    cam = CameraModel.from_camera_info_fields(**_fields(model, d))
    out, K_out = cam.undistort(raw)
    assert out.shape == raw.shape and out.dtype == np.uint8
    np.testing.assert_allclose(K_out, K)  # p == [K | 0]
    expected = _ideal_corners()
    found = _match_order(_find_corners(out), expected)
    err = np.linalg.norm(found - expected, axis=-1)
    assert err.max() < 0.5, err.max()
    # The raw image really is distorted: its corners sit where the forward model puts them, far
    # from the pinhole positions.
    xn = np.hstack([(expected - K[:2, 2]) / np.diag(K)[:2], np.ones((len(expected), 1))])[:, None, :]
    if model == "equidistant":
        proj, _ = cv2.fisheye.projectPoints(xn, np.zeros(3), np.zeros(3), K, d)
    else:
        proj, _ = cv2.projectPoints(xn, np.zeros(3), np.zeros(3), K, d)
    raw_found = _match_order(_find_corners(raw), proj[:, 0])
    assert np.linalg.norm(raw_found - proj[:, 0], axis=-1).max() < 0.5
    assert np.linalg.norm(raw_found - expected, axis=-1).max() > 5.0


def test_undistort_to_p_intrinsics():
    """With p != [K|0] the output has p's intrinsics (image_proc's image_rect)."""
    d = MODELS["plumb_bob"]
    raw = _render_distorted("plumb_bob", d)
    P3 = np.array([[380.0, 0.0, 322.0], [0.0, 380.0, 238.0], [0.0, 0.0, 1.0]])
    cam = CameraModel.from_camera_info_fields(**_fields(p=np.hstack([P3, np.zeros((3, 1))]).ravel()))
    out, K_out = cam.undistort(raw)
    np.testing.assert_allclose(K_out, P3)
    np.testing.assert_allclose(cam.K_for_image(H, W), P3)
    expected = _ideal_corners(P3)
    found = _match_order(_find_corners(out), expected)
    assert np.linalg.norm(found - expected, axis=-1).max() < 0.5


@pytest.mark.parametrize("roi, binning", [((40, 36, 560, 420), 1), ((0, 0, 0, 0), 2), ((40, 36, 560, 420), 2)])
def test_binning_and_roi(distorted, roi, binning):
    """Raw full-resolution image -> ROI crop -> 2x2 binning (area average) -> undistort: corners land at
    image_geometry's adjusted positions ((u - roi_x) / bx, (v - roi_y) / by)."""
    model, d, raw = distorted
    x, y, w, h = roi if roi != (0, 0, 0, 0) else (0, 0, W, H)
    img = raw[y : y + h, x : x + w]
    if binning > 1:
        img = cv2.resize(img, (w // binning, h // binning), interpolation=cv2.INTER_AREA)
    cam = CameraModel.from_camera_info_fields(
        **_fields(model, d, binning_x=binning, binning_y=binning, roi_x_offset=roi[0], roi_y_offset=roi[1],
                  roi_width=roi[2], roi_height=roi[3])
    )
    assert cam.image_size_hw == (h // binning, w // binning)
    K_adj = K.copy()
    K_adj[0, 2] -= x
    K_adj[1, 2] -= y
    K_adj[:2] /= binning
    np.testing.assert_allclose(cam.K_raw_for_image(*img.shape[:2]), K_adj)
    out, K_out = cam.undistort(img)
    np.testing.assert_allclose(K_out, K_adj)
    expected = _ideal_corners(K_adj)
    found = _match_order(_find_corners(out), expected)
    # Area binning puts a binned pixel's centre half a fine pixel off image_geometry's u / b (0.25 px
    # at b = 2); the tolerance allows for it.
    assert np.linalg.norm(found - expected, axis=-1).max() < 0.5 + 0.25 * (binning - 1)


def test_binning_intrinsics_exact():
    cam = CameraModel.from_camera_info_fields(
        **_fields(binning_x=4, binning_y=2, roi_x_offset=100, roi_y_offset=60, roi_width=400, roi_height=300)
    )
    assert cam.image_size_hw == (150, 100)
    Kb = cam.K_raw_for_image(150, 100)
    np.testing.assert_allclose(Kb, [[105.0, 0, (318.7 - 100) / 4], [0, 207.5, (243.2 - 60) / 2], [0, 0, 1]])
    # binning 0 counts as 1
    cam0 = CameraModel.from_camera_info_fields(**_fields(binning_x=0, binning_y=0))
    assert cam0.image_size_hw == (H, W)


def test_identity_fast_path_no_copy():
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    for model, d in (("plumb_bob", [0.0] * 5), ("plumb_bob", []), ("", []), ("equidistant", [0.0] * 4)):
        cam = CameraModel.from_camera_info_fields(**_fields(model, d, r=[0.0] * 9, p=[0.0] * 12))
        assert cam.is_identity
        out, K_out = cam.undistort(rgb)
        assert out is rgb
        np.testing.assert_allclose(K_out, K)


def test_maps_cached_and_key():
    d = np.array([0.25, 0.05, 0.0, 0.0, 0.0])  # pincushion
    cam = CameraModel.from_camera_info_fields(**_fields(d=d))
    img = np.full((H, W, 3), 200, np.uint8)
    a, _ = cam.undistort(img)
    b, _ = cam.undistort(img)
    np.testing.assert_array_equal(a, b)
    assert len(cam._maps) == 1
    # Pincushion removed: the output's corners look outside the raw image, so they are black.
    assert a[0, 0].max() == 0 and a[H // 2, W // 2].min() == 200
    same = CameraModel.from_camera_info_fields(**_fields(d=d.copy()))
    other = CameraModel.from_camera_info_fields(**_fields(d=d * 0.5))
    assert same.calibration_key() == cam.calibration_key() != other.calibration_key()


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "override, message",
    [
        (dict(k=[0, 0, 0, 0, 0, 0, 0, 0, 0]), "non-positive focal length"),
        (dict(k=[-420, 0, 318, 0, 415, 243, 0, 0, 1]), "non-positive focal length"),
        (dict(k=[420, 0, 318, 0, 0, 243, 0, 0, 1]), "non-positive focal length"),
        (dict(k=[np.nan, 0, 318, 0, 415, 243, 0, 0, 1]), "k contains NaN or inf"),
        (dict(k=[np.inf, 0, 318, 0, 415, 243, 0, 0, 1]), "k contains NaN or inf"),
        (dict(d=[np.nan, 0, 0, 0, 0]), "d contains NaN or inf"),
        (dict(p=[420, 0, 318, 0, 0, 415, np.nan, 0, 0, 0, 1, 0]), "p contains NaN or inf"),
        (dict(p=[0, 0, 318, 0, 0, 415, 243, 0, 0, 0, 1, 0]), "p has a non-positive focal length"),
        (dict(k=[420, 0, 318, 0, 415, 243, 0, 0]), "k must have 9 values, got 8"),
        (dict(p=[1.0] * 11), "p must have 12 values, got 11"),
        (dict(r=[1.0] * 10), "r must have 9 values, got 10"),
        (dict(r=[2, 0, 0, 0, 1, 0, 0, 0, 1]), "not a rotation"),
        (dict(d=[0.1, 0.01, 0, 0]), "'plumb_bob' needs 5 coefficients in d, got 4"),
        (dict(distortion_model="rational_polynomial"), "'rational_polynomial' needs 8 coefficients"),
        (dict(distortion_model="equidistant"), "'equidistant' needs 4 coefficients"),
        (dict(distortion_model="kannala_brandt_9"), "unknown distortion model 'kannala_brandt_9'"),
        (dict(distortion_model="", d=[0.1, 0, 0, 0, 0]), "no distortion model"),
        (dict(width=0), "zero or negative size"),
        (dict(roi_x_offset=600, roi_width=100, roi_height=100), "does not lie inside"),
        (dict(roi_x_offset=10), "does not lie inside"),
        (dict(binning_x=1000), "leaves an empty image"),
        (dict(d="abc"), "d is not numeric"),
    ],
)
def test_invalid_camera_info(override, message):
    with pytest.raises(CameraInfoError, match=message):
        CameraModel.from_camera_info_fields(**{**_fields(), **override})


def test_image_size_mismatch():
    cam = CameraModel.from_camera_info_fields(**_fields())
    with pytest.raises(CameraInfoError, match=r"image is 320x240 but camera_info describes 640x480"):
        cam.undistort(np.zeros((240, 320, 3), np.uint8))
    binned = CameraModel.from_camera_info_fields(**_fields(binning_x=2, binning_y=2))
    with pytest.raises(CameraInfoError, match=r"describes 320x240 .*binning 2x2"):
        binned.undistort(np.zeros((H, W, 3), np.uint8))
    with pytest.raises(CameraInfoError, match=r"describes 320x240"):
        binned.K_for_image(H, W)
    with pytest.raises(CameraInfoError, match=r"\(H, W, 3\)"):
        cam.undistort(np.zeros((H, W), np.uint8))
