"""The player's sources (no DDS): Motorcycle pair, image folder, video file, rosbag2 bag."""
from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest

from noposplat_ros.commands.play import frames_from_args
from noposplat_ros.fixtures.moving_sequence import MotorcycleSequence


def _args(**kw) -> argparse.Namespace:
    base = dict(bag=None, images=None, video=None, calibration=None, rate=4.0, bag_image_topic=None,
                bag_camera_info_topic=None)
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.fixture(scope="module")
def seq():
    return MotorcycleSequence(640, 480, scale=0.25, frames_per_view=2)


@pytest.fixture()
def calib(tmp_path, seq):
    p = tmp_path / "calib.json"
    K = seq.K
    p.write_text(json.dumps({"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]}))
    return p


def test_default_is_the_motorcycle_pair(motorcycle):
    frames = list(frames_from_args(_args()))
    assert len(frames) == 2
    np.testing.assert_array_equal(frames[1].rgb, motorcycle.right.rgb)
    np.testing.assert_allclose(frames[1].K, motorcycle.right.K)  # each view its own cx
    assert [f.stamp_ns for f in frames] == [motorcycle.left.stamp_ns, motorcycle.right.stamp_ns]


def test_image_folder(tmp_path, seq, calib):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:03d}.png"), seq.rgb(i)[:, :, ::-1])
    (folder / "notes.txt").write_text("not an image")
    frames = list(frames_from_args(_args(images=str(folder), calibration=str(calib))))
    assert len(frames) == 5
    np.testing.assert_array_equal(frames[3].rgb, seq.rgb(3))  # lossless, RGB order kept
    np.testing.assert_allclose(frames[0].K, seq.K)
    assert np.all(np.diff([f.stamp_ns for f in frames]) == 250_000_000)  # 4 Hz


def test_video(tmp_path, seq, calib):
    path = tmp_path / "clip.avi"
    h, w = seq.out_hw
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 4, (w, h))
    for i in range(6):
        writer.write(seq.rgb(i)[:, :, ::-1])
    writer.release()
    frames = list(frames_from_args(_args(video=str(path), calibration=str(calib))))
    assert len(frames) == 6 and frames[0].rgb.shape == (h, w, 3)
    # JPEG in the video: close to the source, and the colour order is RGB (not BGR)
    err = np.abs(frames[2].rgb.astype(int) - seq.rgb(2).astype(int)).mean()
    err_swapped = np.abs(frames[2].rgb[:, :, ::-1].astype(int) - seq.rgb(2).astype(int)).mean()
    assert err < 8 and err < err_swapped


def test_bag(tmp_path, seq):
    from noposplat_ros.io.bag_io import frames_to_bag

    src = seq.frames(4)
    frames_to_bag(tmp_path / "bag", src)
    frames = list(frames_from_args(_args(bag=str(tmp_path / "bag"))))
    assert [f.stamp_ns for f in frames] == [f.stamp_ns for f in src]
    np.testing.assert_array_equal(frames[1].rgb, src[1].rgb)
    np.testing.assert_allclose(frames[1].K, src[1].K)


def test_missing_calibration_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="--calibration"):
        list(frames_from_args(_args(images=str(tmp_path))))
