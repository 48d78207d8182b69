"""The apt-ROS 2 build path: colcon builds both packages (noposplat_msgs + noposplat_ros).

Here colcon and the ROS 2 packages come from PyPI (requirements/dev.txt); on a robot the same
command runs against /opt/ros. The build goes to a temporary workspace; the repo stays clean.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_colcon_builds_both_packages(tmp_path):
    colcon = shutil.which("colcon", path=str(pathlib.Path(sys.executable).parent))
    if colcon is None:
        pytest.fail("colcon missing from the venv: run tools/setup_env.sh (requirements/dev.txt)")
    env = dict(os.environ)
    venv = str(pathlib.Path(sys.executable).parents[1])
    env.update(VIRTUAL_ENV=venv, PATH=f"{venv}/bin:{env['PATH']}")
    env_sh = pathlib.Path(venv) / "share" / "noposplat_env" / "env.sh"
    cmd = (
        f". {env_sh} && {colcon} --log-base {tmp_path}/log build --paths {REPO} {REPO / 'msg'} "
        f"--build-base {tmp_path}/build --install-base {tmp_path}/install"
    )
    proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    install = tmp_path / "install"
    # ros2 run looks for executables in lib/<package>
    for exe in ("noposplat_node", "noposplat-ros"):
        assert (install / "noposplat_ros" / "lib" / "noposplat_ros" / exe).exists()
    assert (install / "noposplat_ros" / "share" / "noposplat_ros" / "package.xml").exists()
    assert (install / "noposplat_ros" / "share" / "ament_index" / "resource_index" / "packages" / "noposplat_ros").exists()
    assert list((install / "noposplat_ros" / "share" / "noposplat_ros" / "launch").glob("*.launch.*")) or not list(
        (REPO / "launch").glob("*.launch.*")
    )
    # The interface package built by colcon is importable from the install space.
    site = next((install / "noposplat_msgs").rglob("site-packages"))
    probe = subprocess.run(
        [sys.executable, "-c", "import noposplat_msgs.msg as m, sys; print(m.SplatPair.__module__, m.__file__)"],
        env={**env, "PYTHONPATH": str(site), "LD_LIBRARY_PATH": f"{install}/noposplat_msgs/lib:" + env.get("LD_LIBRARY_PATH", "")},
        capture_output=True, text=True, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert str(install) in probe.stdout
