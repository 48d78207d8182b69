"""tools/gpu_check: the CPU run writes a report with every section; a failing cuda test fails the check."""
from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "tools" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_cpu_quick_run_writes_every_section(tmp_path):
    out = tmp_path / "report" / "gpu_report.md"
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_check.sh"), "--cpu", "--quick", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    headers = re.findall(r"^## (.+)$", text, flags=re.M)
    gc = _gpu_check_module()
    assert headers[: len(gc.SECTIONS)] == list(gc.SECTIONS), headers
    assert "## Errors" not in text
    assert "result: **PASS**" in text and "CPU only (--cpu)" in text
    # numbers, not placeholders: both network paths, the cuda tests (skipped here), PnP, end to end
    assert re.search(r"\| fp32 eager \(baseline\) \| \d+\.\d", text)
    assert re.search(r"\| int8 default \(SDPA, channels-last\) \| \d+\.\d", text)
    assert "test_cuda_paths::test_gsplat_matches_cpu_rasterizer[64] | skipped" in text
    assert re.search(r"\| PnP-RANSAC \(OpenCV, CPU\) \| \d+\.\d", text)
    assert re.search(r"\| total \| \d+\.\d", text)
    assert "versions: torch" in text and "load average at start" in text


def test_a_failing_cuda_test_fails_the_check(tmp_path):
    gc = _gpu_check_module()
    bad = tmp_path / "test_cuda_fake.py"
    bad.write_text("import pytest\n\n@pytest.mark.cuda\ndef test_broken():\n    assert 1 == 2\n\n"
                   "def test_not_cuda():\n    pass\n")
    st = gc.Settings(cuda=False, quick=True, budget_s=120, net_sizes=("tiny",), warmup=0, runs=1, pose_trials=1,
                     e2e_runs=1, test_paths=(str(bad),))
    rep = gc.Report(st.budget_s)
    rep.run("CUDA tests", lambda: gc.section_tests(rep, st))
    text = "\n".join(rep.lines["CUDA tests"])
    assert rep.tests_failed and not rep.errors
    assert "test_broken | FAILED" in text
    assert "test_not_cuda" not in text  # only cuda-marked tests run
    assert "CUDA tests did not pass" in text


def test_shell_wrapper_passes_arguments_through():
    proc = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    assert "--cpu" in proc.stdout and "--out" in proc.stdout and "--budget-s" in proc.stdout
