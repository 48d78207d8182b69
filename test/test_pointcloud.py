"""PointCloud2 splat schema v1: layout, byte order, round trip of every field (rgb packing and SH), and a
real sensor_msgs/PointCloud2 serialise/deserialise round trip."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from noposplat_ros.outputs import pointcloud as pc
from noposplat_ros.types import SH_C0, Gaussians, covariances_from_scales_rotations


def _random_gaussians(n: int, sh_degree: int, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=gen)
    q = q / q.norm(dim=-1, keepdim=True)
    scales = torch.rand(n, 3, generator=gen) * 0.1 + 1e-3
    k = (sh_degree + 1) ** 2
    return Gaussians(
        means=torch.randn(n, 3, generator=gen) * 5,
        scales=scales,
        rotations_xyzw=q,
        opacities=torch.rand(n, generator=gen),
        harmonics=torch.randn(n, 3, k, generator=gen),
        covariances=covariances_from_scales_rotations(scales, q),
    )


def test_field_layout():
    fields = pc.splat_fields()
    names = [f[0] for f in fields]
    assert names == ["x", "y", "z", "rgb", "opacity", "scale_x", "scale_y", "scale_z",
                     "rot_x", "rot_y", "rot_z", "rot_w"]
    assert [f[1] for f in fields] == list(range(0, 48, 4))
    assert all(f[2] == 7 and f[3] == 1 for f in fields)  # PointField.FLOAT32, count 1
    assert pc.point_step() == 48 and pc.SPLAT_SCHEMA_VERSION == 1
    sh = pc.splat_fields(include_sh=True, sh_coeffs=16)
    assert len(sh) == 12 + 48 and sh[12] == ("sh_0", 48, 7, 1) and sh[-1] == ("sh_47", 236, 7, 1)
    assert pc.point_step(True, 16) == 240 == pc.splat_dtype(True, 16).itemsize
    with pytest.raises(ValueError, match="sh_coeffs > 0"):
        pc.splat_fields(include_sh=True)


def test_little_endian_bytes():
    g = _random_gaussians(3, 0)
    arr = pc.gaussians_to_structured(g)
    raw = pc.cloud_bytes(arr)
    assert len(raw) == 3 * 48
    # Second splat's y, read by hand as little-endian float32 at offset 48 + 4.
    assert struct.unpack_from("<f", raw, 48 + 4)[0] == pytest.approx(float(g.means[1, 1]))
    # rgb: little-endian uint32 0x00RRGGBB; its top byte is zero.
    packed = struct.unpack_from("<I", raw, 2 * 48 + 12)[0]
    assert packed >> 24 == 0
    dc = g.harmonics[2, :, 0].numpy()
    expected = np.rint(np.clip(SH_C0 * dc + 0.5, 0, 1) * 255).astype(int)
    assert [(packed >> 16) & 255, (packed >> 8) & 255, packed & 255] == expected.tolist()


@pytest.mark.parametrize("sh_degree", [0, 1, 3])
def test_round_trip_every_field(sh_degree):
    g = _random_gaussians(500, sh_degree, seed=sh_degree)
    arr = pc.gaussians_to_structured(g, include_sh=True)
    k = (sh_degree + 1) ** 2
    dtype = pc.dtype_from_fields(pc.splat_fields(True, k), pc.point_step(True, k))
    back = np.frombuffer(pc.cloud_bytes(arr), dtype=dtype)
    g2 = pc.structured_to_gaussians(back)
    for name in ("means", "scales", "rotations_xyzw", "opacities", "harmonics"):
        torch.testing.assert_close(getattr(g2, name), getattr(g, name), rtol=0, atol=0, msg=name)
    torch.testing.assert_close(g2.covariances, g.covariances, rtol=1e-5, atol=1e-7)
    # sh fields are colour-major: sh_{c*K + k} = harmonics[:, c, k]
    assert back["sh_0"][7] == g.harmonics[7, 0, 0] and back[f"sh_{k}"][7] == g.harmonics[7, 1, 0]
    assert back[f"sh_{2 * k + k - 1}"][7] == g.harmonics[7, 2, k - 1]
    # rgb unpacks to the DC colour
    rgb = pc.unpack_rgb(pc.rgb_bits(back))
    dc_rgb = np.rint(np.clip(SH_C0 * g.harmonics[:, :, 0].numpy() + 0.5, 0, 1) * 255)
    np.testing.assert_array_equal(rgb, dc_rgb.astype(np.uint8))


def test_round_trip_without_sh_rebuilds_dc_from_rgb():
    g = _random_gaussians(200, 2)
    arr = pc.gaussians_to_structured(g)  # no sh fields
    assert "sh_0" not in arr.dtype.names
    g2 = pc.structured_to_gaussians(np.frombuffer(pc.cloud_bytes(arr), pc.dtype_from_fields(pc.splat_fields(), 48)))
    assert g2.sh_degree == 0
    colour = (SH_C0 * g.harmonics[:, :, 0] + 0.5).clamp(0, 1)
    colour2 = SH_C0 * g2.harmonics[:, :, 0] + 0.5
    assert (colour2 - colour).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit quantisation
    torch.testing.assert_close(g2.means, g.means, rtol=0, atol=0)


def test_rgb_survives_denormal_bit_patterns():
    """Dark colours pack into float32 denormals; their bits must survive the float column."""
    n = 4
    g = _random_gaussians(n, 0)
    g.harmonics[:, :, 0] = torch.tensor([[-10.0, -10.0, -10.0], [-10.0, -10.0, 10.0], [10.0, 10.0, 10.0],
                                         [-10.0, 10.0, -10.0]])
    arr = pc.gaussians_to_structured(g)
    np.testing.assert_array_equal(pc.rgb_bits(arr), [0x000000, 0x0000FF, 0xFFFFFF, 0x00FF00])
    np.testing.assert_array_equal(
        pc.unpack_rgb(pc.rgb_bits(arr)), [[0, 0, 0], [0, 0, 255], [255, 255, 255], [0, 255, 0]]
    )


def test_empty_and_gpu_free_inputs():
    z = torch.zeros
    g = Gaussians(z(0, 3), z(0, 3), z(0, 4), z(0), z(0, 3, 1), z(0, 3, 3))
    arr = pc.gaussians_to_structured(g)
    assert arr.shape == (0,) and pc.cloud_bytes(arr) == b""
    assert pc.structured_to_gaussians(arr).num == 0
    with pytest.raises(ValueError, match="missing fields"):
        pc.structured_to_gaussians(np.zeros(2, dtype=[("x", "<f4"), ("y", "<f4")]))


def test_sensor_msgs_pointcloud2_round_trip():
    """Fill a real PointCloud2 with these fields and bytes, serialise to CDR, deserialise, decode."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2, PointField

    g = _random_gaussians(1000, 1, seed=7)
    arr = pc.gaussians_to_structured(g, include_sh=True)
    msg = PointCloud2()
    msg.header.frame_id = "camera_optical_frame"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_000, 123
    msg.height, msg.width = 1, arr.shape[0]
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in pc.splat_fields(True, 4)]
    assert all(f.datatype == PointField.FLOAT32 for f in msg.fields)
    msg.is_bigendian = False
    msg.point_step = pc.point_step(True, 4)
    msg.row_step = msg.point_step * msg.width
    msg.data = pc.cloud_bytes(arr)
    msg.is_dense = True

    back = deserialize_message(serialize_message(msg), PointCloud2)
    assert back.width == 1000 and back.height == 1 and back.point_step == 12 * 4 + 12 * 4
    fields = [(f.name, f.offset, f.datatype, f.count) for f in back.fields]
    assert fields == pc.splat_fields(True, 4)
    decoded = np.frombuffer(back.data, dtype=pc.dtype_from_fields(fields, back.point_step, back.is_bigendian))
    g2 = pc.structured_to_gaussians(decoded)
    for name in ("means", "scales", "rotations_xyzw", "opacities", "harmonics"):
        torch.testing.assert_close(getattr(g2, name), getattr(g, name), rtol=0, atol=0, msg=name)
    np.testing.assert_array_equal(pc.rgb_bits(decoded), pc.rgb_bits(arr))


