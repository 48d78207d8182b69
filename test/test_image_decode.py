"""Every raw encoding decodes to the RGB of a reference conversion, with and without row padding;
compressed JPEG/PNG; every error. Payloads are built from a real photo (scikit-image astronaut)."""
from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from skimage import data

from noposplat_ros.ingest.image_decode import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    UnsupportedEncodingError,
    bytes_per_pixel,
    decode_compressed,
    decode_image,
)

H, W = 96, 130  # even width (YUV 4:2:2 pairs pixels); not a multiple of 4 or 8


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[100:100 + H, 150:150 + W])


def _to16(img8: np.ndarray, seed: int = 0) -> np.ndarray:
    """8-bit -> 16-bit whose high byte is img8 and low byte random (so the low byte must be dropped)."""
    low = np.random.default_rng(seed).integers(0, 256, img8.shape, dtype=np.uint16)
    return (img8.astype(np.uint16) << 8) | low


def _bayer_mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) mosaic; pattern names the top-left 2x2 block row-major, e.g. "rggb"."""
    chan = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], np.uint8)
    for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        out[dy::2, dx::2] = rgb[dy::2, dx::2, chan[pattern[k]]]
    return out


def _payload(encoding: str, rgb: np.ndarray, bigendian: bool) -> tuple[np.ndarray, np.ndarray]:
    """(unpadded payload as an (H, row_bytes) uint8 array, expected RGB by a reference conversion)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    grey_rgb = np.repeat(grey[:, :, None], 3, axis=2)
    alpha = np.random.default_rng(1).integers(0, 256, rgb.shape[:2], dtype=np.uint8)[:, :, None]
    eight = {
        "rgb8": (rgb, rgb),
        "bgr8": (rgb[:, :, ::-1], rgb),
        "8UC3": (rgb[:, :, ::-1], rgb),
        "rgba8": (np.concatenate([rgb, alpha], 2), rgb),
        "bgra8": (np.concatenate([rgb[:, :, ::-1], alpha], 2), rgb),
        "8UC4": (np.concatenate([rgb[:, :, ::-1], alpha], 2), rgb),
        "mono8": (grey, grey_rgb),
        "8UC1": (grey, grey_rgb),
    }
    sixteen = {"mono16": "mono8", "16UC1": "mono8", "rgb16": "rgb8", "bgr16": "bgr8", "rgba16": "rgba8", "bgra16": "bgra8"}
    if encoding in eight:
        img, expected = eight[encoding]
    elif encoding in sixteen:
        img8, expected = eight[sixteen[encoding]]
        img = _to16(img8).astype(">u2" if bigendian else "<u2")
    elif encoding in ("yuv422", "uyvy"):
        img = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY)
        expected = cv2.cvtColor(img, cv2.COLOR_YUV2RGB_UYVY)
    elif encoding in ("yuv422_yuy2", "yuyv"):
        img = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUY2)
        expected = cv2.cvtColor(img, cv2.COLOR_YUV2RGB_YUY2)
    elif encoding.startswith("bayer_"):
        pattern = encoding[6:10]
        mosaic8 = _bayer_mosaic(rgb, pattern)
        # Reference: OpenCV demosaicing of the 8-bit mosaic with the code for the pattern whose
        # block at row 1, column 1 is ROS's top-left block (OpenCV's naming).
        ocv = {"rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB,
               "gbrg": cv2.COLOR_BayerGR2RGB, "grbg": cv2.COLOR_BayerGB2RGB}[pattern]
        expected = cv2.cvtColor(mosaic8, ocv)
        img = _to16(mosaic8).astype(">u2" if bigendian else "<u2") if encoding.endswith("16") else mosaic8
    else:
        raise AssertionError(f"no reference for {encoding}")
    raw = np.ascontiguousarray(img).view(np.uint8).reshape(rgb.shape[0], -1)
    return raw, expected


def _pad_rows(raw: np.ndarray, pad: int) -> np.ndarray:
    if pad == 0:
        return raw
    filler = np.full((raw.shape[0], pad), 0xAB, np.uint8)  # garbage that must never show up
    return np.ascontiguousarray(np.concatenate([raw, filler], axis=1))


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@pytest.mark.parametrize("pad", [0, 13])
def test_encoding_matches_reference(rgb, encoding, pad):
    bigendian_cases = (False, True) if ("16" in encoding) else (False,)
    for bigendian in bigendian_cases:
        raw, expected = _payload(encoding, rgb, bigendian)
        assert raw.shape[1] == W * bytes_per_pixel(encoding)
        buf = _pad_rows(raw, pad)
        out = decode_image(encoding, H, W, buf.shape[1], bigendian, buf.tobytes())
        assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, expected, err_msg=f"{encoding} pad={pad} bigendian={bigendian}")


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_pattern_gives_true_colours(rgb, pattern):
    """The demosaiced image is close to the photo it was mosaiced from; a wrong pattern is not."""
    mosaic = _bayer_mosaic(rgb, pattern)
    out = decode_image(f"bayer_{pattern}8", H, W, W, False, mosaic.tobytes())
    err = np.abs(out.astype(float) - rgb).mean()
    wrong = {"rggb": "bggr", "bggr": "rggb", "gbrg": "grbg", "grbg": "gbrg"}[pattern]
    err_wrong = np.abs(decode_image(f"bayer_{wrong}8", H, W, W, False, mosaic.tobytes()).astype(float) - rgb).mean()
    assert err < 12.0, err
    assert err_wrong > 2 * err, (err, err_wrong)


