"""`noposplat-ros view FILE.ply` in a real headless Chromium draws the splats: the page's canvas
resembles our own CPU render of the same Gaussians from the same camera (the first keyframe's, in
the OpenCV optical convention), and not an upside-down one or a blank page.

The PLY is the geometry backend's reconstruction of the real Motorcycle pair (a small grid, so
software WebGL and the CPU renderer stay quick).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from viewer_browser import Page, free_port, grey_small, ncc, require_browser, start_viewer, stop_process, tail

FOV_DEG = 50.0
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def motorcycle_ply(tmp_path_factory, motorcycle):
    from noposplat_ros.io.ply import write_ply
    from noposplat_ros.predictors.geometry import GeometryConfig, GeometryPredictor
    from noposplat_ros.types import KeyframePair

    rec = GeometryPredictor(GeometryConfig(grid_long_side=128)).predict(KeyframePair(motorcycle.left, motorcycle.right))
    path = tmp_path_factory.mktemp("viewer") / "motorcycle.ply"
    write_ply(path, rec.gaussians)
    return path


def cpu_render(gaussians, fov_deg: float, height: int, width: int, T_cam_from_world: np.ndarray) -> np.ndarray:
    """Our renderer with a pinhole of the browser's vertical fov, centred, on viser's white background."""
    from noposplat_ros.render import render

    fy = 0.5 * height / np.tan(0.5 * np.deg2rad(fov_deg))
    K = np.array([[fy, 0.0, 0.5 * width], [0.0, fy, 0.5 * height], [0.0, 0.0, 1.0]])
    out = render(gaussians, torch.from_numpy(K).float(), torch.from_numpy(T_cam_from_world).float(), height, width,
                 sh_degree=0, background=(1.0, 1.0, 1.0))
    return out.rgb.clamp(0, 1).numpy()


def test_page_draws_the_ply_like_our_renderer(motorcycle_ply, tmp_path):
    sync_api = require_browser()
    from noposplat_ros.io.ply import read_ply

    gaussians = read_ply(motorcycle_ply)
    log = tmp_path / "view.log"
    proc, url = start_viewer([str(motorcycle_ply), "--port", str(free_port()), "--fov-deg", str(FOV_DEG)], log)
    page = None
    try:
        page = Page(sync_api, url)
        page.wait_for_text(rf"{motorcycle_ply.name}\W+{gaussians.num:,} splats", 60)
        shot = page.canvas_shot()
    finally:
        if page is not None:
            page.close()
        stop_process(proc)
    assert proc.returncode == 0, tail((log,))

    h, w = shot.shape[:2]
    small_h, small_w = round(160 * h / w), 160  # render small: the comparison is on downscaled images anyway
    seen = grey_small(shot)
    assert seen.std() > 0.05, "the canvas is blank or uniform"
    rendered = grey_small(cpu_render(gaussians, FOV_DEG, small_h, small_w, np.eye(4)))
    upside_down = grey_small(cpu_render(gaussians, FOV_DEG, small_h, small_w, np.diag([-1.0, -1.0, 1.0, 1.0])))
    score, wrong = ncc(seen, rendered), ncc(seen, upside_down)
    print(f"NCC with our render: {score:.3f}; with an upside-down render: {wrong:.3f}")
    assert score >= 0.6, f"the page does not look like our render of the same splats (NCC {score:.3f})"
    assert score > wrong + 0.2, f"orientation: upright NCC {score:.3f} vs upside-down {wrong:.3f}"