def test_non_contiguous_and_float64_inputs_pack_the_same():
    """Tensors that are views or float64 (the slow path) give the same bytes as contiguous float32."""
    g = _random_gaussians(300, 2, seed=3)
    wide = torch.cat([g.harmonics, torch.randn(300, 3, 4)], dim=-1)[:, :, :9]  # non-contiguous view
    assert not wide.is_contiguous()
    g_view = Gaussians(g.means.double(), g.scales, g.rotations_xyzw, g.opacities, wide, g.covariances)
    for include_sh in (False, True):
        assert pc.cloud_bytes(pc.gaussians_to_structured(g_view, include_sh)) == pc.cloud_bytes(
            pc.gaussians_to_structured(g, include_sh)
        )


def test_core_modules_do_not_import_rclpy():
    """Every module outside the shells (ros/, commands/) loads without ROS: the node, the bag runner
    and the fleet runner share them."""
    import pathlib
    import subprocess
    import sys

    import noposplat_ros

    root = pathlib.Path(noposplat_ros.__file__).parent
    modules = sorted(
        "noposplat_ros." + ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for p in root.rglob("*.py")
        if p.relative_to(root).parts[0] not in ("ros", "commands") and p.name != "cli.py"
    )
    assert "noposplat_ros.keyframes.selector" in modules and "noposplat_ros.pipeline" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'sensor_msgs', 'rosidl_runtime_py'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
