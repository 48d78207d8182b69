"""NoPoSplatPredictor with the tiny conformance weights: batched API, pair API, device/precision."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from noposplat_ros.predictors.network.config import MODEL_DIR
from noposplat_ros.predictors.noposplat import NoPoSplatPredictor, resolve_precision
from noposplat_ros.types import Frame, KeyframePair, PoseStatus, ScaleKind


@pytest.fixture(scope="module")
def golden(conformance_dir):
    return load_file(str(conformance_dir / "noposplat_tiny_io.safetensors"))


@pytest.fixture(scope="module")
def predictor(conformance_dir):
    p = NoPoSplatPredictor(
        conformance_dir / "noposplat_tiny_weights.safetensors", model_config=MODEL_DIR / "noposplat_tiny.json", device="cpu"
    )
    yield p
    p.close()


def _item(golden, b):
    imgs = [golden["input.image_01"][b, v].permute(1, 2, 0).numpy() for v in range(2)]
    Ks = []
    for v in range(2):
        K = golden["input.intrinsics"][b, v].double().numpy().copy()
        K[0] *= 48
        K[1] *= 32
        K[0, 2] -= 0.5
        K[1, 2] -= 0.5
        Ks.append(K)
    return imgs, Ks


def test_auto_device_and_precision(predictor):
    # CPU default: dynamic int8 Linear layers (the measured fastest CPU path); none of the tiny
    # model's layers is large enough to be quantised, so the golden comparisons below stay exact
    assert predictor.device.type == "cpu" and predictor.precision == "int8"
    assert resolve_precision("auto", torch.device("cpu")) == "int8"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int4", torch.device("cpu"))
    with pytest.raises(ValueError, match="int8"):
        resolve_precision("int8", torch.device("meta"))


def test_predict_gaussians_batched_matches_golden(predictor, golden):
    (a0, a1), (ka0, ka1) = _item(golden, 0)
    (b0, b1), (kb0, kb1) = _item(golden, 1)
    preds = predictor.predict_gaussians([a0, b0], [a1, b1], [ka0, kb0], [ka1, kb1])
    assert len(preds) == 2
    for b, pred in enumerate(preds):
        g = pred.gaussians
        assert g.num == 2 * 32 * 48 and g.sh_degree == 4 and g.means.dtype == torch.float32
        assert g.means.device.type == "cpu"
        torch.testing.assert_close(g.means, golden["out.means"][b], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(g.covariances, golden["out.covariances"][b], rtol=1e-4, atol=1e-4)
        assert pred.grid_hw == (32, 48) and pred.K_grid.shape == (2, 3, 3)
        # view(1) is the second half, row-major
        torch.testing.assert_close(pred.view(1).means, golden["inter.pts3d"][b, 1].reshape(-1, 3), rtol=1e-4, atol=1e-4)
    single = predictor.predict_gaussians(a0, a1, ka0, ka1)
    torch.testing.assert_close(single.gaussians.opacities, preds[0].gaussians.opacities)


def test_predict_pair_reconstruction(predictor, golden):
    (a0, a1), (k0, k1) = _item(golden, 0)
    u8 = [np.clip(np.rint(a * 255), 0, 255).astype(np.uint8) for a in (a0, a1)]
    pair = KeyframePair(Frame(u8[0], k0, 100, "cam"), Frame(u8[1], k1, 200, "cam"), index=3)
    recon = predictor.predict(pair)
    assert recon.backend == "noposplat" and recon.scale_kind == ScaleKind.UNIT_BASELINE
    assert (recon.stamp0_ns, recon.stamp1_ns, recon.frame_id) == (100, 200, "cam")
    assert recon.grid_hw == (32, 48)
    np.testing.assert_allclose(recon.K_grid, np.stack([k0, k1]), atol=1e-9)
    assert recon.gaussians.num == 3072 and recon.gaussians.means.dtype == torch.float32
    assert recon.pose.T_cam0_from_cam1.shape == (4, 4) and isinstance(recon.pose.status, PoseStatus)
    assert {"preprocess", "network", "pnp"} <= set(recon.timings_s)
    # uint8 quantisation moves the input by < 0.5/255: outputs stay close to the float golden
    assert (recon.gaussians.means - golden["out.means"][0]).abs().max() < 0.05 * golden["out.means"][0].abs().max()


def test_different_resolution_input_is_resized(predictor):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    K = np.array([[150.0, 0, 100], [0, 150, 60], [0, 0, 1]])
    pred = predictor.predict_gaussians(img, img, K, K)
    assert pred.gaussians.num == 3072
    assert pred.prepared.views[0].resized and pred.prepared.views[0].original_hw == (120, 200)


def test_close_frees_model(conformance_dir):
    p = NoPoSplatPredictor(conformance_dir / "noposplat_tiny_weights.safetensors", model_config=MODEL_DIR / "noposplat_tiny.json", device="cpu")
    p.close()
    assert p.model is None
    with pytest.raises(RuntimeError, match="closed"):
        p.run_network(torch.zeros(1, 2, 3, 32, 48), torch.zeros(1, 2, 3, 3))
    p.close()  # idempotent


def test_refinement_hook_runs_with_config(conformance_dir, golden):
    refine = pytest.importorskip("noposplat_ros.pose.refine")  # the pose module (another owner)
    RefineConfig = refine.RefineConfig

    (a0, a1), (k0, k1) = _item(golden, 0)
    p = NoPoSplatPredictor(conformance_dir / "noposplat_tiny_weights.safetensors",
                           model_config=MODEL_DIR / "noposplat_tiny.json", device="cpu",
                           refine=RefineConfig(levels=(1,), steps_per_level=1))
    with p:
        recon = p.reconstruct(a0, a1, k0, k1)
    if recon.pose.status == PoseStatus.LOST:
        pytest.skip("PnP lost on the random tiny network: nothing to refine")
    assert "refine" in recon.timings_s
    assert "refined" in recon.pose.message or "refinement skipped" in recon.pose.message
    assert np.all(np.isfinite(recon.pose.T_cam0_from_cam1))
