"""The CUDA paths against the CPU/fp32 references (marker ``cuda``; skipped without a CUDA device).

Run on a GPU machine by `bash tools/gpu_check.sh` (or `pytest -m cuda`). Measured differences go to
the JUnit XML as properties (``record_property``) so the GPU report shows them next to pass/fail.

Tolerances (first set without a GPU, from CPU measurements of the same quantities; tighten them from
the first report):
- gsplat vs our rasterizer: gsplat cuts a splat at 3 sigma, ours at the exact 1/255 alpha boundary
  (docs/readme_pose_render.md), so fringes differ by ~1/255: mean |Δrgb| and |Δalpha| ≤ 3e-3,
  99.9th percentile ≤ 0.03, depth (alpha > 0.5 in both) median relative difference ≤ 1e-3, pose
  gradient relative difference ≤ 0.05.
- network in bf16/fp16 vs fp32: max |Δ| per output field ≤ 2 % of that field's max |value| (bf16 on
  the full-size random network measured ≤ 0.4 % on CPU), opacities ≤ 0.02 absolute; fp32 on CUDA vs
  the official golden tensors (TF32 off) within 1e-3.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from noposplat_ros.predictors.network import NoPoSplatConfig, build_model
from noposplat_ros.predictors.network.config import MODEL_DIR
from noposplat_ros.predictors.noposplat import NoPoSplatPredictor, autocast_for, optimize_for_inference_

REPO = pathlib.Path(__file__).resolve().parents[1]
FIELDS = ("means", "opacities", "scales", "rotations_xyzw", "harmonics", "covariances")
REL_TOL_LOW_PRECISION = 0.02
CUDA = torch.cuda.is_available()

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def _true_fp32():
    """fp32 references must be fp32: no TF32 in CUDA matmuls/convolutions (restored afterwards)."""
    if not CUDA:
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _load_benchmark(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _precisions() -> list[str]:
    return (["bf16"] if CUDA and torch.cuda.is_bf16_supported() else []) + ["fp16"]


def _assert_close_rel(out, ref, rel: float, record, tag: str) -> None:
    for f in FIELDS:
        a, b = getattr(out, f).float().cpu(), getattr(ref, f).float().cpu()
        assert torch.isfinite(a).all(), f"{tag}: non-finite {f}"
        err, scale = float((a - b).abs().max()), float(b.abs().max())
        record(f"{tag}.{f}", f"{err:.3e} of max {scale:.3g}")
        bound = 0.02 if f == "opacities" else rel * scale
        assert err <= bound, f"{tag}: {f} max |Δ| {err:.3e} > {bound:.3e}"


# ------------------------------------------------------------------------------------------ render
@pytest.mark.parametrize("size", [64, 128])
def test_gsplat_matches_cpu_rasterizer(size, record_property):
    from noposplat_ros.pose.se3 import exp_se3_torch
    from noposplat_ros.render import render

    cmp = _load_benchmark("compare_gsplat_cpu")
    gs = cmp.random_scene(2 * size * size, size, "cuda")
    K = np.array([[1.1 * size, 0, size / 2 - 0.3], [0, 1.1 * size, size / 2 + 0.2], [0, 0, 1.0]])
    T = torch.eye(4, device="cuda")
    T[:3, 3] = torch.tensor([0.05, -0.02, 0.1])
    with torch.no_grad():
        a = render(gs, K, T, size, size, backend="gsplat")
        b = render(gs, K, T, size, size, backend="cpu")  # our rasterizer on the same CUDA tensors
    assert float(a.alpha.mean()) > 0.3, "scene should cover most of the image"
    d_rgb, d_alpha = (a.rgb - b.rgb).abs(), (a.alpha - b.alpha).abs()
    both = (a.alpha > 0.5) & (b.alpha > 0.5)
    d_depth = ((a.depth - b.depth).abs() / b.depth.clamp_min(1e-6))[both]
    stats = {
        "rgb_mean": float(d_rgb.mean()), "rgb_p999": float(d_rgb.flatten().quantile(0.999)),
        "alpha_mean": float(d_alpha.mean()), "alpha_p999": float(d_alpha.flatten().quantile(0.999)),
        "depth_rel_median": float(d_depth.median()),
    }

    def pose_grad(backend: str) -> torch.Tensor:
        xi = torch.zeros(6, device="cuda", requires_grad=True)
        o = render(gs, K, exp_se3_torch(xi[:3], xi[3:]) @ T, size, size, backend=backend)
        o.rgb.square().mean().backward()
        return xi.grad

    ga, gb = pose_grad("gsplat"), pose_grad("cpu")
    stats["grad_rel"] = float((ga - gb).norm() / gb.norm())
    for k, v in stats.items():
        record_property(k, f"{v:.3e}")
    assert stats["rgb_mean"] <= 3e-3 and stats["alpha_mean"] <= 3e-3, stats
    assert stats["rgb_p999"] <= 0.03 and stats["alpha_p999"] <= 0.03, stats
    assert stats["depth_rel_median"] <= 1e-3, stats
    assert stats["grad_rel"] <= 0.05, stats


# ------------------------------------------------------------------------------------------ network
@pytest.fixture(scope="module")
def tiny(conformance_dir):
    weights = load_file(str(conformance_dir / "noposplat_tiny_weights.safetensors"))
    golden = load_file(str(conformance_dir / "noposplat_tiny_io.safetensors"))
    return weights, golden


def test_tiny_network_fp32_bf16_fp16_on_cuda(tiny, record_property):
    weights, golden = tiny
    model = build_model(NoPoSplatConfig.tiny(), device="cuda")
    model.load_state_dict(weights)
    model.rebuild_buffers("cuda")
    img, K = golden["input.image"].cuda(), golden["input.intrinsics"].cuda()
    with torch.inference_mode():
        ref = model(img, K)
    for f, key in (("means", "out.means"), ("opacities", "out.opacities"), ("harmonics", "out.harmonics")):
        torch.testing.assert_close(getattr(ref, f).cpu(), golden[key], rtol=1e-3, atol=1e-3, msg=f"fp32 CUDA {f}")
    fast = optimize_for_inference_(model, torch.device("cuda"), "fp32")
    for prec in _precisions():
        with torch.inference_mode(), autocast_for(torch.device("cuda"), prec):
            out = fast(img, K)
        assert all(getattr(out, f).dtype == torch.float32 for f in FIELDS), "outputs must be float32"
        _assert_close_rel(out, ref, REL_TOL_LOW_PRECISION, record_property, f"tiny.{prec}")


def test_full_size_network_low_precision_matches_fp32(record_property):
    bn = _load_benchmark("bench_network")
    cfg = NoPoSplatConfig.released(256)
    torch.manual_seed(0)
    model = build_model(cfg, device="cuda")
    model.rebuild_buffers("cuda")
    image, K = bn.make_inputs(cfg, torch.device("cuda"))
    with torch.inference_mode():
        ref = model(image, K)
    optimize_for_inference_(model, torch.device("cuda"), "bf16")
    for prec in _precisions():
        with torch.inference_mode(), autocast_for(torch.device("cuda"), prec):
            out = model(image, K)
        _assert_close_rel(out, ref, REL_TOL_LOW_PRECISION, record_property, f"full256.{prec}")
    del model
    torch.cuda.empty_cache()


def test_predictor_end_to_end_on_cuda(conformance_dir, tiny, record_property):
    _, golden = tiny
    ckpt = conformance_dir / "noposplat_tiny_weights.safetensors"
    cfg = MODEL_DIR / "noposplat_tiny.json"
    imgs = [golden["input.image_01"][0, v].permute(1, 2, 0).numpy() for v in range(2)]
    Ks = []
    for v in range(2):
        Kv = golden["input.intrinsics"][0, v].double().numpy().copy()
        Kv[0] *= 48
        Kv[1] *= 32
        Kv[:2, 2] -= 0.5
        Ks.append(Kv)
    with NoPoSplatPredictor(ckpt, model_config=cfg, device="cpu", precision="fp32") as cpu:
        ref = cpu.predict_gaussians(imgs[0], imgs[1], Ks[0], Ks[1]).gaussians
    with NoPoSplatPredictor(ckpt, model_config=cfg, device="cuda") as gpu:
        assert gpu.precision in ("bf16", "fp16") and gpu._refine_enabled()
        got = gpu.predict_gaussians(imgs[0], imgs[1], Ks[0], Ks[1]).gaussians
        assert got.means.device.type == "cpu" and got.means.dtype == torch.float32
        _assert_close_rel(got, ref, REL_TOL_LOW_PRECISION, record_property, f"predictor.{gpu.precision}")
        recon = gpu.reconstruct(imgs[0], imgs[1], Ks[0], Ks[1])
    record_property("timings_ms", {k: round(v * 1e3, 1) for k, v in recon.timings_s.items()})
    assert np.all(np.isfinite(recon.pose.T_cam0_from_cam1))
    assert {"network", "pnp", "total"} <= set(recon.timings_s)
    if recon.pose.status.name != "LOST":  # random tiny weights: PnP may find nothing to refine
        assert "refine" in recon.timings_s
        assert "refinement skipped" not in recon.pose.message, recon.pose.message


# ------------------------------------------------------------------------------------------ pose
def test_pnp_and_refinement_on_cuda(record_property):
    from noposplat_ros.pose.metrics import rotation_error_deg, translation_direction_error_deg
    from noposplat_ros.pose.pnp import solve_pnp_official
    from noposplat_ros.pose.refine import RefineConfig, refine_pose
    from noposplat_ros.pose.se3 import perturbed_pose_np

    bp = _load_benchmark("bench_pose")
    gs, means1, op1, img1, K1, T_true = bp.build_pair("cuda")
    est = solve_pnp_official(means1, op1, K1)
    r_pnp = rotation_error_deg(est.T_cam0_from_cam1, T_true)
    assert r_pnp < 0.5, r_pnp
    T0 = perturbed_pose_np(T_true, 2.0, 0.15, np.random.default_rng(0))
    r0 = rotation_error_deg(T0, T_true)
    T, info = refine_pose(gs, img1, K1, T0, RefineConfig())
    r, t = rotation_error_deg(T, T_true), translation_direction_error_deg(T, T_true)
    record_property("errors_deg", f"pnp rot {r_pnp:.3f}; refine rot {r0:.2f} -> {r:.3f}, t-dir {t:.2f}")
    assert np.all(np.isfinite(T))
    assert info.final_loss < info.initial_loss
    assert r < 0.5 * r0, (r0, r)


# ------------------------------------------------------------------------------------------ map
def test_scene_map_fusion_on_cuda_matches_cpu(record_property):
    scene_map = pytest.importorskip("noposplat_ros.mapping.scene_map", reason="no scene map module yet")
    if not hasattr(scene_map, "SceneMap") or not hasattr(scene_map, "MapConfig"):
        pytest.skip("mapping has no SceneMap/MapConfig yet")
    from noposplat_ros.render.from_depth import gaussians_from_depth

    H, W = 48, 64
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    rng = np.random.default_rng(0)
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    depth = 2.0 + u / W + 0.2 * np.sin(v / 5.0)
    rgb = rng.random((H, W, 3))
    maps = {}
    for dev in ("cpu", "cuda"):
        smap = scene_map.SceneMap(scene_map.MapConfig(device=dev))
        for i in range(3):
            T = np.eye(4)
            T[0, 3] = 0.05 * i
            g = gaussians_from_depth(rgb, depth, K, footprint_px=0.5)
            smap.insert(g, K, (H, W), stamp_ns=i, T_world_from_cam0=T)
        maps[dev] = smap.fused()
    n_cpu, n_gpu = maps["cpu"].num, maps["cuda"].num
    record_property("fused_counts", f"cpu {n_cpu}, cuda {n_gpu}")
    assert n_cpu > 0 and abs(n_gpu - n_cpu) <= 0.02 * n_cpu
    c_cpu, c_gpu = maps["cpu"].means.float().cpu().mean(0), maps["cuda"].means.float().cpu().mean(0)
    assert float((c_cpu - c_gpu).norm()) < 1e-2
