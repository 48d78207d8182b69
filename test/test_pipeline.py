"""The shared pipeline core (no rclpy) and its message-agnostic output records, with the real
geometry predictor on the real Motorcycle pair."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from noposplat_ros.outputs import pointcloud
from noposplat_ros.outputs.records import OutputFrames, build_outputs
from noposplat_ros.pipeline import Pipeline, PipelineConfig
from noposplat_ros.transforms import direction_angle_deg, invert_T, is_rigid, make_T, quat_xyzw_to_matrix
from noposplat_ros.types import LOST_POSE_VARIANCE, KeyframePair, PoseStatus, ScaleKind


@pytest.fixture(scope="module")
def metric_run(motorcycle):
    """The Motorcycle pair through a metric pipeline (baseline of the rig configured)."""
    pipe = Pipeline(PipelineConfig(predictor="geometry", metric_baseline_m=motorcycle.baseline_m))
    first = pipe.offer(motorcycle.left)
    pair = pipe.offer(motorcycle.right)
    assert first is None and pair is not None, "the Motorcycle pair must form a keyframe pair"
    return pipe, pair, pipe.process(pair)


def test_offer_forms_pair_of_the_two_frames(metric_run, motorcycle):
    _, pair, _ = metric_run
    assert pair.kf0 is motorcycle.left and pair.kf1 is motorcycle.right


def test_process_metric_result(metric_run, motorcycle):
    pipe, _, r = metric_run
    assert r.status == PoseStatus.OK and r.ok
    assert r.scale_kind == ScaleKind.METRIC
    assert r.stamp0_ns == motorcycle.left.stamp_ns and r.stamp1_ns == motorcycle.right.stamp_ns
    assert r.frame_id == motorcycle.left.frame_id
    assert is_rigid(r.T_cam0_from_cam1)
    # unit-baseline output scaled to the configured baseline
    assert np.linalg.norm(r.T_cam0_from_cam1[:3, 3]) == pytest.approx(motorcycle.baseline_m, rel=1e-6)
    assert direction_angle_deg(r.T_cam0_from_cam1[:3, 3], motorcycle.T_cam0_from_cam1[:3, 3]) < 5.0
    # splats carry the same scale as the pose: predictor units times the scale factor
    np.testing.assert_allclose(r.gaussians.means.numpy(), r.recon.gaussians.means.numpy() * r.scale_factor, rtol=1e-5)
    # the cloud is the structured array of those splats, schema v1
    assert r.cloud.dtype == pointcloud.splat_dtype()
    assert r.num_splats == r.gaussians.num > 10_000
    np.testing.assert_allclose(r.cloud["x"], r.gaussians.means[:, 0].numpy())
    # trajectory: camera 1 = camera 0 moved by the relative pose
    np.testing.assert_allclose(invert_T(r.T_world_from_cam0) @ r.T_world_from_cam1, r.T_cam0_from_cam1, atol=1e-9)
    for stage in ("predict", "trajectory", "cloud", "process"):
        assert r.timings_s[stage] >= 0
    assert pipe.stats.pairs == 1 and pipe.stats.pairs_ok == 1 and pipe.stats.frames_offered == 2


def test_outputs_records(metric_run):
    _, _, r = metric_run
    out = build_outputs(r, OutputFrames(odom_frame="odom"), first_pair=True)
    # cloud and SplatPair: keyframe 0's stamp, camera 0's frame
    assert out.cloud.header.stamp_ns == r.stamp0_ns and out.cloud.header.frame_id == r.frame_id
    assert [f.name for f in out.cloud.fields][:4] == ["x", "y", "z", "rgb"]
    assert [(f.name, f.offset, f.datatype, f.count) for f in out.cloud.fields] == \
        [tuple(f) for f in pointcloud.splat_fields()]
    assert out.cloud.point_step == r.cloud.dtype.itemsize and out.cloud.width == r.num_splats
    assert out.cloud.data.nbytes == out.cloud.row_step and out.cloud.data.dtype == np.uint8
    sp = out.splat_pair
    assert (sp.stamp0_ns, sp.stamp1_ns) == (r.stamp0_ns, r.stamp1_ns) and sp.header.stamp_ns == r.stamp0_ns
    assert sp.scale_kind == 2 and sp.status == 0 and sp.backend == "geometry"
    np.testing.assert_allclose(make_T(quat_xyzw_to_matrix(sp.rotation_xyzw), sp.translation), r.T_cam0_from_cam1,
                               atol=1e-9)
    # tf: the first pair places both keyframes; each stamped with its keyframe
    assert [t.header.stamp_ns for t in out.transforms] == [r.stamp0_ns, r.stamp1_ns]
    assert all(t.header.frame_id == "odom" and t.child_frame_id == r.frame_id for t in out.transforms)
    assert len(build_outputs(r, OutputFrames(), first_pair=False).transforms) == 1
    assert build_outputs(r, OutputFrames(publish_tf=False)).transforms == []
    odom = out.odometry
    assert odom.header.stamp_ns == r.stamp1_ns and odom.child_frame_id == r.frame_id
    np.testing.assert_allclose(make_T(quat_xyzw_to_matrix(odom.orientation_xyzw), odom.position), r.T_world_from_cam1,
                               atol=1e-9)
    cov = odom.pose_covariance.reshape(6, 6)
    assert np.allclose(cov, cov.T) and (np.diag(cov) > 0).all()


def test_outputs_with_base_link_extrinsic(metric_run):
    """base_link <- camera from /tf_static: odom is the base at the start; the camera moves."""
    _, _, r = metric_run
    # a camera looking forward on a robot: optical z = base x, optical x = -base y, optical y = -base z
    R_base_cam = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    T_base_cam = make_T(R_base_cam, [0.2, 0.0, 0.5])
    out = build_outputs(r, OutputFrames(odom_frame="odom", base_frame="base_link", T_base_from_cam=T_base_cam))
    T_odom_base1 = make_T(quat_xyzw_to_matrix(out.odometry.orientation_xyzw), out.odometry.position)
    np.testing.assert_allclose(T_odom_base1, T_base_cam @ r.T_world_from_cam1 @ invert_T(T_base_cam), atol=1e-9)
    assert out.odometry.child_frame_id == "base_link" and out.transforms[-1].child_frame_id == "base_link"
    # the camera moved along its +x (to its right) = the robot's -y
    assert direction_angle_deg(T_odom_base1[:3, 3], [0, -1, 0]) < 5.0


def test_prediction_failure_is_a_lost_result(motorcycle):
    pipe = Pipeline(PipelineConfig(predictor="geometry"))
    blank = dataclasses.replace(motorcycle.left, rgb=np.full_like(motorcycle.left.rgb, 128),
                                stamp_ns=motorcycle.left.stamp_ns + 1)
    r = pipe.process(KeyframePair(motorcycle.left, blank, index=7))  # nothing to match: no pose at all
    assert r.status == PoseStatus.LOST and not r.ok
    assert r.index == 7 and r.message
    assert r.num_splats == 0 and r.gaussians is None
    np.testing.assert_array_equal(r.T_cam0_from_cam1, np.eye(4))
    assert np.all(np.diag(r.covariance) >= LOST_POSE_VARIANCE)
    out = build_outputs(r, OutputFrames())
    assert out.odometry is None and out.transforms == []  # never a confident pose after a failure
    assert out.splat_pair.status == 2 and out.cloud.width == 0
    assert pipe.stats.pairs_lost == 1


def test_reset_starts_a_new_keyframe_chain(motorcycle):
    pipe = Pipeline(PipelineConfig(predictor="geometry"))
    assert pipe.offer(motorcycle.left) is None
    pipe.reset()
    later = dataclasses.replace(motorcycle.right)
    assert pipe.offer(later) is None  # first keyframe again after reset


def test_config_errors():
    with pytest.raises(ValueError, match="checkpoint"):
        PipelineConfig(predictor="noposplat").validate()
    with pytest.raises(ValueError, match="unknown predictor"):
        PipelineConfig(predictor="magic").validate()
    with pytest.raises(ValueError, match="metric_baseline_m"):
        PipelineConfig(metric_baseline_m=-1.0).validate()
    assert PipelineConfig(predictor="auto").resolved_backend() == "geometry"
    assert PipelineConfig(predictor="auto", checkpoint="w.safetensors").resolved_backend() == "noposplat"


def test_odometry_covariance_through_the_mount_matches_finite_differences(metric_run):
    """The odom covariance with a base extrinsic is J cov_world J^T; J checked numerically."""
    from noposplat_ros.outputs.records import cam_pose_in_odom, odometry_covariance

    _, _, r = metric_run
    R_base_cam = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    frames = OutputFrames(base_frame="base_link", T_base_from_cam=make_T(R_base_cam, [0.2, 0.1, 0.5]))
    T0 = cam_pose_in_odom(r.T_world_from_cam1, frames)

    def rotvec(R: np.ndarray) -> np.ndarray:
        w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2
        return w  # small angles

    def expm(w: np.ndarray) -> np.ndarray:
        th = np.linalg.norm(w)
        K = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
        return np.eye(3) + (np.sin(th) / th) * K + ((1 - np.cos(th)) / th**2) * K @ K if th > 0 else np.eye(3)

    eps, J = 1e-6, np.zeros((6, 6))
    for i in range(6):
        T = r.T_world_from_cam1.copy()
        d = np.zeros(6)
        d[i] = eps
        # the trajectory's perturbation model: translation in world axes, rotation left-multiplied
        # about world axes (independently of the translation)
        T[:3, 3] += d[:3]
        T[:3, :3] = expm(d[3:]) @ T[:3, :3]
        Ti = cam_pose_in_odom(T, frames)
        J[:3, i] = (Ti[:3, 3] - T0[:3, 3]) / eps
        J[3:, i] = rotvec(Ti[:3, :3] @ T0[:3, :3].T) / eps
    cov_w = np.diag([1e-4, 2e-4, 3e-4, 1e-5, 2e-5, 3e-5])
    r2 = dataclasses.replace(r, covariance_world=cov_w)
    np.testing.assert_allclose(odometry_covariance(r2, frames).reshape(6, 6), J @ cov_w @ J.T, rtol=1e-4, atol=1e-12)
