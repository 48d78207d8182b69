"""NoPoSplat predictor: a keyframe pair -> Gaussians of both views in camera 0's frame + relative pose.

Stages: preprocess (resize + centre crop to the model grid, K normalised) -> network (CUDA: bf16 or
fp16 autocast with fused attention, heads in float32; CPU: dynamic int8 Linear layers + int8 3x3 DPT
convolutions + channels-last convolutions, or bf16 autocast where the CPU has native bf16 and it is asked for) -> Gaussians
(float32, CPU) -> PnP on view 1's centres (PoseLib by default, pnp_method='official' for the reference procedure) -> optional photometric refinement.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import pathlib
import time
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from noposplat_ros.predictors.network.checkpoint import load_checkpoint_into
from noposplat_ros.predictors.network import NoPoSplatConfig, NoPoSplatNet, build_model
from noposplat_ros.predictors.network.model import NetOutput
from noposplat_ros.predictors.network.preprocess import PreparedPair, prepare_pair
from noposplat_ros.predictors.network.speed import (
    channels_last_convs_, cpu_has_native_bf16, int8_supported, quantize_conv_int8_, quantize_linear_int8_,
)
from noposplat_ros.types import Gaussians, KeyframePair, PairReconstruction, PoseEstimate, PoseStatus, ScaleKind

BACKEND_NAME = "noposplat"
# autocast dtypes; "int8" (CPU only) runs fp32 autocast-free with dynamic int8 Linear layers
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16", "int8")
_PRECISION_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "qint8": "int8"}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as given (checked)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA where supported, fp16 on older CUDA GPUs; on CPU int8 (dynamic int8
    Linear layers, the measured fastest CPU path) where torch has a quantised engine, else fp32.
    bf16 on a CPU without native bf16 (no AVX512-BF16/AMX) is allowed when asked for but warns: it
    measured ~5x slower than fp32 there. int8 is CPU only."""
    p = _PRECISION_ALIASES.get(str(precision).lower(), str(precision).lower())
    if p == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "int8" if device.type == "cpu" and int8_supported() else "fp32"
    if p not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    if p == "int8" and (device.type != "cpu" or not int8_supported()):
        raise ValueError(f"precision int8 needs the CPU with a quantised engine (device {device})")
    if p == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("bf16 on a CPU without native bf16 (AVX512-BF16/AMX) is emulated and slower than fp32",
                      stacklevel=2)
    return p


