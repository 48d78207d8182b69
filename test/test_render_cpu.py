"""CPU rasterizer against an independent brute-force float64 reference, and its pose gradient."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from noposplat_ros.render import render
from noposplat_ros.render.sh import SH_C0, sh_to_rgb
from noposplat_ros.types import Gaussians


# small renders: single-threaded torch (see conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quat_xyzw_to_R(q: torch.Tensor) -> torch.Tensor:
    q = q / q.norm(dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    return torch.stack(
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
         2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
         2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)


def random_scene(n: int, seed: int, sh_degree: int = 3, dtype=torch.float64, depth=(2.0, 5.0), spread=0.6, scale=(0.02, 0.2)) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    z = torch.empty(n, dtype=dtype).uniform_(*depth, generator=g)
    xy = (torch.rand(n, 2, generator=g, dtype=dtype) - 0.5) * spread * z[:, None]
    means = torch.cat([xy, z[:, None]], 1)
    scales = torch.empty(n, 3, dtype=dtype).uniform_(*scale, generator=g)
    rot = torch.randn(n, 4, generator=g, dtype=dtype)
    rot = rot / rot.norm(dim=-1, keepdim=True)
    R = quat_xyzw_to_R(rot)
    cov = R @ torch.diag_embed(scales**2) @ R.transpose(1, 2)
    opac = torch.empty(n, dtype=dtype).uniform_(0.05, 0.999, generator=g)
    k = (sh_degree + 1) ** 2
    sh = torch.randn(n, 3, k, generator=g, dtype=dtype) * 0.3
    sh[..., 0] = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) / SH_C0
    return Gaussians(means, scales, rot, opac, sh, cov)


def brute_force(gs: Gaussians, K: np.ndarray, T: np.ndarray, H: int, W: int, bg, near: float = 0.01):
    """Every pixel x every Gaussian, float64, sorted by depth, sequential compositing rule of 3DGS.

    Independent of the rasterizer: own projection (no Jacobian clamp: test scenes lie inside the view),
    no tiles, no support boxes, explicit front-to-back loop over the sorted Gaussians.
    """
    Tm = torch.as_tensor(T, dtype=torch.float64)
    Kt = torch.as_tensor(K, dtype=torch.float64)
    R, t = Tm[:3, :3], Tm[:3, 3]
    mu = gs.means.double()
    p = mu @ R.T + t
    keep = p[:, 2] > near
    order = torch.argsort(p[:, 2])
    order = order[keep[order]]
    fx, fy, cx, cy = Kt[0, 0], Kt[1, 1], Kt[0, 2], Kt[1, 2]
    cam = -R.T @ t
    d = mu - cam
    col = sh_to_rgb(gs.harmonics.double(), d / d.norm(dim=-1, keepdim=True), min(gs.sh_degree, 3))
    vv, uu = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    C = torch.zeros(H, W, 3, dtype=torch.float64)
    D = torch.zeros(H, W, dtype=torch.float64)
    Tr = torch.ones(H, W, dtype=torch.float64)
    done = torch.zeros(H, W, dtype=torch.bool)
    for i in order.tolist():  # per-Gaussian loop is fine in a test reference
        x, y, z = p[i]
        J = torch.tensor([[fx / z, 0, -fx * x / z**2], [0, fy / z, -fy * y / z**2]], dtype=torch.float64)
        S = J @ R @ gs.covariances[i].double() @ R.T @ J.T + 0.3 * torch.eye(2, dtype=torch.float64)
        Si = torch.linalg.inv(S)
        dx = uu - (fx * x / z + cx)
        dy = vv - (fy * y / z + cy)
        q = Si[0, 0] * dx * dx + 2 * Si[0, 1] * dx * dy + Si[1, 1] * dy * dy
        a = torch.clamp(gs.opacities[i].double() * torch.exp(-0.5 * q), max=0.99)
        use = (a >= 1 / 255) & ~done
        test_T = Tr * (1 - a)
        stop = use & (test_T < 1e-4)
        done = done | stop
        use = use & ~stop
        w = torch.where(use, a * Tr, torch.zeros_like(a))
        C += w[..., None] * col[i]
        D += w * z
        Tr = torch.where(use, test_T, Tr)
    alpha = 1 - Tr
    rgb = C + Tr[..., None] * torch.as_tensor(bg, dtype=torch.float64)
    depth = torch.where(alpha > 1e-4, D / alpha.clamp_min(1e-12), torch.zeros_like(D))
    return rgb, depth, alpha


def look_T(rx: float, ry: float, t) -> np.ndarray:
    cx_, sx = math.cos(rx), math.sin(rx)
    cy_, sy = math.cos(ry), math.sin(ry)
    Rx = np.array([[1, 0, 0], [0, cx_, -sx], [0, sx, cx_]])
    Ry = np.array([[cy_, 0, sy], [0, 1, 0], [-sy, 0, cy_]])
    T = np.eye(4)
    T[:3, :3] = Rx @ Ry
    T[:3, 3] = t
    return T


@pytest.mark.parametrize("seed,n,H,W,deg,tile", [(0, 60, 24, 32, 3, 8), (1, 150, 19, 27, 1, 4), (2, 40, 16, 16, 0, 16)])
def test_cpu_rasterizer_matches_brute_force(seed, n, H, W, deg, tile):
    gs = random_scene(n, seed, sh_degree=deg)
    K = np.array([[1.1 * W, 0, W / 2 - 1.3], [0, 1.05 * W, H / 2 + 0.7], [0, 0, 1]])
    T = look_T(0.05, -0.08, [0.1, -0.05, 0.2])
    bg = (0.2, 0.5, 0.1)
    out = render(gs, K, torch.as_tensor(T), H, W, background=bg, backend="cpu", tile_px=tile)
    rgb, depth, alpha = brute_force(gs, K, T, H, W, bg)
    assert alpha.max() > 0.9 and (alpha < 0.5).any()  # the scene is neither empty nor opaque everywhere
    torch.testing.assert_close(out.rgb, rgb, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.alpha, alpha, rtol=0, atol=1e-4)
    m = alpha > 0.05  # expected depth is ill-conditioned where almost nothing was composited
    torch.testing.assert_close(out.depth[m], depth[m], rtol=1e-4, atol=1e-4)


def test_tiny_budget_chunks_and_k_blocks_agree():
    """Forcing tiny chunks (K-blocking with carried transmittance) must not change the image."""
    from noposplat_ros.render import cpu_rasterizer as cr

    gs = random_scene(300, 5, sh_degree=1, scale=(0.05, 0.4))
    K = torch.tensor([[25.0, 0, 12.0], [0, 25.0, 10.0], [0, 0, 1]], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    m2, c2, con, z, v = cr.project(gs.means, gs.covariances, T, K, 24, 20, 0.01)
    feats = torch.rand(300, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = cr.rasterize(m2, con, c2, z, gs.opacities, feats, v, 20, 24, tile_px=8, budget_elems=1 << 22)
    b = cr.rasterize(m2, con, c2, z, gs.opacities, feats, v, 20, 24, tile_px=8, budget_elems=64 * 7)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-10)


def test_float32_render_close_to_float64():
    gs = random_scene(200, 3, sh_degree=2)
    K = np.array([[40.0, 0, 20.0], [0, 40.0, 15.0], [0, 0, 1]])
    T = torch.as_tensor(look_T(0.02, 0.03, [0.0, 0.1, 0.0]))
    o64 = render(gs, K, T, 30, 40, backend="cpu")
    o32 = render(gs.to("cpu").__class__(*(t.float() for t in (gs.means, gs.scales, gs.rotations_xyzw, gs.opacities, gs.harmonics, gs.covariances))), K, T, 30, 40, backend="cpu")
    assert o32.rgb.dtype == torch.float32
    torch.testing.assert_close(o32.rgb.double(), o64.rgb, rtol=0, atol=1e-4)


def test_pose_gradcheck_tiny_scene():
    from noposplat_ros.pose.se3 import exp_se3_torch

    gs = random_scene(12, 7, sh_degree=1, scale=(0.1, 0.3))
    K = torch.tensor([[12.0, 0, 6.0], [0, 12.0, 5.0], [0, 0, 1]], dtype=torch.float64)
    T0 = torch.as_tensor(look_T(0.03, -0.02, [0.05, 0.0, 0.1]))

    def f(xi: torch.Tensor):
        T = exp_se3_torch(xi[:3], xi[3:]) @ T0
        o = render(gs, K, T, 10, 12, backend="cpu", background=(0.1, 0.2, 0.3))
        # Random projections of every output keep gradcheck to a few backward passes per output.
        return (o.rgb * w_rgb).sum((0, 1)), (o.alpha * w_a).sum(), (o.depth * w_d).sum()

    gen = torch.Generator().manual_seed(1)
    w_rgb = torch.randn(10, 12, 3, generator=gen, dtype=torch.float64)
    w_a = torch.randn(10, 12, generator=gen, dtype=torch.float64)
    w_d = torch.randn(10, 12, generator=gen, dtype=torch.float64)

    xi = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    # Gradient exists and is not trivially zero.
    r = render(gs, K, exp_se3_torch(xi[:3], xi[3:]) @ T0, 10, 12, backend="cpu").rgb.sum()
    (g,) = torch.autograd.grad(r, xi)
    assert g.abs().max() > 1e-3
    assert torch.autograd.gradcheck(f, (xi,), eps=1e-6, atol=1e-5, rtol=1e-3)
    xi2 = torch.tensor([0.01, -0.02, 0.03, 0.02, -0.01, 0.015], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (xi2,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_bad_inputs_raise_clear_errors():
    gs = random_scene(5, 0)
    with pytest.raises(ValueError, match="K_px"):
        render(gs, np.eye(2), torch.eye(4), 4, 4)
    with pytest.raises(ValueError, match="T_cam_from_world"):
        render(gs, np.eye(3), torch.eye(3), 4, 4)
    with pytest.raises(ValueError, match="backend"):
        render(gs, np.eye(3), torch.eye(4), 4, 4, backend="opengl")
    with pytest.raises(ValueError, match="CUDA"):
        render(gs, np.eye(3), torch.eye(4), 4, 4, backend="gsplat")
    with pytest.raises(ValueError, match="size"):
        render(gs, np.eye(3), torch.eye(4), 0, 4)


def test_sh_degree_is_capped_at_3_and_band_4_ignored():
    gs = random_scene(30, 4, sh_degree=4)
    K = np.array([[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]])
    T = torch.eye(4, dtype=torch.float64)
    a = render(gs, K, T, 12, 16)
    gs.harmonics[..., 16:] = torch.randn_like(gs.harmonics[..., 16:])  # band 4 changes nothing
    b = render(gs, K, T, 12, 16)
    torch.testing.assert_close(a.rgb, b.rgb, rtol=0, atol=0)
    gs.harmonics[..., 9:16] += 0.5  # band 3 does change the image
    c = render(gs, K, T, 12, 16)
    assert (c.rgb - a.rgb).abs().max() > 1e-3
    d = render(gs, K, T, 12, 16, sh_degree=0)
    assert (d.rgb - a.rgb).abs().max() > 1e-3


def test_empty_view_renders_background():
    gs = random_scene(20, 0)
    T = torch.eye(4, dtype=torch.float64)
    T[2, 3] = -100.0  # everything behind the camera
    o = render(gs, np.array([[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]), T, 8, 8, background=(0.25, 0.5, 1.0))
    assert torch.all(o.alpha == 0)
    torch.testing.assert_close(o.rgb, torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64).expand(8, 8, 3))
