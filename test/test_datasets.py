import numpy as np


def test_motorcycle_depth_is_metric_and_plausible(motorcycle):
    """The bundled Middlebury pair: sizes, calibration and a plausible metric depth range."""
    assert motorcycle.left.rgb.shape == (500, 741, 3) and motorcycle.left.rgb.dtype == np.uint8
    z = motorcycle.depth_left_m()
    valid = np.isfinite(z)
    assert valid.mean() > 0.8
    # The scene spans roughly 1.5 m to 4 m from the camera (Middlebury Motorcycle).
    assert 1.0 < np.percentile(z[valid], 5) < np.percentile(z[valid], 95) < 5.0
    assert motorcycle.right.K[0, 2] - motorcycle.left.K[0, 2] > 30
