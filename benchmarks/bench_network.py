"""Benchmark of the full-size NoPoSplat network (random weights; no checkpoint needed).

Prints: parameters, forward time per 2x256^2 pair (median after warm-up; CUDA synchronised), peak
memory (CUDA max allocated; CPU peak RSS growth during the forward, sampled), and the speed ratio of
our default path (fused SDPA attention + bf16/fp16 autocast on CUDA, fp32 on CPU; heads fp32) to a
plain fp32 eager run of the same module (explicit-softmax attention, no autocast), measured
interleaved in one run. ``--load-check`` also writes the random weights to a temporary
.safetensors file and measures the peak RSS of loading it the way the predictor does (meta model +
assign) in a fresh process, against the size of the weights.

    .venv/bin/python benchmarks/bench_network.py --device cpu --runs 3
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import torch

from noposplat_ros.predictors.network import NoPoSplatConfig, build_model
from noposplat_ros.predictors.noposplat import PRECISIONS, resolve_device, resolve_precision


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(model, image, K, device, *, fused: bool, precision: str) -> tuple[float, int]:
    """One timed forward; returns (seconds, peak memory bytes)."""
    model.set_fused_attention(fused)
    ctx = torch.autocast(device.type, dtype=PRECISIONS[precision]) if precision != "fp32" else contextlib.nullcontext()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        mem = contextlib.nullcontext()
    else:
        mem = RssPeak()
    _sync(device)
    with mem, torch.inference_mode(), ctx:
        t = time.perf_counter()
        out = model(image, K)
        _sync(device)
        dt = time.perf_counter() - t
    del out
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else mem.peak_delta
    return dt, peak


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
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per path (after --warmup)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--resolution", type=int, default=256, choices=[256, 512])
    ap.add_argument("--load-check", action="store_true", help="also measure peak RSS of loading the weights (writes ~2.4 GB to a temp dir)")
    args = ap.parse_args()

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    cfg = NoPoSplatConfig.released(args.resolution)
    torch.manual_seed(0)
    t = time.perf_counter()
    model = build_model(cfg, device=device)
    model.rebuild_buffers(device)
    build_s = time.perf_counter() - t
    n_params = sum(p.numel() for p in model.parameters())
    H, W = cfg.image_hw
    image = torch.rand(1, 2, 3, H, W, device=device) * 2 - 1
    K = torch.tensor([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]], device=device).expand(1, 2, 3, 3).contiguous()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"model: released {H}x{W}, {n_params:,} parameters ({n_params * 4 / 2**30:.2f} GiB fp32), built in {build_s:.1f} s")
    print(f"default path: fused SDPA attention, precision {precision} (heads fp32); baseline: explicit softmax, fp32, no autocast")

    paths = {"default": dict(fused=True, precision=precision), "baseline": dict(fused=False, precision="fp32")}
    for _ in range(args.warmup):
        for kw in paths.values():
            time_forward(model, image, K, device, **kw)
    times: dict[str, list[float]] = {k: [] for k in paths}
    peaks: dict[str, int] = {k: 0 for k in paths}
    for _ in range(args.runs):
        for key, kw in paths.items():  # interleaved so both see the same machine state
            dt, peak = time_forward(model, image, K, device, **kw)
            times[key].append(dt)
            peaks[key] = max(peaks[key], peak)
    med = {k: statistics.median(v) for k, v in times.items()}
    mem_kind = "CUDA max allocated above the weights" if device.type == "cuda" else "peak RSS growth during the forward"
    for key in paths:
        print(f"{key:8s}: median {med[key] * 1000:9.1f} ms per 2x{H}x{W} pair over {args.runs} runs "
              f"(min {min(times[key]) * 1000:.1f}, max {max(times[key]) * 1000:.1f}); {mem_kind} {peaks[key] / 2**20:.0f} MiB")
    print(f"speed ratio default / plain fp32 eager: {med['baseline'] / med['default']:.2f}x faster")
    if args.load_check:
        load_check(model, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
