"""Shared pytest fixtures.

Conformance data lives in ../shared/conformance next to the repository (golden data from the
official NoPoSplat code). A user's clone may not have it: those tests skip with a message, except
in CI (CI=true), where a missing directory is an error.
"""
from __future__ import annotations

import os
import pathlib
import random

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFORMANCE_DIR = pathlib.Path(os.environ.get("NOPOSPLAT_CONFORMANCE_DIR", REPO.parent / "shared" / "conformance"))

# Each pytest process talks DDS on its own domain so parallel runs on one machine do not mix.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(1, 101)))
os.environ.setdefault("ROS_LOG_DIR", str(REPO / ".ros_log"))


@pytest.fixture(scope="session")
def conformance_dir() -> pathlib.Path:
    if not CONFORMANCE_DIR.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"conformance data missing in CI: {CONFORMANCE_DIR}")
        pytest.skip(f"conformance data not found at {CONFORMANCE_DIR} (set NOPOSPLAT_CONFORMANCE_DIR)")
    return CONFORMANCE_DIR


@pytest.fixture(scope="session")
def motorcycle():
    from noposplat_ros.fixtures.motorcycle import load_motorcycle

    return load_motorcycle()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's small renders single-threaded (``pytestmark = pytest.mark.usefixtures(
    "one_torch_thread")``): on a shared, loaded CI machine OpenMP barriers between two threads made
    them 10-20x slower (measured); the thread count is restored afterwards."""
    import torch  # here, not at the top: the ROS-only tests need no torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
