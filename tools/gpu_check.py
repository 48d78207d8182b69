"""One-command GPU check: the CUDA tests and the CUDA benchmarks, written to one Markdown report.

    bash tools/gpu_check.sh [--out gpu_report.md] [--budget-s 480]     # on a CUDA machine
    bash tools/gpu_check.sh --cpu                                      # CUDA parts skipped (CI, anyone)

Sections (each in its own try/except; a failure is written to the report, the rest still runs):
machine and versions; the network forward per 2x256² and 2x512² pair in fp32 / bf16 / fp16 (median
after warm-up, CUDA synchronised, peak memory from torch.cuda.max_memory_allocated, max output
difference against fp32), plus torch.compile and CUDA-graph variants of the fastest precision (kept
only where they help; never fatal); pytest of every test marked ``cuda``; pose (PnP + photometric
refinement) on the Motorcycle pair with ground truth; end-to-end pair latency through
NoPoSplatPredictor. A global time budget stops optional work early (the skipped items are listed).

Exit status: 0 all good; 1 a CUDA test failed (or pytest could not run); 2 a benchmark section
raised; 3 no CUDA device without ``--cpu``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import importlib.util
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from typing import Any, Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
SECTIONS = ("Summary", "Machine", "Network forward", "CUDA tests", "Pose", "End-to-end pair")


@dataclasses.dataclass
class Settings:
    """What to run and how long; --cpu and --quick pick small sizes and few repeats."""

    cuda: bool
    quick: bool
    budget_s: float
    net_sizes: tuple[str, ...]   # "256", "512" (released) or "cpu-check" / "tiny"
    warmup: int
    runs: int
    pose_trials: int
    e2e_runs: int
    test_paths: tuple[str, ...]


class Report:
    """Collects Markdown lines per section, errors and the time budget."""

    def __init__(self, budget_s: float) -> None:
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.lines: dict[str, list[str]] = {s: [] for s in SECTIONS}
        self.errors: list[str] = []
        self.skipped: list[str] = []
        self.tests_failed = False

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.t0

    def left_s(self) -> float:
        return self.budget_s - self.elapsed_s()

    def add(self, section: str, line: str = "") -> None:
        self.lines[section].append(line)
        print(f"[{section}] {line}", flush=True)

    def run(self, section: str, fn: Callable[[], None]) -> None:
        """Run one section; an exception is recorded (with its last traceback lines), not raised."""
        t = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # every section is optional for the rest of the report
            tb = traceback.format_exc().strip().splitlines()[-6:]
            self.errors.append(f"{section}: {type(exc).__name__}: {exc}")
            self.add(section, f"**ERROR** `{type(exc).__name__}: {str(exc)[:300]}`")
            self.add(section, "```\n" + "\n".join(tb) + "\n```")
        self.add(section, f"_section time {time.perf_counter() - t:.1f} s_")

    def markdown(self) -> str:
        out = ["# noposplat_ros GPU check report", ""]
        for s in SECTIONS:
            out += [f"## {s}", ""] + self.lines[s] + [""]
        if self.errors:
            out += ["## Errors", ""] + [f"- {e}" for e in self.errors] + [""]
        if self.skipped:
            out += ["## Skipped (time budget)", ""] + [f"- {s}" for s in self.skipped] + [""]
        return "\n".join(out)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], Any], device, warmup: int, runs: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    _sync(device)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        _sync(device)
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts), ts


def _bench_module():
    """benchmarks/bench_network.py as a module (the benchmarks folder is not a package)."""
    return _load("bench_network", REPO / "benchmarks" / "bench_network.py")


def _load(name: str, path: pathlib.Path):
    """Import a script by path (registered in sys.modules, as dataclasses need)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _net_config(size: str):
    from noposplat_ros.predictors.network import NoPoSplatConfig

    if size in ("256", "512"):
        return NoPoSplatConfig.released(int(size))
    if size == "tiny":
        return dataclasses.replace(NoPoSplatConfig.tiny(), image_hw=(64, 64))
    # "cpu-check": a reduced network whose layers are large enough for int8 to apply, ~1 s per forward
    return NoPoSplatConfig(enc_dim=512, enc_depth=2, enc_heads=8, dec_dim=384, dec_depth=2, dec_heads=6,
                           layer_dims=(48, 96, 192, 384), feature_dim=64, last_dim=32, image_hw=(128, 128),
                           name="cpu_check")