def test_yuv_close_to_source(rgb):
    for enc, code in (("yuv422", cv2.COLOR_RGB2YUV_UYVY), ("yuv422_yuy2", cv2.COLOR_RGB2YUV_YUY2)):
        raw = cv2.cvtColor(rgb, code)
        out = decode_image(enc, H, W, 2 * W, False, raw.tobytes())
        assert np.abs(out.astype(float) - rgb).mean() < 8.0


@pytest.mark.parametrize("kind", ["bytes", "array", "numpy", "memoryview", "bytearray"])
def test_buffer_types(rgb, kind):
    """rclpy hands array.array('B'), rosbags NumPy uint8; both, and plain buffers, decode alike."""
    raw = _pad_rows(np.ascontiguousarray(rgb[:, :, ::-1]).reshape(H, -1), 5)
    b = raw.tobytes()
    data_obj = {"bytes": b, "array": array.array("B", b), "numpy": np.frombuffer(b, np.uint8).copy(),
                "memoryview": memoryview(b), "bytearray": bytearray(b)}[kind]
    np.testing.assert_array_equal(decode_image("bgr8", H, W, 3 * W + 5, False, data_obj), rgb)


def test_rgb8_unpadded_is_zero_copy(rgb):
    buf = np.ascontiguousarray(rgb).reshape(-1).copy()
    out = decode_image("rgb8", H, W, 3 * W, False, buf)
    assert np.shares_memory(out, buf)
    np.testing.assert_array_equal(out, rgb)


def test_odd_width_and_longer_data(rgb):
    """Odd widths and payloads longer than height * step (some drivers over-allocate) decode."""
    sub = np.ascontiguousarray(rgb[:, :W - 1])
    raw = _pad_rows(sub.reshape(H, -1), 3)
    payload = raw.tobytes() + b"\x00" * 100
    np.testing.assert_array_equal(decode_image("rgb8", H, W - 1, raw.shape[1], False, payload), sub)


# ------------------------------------------------------------------ compressed
@pytest.mark.parametrize("fmt", ["jpeg", "bgr8; jpeg compressed bgr8", "rgb8; jpeg compressed rgb8", ""])
def test_jpeg(rgb, fmt):
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    out = decode_compressed(fmt, array.array("B", enc.tobytes()))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(float) - rgb).mean() < 4.0
    # Same as the reference decoder, channel order included.
    np.testing.assert_array_equal(out, cv2.cvtColor(cv2.imdecode(enc, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", "rgb8; png compressed rgb8"])
def test_png_exact(rgb, fmt):
    ok, enc = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(decode_compressed(fmt, enc.tobytes()), rgb)


def test_png_grey_and_16bit(rgb):
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    ok, enc = cv2.imencode(".png", grey)
    np.testing.assert_array_equal(decode_compressed("png", enc), np.repeat(grey[:, :, None], 3, 2))
    ok, enc16 = cv2.imencode(".png", _to16(grey))
    out = decode_compressed("png", enc16)
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, 2))


# ------------------------------------------------------------------ errors
def test_unknown_encoding():
    with pytest.raises(UnsupportedEncodingError, match="unsupported image encoding 'xyz10'"):
        decode_image("xyz10", 2, 2, 6, False, bytes(12))


def test_data_shorter_than_height_times_step():
    with pytest.raises(ImageDecodeError, match=r"has 11 bytes, expected height 2 \* step 6 = 12"):
        decode_image("rgb8", 2, 2, 6, False, bytes(11))


def test_step_smaller_than_row():
    with pytest.raises(ImageDecodeError, match=r"step 5 < width 2 \* 3 bytes per pixel"):
        decode_image("rgb8", 2, 2, 5, False, bytes(100))
    with pytest.raises(ImageDecodeError, match=r"step 3 < width 2 \* 2 bytes per pixel"):
        decode_image("mono16", 2, 2, 3, False, bytes(100))


@pytest.mark.parametrize("hw", [(0, 4), (4, 0), (0, 0)])
def test_zero_size(hw):
    with pytest.raises(ImageDecodeError, match="zero size"):
        decode_image("rgb8", hw[0], hw[1], 3 * hw[1], False, b"")


def test_odd_width_yuv():
    with pytest.raises(ImageDecodeError, match="even width"):
        decode_image("yuv422", 2, 3, 6, False, bytes(12))


def test_non_byte_numpy_data():
    with pytest.raises(ImageDecodeError, match="uint8"):
        decode_image("rgb8", 2, 2, 6, False, np.zeros(12, np.float32))


def test_undecodable_compressed():
    with pytest.raises(ImageDecodeError, match="cannot decode compressed image") as info:
        decode_compressed("jpeg", b"\xff\xd8 this is not a jpeg" * 10)
    assert not isinstance(info.value, UnsupportedEncodingError)
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_compressed("png", b"")
    with pytest.raises(UnsupportedEncodingError, match="compressed depth"):
        decode_compressed("16UC1; compressedDepth png", b"\x00" * 20)
    with pytest.raises(UnsupportedEncodingError, match="unsupported compressed image format"):
        decode_compressed("h264", b"\x00" * 20)
