import numpy as np

from noposplat_ros.transforms import (
    T_to_translation_quat_xyzw,
    invert_T,
    is_rigid,
    matrix_to_quat_xyzw,
    quat_xyzw_to_matrix,
    rotation_angle_deg,
    translation_quat_xyzw_to_T,
)


def test_quaternion_matrix_round_trip_random():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(200, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    R = quat_xyzw_to_matrix(q)
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-12)
    for qi, Ri in zip(q, R):
        back = matrix_to_quat_xyzw(Ri)
        assert np.allclose(back, qi * np.sign(qi[3]), atol=1e-9)


def test_known_rotation_about_z():
    # 90 deg about z: x axis -> y axis; quaternion (0, 0, sin45, cos45).
    q = np.array([0, 0, np.sqrt(0.5), np.sqrt(0.5)])
    assert np.allclose(quat_xyzw_to_matrix(q) @ [1, 0, 0], [0, 1, 0])
    assert abs(rotation_angle_deg(quat_xyzw_to_matrix(q)) - 90.0) < 1e-9


def test_invert_and_pack():
    T = translation_quat_xyzw_to_T([1, 2, 3], [0.1, -0.2, 0.3, 0.9])
    assert is_rigid(T) and is_rigid(invert_T(T))
    assert np.allclose(T @ invert_T(T), np.eye(4))
    t, q = T_to_translation_quat_xyzw(T)
    assert np.allclose(translation_quat_xyzw_to_T(t, q), T)
    bad = T.copy()
    bad[0, 0] = np.nan
    assert not is_rigid(bad)
