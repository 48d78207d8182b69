"""Benchmark of the full-size NoPoSplat network (random weights; no checkpoint needed).

Side by side in one run (interleaved, median of ``--runs`` after ``--warmup``): our default path
(what ``NoPoSplatPredictor(precision="auto")`` runs: fused SDPA attention, channels-last DPT convs,
and on CPU dynamic int8 Linear layers and int8 3x3 DPT convolutions, on CUDA bf16/fp16 autocast) against a plain
fp32 eager run of the same weights (explicit-softmax attention, no autocast, no quantisation).
Prints the speed ratio, the peak memory (CUDA max allocated; CPU peak RSS growth, sampled), and the
max output difference of the default path against fp32 on the same input, per output field. On CPU
it also reports the int8 error on the tiny conformance weights (every Linear and every 3x3 conv
quantised, as a second, differently distributed set of weights) when ../shared/conformance is there.
``--load-check`` also measures the peak RSS of loading the weights the way the predictor does.

    .venv/bin/python benchmarks/bench_network.py --device cpu --runs 3
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

import psutil
import torch

from noposplat_ros.predictors.network import NoPoSplatConfig, NoPoSplatNet, build_model
from noposplat_ros.predictors.network.speed import quantize_conv_int8_, quantize_linear_int8_
from noposplat_ros.predictors.noposplat import autocast_for, optimize_for_inference_, resolve_device, resolve_precision

FIELDS = ("means", "opacities", "scales", "rotations_xyzw", "harmonics", "covariances")
REPO = pathlib.Path(__file__).resolve().parents[1]


class RssPeak:
    """Samples this process's RSS in a thread; .peak_delta is max RSS - RSS at start (bytes)."""

    def __init__(self, period_s: float = 0.002) -> None:
        self.proc = psutil.Process()
        self.period_s = period_s

    def __enter__(self) -> "RssPeak":
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.period_s)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def peak_delta(self) -> int:
        return self.peak - self.start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_inputs(cfg: NoPoSplatConfig, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """image (1, 2, 3, H, W) in [-1, 1] and intrinsics_norm (1, 2, 3, 3) at cfg.image_hw."""
    g = torch.Generator().manual_seed(seed)
    H, W = cfg.image_hw
    image = (torch.rand(1, 2, 3, H, W, generator=g) * 2 - 1).to(device)
    K = torch.tensor([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]).expand(1, 2, 3, 3).contiguous().to(device)
    return image, K


def plain_fp32(model: NoPoSplatNet) -> NoPoSplatNet:
    """The baseline: explicit-softmax attention, contiguous weights, no autocast (set in place)."""
    model.set_fused_attention(False)
    return model


def forward_fn(model: NoPoSplatNet, image: torch.Tensor, K: torch.Tensor, precision: str) -> Callable[[], object]:
    """A no-argument callable running one forward under inference mode and the precision's autocast."""
    def run():
        with torch.inference_mode(), autocast_for(image.device, precision):
            return model(image, K)
    return run


def time_call(fn: Callable[[], object], device: torch.device) -> tuple[float, int]:
    """One timed call (CUDA synchronised); returns (seconds, peak memory bytes above the start)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        mem = contextlib.nullcontext()
    else:
        mem = RssPeak()
    with mem:
        t = time.perf_counter()
        out = fn()
        sync(device)
        dt = time.perf_counter() - t
    del out
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else mem.peak_delta
    return dt, peak


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, runs: int, warmup: int
                ) -> dict[str, dict[str, float]]:
    """Time every callable ``runs`` times, interleaved so all see the same machine state.

    Returns name -> {median_s, min_s, max_s, peak_bytes}."""
    for _ in range(warmup):
        for fn in fns.values():
            time_call(fn, device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    peaks = {k: 0 for k in fns}
    for _ in range(runs):
        for key, fn in fns.items():
            dt, peak = time_call(fn, device)
            times[key].append(dt)
            peaks[key] = max(peaks[key], peak)
    return {k: dict(median_s=statistics.median(v), min_s=min(v), max_s=max(v), peak_bytes=peaks[k]) for k, v in times.items()}


def output_diffs(out, ref) -> dict[str, tuple[float, float]]:
    """field -> (max |out - ref|, max |ref|) for the Gaussian fields of two NetOutputs."""
    res = {}
    for f in FIELDS:
        a, b = getattr(out, f).float(), getattr(ref, f).float()
        res[f] = (float((a - b).abs().max()), float(b.abs().max()))
    return res


def format_diffs(d: dict[str, tuple[float, float]]) -> str:
    return "; ".join(f"{k} {v[0]:.2e} (of max {v[1]:.2g})" for k, v in d.items())


def tiny_int8_error() -> dict[str, tuple[float, float]] | None:
    """int8 error on the tiny conformance weights with EVERY Linear and 3x3 conv quantised (the
    default thresholds leave the tiny model exact); None when the conformance data is not there."""
    from safetensors.torch import load_file

    conf = pathlib.Path(os.environ.get("NOPOSPLAT_CONFORMANCE_DIR", REPO.parent / "shared" / "conformance"))
    if not (conf / "noposplat_tiny_weights.safetensors").is_file():
        return None
    model = build_model(NoPoSplatConfig.tiny())
    model.load_state_dict(load_file(str(conf / "noposplat_tiny_weights.safetensors")))
    io = load_file(str(conf / "noposplat_tiny_io.safetensors"))
    with torch.inference_mode():
        ref = model(io["input.image"], io["input.intrinsics"])
        quantize_linear_int8_(model, min_in_features=0)
        quantize_conv_int8_(model, min_out_channels=0)
        out = model(io["input.image"], io["input.intrinsics"])
    return output_diffs(out, ref)


def load_check(model, cfg: NoPoSplatConfig) -> None:
    from safetensors.torch import save_file

    from noposplat_ros.predictors.network.checkpoint import deduplicate_aliases

    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "random.safetensors"
        state = {k: v.detach().cpu().contiguous() for k, v in deduplicate_aliases(model.state_dict()).items()}
        save_file(state, str(path))
        del state
        code = (
            "import resource, sys, psutil, torch\n"
            "from noposplat_ros.predictors.network import NoPoSplatConfig, build_model\n"
            "from noposplat_ros.predictors.network.checkpoint import load_checkpoint_into\n"
            "base = psutil.Process().memory_info().rss\n"
            f"m = load_checkpoint_into(build_model(NoPoSplatConfig.released({cfg.image_hw[0]}), device='meta'), sys.argv[1])\n"
            "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
            "print(peak - base)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
        peak = int(proc.stdout.strip().splitlines()[-1])
    print(f"load check: weights {nbytes / 2**30:.2f} GiB; peak RSS growth while loading {peak / 2**30:.2f} GiB "
          f"({peak / nbytes:.2f}x the weights; 2x would mean a second copy)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"],
                    help="the default path's precision (auto = what the predictor picks)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per path (after --warmup)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--resolution", type=int, default=256, choices=[256, 512])
    ap.add_argument("--load-check", action="store_true", help="also measure peak RSS of loading the weights (writes ~2.4 GB to a temp dir)")
    args = ap.parse_args()

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    cfg = NoPoSplatConfig.released(args.resolution)
    torch.manual_seed(0)
    t = time.perf_counter()
    base = build_model(cfg, device=device)
    base.rebuild_buffers(device)
    build_s = time.perf_counter() - t
    n_params = sum(p.numel() for p in base.parameters())
    # the default path's model: a copy with the predictor's settings (int8 shares nothing it changes)
    fast = optimize_for_inference_(copy.deepcopy(base), device, precision)
    plain_fp32(base)
    H, W = cfg.image_hw
    image, K = make_inputs(cfg, device)

    load = os.getloadavg()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads, capability {torch.backends.cpu.get_cpu_capability()})"
    print(f"device: {name}; torch {torch.__version__}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"model: released {H}x{W}, {n_params:,} parameters ({n_params * 4 / 2**30:.2f} GiB fp32), built in {build_s:.1f} s")
    from noposplat_ros.predictors.network.speed import Int8Conv2d

    n_qconv = sum(isinstance(m, Int8Conv2d) for m in fast.modules())
    int8_note = f" ({n_qconv} int8 3x3 convs)" if precision == "int8" else " (heads fp32)"
    print(f"default path: precision {precision}, fused SDPA attention, channels-last convs{int8_note}; "
          "baseline: plain fp32 eager (explicit softmax, no autocast)")

    fns = {"default": forward_fn(fast, image, K, precision), "baseline": forward_fn(base, image, K, "fp32")}
    res = interleaved(fns, device, args.runs, args.warmup)
    mem_kind = "CUDA max allocated above the weights" if device.type == "cuda" else "peak RSS growth during the forward"
    for key, r in res.items():
        print(f"{key:8s}: median {r['median_s'] * 1000:9.1f} ms per 2x{H}x{W} pair over {args.runs} runs "
              f"(min {r['min_s'] * 1000:.1f}, max {r['max_s'] * 1000:.1f}); {mem_kind} {r['peak_bytes'] / 2**20:.0f} MiB")
    print(f"speed ratio default / plain fp32 eager: {res['baseline']['median_s'] / res['default']['median_s']:.2f}x faster")
    diffs = output_diffs(fns["default"](), fns["baseline"]())
    print(f"max |default - fp32| on the same input: {format_diffs(diffs)}")
    if device.type == "cpu":
        tiny = tiny_int8_error()
        if tiny is not None:
            print(f"tiny conformance weights, every Linear and 3x3 conv int8 vs fp32: {format_diffs(tiny)}")
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.load_check:
        load_check(base, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
