"""Photometric refinement of T_cam0_from_cam1: render view 1 from the Gaussians, match the image.

Parameterisation and update follow the official code (spec §11): a twist [rho; omega] at zero,
``w2c <- Exp([rho; omega]) @ w2c`` with w2c = T_cam1_from_cam0, the deltas reset after every step.

Methods:
- ``method="hybrid"`` (default): Adam (the official update) on the coarse levels, whose wide basin
  measured more robust than Gauss-Newton from 2-3 degree starts, then a few LM steps at the finest
  level, which converge much further than Adam for the same time (numbers in docs/readme_pose_render.md).
- ``method="gn"`` / ``"lm"``: Levenberg-Marquardt on the photometric residual, coarse to
  fine. The (pixels x 6) Jacobian comes from forward-mode autodiff on the CPU rasterizer
  (``torch.func.jacfwd``: six tangents batched in one pass) or from central differences with gsplat
  (no forward mode in its CUDA kernels); the 6x6 normal equations are solved in float64, a step is
  accepted only if the cost drops (otherwise the damping grows). "gn" is the same with a tiny damping.
  Few steps (3-6 per level) at 1/4 and 1/2 resolution; early stop on the step size.
- ``method="adam"``: the official optimiser (Adam, lr 0.005, deltas reset each step), optionally coarse
  to fine; ``refine_pose_official`` runs the exact official recipe (200 steps, full resolution,
  MSE + (1 - SSIM structure)). LPIPS-VGG (weight 0.05 in the official re10k loss) is not available here
  (no weights may be downloaded) and is left out.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F

from noposplat_ros.ingest.camera_model import scale_intrinsics
from noposplat_ros.pose.se3 import exp_se3_torch
from noposplat_ros.render import DEFAULT_NEAR_M, effective_sh_degree, render
from noposplat_ros.types import Gaussians


@dataclasses.dataclass
class RefineConfig:
    """Photometric pose refinement settings.

    enabled: False returns the initial pose unchanged (info.skipped = True).
    method: "hybrid" (default: Adam on every level but the last, LM on the last), "lm" (damped
      Gauss-Newton on every level), "gn" (undamped, lambda 1e-9) or "adam".
    levels: image downsampling factors, coarse to fine (1 = full resolution of ``image1``).
    steps_per_level: step budget of a gn/lm level (Jacobian evaluations).
    adam_steps_per_level: step budget of an Adam level (method "adam", coarse levels of "hybrid").
    level_methods / level_steps: optional per-level overrides of method / steps_per_level, e.g.
      ("adam", "adam", "lm") with (20, 20, 3): Adam's wide basin on the coarse levels, LM's fast
      convergence at the finest.
    stop_rot_rad / stop_trans_rel: early stop when a step rotates less than this and translates less
      than this fraction of the current baseline length (times the level's factor).
    lm_lambda0: initial LM damping (relative to diag(J^T J)); max_rejects: retries per step.
    adam_lr: Adam learning rate (official 0.005).
    ssim_weight: weight of (1 - SSIM structure) added to the MSE (adam only; official 1.0).
    mask_min_alpha: pixels whose rendered alpha at the start of a level is below this are ignored
      (0 = use every pixel, as the official loss does).
    coverage_target: gn/lm compare the render with alpha * image instead of the image, so pixels the
      Gaussians do not cover (holes, image borders the other view never saw) carry no residual; the
      official loss compares with the image and is pulled by those uncovered regions.
    coverage_penalty: with coverage_target, uncovered pixels cost coverage_penalty * (1 - alpha) (the
      typical colour error of content the Gaussians do not model); without it, poses that look past
      the Gaussians would be free and the optimiser drifts towards them.
    coarse_subsample: at a level with factor f > 1, render every (f^2)-th Gaussian with its standard
      deviations multiplied by f (a coarser splat set for a coarser image): the cost of a render scales
      with the number of Gaussians, not pixels, because every splat covers at least ~5x5 px.
    jacobian: how gn/lm get the (pixels x 6) Jacobian: "forward" (forward-mode autodiff, exact; needs a
      renderer with forward-mode support: the CPU rasterizer), "central" (central differences, 12
      renders without autograd: works with gsplat, whose CUDA kernels have no forward mode) or "auto"
      (forward on CPU, central on CUDA). fd_step_px: central-difference step as an image motion in
      pixels of the level (rotation fd_step_px / fx, translation fd_step_px * median depth / fx): large
      enough to average over the renderer's small discontinuities (1/255 cut-off, depth-order swaps),
      which make tiny steps noisy.
    max_gaussians: keep only the most opaque ones above this count (None = all).
    near_m: near cull for the renderer.
    """

    enabled: bool = True
    method: str = "hybrid"
    levels: tuple[int, ...] = (4, 2)
    steps_per_level: int = 3
    adam_steps_per_level: int = 20
    level_methods: tuple[str, ...] | None = None
    level_steps: tuple[int, ...] | None = None
    stop_rot_rad: float = 2e-5
    stop_trans_rel: float = 2e-4
    lm_lambda0: float = 1e-3
    max_rejects: int = 3
    adam_lr: float = 0.005
    ssim_weight: float = 0.0
    mask_min_alpha: float = 0.0
    coverage_target: bool = True
    coverage_penalty: float = 0.1
    coarse_subsample: bool = True
    jacobian: str = "auto"
    fd_step_px: float = 0.3
    max_gaussians: int | None = None
    near_m: float = DEFAULT_NEAR_M

    def __post_init__(self) -> None:
        if self.method not in ("hybrid", "gn", "lm", "adam"):
            raise ValueError(f"RefineConfig.method must be hybrid, gn, lm or adam, got {self.method!r}")
        if not self.levels or any(int(s) < 1 for s in self.levels):
            raise ValueError(f"RefineConfig.levels must be factors >= 1, got {self.levels}")
        for name, vals in (("level_methods", self.level_methods), ("level_steps", self.level_steps)):
            if vals is not None and len(vals) != len(self.levels):
                raise ValueError(f"RefineConfig.{name} needs one entry per level {self.levels}, got {vals}")
        if self.level_methods is not None and any(m not in ("gn", "lm", "adam") for m in self.level_methods):
            raise ValueError(f"RefineConfig.level_methods entries must be gn, lm or adam: {self.level_methods}")
        if self.jacobian not in ("auto", "forward", "central"):
            raise ValueError(f"RefineConfig.jacobian must be auto, forward or central, got {self.jacobian!r}")
        if self.steps_per_level < 0:
            raise ValueError("RefineConfig.steps_per_level must be >= 0")


@dataclasses.dataclass
class RefineInfo:
    """What the refinement did: steps (Jacobians or Adam steps), renders (forward passes incl. those),
    initial / final photometric MSE at the finest level used, per-level step counts, time."""

    method: str
    skipped: bool = False
    steps: int = 0
    renders: int = 0
    levels: list[tuple[int, int, float, float]] = dataclasses.field(default_factory=list)
    # per level: (factor, steps, MSE at the start, MSE at the end), MSE over that level's pixels
    initial_loss: float = float("nan")  # MSE at the start of the first (coarsest) level
    final_loss: float = float("nan")  # MSE at the end of the last (finest) level
    converged: bool = False
    history: list[tuple[int, float, float, float, float]] = dataclasses.field(default_factory=list)
    # gn/lm: (level factor, cost after the step, |rotation step| rad, |translation step|, damping)
    time_s: float = 0.0
    message: str = ""


def _pyramid_level(image_hw3: torch.Tensor, K_px: np.ndarray, factor: int) -> tuple[torch.Tensor, np.ndarray]:
    H, W = image_hw3.shape[:2]
    if factor == 1:
        return image_hw3, np.asarray(K_px, dtype=np.float64)
    h, w = max(1, H // factor), max(1, W // factor)
    img = F.interpolate(image_hw3.permute(2, 0, 1)[None], size=(h, w), mode="area")[0].permute(1, 2, 0)
    return img.contiguous(), scale_intrinsics(K_px, w / W, h / H)


def _gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim_structure(a_hw3: torch.Tensor, b_hw3: torch.Tensor, clamp_max: float = 0.98) -> torch.Tensor:
    """Mean SSIM structure term (sigma12 + C3) / (sigma1 sigma2 + C3), per pixel clamped at ``clamp_max``,
    11x11 Gaussian window (sigma 1.5, valid region only), data range 1, C3 = C2 / 2."""
    C2 = 0.03**2
    C3 = C2 / 2
    x = torch.stack([a_hw3, b_hw3]).permute(0, 3, 1, 2)  # (2, 3, H, W)
    g = _gaussian_window(dtype=x.dtype, device=x.device)
    C = x.shape[1]
    wx = g.view(1, 1, 1, -1).expand(C, 1, 1, -1)
    wy = g.view(1, 1, -1, 1).expand(C, 1, -1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wx, groups=C), wy, groups=C)

    mu = blur(x)
    var = blur(x * x) - mu * mu
    cov = blur(x[0:1] * x[1:2]) - mu[0:1] * mu[1:2]
    s1 = torch.sqrt(torch.clamp_min(var[0:1], 1e-8))
    s2 = torch.sqrt(torch.clamp_min(var[1:2], 1e-8))
    s = (cov + C3) / (s1 * s2 + C3)
    return torch.clamp_max(s, clamp_max).mean()


def _coarse_set(g: Gaussians, factor: int) -> Gaussians:
    """Every (factor^2)-th Gaussian, footprints enlarged by ``factor`` (see RefineConfig.coarse_subsample)."""
    if factor <= 1:
        return g
    idx = torch.arange(0, g.num, factor * factor, device=g.means.device)
    return Gaussians(
        g.means[idx], g.scales[idx] * factor, g.rotations_xyzw[idx], g.opacities[idx], g.harmonics[idx],
        g.covariances[idx] * float(factor * factor),
    )


def _select(gaussians: Gaussians, max_n: int | None) -> Gaussians:
    keep = gaussians.opacities > (1.0 / 255.0)
    g = gaussians.subset(keep)
    if max_n is not None and g.num > max_n:
        g = g.subset(torch.topk(g.opacities, max_n).indices)
    return g


class _Problem:
    """Photometric residual of one pyramid level around a fixed w2c."""

    def __init__(self, gaussians: Gaussians, image_hw3: torch.Tensor, K_px: np.ndarray, near_m: float, degree: int):
        self.g = gaussians
        self.img = image_hw3.to(gaussians.means.dtype)
        self.K = torch.as_tensor(np.asarray(K_px, dtype=np.float64), dtype=gaussians.means.dtype)
        self.H, self.W = image_hw3.shape[:2]
        self.near = near_m
        self.degree = degree
        self.weight: torch.Tensor | None = None  # (H, W, 1) pixel mask or None
        self.renders = 0
        self.factor = 1
        self.coverage_target = False
        self.coverage_penalty = 0.0

    def render_at(self, xi: torch.Tensor, w2c: torch.Tensor):
        T = exp_se3_torch(xi[:3], xi[3:]) @ w2c
        self.renders += 1
        return render(
            self.g, self.K, T.to(self.g.means.dtype), self.H, self.W, sh_degree=self.degree, near_m=self.near,
            backend="auto",
        )

    def residual(self, xi: torch.Tensor, w2c: torch.Tensor) -> torch.Tensor:
        out = self.render_at(xi, w2c)
        if self.coverage_target:
            r = out.rgb - out.alpha[..., None] * self.img
            if self.coverage_penalty > 0:
                r = torch.cat([r, (self.coverage_penalty * (1.0 - out.alpha))[..., None]], dim=-1)
        else:
            r = out.rgb - self.img
        if self.weight is not None:
            r = r * self.weight
        return r.reshape(-1)

    def cost(self, w2c: torch.Tensor) -> float:
        with torch.no_grad():
            r = self.residual(torch.zeros(6, dtype=w2c.dtype, device=w2c.device), w2c)
        return float((r.double() ** 2).mean())


def _baseline(w2c: torch.Tensor) -> float:
    return float(torch.linalg.norm(w2c[:3, 3]))


def _use_forward_mode(cfg: RefineConfig, device: torch.device) -> bool:
    if cfg.jacobian == "auto":
        return device.type != "cuda"
    return cfg.jacobian == "forward"


def _central_jacobian(p: "_Problem", w2c: torch.Tensor, step_px: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels x 6) Jacobian by central differences of the residual, and the residual at 0."""
    cols = []
    with torch.no_grad():
        fx = float(p.K[0, 0])
        z = (p.g.means.double() @ w2c[:3, :3].T + w2c[:3, 3])[:, 2]
        z_med = float(z[z > 0].median()) if bool((z > 0).any()) else 1.0
        h_rot = step_px / fx
        h_tr = step_px * z_med / fx
        r0 = p.residual(torch.zeros(6, dtype=w2c.dtype, device=w2c.device), w2c)
        for i in range(6):
            h = h_tr if i < 3 else h_rot
            e = torch.zeros(6, dtype=w2c.dtype, device=w2c.device)
            e[i] = h
            cols.append((p.residual(e, w2c).double() - p.residual(-e, w2c).double()) / (2 * h))
    return torch.stack(cols, dim=1), r0


def _lm_level(p: _Problem, w2c: torch.Tensor, cfg: RefineConfig, history: list | None = None) -> tuple[torch.Tensor, int, bool, float, float]:
    """Levenberg-Marquardt steps on one level -> (w2c, steps, converged, cost_start, cost_end)."""
    lam = 1e-9 if cfg.method == "gn" else cfg.lm_lambda0
    zero = torch.zeros(6, dtype=w2c.dtype, device=w2c.device)
    steps, converged = 0, False
    cost = None
    cost_start = float("nan")
    for _ in range(cfg.steps_per_level):

        def f(xi: torch.Tensor):
            r = p.residual(xi, w2c)
            return r, r

        if _use_forward_mode(cfg, w2c.device):
            # Six tangents batched through one forward-mode pass: the (pixels x 6) Jacobian and the residual.
            J, r0 = torch.func.jacfwd(f, has_aux=True)(zero)
        else:
            J, r0 = _central_jacobian(p, w2c, cfg.fd_step_px)
        steps += 1
        J = J.double()
        r0 = r0.double()
        n = r0.numel()
        if cost is None:
            cost = float((r0**2).sum() / n)
            cost_start = cost
        JTJ = J.T @ J
        JTr = J.T @ r0
        D = torch.diag(torch.clamp_min(torch.diagonal(JTJ), 1e-12 * float(torch.diagonal(JTJ).max()) + 1e-30))
        accepted = False
        for _rej in range(cfg.max_rejects + 1):
            try:
                delta = -torch.linalg.solve(JTJ + lam * D, JTr)
            except RuntimeError:
                lam *= 10.0
                continue
            if not torch.all(torch.isfinite(delta)):
                lam *= 10.0
                continue
            w2c_new = exp_se3_torch(delta[:3].to(w2c.dtype), delta[3:].to(w2c.dtype)) @ w2c
            new_cost = p.cost(w2c_new)
            if cfg.method == "gn" or new_cost <= cost:
                accepted = True
                w2c, cost = w2c_new, new_cost
                lam = max(lam / 10.0, 1e-9) if cfg.method == "lm" else lam
                break
            lam *= 10.0
        if not accepted:
            converged = True  # no descent direction left at this level
            break
        rot = float(torch.linalg.norm(delta[3:]))
        trans = float(torch.linalg.norm(delta[:3]))
        if history is not None:
            history.append((p.factor, cost, rot, trans, lam))
        # A coarse level cannot resolve finer than its pixels: the tolerance grows with the factor.
        tol = float(p.factor)
        if rot < tol * cfg.stop_rot_rad and trans < tol * cfg.stop_trans_rel * max(_baseline(w2c), 1e-9):
            converged = True
            break
    return w2c, steps, converged, cost_start, (cost if cost is not None else float("nan"))


def _adam_level(
    p: _Problem, w2c: torch.Tensor, steps: int, lr: float, ssim_weight: float
) -> tuple[torch.Tensor, int, float]:
    """Official-style Adam steps on one level -> (w2c, steps, MSE of the first render)."""
    xi = torch.zeros(6, dtype=p.g.means.dtype, device=p.g.means.device, requires_grad=True)
    # Two parameter groups like the official code (rotation and translation deltas), same lr.
    opt = torch.optim.Adam([{"params": [xi], "lr": lr}])
    w2c_f = w2c
    first = float("nan")
    for i in range(steps):
        opt.zero_grad(set_to_none=True)
        out = p.render_at(xi.to(w2c_f.dtype), w2c_f)
        rgb = out.rgb
        loss = ((rgb - p.img) ** 2).mean()
        if i == 0:
            first = float(loss.detach())
        if ssim_weight > 0:
            loss = loss + ssim_weight * (1.0 - ssim_structure(rgb, p.img))
        loss.backward()
        opt.step()
        with torch.no_grad():
            d = xi.detach().to(w2c_f.dtype)
            w2c_f = exp_se3_torch(d[:3], d[3:]) @ w2c_f
            xi.zero_()
    return w2c_f, steps, first


def refine_pose(
    gaussians: Gaussians,
    image1_hw3: torch.Tensor,
    K1_px,
    T_cam0_from_cam1_init,
    cfg: RefineConfig | None = None,
) -> tuple[np.ndarray, RefineInfo]:
    """Refine the pose of camera 1 by matching renders of ``gaussians`` to ``image1_hw3``.

    gaussians: in camera 0's frame (any units; the translation follows them).
    image1_hw3: (H, W, 3) float tensor in [0, 1] (or uint8 array, converted), view 1's image.
    K1_px: (3, 3) pixel intrinsics of ``image1_hw3`` (OpenCV convention).
    T_cam0_from_cam1_init: (4, 4) initial pose (e.g. from PnP).
    Returns (T_cam0_from_cam1 (4, 4) float64 array, RefineInfo). A non-finite result returns the
    initial pose with info.message set.
    """
    cfg = cfg or RefineConfig()
    t0 = time.perf_counter()
    T_init = np.asarray(T_cam0_from_cam1_init, dtype=np.float64)
    info = RefineInfo(method="+".join(cfg.level_methods) if cfg.level_methods else cfg.method)
    budget = sum(cfg.level_steps) if cfg.level_steps is not None else cfg.steps_per_level + cfg.adam_steps_per_level
    if not cfg.enabled or budget == 0:
        info.skipped = True
        return T_init.copy(), info
    img = image1_hw3
    if not isinstance(img, torch.Tensor):
        arr = np.asarray(img)
        img = torch.from_numpy(arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0))
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"refine_pose: image1_hw3 must be (H, W, 3), got {tuple(img.shape)}")
    g = _select(gaussians, cfg.max_gaussians)
    img = img.to(device=g.means.device, dtype=g.means.dtype)
    degree = effective_sh_degree(g, None)
    w2c = torch.as_tensor(np.linalg.inv(T_init), dtype=torch.float64, device=g.means.device)
    renders = 0
    p = None
    for li, factor in enumerate(cfg.levels):
        if cfg.level_methods is not None:
            method = cfg.level_methods[li]
        elif cfg.method == "hybrid":
            method = "lm" if li == len(cfg.levels) - 1 else "adam"
        else:
            method = cfg.method
        if cfg.level_steps is not None:
            n_steps = cfg.level_steps[li]
        else:
            n_steps = cfg.adam_steps_per_level if method == "adam" else cfg.steps_per_level
        lvl_cfg = dataclasses.replace(cfg, method=method, steps_per_level=n_steps, level_methods=None, level_steps=None)
        lvl_img, lvl_K = _pyramid_level(img, K1_px, int(factor))
        g_lvl = _coarse_set(g, int(factor)) if cfg.coarse_subsample else g
        p = _Problem(g_lvl, lvl_img, lvl_K, cfg.near_m, degree)
        p.factor = int(factor)
        p.coverage_target = cfg.coverage_target and method != "adam"
        p.coverage_penalty = cfg.coverage_penalty
        if cfg.mask_min_alpha > 0:
            with torch.no_grad():
                a = p.render_at(torch.zeros(6, dtype=torch.float64, device=w2c.device), w2c).alpha
            p.weight = (a >= cfg.mask_min_alpha).to(g.means.dtype)[..., None]
        if method == "adam":
            w2c, n, c0 = _adam_level(p, w2c, n_steps, cfg.adam_lr, cfg.ssim_weight)
            c1 = p.cost(w2c)
            conv = False
        else:
            w2c, n, conv, c0, c1 = _lm_level(p, w2c, lvl_cfg, info.history)
        info.levels.append((int(factor), n, c0, c1))
        info.steps += n  # noqa: SIM113
        info.converged = conv
        renders += p.renders
    info.initial_loss = info.levels[0][2]
    info.final_loss = info.levels[-1][3]
    info.renders = renders
    T = np.linalg.inv(w2c.detach().cpu().numpy().astype(np.float64))
    info.time_s = time.perf_counter() - t0
    if not np.all(np.isfinite(T)):
        info.message = "refinement diverged (non-finite pose); returning the initial pose"
        return T_init.copy(), info
    return T, info


def refine_pose_official(
    gaussians: Gaussians,
    image1_hw3: torch.Tensor,
    K1_px,
    T_cam0_from_cam1_init,
    steps: int = 200,
    lr: float = 0.005,
    ssim_weight: float = 1.0,
) -> tuple[np.ndarray, RefineInfo]:
    """The official recipe with our renderer: ``steps`` Adam steps at full resolution, loss
    MSE + ssim_weight * (1 - SSIM structure); LPIPS omitted (not available)."""
    cfg = RefineConfig(
        method="adam", levels=(1,), adam_steps_per_level=steps, adam_lr=lr, ssim_weight=ssim_weight,
        coarse_subsample=False,
    )
    return refine_pose(gaussians, image1_hw3, K1_px, T_cam0_from_cam1_init, cfg)
