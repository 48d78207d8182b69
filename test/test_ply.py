"""INRIA-layout PLY: property names, value conventions viewers expect, round trip."""
from __future__ import annotations

import math

import numpy as np
import plyfile
import pytest
import torch

from noposplat_ros.io.ply import read_ply, write_ply
from noposplat_ros.transforms import quat_xyzw_to_matrix
from noposplat_ros.types import Gaussians


def _random_gaussians(n: int, sh_degree: int, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.1 + 1e-3
    q = torch.randn(n, 4, generator=g)
    q = q / q.norm(dim=1, keepdim=True)
    opac = torch.rand(n, generator=g) * 0.98 + 0.01
    sh = torch.randn(n, 3, (sh_degree + 1) ** 2, generator=g)
    R = torch.from_numpy(quat_xyzw_to_matrix(q.numpy().astype(np.float64))).float()
    cov = R @ torch.diag_embed(scales**2) @ R.transpose(1, 2)
    return Gaussians(means, scales, q, opac, sh, cov)


def test_hand_computed_single_gaussian(tmp_path):
    # 90 degrees about z: quaternion xyzw = (0, 0, sin45, cos45).
    s45 = math.sqrt(0.5)
    sh = torch.zeros(1, 3, 16)
    sh[0, :, 0] = torch.tensor([0.1, 0.2, 0.3])
    sh[0, 0, 1:] = 1.0  # R channel's higher coefficients
    sh[0, 1, 1:] = 2.0
    sh[0, 2, 1:] = 3.0
    g = Gaussians(
        means=torch.tensor([[1.0, -2.0, 3.0]]),
        scales=torch.tensor([[0.5, 0.25, 2.0]]),
        rotations_xyzw=torch.tensor([[0.0, 0.0, s45, s45]]),
        opacities=torch.tensor([0.8]),
        harmonics=sh,
        covariances=torch.zeros(1, 3, 3),
    )
    path = tmp_path / "one.ply"
    write_ply(path, g)
    ply = plyfile.PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    v = ply["vertex"]
    names = [p.name for p in v.properties]
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    expected += [f"f_rest_{i}" for i in range(45)]
    expected += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert names == expected
    assert all(p.val_dtype in ("f4", "float32", "float") for p in v.properties)
    row = v.data[0]
    assert (row["x"], row["y"], row["z"]) == (1.0, -2.0, 3.0)
    assert row["opacity"] == pytest.approx(math.log(0.8 / 0.2), abs=1e-5)  # logit
    assert row["scale_0"] == pytest.approx(math.log(0.5), abs=1e-6)  # log
    assert row["scale_2"] == pytest.approx(math.log(2.0), abs=1e-6)
    assert (row["rot_0"], row["rot_3"]) == (pytest.approx(s45), pytest.approx(s45))  # w first
    assert row["rot_1"] == 0.0 and row["rot_2"] == 0.0
    assert row["f_dc_2"] == pytest.approx(0.3)
    # INRIA order: per colour channel, all its higher coefficients.
    assert [row[f"f_rest_{i}"] for i in (0, 14, 15, 29, 30, 44)] == [1, 1, 2, 2, 3, 3]

    back = read_ply(path)
    expected_cov = np.diag([0.25**2, 0.5**2, 2.0**2])  # x and y axes swapped by the rotation
    np.testing.assert_allclose(back.covariances[0].numpy(), expected_cov, atol=1e-6)
    assert back.opacities[0].item() == pytest.approx(0.8, abs=1e-6)


@pytest.mark.parametrize("sh_degree", [0, 3, 4])
def test_round_trip(tmp_path, sh_degree):
    g = _random_gaussians(500, sh_degree)
    path = tmp_path / "g.ply"
    write_ply(path, g)
    back = read_ply(path)
    kept = min(sh_degree, 3)
    assert back.num == g.num and back.sh_degree == kept
    torch.testing.assert_close(back.means, g.means)
    torch.testing.assert_close(back.scales, g.scales, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(back.opacities, g.opacities, rtol=1e-5, atol=1e-6)
    # q and -q are the same rotation: compare up to sign.
    sign = torch.sign((back.rotations_xyzw * g.rotations_xyzw).sum(1, keepdim=True))
    torch.testing.assert_close(back.rotations_xyzw * sign, g.rotations_xyzw, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(back.harmonics, g.harmonics[:, :, : (kept + 1) ** 2])
    torch.testing.assert_close(back.covariances, g.covariances, atol=1e-6, rtol=1e-4)


def test_extreme_opacity_and_scale_stay_finite(tmp_path):
    g = _random_gaussians(4, 0)
    g.opacities = torch.tensor([0.0, 1.0, 0.5, 1e-9])
    g.scales[0] = 0.0
    path = tmp_path / "x.ply"
    write_ply(path, g)
    v = plyfile.PlyData.read(str(path))["vertex"].data
    for key in ("opacity", "scale_0", "scale_1", "scale_2"):
        assert np.all(np.isfinite(v[key])), key
    assert v["opacity"][0] < -10 and v["opacity"][1] > 10


def test_pad_sh_degree(tmp_path):
    g = _random_gaussians(3, 0)
    path = tmp_path / "p.ply"
    write_ply(path, g, pad_sh_degree=3)
    v = plyfile.PlyData.read(str(path))["vertex"]
    assert sum(p.name.startswith("f_rest_") for p in v.properties) == 45
    assert read_ply(path).sh_degree == 3


def test_read_rejects_non_splat_ply(tmp_path):
    arr = np.zeros(2, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    path = tmp_path / "points.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(arr, "vertex")]).write(str(path))
    with pytest.raises(ValueError, match="missing vertex properties"):
        read_ply(path)


def test_matches_gsplat_exporter(tmp_path):
    """gsplat's exporter (CPU part) writes the same properties from gsplat's raw parameters
    (log scales, logit opacities, wxyz quaternions, sh (N, K, 3)); we read its file back too."""
    gsplat = pytest.importorskip("gsplat")
    g = _random_gaussians(50, 3, seed=4)
    ours = tmp_path / "ours.ply"
    theirs = tmp_path / "gsplat.ply"
    write_ply(ours, g)
    sh_nk3 = g.harmonics.transpose(1, 2)  # (N, K, 3)
    gsplat.export_splats(
        means=g.means,
        scales=torch.log(g.scales),
        quats=g.rotations_xyzw[:, [3, 0, 1, 2]],
        opacities=torch.logit(g.opacities),
        sh0=sh_nk3[:, :1],
        shN=sh_nk3[:, 1:],
        format="ply",
        save_to=str(theirs),
    )
    a = plyfile.PlyData.read(str(ours))["vertex"]
    b = plyfile.PlyData.read(str(theirs))["vertex"]
    names_b = [p.name for p in b.properties]
    assert [p.name for p in a.properties if p.name not in ("nx", "ny", "nz")] == names_b
    for name in names_b:
        np.testing.assert_allclose(a.data[name], b.data[name], rtol=1e-5, atol=1e-5, err_msg=name)
    back = read_ply(theirs)
    torch.testing.assert_close(back.opacities, g.opacities, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(back.harmonics, g.harmonics)


def test_empty_gaussians_round_trip(tmp_path):
    """A failed pair has no splats; its PLY must still be valid."""
    g = _random_gaussians(0, 3)
    write_ply(tmp_path / "empty.ply", g)
    back = read_ply(tmp_path / "empty.ply")
    assert back.num == 0 and back.sh_degree == 3
