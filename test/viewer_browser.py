"""Helpers for the viewer tests: start `noposplat-ros view`, drive headless Chromium, compare images.

The browser is Debian's chromium driven by the PyPI `playwright` package (its own browser download
is not used); WebGL runs in software (SwiftShader). Without them the tests skip with a message,
except in CI (CI=true), where they fail.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
from typing import Callable

import numpy as np
import pytest

from node_harness import REPO, start_process, stop_process, tail

CHROMIUM = os.environ.get("NOPOSPLAT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--headless",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
VIEWPORT = {"width": 480, "height": 360}
# Hide every element that is not the 3D canvas or one of its ancestors (GUI panel, notifications)
HIDE_OVERLAYS_JS = """() => {
  // the 3D view: the canvas with the largest drawing buffer (viser has other, empty ones)
  let canvas = null;
  for (const c of document.querySelectorAll('canvas')) {
    if (!canvas || c.width * c.height > canvas.width * canvas.height) canvas = c;
  }
  if (!canvas || canvas.width * canvas.height === 0) return null;
  for (const el of document.body.querySelectorAll('*')) {
    if (el !== canvas && !el.contains(canvas) && el.style.visibility !== 'hidden') {
      el.style.visibility = 'hidden';
      el.dataset.hiddenForShot = '1';
    }
  }
  const r = canvas.getBoundingClientRect();
  return [r.x, r.y, r.width, r.height];
}"""
SHOW_OVERLAYS_JS = """() => {
  for (const el of document.querySelectorAll('[data-hidden-for-shot]')) {
    el.style.visibility = '';
    delete el.dataset.hiddenForShot;
  }
}"""


def require_browser():
    """The playwright module, or skip (fail in CI) with what is missing."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the PyPI package playwright (tools/setup_env.sh installs it)")
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        missing.append(f"chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        msg = "viewer browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    import playwright.sync_api

    return playwright.sync_api


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def view_command(*args: str) -> list[str]:
    exe = pathlib.Path(sys.executable).with_name("noposplat-ros")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "noposplat_ros.cli"]
    return cmd + ["view", *args]


def start_viewer(args: list[str], log_path: pathlib.Path, timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start the viewer; returns (process, URL) once it printed the URL it serves on."""
    proc = start_process(view_command(*args), log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = re.search(r"open (http://\S+) in a browser", log_path.read_text(errors="replace"))
        if m:
            return proc, m.group(1).replace("localhost", "127.0.0.1")
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    stop_process(proc)
    raise AssertionError("the viewer did not start\n" + tail((log_path,)))


class Page:
    """One headless Chromium page on the viewer."""

    def __init__(self, sync_api, url: str) -> None:
        self._pw = sync_api.sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport=VIEWPORT)
        self.page.goto(url)

    def close(self) -> None:
        self.browser.close()
        self._pw.stop()

    def text(self) -> str:
        return self.page.evaluate("document.body.innerText")

    def wait_for_text(self, pattern: str, timeout_s: float) -> str:
        """Wait until the page's text matches ``pattern`` (the status panel: connected and data sent)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.text()
            if re.search(pattern, text):
                return text
            time.sleep(0.3)
        raise AssertionError(f"page text never matched {pattern!r}; it shows:\n{self.text()[:800]}")

    def canvas_shot(self, settle_s: float = 1.0, timeout_s: float = 60.0) -> np.ndarray:
        """(H, W, 3) uint8 screenshot of the 3D canvas alone, once two shots ``settle_s`` apart agree.

        Software WebGL and the splat sort take a moment; the picture is taken when something is drawn
        and it stopped changing (or at the timeout: then the caller's checks fail on what it shows).
        """
        import cv2

        prev = None
        deadline = time.monotonic() + timeout_s
        while True:
            box = self.page.evaluate(HIDE_OVERLAYS_JS)
            assert box is not None, "the page has no canvas"
            try:
                png = self.page.screenshot(clip=dict(zip(("x", "y", "width", "height"), box)), timeout=90_000)
            finally:
                self.page.evaluate(SHOW_OVERLAYS_JS)  # the status panel's text stays readable
            img = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            uniform = img.std() < 1.0  # nothing drawn yet (data still arriving, or the sort running)
            if not uniform and prev is not None and prev.shape == img.shape and np.abs(prev.astype(int) - img).mean() < 0.5:
                return img
            if time.monotonic() > deadline:
                return img
            prev = img
            time.sleep(settle_s)


def grey_small(rgb: np.ndarray, width: int = 96) -> np.ndarray:
    """(H, W, 3) uint8/float -> (h, width) float64 grey, area-downscaled (small misalignments blur out)."""
    import cv2

    img = rgb.astype(np.float32)
    if img.max() > 1.5:
        img /= 255.0
    h = max(1, round(img.shape[0] * width / img.shape[1]))
    return cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (width, h), interpolation=cv2.INTER_AREA).astype(np.float64)


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two same-size images (1: same up to gain/offset; 0: unrelated)."""
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def poll(cond: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


__all__ = ["REPO", "Page", "free_port", "grey_small", "ncc", "poll", "require_browser", "start_viewer", "stop_process",
           "tail"]