# ------------------------------------------------------------------------------------------ sections
def section_machine(rep: Report, st: Settings) -> None:
    import numpy as np
    import torch

    S = "Machine"
    load = os.getloadavg()
    rep.add(S, f"- date (UTC): {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
    rep.add(S, f"- host: {platform.node()}; {platform.platform()}; Python {platform.python_version()}")
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rep.add(S, f"- CPU: {cpu}; {os.cpu_count()} logical cores; torch threads {torch.get_num_threads()}; "
               f"capability {torch.backends.cpu.get_cpu_capability()}")
    rep.add(S, f"- load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
               "(numbers taken under load are only comparable side by side within this report)")
    with contextlib.suppress(Exception):
        import psutil

        rep.add(S, f"- memory: {psutil.virtual_memory().total / 2**30:.0f} GiB")
    if st.cuda:
        p = torch.cuda.get_device_properties(0)
        rep.add(S, f"- GPU: {p.name}; compute capability {p.major}.{p.minor}; {p.total_memory / 2**30:.0f} GiB; "
                   f"{p.multi_processor_count} SMs; bf16 supported {torch.cuda.is_bf16_supported()}")
        with contextlib.suppress(Exception):
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            rep.add(S, f"- nvidia-smi: driver, max SM clock, power limit: {smi.stdout.strip()}")
    else:
        rep.add(S, f"- GPU: none used (CUDA available: {torch.cuda.is_available()}); CUDA parts skipped")
    versions = {"torch": torch.__version__, "CUDA (torch build)": torch.version.cuda,
                "cuDNN": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                "numpy": np.__version__}
    for mod in ("gsplat", "cv2", "poselib", "safetensors"):
        with contextlib.suppress(Exception):
            versions[mod] = __import__(mod).__version__
    with contextlib.suppress(Exception):
        versions["noposplat_ros commit"] = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip() or "?"
    rep.add(S, "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))


def section_network(rep: Report, st: Settings) -> None:
    """Forward per pair for every precision, side by side; compile / CUDA graphs for the fastest."""
    import torch

    from noposplat_ros.predictors.network import build_model
    from noposplat_ros.predictors.noposplat import optimize_for_inference_, resolve_precision

    bn = _bench_module()
    S = "Network forward"
    dev = torch.device("cuda" if st.cuda else "cpu")
    rep.add(S, f"Random weights (seed 0), one pair (B=1, 2 views), warm-up {st.warmup}, median of {st.runs}; "
               "max |Δ| = max abs difference of the Gaussian means / opacities against the fp32 eager output on "
               "the same input. Peak = " + ("torch.cuda.max_memory_allocated above the weights."
                                           if st.cuda else "peak RSS growth (sampled)."))
    if st.cuda:
        # the fp32 reference must be true fp32 (no TF32 in matmuls or convolutions)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    rep.add(S, "")
    rep.add(S, "| network | path | median ms | min–max ms | peak MiB | speed vs fp32 eager | max Δ means | max Δ opacities |")
    rep.add(S, "|---|---|---|---|---|---|---|---|")
    for size in st.net_sizes:
        if rep.left_s() < (90 if st.cuda else 30):
            rep.skipped.append(f"network {size}: time budget")
            continue
        cfg = _net_config(size)
        torch.manual_seed(0)
        base = build_model(cfg, device=dev)
        base.rebuild_buffers(dev)
        image, K = bn.make_inputs(cfg, dev)
        H, W = cfg.image_hw
        label = f"{cfg.name} 2x{H}x{W}"
        paths: dict[str, tuple[Callable[[], Any], Any]] = {}
        bn.plain_fp32(base)
        paths["fp32 eager (baseline)"] = (bn.forward_fn(base, image, K, "fp32"), base)
        models = {}
        precisions = ["fp32", "bf16", "fp16"] if st.cuda else (["int8"] if st.quick else ["fp32", "int8"])
        if st.cuda and not torch.cuda.is_bf16_supported():
            precisions.remove("bf16")
        for prec in precisions:
            resolve_precision(prec, dev)
            m = optimize_for_inference_(copy.deepcopy(base), dev, prec)
            models[prec] = m
            paths[f"{prec} default (SDPA, channels-last)"] = (bn.forward_fn(m, image, K, prec), m)
        with torch.inference_mode():
            ref = paths["fp32 eager (baseline)"][0]()
        res = bn.interleaved({k: v[0] for k, v in paths.items()}, dev, st.runs, st.warmup)
        auto = resolve_precision("auto", dev)
        best = auto if auto in models else min(models, key=lambda p: res[f"{p} default (SDPA, channels-last)"]["median_s"])

        # torch.compile and CUDA graphs of the predictor's precision: try, keep whichever helps
        if st.cuda and rep.left_s() > 150:
            extra = _accelerated_variants(models[best], image, K, best, dev, rep)
            if extra:
                res.update(bn.interleaved(extra, dev, st.runs, st.warmup))
                paths.update({k: (fn, None) for k, fn in extra.items()})
        base_ms = res["fp32 eager (baseline)"]["median_s"] * 1e3
        for name, r in res.items():
            with torch.inference_mode():
                out = paths[name][0]()
            d = bn.output_diffs(out, ref)
            del out
            ms = r["median_s"] * 1e3
            rep.add(S, f"| {label} | {name} | {ms:.1f} | {r['min_s'] * 1e3:.1f}–{r['max_s'] * 1e3:.1f} | "
                       f"{r['peak_bytes'] / 2**20:.0f} | {base_ms / ms:.2f}x | {d['means'][0]:.2e} | {d['opacities'][0]:.2e} |")
        fastest = min(res, key=lambda k: res[k]["median_s"])
        rep.add(S, f"| {label} | **fastest: {fastest}** | {res[fastest]['median_s'] * 1e3:.1f} | | | "
                   f"{base_ms / (res[fastest]['median_s'] * 1e3):.2f}x | | |")
        del base, models, paths, ref
        if st.cuda:
            torch.cuda.empty_cache()
    if st.cuda:
        rep.add(S, "")
        rep.add(S, "Targets (DESIGN §6, H100-class): ≤ 15 ms per 2x256² pair in bf16.")


def _accelerated_variants(model, image, K, precision: str, dev, rep: Report) -> dict[str, Callable[[], Any]]:
    """torch.compile and CUDA-graph versions of one forward; each that fails is reported and left out."""
    import torch

    from noposplat_ros.predictors.noposplat import autocast_for

    S = "Network forward"
    out: dict[str, Callable[[], Any]] = {}
    # CUDA graph: capture once with static inputs, replay (no per-kernel launch cost)
    try:
        from noposplat_ros.predictors.noposplat import PRECISIONS

        static_img, static_K = image.clone(), K.clone()
        # autocast's weight-cast cache must be off while capturing (torch.cuda.graph docs)
        ac = (torch.autocast("cuda", dtype=PRECISIONS[precision], cache_enabled=False)
              if precision in ("bf16", "fp16") else contextlib.nullcontext())
        with torch.inference_mode(), ac:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    model(static_img, static_K)
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = model(static_img, static_K)

        def replay():
            graph.replay()
            return static_out

        out[f"{precision} + CUDA graph"] = replay
    except Exception as exc:
        rep.add(S, f"- CUDA graph capture failed ({type(exc).__name__}: {str(exc)[:200]}); left out")
    # torch.compile (inductor); compile time is reported, never fatal
    if rep.left_s() > 200:
        try:
            compiled = torch.compile(model, dynamic=False)
            t = time.perf_counter()
            with torch.inference_mode(), autocast_for(dev, precision):
                compiled(image, K)
            _sync(dev)
            rep.add(S, f"- torch.compile ({precision}) first call (compile) {time.perf_counter() - t:.1f} s")

            def run_compiled():
                with torch.inference_mode(), autocast_for(dev, precision):
                    return compiled(image, K)

            out[f"{precision} + torch.compile"] = run_compiled
        except Exception as exc:
            rep.add(S, f"- torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); left out")
    else:
        rep.skipped.append("torch.compile variant: time budget")
    return out


def section_tests(rep: Report, st: Settings) -> None:
    """pytest -m cuda in a subprocess; per-test outcome from its JUnit XML."""
    S = "CUDA tests"
    timeout = max(60.0, rep.left_s() - (60 if st.cuda else 20))
    with tempfile.TemporaryDirectory() as tmp:
        xml = pathlib.Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
               f"--junitxml={xml}", "-o", "addopts=", *st.test_paths]
        rep.add(S, f"Command: `{' '.join(cmd[1:-len(st.test_paths)] + list(st.test_paths)).replace(str(xml), 'junit.xml')}` "
                   f"(timeout {timeout:.0f} s)")
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
            rc, tail = proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        except subprocess.TimeoutExpired as exc:
            rc, tail = -1, [f"timed out after {timeout:.0f} s"] + (str(exc.stdout or "").splitlines()[-10:])
        rep.add(S, f"pytest exit code {rc} in {time.perf_counter() - t:.0f} s")
        rows = []
        if xml.is_file():
            for case in ET.parse(xml).getroot().iter("testcase"):
                name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
                outcome, why = "passed", ""
                for tag in ("failure", "error", "skipped"):
                    el = case.find(tag)
                    if el is not None:
                        outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                        why = (el.get("message") or "").splitlines()[0][:160] if el.get("message") else ""
                rows.append((name, outcome, float(case.get("time", 0)), why))
    if rows:
        rep.add(S, "")
        rep.add(S, "| test | outcome | s | note |")
        rep.add(S, "|---|---|---|---|")
        for name, outcome, secs, why in rows:
            rep.add(S, f"| {name} | {outcome} | {secs:.1f} | {why.replace('|', '/')} |")
    counts = {o: sum(r[1] == o for r in rows) for o in ("passed", "FAILED", "ERROR", "skipped")}
    rep.add(S, "")
    rep.add(S, "Totals: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    # pytest exit 5 = nothing collected; 0 = passed (skips allowed)
    failed = counts["FAILED"] + counts["ERROR"] > 0 or rc not in (0, 5) or not rows
    if st.cuda and counts["passed"] == 0:
        failed = True  # on a GPU machine every CUDA test skipping means the check did not run
    if failed:
        rep.add(S, "**CUDA tests did not pass.** Last lines of the pytest output:")
        rep.add(S, "```\n" + "\n".join(tail) + "\n```")
        rep.tests_failed = True


def section_pose(rep: Report, st: Settings) -> None:
    """PnP (OpenCV, CPU) + photometric refinement on the device, Motorcycle pair with ground truth."""
    import numpy as np
    import torch

    from noposplat_ros.pose.metrics import rotation_error_deg, translation_direction_error_deg
    from noposplat_ros.pose.pnp import solve_pnp_official
    from noposplat_ros.pose.refine import RefineConfig, refine_pose
    from noposplat_ros.pose.se3 import perturbed_pose_np

    S = "Pose"
    bp = _load("bench_pose", REPO / "benchmarks" / "bench_pose.py")
    dev = torch.device("cuda" if st.cuda else "cpu")
    if st.cuda:
        cfg = RefineConfig()
    else:  # the CPU rasterizer at 256² takes minutes on a loaded 2-core machine: a small grid
        bp.S = 48 if st.quick else 96
        cfg = RefineConfig(levels=(1,)) if st.quick else RefineConfig(levels=(2, 1))
    gs, means1, op1, img1, K1, T_true = bp.build_pair(str(dev))
    rep.add(S, f"Motorcycle pair (ground-truth depth) as a 2x{bp.S}² Gaussian grid, {gs.num} Gaussians, on {dev}; "
               f"refinement ({cfg.method}, levels {cfg.levels}) starts 2° / 15 % of the baseline off the truth; "
               f"median of {st.pose_trials}.")
    pnp_ms, _ = _median_ms(lambda: solve_pnp_official(means1, op1, K1), torch.device("cpu"), 1, max(3, st.pose_trials))
    est = solve_pnp_official(means1, op1, K1)
    rng = np.random.default_rng(0)
    starts = [perturbed_pose_np(T_true, 2.0, 0.15, rng) for _ in range(st.pose_trials)]
    if st.cuda:
        refine_pose(gs, img1, K1, starts[0], cfg)  # warm-up (gsplat JIT, kernels)
    times, rerr, terr = [], [], []
    for i, T0 in enumerate(starts):
        if i and rep.left_s() < 20:
            rep.skipped.append("pose trials: time budget")
            break
        _sync(dev)
        t = time.perf_counter()
        T, info = refine_pose(gs, img1, K1, T0, cfg)
        _sync(dev)
        times.append((time.perf_counter() - t) * 1e3)
        rerr.append(rotation_error_deg(T, T_true))
        terr.append(translation_direction_error_deg(T, T_true))
    rep.add(S, "")
    rep.add(S, "| step | median ms | rotation err ° | translation-direction err ° |")
    rep.add(S, "|---|---|---|---|")
    rep.add(S, f"| PnP-RANSAC (OpenCV, CPU) | {pnp_ms:.1f} | {rotation_error_deg(est.T_cam0_from_cam1, T_true):.3f} | "
               f"{translation_direction_error_deg(est.T_cam0_from_cam1, T_true):.3f} |")
    if times:
        rep.add(S, f"| refinement (default RefineConfig, {dev}) | {statistics.median(times):.1f} | "
                   f"{statistics.median(rerr):.3f} | {statistics.median(terr):.3f} |")
        rep.add(S, f"| PnP + refinement | {pnp_ms + statistics.median(times):.1f} | | |")
    if st.cuda:
        rep.add(S, "")
        rep.add(S, "Target (DESIGN §6, H100-class): PnP + refinement ≤ 50 ms.")


def section_e2e(rep: Report, st: Settings) -> None:
    """NoPoSplatPredictor.reconstruct on the Motorcycle pair: random full-size weights on CUDA (written
    to a temporary .safetensors and loaded like a user's checkpoint); on --cpu the reduced network."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from noposplat_ros.fixtures.motorcycle import load_motorcycle
    from noposplat_ros.predictors.network import build_model
    from noposplat_ros.predictors.network.checkpoint import deduplicate_aliases
    from noposplat_ros.predictors.noposplat import NoPoSplatPredictor

    S = "End-to-end pair"
    size = "256" if st.cuda else st.net_sizes[0]
    cfg = _net_config(size)
    m = load_motorcycle()
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "random.safetensors"
        torch.manual_seed(0)
        model = build_model(cfg, device="cpu")
        save_file({k: v.contiguous() for k, v in deduplicate_aliases(model.state_dict()).items()}, str(path))
        del model
        pred = NoPoSplatPredictor(path, model_config=cfg, device="cuda" if st.cuda else "cpu")
    rep.add(S, f"`NoPoSplatPredictor({cfg.name}, device={pred.device}, precision auto -> {pred.precision}, "
               f"refine auto -> {'on' if pred._refine_enabled() else 'off'})`.reconstruct on the Motorcycle pair "
               f"({m.left.rgb.shape[1]}x{m.left.rgb.shape[0]} px in, network grid {cfg.image_hw[0]}x{cfg.image_hw[1]}); "
               f"random weights, so the pose itself is meaningless — this is latency. Median of {st.e2e_runs} after 1 warm-up.")
    try:
        args = (m.left.rgb, m.right.rgb, m.left.K, m.right.K)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred.reconstruct(*args)
            recs = []
            for i in range(st.e2e_runs):
                if i and rep.left_s() < 15:
                    rep.skipped.append("end-to-end runs: time budget")
                    break
                recs.append(pred.reconstruct(*args))
    finally:
        pred.close()
    if not recs:
        return
    keys = sorted({k for r in recs for k in r.timings_s}, key=lambda k: (k == "total", k))
    rep.add(S, "")
    rep.add(S, "| stage | median ms |")
    rep.add(S, "|---|---|")
    for k in keys:
        vals = [r.timings_s[k] * 1e3 for r in recs if k in r.timings_s]
        rep.add(S, f"| {k} | {statistics.median(vals):.1f} |")
    rep.add(S, f"Pose status of the last run: {recs[-1].pose.status.name}; message: {recs[-1].pose.message[:200]}")
    if st.cuda:
        rep.add(S, "")
        rep.add(S, "Target (DESIGN §6 / issue 13, H100-class): end-to-end pair ≤ 100 ms.")
    assert np.isfinite(recs[-1].gaussians.means.numpy()).all(), "non-finite Gaussian means"


# ------------------------------------------------------------------------------------------ main
def _warm_gsplat() -> subprocess.Popen | None:
    """Start gsplat's one-time CUDA build in the background (it compiles at first use; minutes)."""
    code = "from gsplat.cuda._backend import _C; print('gsplat CUDA extension ready:', _C is not None)"
    try:
        return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    except OSError:
        return None


def settings_from_args(args: argparse.Namespace, cuda: bool) -> Settings:
    if args.quick:  # the test's configuration: the tiny network and the cuda-test files only
        return Settings(cuda=cuda, quick=True, budget_s=args.budget_s or 600, net_sizes=("tiny",), warmup=0, runs=1,
                        pose_trials=1, e2e_runs=1, test_paths=("test/test_cuda_paths.py",))
    if cuda:
        return Settings(cuda=True, quick=False, budget_s=args.budget_s or 450, net_sizes=("256", "512"), warmup=3,
                        runs=10, pose_trials=5, e2e_runs=5, test_paths=("test",))
    return Settings(cuda=False, quick=False, budget_s=args.budget_s or 270, net_sizes=("cpu-check",), warmup=1,
                    runs=3, pose_trials=1, e2e_runs=2, test_paths=("test",))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="skip every CUDA part (small CPU sizes, few repeats)")
    ap.add_argument("--out", default="gpu_report.md", help="Markdown report path (default ./gpu_report.md)")
    ap.add_argument("--budget-s", type=float, default=0.0,
                    help="global time budget in s (default 450 on CUDA, 270 with --cpu); optional work stops early")
    ap.add_argument("--quick", action="store_true", help="tiny network, cuda-test file only (used by the test suite)")
    args = ap.parse_args(argv)

    # conformance data: next to the clone (../shared) or, on a lent machine, inside it (./shared)
    if "NOPOSPLAT_CONFORMANCE_DIR" not in os.environ and not (REPO.parent / "shared" / "conformance").is_dir() \
            and (REPO / "shared" / "conformance").is_dir():
        os.environ["NOPOSPLAT_CONFORMANCE_DIR"] = str(REPO / "shared" / "conformance")

    import torch

    if args.quick and not torch.cuda.is_available():
        # small CPU work on a shared machine: OpenMP barriers between threads cost more than they give
        torch.set_num_threads(1)
    no_cuda = not args.cpu and not torch.cuda.is_available()
    cuda = not args.cpu and not no_cuda
    st = settings_from_args(args, cuda)
    rep = Report(st.budget_s)
    gsplat_build = _warm_gsplat() if cuda else None

    rep.run("Machine", lambda: section_machine(rep, st))
    rep.run("Network forward", lambda: section_network(rep, st))
    if gsplat_build is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            out, _ = gsplat_build.communicate(timeout=max(1.0, min(240.0, rep.left_s() - 150)))
            rep.add("CUDA tests", f"gsplat build: {(out or '').strip().splitlines()[-1:] or ['(no output)']}")
    rep.run("CUDA tests", lambda: section_tests(rep, st))
    rep.run("Pose", lambda: section_pose(rep, st))
    rep.run("End-to-end pair", lambda: section_e2e(rep, st))

    status = "FAIL (CUDA tests)" if rep.tests_failed else ("FAIL (a section raised)" if rep.errors else "PASS")
    mode = "CUDA" if cuda else ("CPU only (--cpu)" if args.cpu else "CPU only: NO CUDA DEVICE FOUND")
    rep.lines["Summary"] += [
        f"- result: **{status}**; mode: {mode}{' (quick)' if st.quick else ''}",
        f"- wall time {rep.elapsed_s():.0f} s of a {st.budget_s:.0f} s budget; "
        f"load average at the end {os.getloadavg()[0]:.2f}",
        f"- errors: {len(rep.errors)}; skipped for time: {len(rep.skipped)}",
        "- produced by `bash tools/gpu_check.sh" + (" --cpu" if args.cpu else "") + "`",
    ]
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rep.markdown())
    print(f"report written to {out} ({status})", flush=True)
    if no_cuda:
        print("no CUDA device: CUDA parts skipped (use --cpu to say so explicitly)", file=sys.stderr)
        return 3
    if rep.tests_failed:
        return 1
    return 2 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
