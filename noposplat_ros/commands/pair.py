"""Reconstruct one pair of images: Gaussians (gaussians.safetensors, splats.ply) and the relative pose."""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

HELP = "reconstruct one image pair into Gaussian splats + relative pose (NoPoSplat with --checkpoint, else geometry)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image0", type=pathlib.Path, help="first image (defines the output frame): PNG/JPEG, or .npy float (H, W, 3) RGB in [0, 1]")
    parser.add_argument("image1", type=pathlib.Path, help="second image (same formats)")
    parser.add_argument(
        "--intrinsics", type=pathlib.Path, nargs="+", required=True, metavar="FILE",
        help="ROS camera_info YAML, or JSON/YAML with fx, fy, cx, cy (one set for both images or image0/image1); "
        "or two files, one per image",
    )
    parser.add_argument("--checkpoint", type=pathlib.Path, default=None,
                        help="NoPoSplat weights (.ckpt or converted .safetensors); without it the geometry backend runs")
    parser.add_argument("--model-config", type=pathlib.Path, default=None,
                        help="model-config JSON for a non-released size (default: the released 256 model; 512 if the file name says so)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"],
                        help="network precision; auto = bf16 on CUDA where supported, fp16 on older GPUs, int8 on CPU "
                             "(dynamic int8 Linear layers; fp32 for full precision)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow a .ckpt that needs full unpickling (only for files you trust)")
    refine = parser.add_mutually_exclusive_group()
    refine.add_argument("--refine", dest="refine", action="store_true", default=None, help="force photometric pose refinement")
    refine.add_argument("--no-refine", dest="refine", action="store_false", help="skip photometric pose refinement")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output directory")


def read_image(path: pathlib.Path) -> np.ndarray:
    """(H, W, 3) RGB: uint8 from PNG/JPEG (OpenCV, BGR -> RGB), float32 in [0, 1] from .npy."""
    import cv2

    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"{path}: .npy image must be (H, W, 3), got {arr.shape}")
        if arr.dtype == np.uint8:
            return arr
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{path}: .npy image must be float in [0, 1] or uint8, got {arr.dtype}")
        if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
            raise ValueError(f"{path}: .npy float image values must lie in [0, 1]")
        return arr.astype(np.float32, copy=False)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: cannot read image (missing file or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def run(args: argparse.Namespace) -> int:
    from noposplat_ros.predictors.network.checkpoint import CheckpointError
    from noposplat_ros.io.intrinsics_file import IntrinsicsFileError, load_intrinsics
    from noposplat_ros.io.gaussians_file import save_gaussians, write_pose_json
    from noposplat_ros.io.ply import write_ply
    from noposplat_ros.types import Frame, KeyframePair, PredictionError

    try:
        rgb0, rgb1 = read_image(args.image0), read_image(args.image1)
        cam0, cam1 = load_intrinsics(list(args.intrinsics))
        rgb0, K0 = cam0.for_image(rgb0)
        rgb1, K1 = cam1.for_image(rgb1)
    except (ValueError, IntrinsicsFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    try:
        if args.checkpoint is not None:
            from noposplat_ros.predictors.noposplat import NoPoSplatPredictor

            predictor = NoPoSplatPredictor(
                args.checkpoint, model_config=args.model_config, device=args.device,
                precision=args.precision, refine=args.refine, allow_pickle=args.allow_pickle,
            )
            with predictor:
                recon = predictor.reconstruct(rgb0, rgb1, K0, K1, frame_id="camera0")
        else:
            from noposplat_ros.predictors import make_predictor

            def to_u8(a: np.ndarray) -> np.ndarray:
                return a if a.dtype == np.uint8 else np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)

            pair = KeyframePair(Frame(to_u8(rgb0), np.asarray(K0, np.float64), 0, "camera0"),
                                Frame(to_u8(rgb1), np.asarray(K1, np.float64), 1, "camera0"))
            recon = make_predictor("geometry").predict(pair)
    except (CheckpointError, ValueError, PredictionError) as exc:  # no pose at all: error exit
        print(f"error: {exc}", file=sys.stderr)
        return 1

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "scale_kind": recon.scale_kind.value, "backend": recon.backend, "frame_id": recon.frame_id,
        "grid_hw": f"{recon.grid_hw[0]},{recon.grid_hw[1]}",
    }
    # The pose is written whenever one was determined (OK or DEGRADED), with its status; splat files
    # only when there are splats (a pure rotation or failed flow gives a pose without any).
    written = []
    if recon.gaussians.num > 0:
        save_gaussians(out / "gaussians.safetensors", recon.gaussians, metadata=meta)
        write_ply(out / "splats.ply", recon.gaussians)
        written += [out / "gaussians.safetensors", out / "splats.ply"]
    write_pose_json(out / "pose.json", recon)
    written.append(out / "pose.json")
    T = recon.pose.T_cam0_from_cam1
    print(f"{recon.backend}: {recon.gaussians.num} Gaussians on a {recon.grid_hw[0]}x{recon.grid_hw[1]} grid per view; "
          f"pose {recon.pose.status.name} ({recon.pose.num_inliers} inliers), t = {np.round(T[:3, 3], 4).tolist()} "
          f"[{recon.scale_kind.value}]; {recon.pose.message}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