def autocast_for(device: torch.device, precision: str):
    """The autocast context of a resolved precision (none for fp32 and int8)."""
    if precision in ("fp32", "int8"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def optimize_for_inference_(model: NoPoSplatNet, device: torch.device, precision: str) -> NoPoSplatNet:
    """Apply the speed settings of a resolved precision to a loaded model, in place.

    Every path: fused attention (SDPA). CPU and CUDA: channels-last DPT convolutions (measured faster
    on CPU; NHWC is the tensor-core layout on CUDA). int8: dynamic int8 for the large Linear layers and
    the large 3x3 DPT convolutions (speed.quantize_conv_int8_).
    """
    model.set_fused_attention(True)
    channels_last_convs_(model)
    if precision == "int8":
        quantize_linear_int8_(model)
        quantize_conv_int8_(model)
    return model


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> GPU through pinned memory with a non-blocking copy (no sync); a no-op on the same device."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def resolve_model_config(model_config: Any, checkpoint: str | pathlib.Path | None = None) -> NoPoSplatConfig:
    """None -> released 256 (512 when the checkpoint file name says 512); a config, a JSON path, or 256/512."""
    if isinstance(model_config, NoPoSplatConfig):
        return model_config
    if model_config is None:
        name = pathlib.Path(str(checkpoint)).name if checkpoint else ""
        return NoPoSplatConfig.released(512 if "512" in name else 256)
    if isinstance(model_config, int) or str(model_config) in ("256", "512"):
        return NoPoSplatConfig.released(int(model_config))
    return NoPoSplatConfig.from_json(model_config)


@dataclasses.dataclass
class GaussianPrediction:
    """Network output for one pair.

    gaussians: both views, view 0 first, each row-major over grid_hw, camera-0 frame, float32 CPU.
    prepared: the network input and the mapping back to the original images.
    grid_hw: (H, W) model grid. K_grid: (2, 3, 3) float64 pixel intrinsics of each view at the grid.
    """

    gaussians: Gaussians
    prepared: PreparedPair
    grid_hw: tuple[int, int]
    K_grid: np.ndarray

    def view(self, index: int) -> Gaussians:
        """The Gaussians of one view (row-major over grid_hw)."""
        n = self.grid_hw[0] * self.grid_hw[1]
        return self.gaussians.subset(torch.arange(index * n, (index + 1) * n))


def gaussians_from_output(out: NetOutput, b: int = 0) -> Gaussians:
    """Batch item ``b`` of a NetOutput as types.Gaussians (float32, on the output's device)."""
    return Gaussians(
        means=out.means[b].float(),
        scales=out.scales[b].float(),
        rotations_xyzw=out.rotations_xyzw[b].float(),
        opacities=out.opacities[b].float(),
        harmonics=out.harmonics[b].float(),
        covariances=out.covariances[b].float(),
    )


def _refine_summary(info: Any) -> str:
    """Short text of a RefineInfo (pose module) for PoseEstimate.message."""
    if getattr(info, "skipped", False):
        return "refinement skipped"
    return (f"refined ({getattr(info, 'method', '?')}, {getattr(info, 'steps', '?')} steps, "
            f"loss {getattr(info, 'initial_loss', float('nan')):.4g} -> {getattr(info, 'final_loss', float('nan')):.4g})")


class NoPoSplatPredictor:
    """Our NoPoSplat network with the user's official weights.

    checkpoint: official ``.ckpt`` (Lightning) or converted ``.safetensors``.
    model_config: NoPoSplatConfig, a model-config JSON path, 256/512, or None (released model).
    device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    precision: "auto" (CUDA bf16 where supported, else fp16; CPU int8), "fp32", "bf16", "fp16", "int8"
      (CPU only: dynamic int8 Linear layers and large 3x3 DPT convs, float32 elsewhere; accuracy in
      docs/readme_network.md).
    refine: photometric pose refinement: None = auto (on CUDA only), False = off, True = default
      RefineConfig, or a RefineConfig.
    allow_pickle: let a ``.ckpt`` that needs full unpickling load (only for trusted files).
    """

    backend = BACKEND_NAME

    def __init__(
        self,
        checkpoint: str | pathlib.Path,
        model_config: Any = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        refine: Any = None,
        *,
        allow_pickle: bool = False,
        pnp_method: str = "poselib",
    ) -> None:
        from noposplat_ros.pose.pnp import PNP_METHODS

        if pnp_method not in PNP_METHODS:
            raise ValueError(f"pnp_method must be one of {PNP_METHODS}, got {pnp_method!r}")
        self.pnp_method = pnp_method  # "poselib" (default) or "official" (the reference procedure)
        self.config = resolve_model_config(model_config, checkpoint)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.refine = refine
        self.checkpoint = pathlib.Path(checkpoint)
        # built on meta: the checkpoint tensors become the parameters (one copy of the weights)
        model = build_model(self.config, device="meta")
        load_checkpoint_into(model, self.checkpoint, allow_pickle=allow_pickle)
        self.model: NoPoSplatNet | None = model.to(self.device).eval()
        self.model.rebuild_buffers(self.device)
        optimize_for_inference_(self.model, self.device, self.precision)

    # ------------------------------------------------------------------ network
    def _autocast(self):
        return autocast_for(self.device, self.precision)

    def run_network(self, image: torch.Tensor, intrinsics_norm: torch.Tensor) -> NetOutput:
        """image (B, 2, 3, H, W) in [-1, 1], intrinsics_norm (B, 2, 3, 3) -> NetOutput (float32)."""
        if self.model is None:
            raise RuntimeError("predictor is closed")
        image = _to_device(image, self.device)
        intrinsics_norm = _to_device(intrinsics_norm, self.device)
        with torch.inference_mode(), self._autocast():
            out = self.model(image, intrinsics_norm)
        return out

    def predict_gaussians(
        self, rgb0: Any, rgb1: Any, K0_px: Any, K1_px: Any
    ) -> GaussianPrediction | list[GaussianPrediction]:
        """Gaussians of one pair, or of a batch of pairs in one network call.

        Single pair: rgb0/rgb1 (H_i, W_i, 3) uint8 or float [0, 1] RGB, K0_px/K1_px (3, 3) pixel
        intrinsics -> GaussianPrediction. Batch: sequences (or (B, H, W, 3) / (B, 3, 3) arrays) of
        the same -> list[GaussianPrediction]. Images may have any size; they are prepared to the grid.
        """
        batched = isinstance(rgb0, (list, tuple)) or (isinstance(rgb0, np.ndarray) and rgb0.ndim == 4)
        if not batched:
            return self._predict_batch([rgb0], [rgb1], [K0_px], [K1_px])[0]
        K0s = list(np.asarray(K0_px, dtype=np.float64).reshape(-1, 3, 3)) if not isinstance(K0_px, (list, tuple)) else list(K0_px)
        K1s = list(np.asarray(K1_px, dtype=np.float64).reshape(-1, 3, 3)) if not isinstance(K1_px, (list, tuple)) else list(K1_px)
        return self._predict_batch(list(rgb0), list(rgb1), K0s, K1s)

    def _predict_batch(
        self, rgb0: Sequence[np.ndarray], rgb1: Sequence[np.ndarray], K0: Sequence[Any], K1: Sequence[Any]
    ) -> list[GaussianPrediction]:
        if not (len(rgb0) == len(rgb1) == len(K0) == len(K1)) or not rgb0:
            raise ValueError("predict_gaussians: rgb0, rgb1, K0_px, K1_px must have the same non-zero length")
        hw = self.config.image_hw
        prepared = [prepare_pair(a, b, ka, kb, hw) for a, b, ka, kb in zip(rgb0, rgb1, K0, K1)]
        image = torch.cat([p.image for p in prepared])
        K = torch.cat([p.intrinsics_norm for p in prepared])
        out = self.run_network(image, K)
        return [
            GaussianPrediction(gaussians_from_output(out, b).to("cpu"), p, tuple(hw), p.K_grid_px)
            for b, p in enumerate(prepared)
        ]

    # ------------------------------------------------------------------ pair
    def _refine_enabled(self) -> bool:
        if self.refine is None:
            return self.device.type == "cuda"
        return self.refine is not False

    def predict(self, pair: KeyframePair) -> PairReconstruction:
        """Reconstruct a keyframe pair: Gaussians (unit-baseline units, camera-0 frame) + pose of camera 1."""
        return self.reconstruct(
            pair.kf0.rgb, pair.kf1.rgb, pair.kf0.K, pair.kf1.K,
            stamp0_ns=pair.kf0.stamp_ns, stamp1_ns=pair.kf1.stamp_ns, frame_id=pair.kf0.frame_id,
        )

    def reconstruct(
        self, rgb0: np.ndarray, rgb1: np.ndarray, K0_px: np.ndarray, K1_px: np.ndarray,
        *, stamp0_ns: int = 0, stamp1_ns: int = 0, frame_id: str = "camera",
    ) -> PairReconstruction:
        """Like predict() from arrays: rgb (H_i, W_i, 3) uint8 or float [0, 1], K (3, 3) pixels."""
        from noposplat_ros.pose.pnp import solve_pnp

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        hw = self.config.image_hw
        prepared = prepare_pair(rgb0, rgb1, K0_px, K1_px, hw)
        timings["preprocess"] = time.perf_counter() - t0

        t = time.perf_counter()
        out = self.run_network(prepared.image, prepared.intrinsics_norm)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings["network"] = time.perf_counter() - t
        gaussians_dev = gaussians_from_output(out, 0)
        gaussians = gaussians_dev.to("cpu")

        t = time.perf_counter()
        H, W = hw
        n = H * W
        means1 = gaussians.means[n:].reshape(H, W, 3).numpy()
        opac1 = gaussians.opacities[n:].reshape(H, W).numpy()
        pose = solve_pnp(means1, opac1, prepared.K_grid_px[1], method=self.pnp_method)
        timings["pnp"] = time.perf_counter() - t

        if self._refine_enabled() and pose.status != PoseStatus.LOST:
            pose = self._refine(pose, gaussians_dev, prepared, timings)

        timings["total"] = time.perf_counter() - t0
        return PairReconstruction(
            gaussians=gaussians,
            pose=pose,
            scale_kind=ScaleKind.UNIT_BASELINE,
            backend=BACKEND_NAME,
            stamp0_ns=int(stamp0_ns),
            stamp1_ns=int(stamp1_ns),
            frame_id=frame_id,
            grid_hw=(int(H), int(W)),
            K_grid=prepared.K_grid_px,
            timings_s=timings,
        )

    def _refine(self, pose: PoseEstimate, gaussians: Gaussians, prepared: PreparedPair, timings: dict[str, float]) -> PoseEstimate:
        """Photometric refinement of the PnP pose (pose engineer's module); failures keep the PnP pose."""
        t = time.perf_counter()
        try:
            from noposplat_ros.pose.refine import RefineConfig, refine_pose

            cfg = self.refine if (self.refine is not None and not isinstance(self.refine, bool)) else RefineConfig()
            image1 = torch.from_numpy(prepared.views[1].rgb01).to(self.device)
            T, info = refine_pose(gaussians, image1, prepared.K_grid_px[1], pose.T_cam0_from_cam1, cfg)
            pose = dataclasses.replace(
                pose, T_cam0_from_cam1=np.asarray(T, dtype=np.float64),
                message=(pose.message + "; " if pose.message else "") + _refine_summary(info),
            )
        except Exception as exc:  # refinement is optional: keep the PnP pose, say why
            warnings.warn(f"pose refinement skipped: {type(exc).__name__}: {exc}", stacklevel=2)
            pose = dataclasses.replace(
                pose, message=(pose.message + "; " if pose.message else "") + f"refinement skipped ({type(exc).__name__})"
            )
        timings["refine"] = time.perf_counter() - t
        return pose

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free the model (and its GPU memory). The predictor cannot be used afterwards."""
        if self.model is None:
            return
        self.model = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __enter__(self) -> "NoPoSplatPredictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
