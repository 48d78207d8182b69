"""Decode sensor_msgs/Image and CompressedImage payloads to RGB uint8 (no rclpy).

The functions take the message's plain fields, so the rclpy node (``data`` is an
``array.array('B')``), the rosbags-based bag reader (``data`` is a NumPy uint8 array) and tests
(``bytes``) share them. Raw payloads are wrapped with ``np.frombuffer`` and a strided view that
honours row padding (``step``); nothing is copied before the one colour conversion OpenCV does.

16-bit data (mono16, 16UC1, rgb16, bgr16, rgba16, bgra16, bayer_*16) is mapped to 8 bit by keeping
the high byte, i.e. ``v8 = floor(v16 / 256)`` (0 -> 0, 65535 -> 255). This is a strided byte view
chosen by ``is_bigendian``, not arithmetic. Cameras that put 10/12-bit data in 16-bit words look
dark under this mapping (documented limitation).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np


class ImageDecodeError(ValueError):
    """An image payload cannot be decoded (unknown encoding, inconsistent size, corrupt data)."""


class UnsupportedEncodingError(ImageDecodeError):
    """The encoding (raw) or format (compressed) is not one this module decodes."""


@dataclasses.dataclass(frozen=True)
class _Encoding:
    channels: int  # samples per pixel in the payload
    bytes_per_sample: int  # 1 or 2
    cv_code: int | None  # cv2.cvtColor code to RGB (after 16->8 bit); None: already RGB
    layout: str = "packed"  # "packed" (H, W, C) or "yuv422" (H, W, 2 bytes per pixel)


_ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, 1, None),
    "bgr8": _Encoding(3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": _Encoding(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": _Encoding(4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": _Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    "mono16": _Encoding(1, 2, cv2.COLOR_GRAY2RGB),
    "rgb16": _Encoding(3, 2, None),
    "bgr16": _Encoding(3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": _Encoding(4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": _Encoding(4, 2, cv2.COLOR_BGRA2RGB),
    # OpenCV-type encodings carry no colour order; like cv_bridge we read 3/4 channels as BGR(A).
    "8UC1": _Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    "8UC3": _Encoding(3, 1, cv2.COLOR_BGR2RGB),
    "8UC4": _Encoding(4, 1, cv2.COLOR_BGRA2RGB),
    "16UC1": _Encoding(1, 2, cv2.COLOR_GRAY2RGB),
    # sensor_msgs "yuv422" is UYVY byte order; "yuv422_yuy2" is YUYV. "uyvy"/"yuyv" are the newer
    # aliases of image_encodings.
    "yuv422": _Encoding(2, 1, cv2.COLOR_YUV2RGB_UYVY, "yuv422"),
    "uyvy": _Encoding(2, 1, cv2.COLOR_YUV2RGB_UYVY, "yuv422"),
    "yuv422_yuy2": _Encoding(2, 1, cv2.COLOR_YUV2RGB_YUY2, "yuv422"),
    "yuyv": _Encoding(2, 1, cv2.COLOR_YUV2RGB_YUY2, "yuv422"),
    # ROS names the Bayer pattern by its top-left 2x2 block; OpenCV names it by the block starting at
    # the second row and column, hence the shifted codes (same mapping as cv_bridge).
    "bayer_rggb8": _Encoding(1, 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": _Encoding(1, 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": _Encoding(1, 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": _Encoding(1, 1, cv2.COLOR_BayerGB2RGB),
    "bayer_rggb16": _Encoding(1, 2, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr16": _Encoding(1, 2, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg16": _Encoding(1, 2, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg16": _Encoding(1, 2, cv2.COLOR_BayerGB2RGB),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)


def bytes_per_pixel(encoding: str) -> int:
    """Bytes one pixel occupies in a payload of ``encoding`` (raises ImageDecodeError if unknown)."""
    enc = _lookup(encoding)
    return enc.channels * enc.bytes_per_sample


def _lookup(encoding: str) -> _Encoding:
    enc = _ENCODINGS.get(encoding)
    if enc is None:
        # image_encodings names are case-sensitive, but drivers in the wild send "RGB8"/"Mono8".
        enc = _ENCODINGS.get(encoding.lower()) or _ENCODINGS.get(encoding.upper())
    if enc is None:
        raise UnsupportedEncodingError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    return enc


def _as_uint8(data: Any) -> np.ndarray:
    """Any buffer (bytes, bytearray, memoryview, array.array('B'), NumPy uint8) -> 1-D uint8 view."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageDecodeError(f"image data must be uint8 bytes, got a NumPy array of {data.dtype}")
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(f"image data is not a byte buffer ({type(data).__name__}): {exc}") from exc


def raw_view(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data: Any) -> np.ndarray:
    """Zero-copy view of a raw payload as (H, W, C) uint8 samples, 16-bit reduced to the high byte.

    For "yuv422"-family encodings C = 2 (the interleaved bytes of each pixel). Rows may be padded
    (``step`` > width * bytes_per_pixel); the view then has a row stride of ``step``.
    """
    enc = _lookup(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"image has zero size ({width}x{height}, encoding {encoding!r})")
    if enc.layout == "yuv422" and width % 2:
        raise ImageDecodeError(f"{encoding} needs an even width (2 pixels share chroma), got {width}")
    bpp = enc.channels * enc.bytes_per_sample
    row_bytes = width * bpp
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} < width {width} * {bpp} bytes per pixel = {row_bytes} ({encoding!r})"
        )
    buf = _as_uint8(data)
    need = height * step
    if buf.size < need:
        raise ImageDecodeError(
            f"image data has {buf.size} bytes, expected height {height} * step {step} = {need} ({encoding!r})"
        )
    rows = buf[:need].reshape(height, step)[:, :row_bytes]
    if enc.bytes_per_sample == 2:
        # High byte of each 16-bit sample: byte 1 of each pair in little-endian, byte 0 in big-endian.
        rows = rows[:, 0 if is_bigendian else 1 :: 2]
    return rows.reshape(height, width, enc.channels)


def decode_image(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data: Any) -> np.ndarray:
    """A raw sensor_msgs/Image payload -> (H, W, 3) uint8 RGB, C-contiguous.

    rgb8 without row padding is returned as a zero-copy view of ``data`` (read-only when ``data``
    is immutable, e.g. ``bytes``); every other case is exactly one OpenCV conversion (or one copy).
    Raises ImageDecodeError with a message naming the problem.
    """
    enc = _lookup(encoding)
    view = raw_view(encoding, height, width, step, is_bigendian, data)
    if enc.cv_code is None:
        return view if view.flags.c_contiguous else np.ascontiguousarray(view)
    if enc.channels == 1:
        view = view[:, :, 0]  # (H, W) single channel, possibly strided rows
    if not view.flags.c_contiguous and (view.strides[-1] != 1 or enc.bytes_per_sample == 2):
        # OpenCV needs contiguous pixels inside a row; 16-bit high-byte views are strided by 2.
        view = np.ascontiguousarray(view)
    return cv2.cvtColor(view, enc.cv_code)


_COMPRESSED_FORMATS = ("jpeg", "jpg", "png", "webp", "bmp", "tiff")


def decode_compressed(format: str, data: Any) -> np.ndarray:  # noqa: A002 (ROS field name)
    """A sensor_msgs/CompressedImage payload -> (H, W, 3) uint8 RGB.

    ``format`` is the message's field: "jpeg", "png", or image_transport's long form such as
    "bgr8; jpeg compressed bgr8" / "rgb8; png compressed rgb8". The container is recognised from its
    bytes by OpenCV; the colour order in ``format`` only describes what was compressed, and
    OpenCV's decoder already returns it in the file's own order, so it is not needed. 16-bit PNGs are
    reduced to 8 bit by OpenCV; grey images are expanded to RGB. ``compressedDepth`` (depth images)
    is refused.
    """
    fmt = (format or "").strip().lower()
    if "compresseddepth" in fmt:
        raise UnsupportedEncodingError(f"compressed depth images are not camera images (format {format!r})")
    if fmt and not any(name in fmt for name in _COMPRESSED_FORMATS):
        raise UnsupportedEncodingError(
            f"unsupported compressed image format {format!r}; expected one of {', '.join(_COMPRESSED_FORMATS)}"
        )
    buf = _as_uint8(data)
    if buf.size == 0:
        raise ImageDecodeError(f"compressed image data is empty (format {format!r})")
    rgb = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)
    if rgb is None or rgb.size == 0:
        raise ImageDecodeError(f"cannot decode compressed image ({buf.size} bytes, format {format!r})")
    return rgb
