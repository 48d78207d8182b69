"""A broken keyframe pair (issue 10): blank frames between keyframes, on a general-motion fixture
sequence (2.5 s sideways at 30 Hz, 240x320, real scene with true poses), through the pipeline with
the real keyframe selector, geometry predictor and trajectory.

The selector never pairs across a blank stretch: blank frames are skipped as blurred, and once they
fill the sharpness window tracking is lost and the selector re-initialises (fresh keyframe 0), so
no pair spans the gap and the trajectory starts a new segment after it
(``test_blank_frames_break_the_chain_into_a_new_segment``). The broken pair the issue means, one
whose two keyframes do not overlap, therefore never comes out of the selector; it is built here
directly: the keyframe pair across the gap with its second keyframe replaced by a blank (or an
unrelated) image, fed to ``Pipeline.process`` in the chain of the real pairs
(``test_broken_pair_is_lost_and_starts_a_new_segment``).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from noposplat_ros.fixtures.general_motion import tour_sequence
from noposplat_ros.pipeline import Pipeline, PipelineConfig
from noposplat_ros.transforms import direction_angle_deg, invert_T
from noposplat_ros.types import LOST_POSE_VARIANCE, Frame, KeyframePair, PoseStatus

# (label, seconds, velocity in depth units/s (camera axes), pan deg/s, blur px): see TOUR_SEGMENTS
SIDEWAYS = (("sideways_fast", 2.5, (0.08, 0.0, 0.0), 0.0, 0.0),)
BLANK_RUN = 16  # > the selector's blur_window (15): the blank stretch outlasts the sharpness reference


@pytest.fixture(scope="module")
def seq():
    return tour_sequence(segments=SIDEWAYS)


def _pipeline() -> Pipeline:
    return Pipeline(PipelineConfig(predictor="geometry", map_enabled=False))


def _select(frames: list[Frame]) -> tuple[Pipeline, list[int], list[KeyframePair], list[str]]:
    """-> (pipeline, keyframe indices incl. re-initialisations, pairs, decision per frame)."""
    pipe = _pipeline()
    kf, pairs, decisions = [], [], []
    for i, f in enumerate(frames):
        p = pipe.offer(f)
        decisions.append(pipe.selector.last_decision.value)
        if p is not None:
            pairs.append(p)
        if decisions[-1] not in ("too_soon", "blurred", "no_parallax", "overlap_above_target"):
            kf.append(i)
    return pipe, kf, pairs, decisions


def _blank(f: Frame) -> Frame:
    return Frame(np.full_like(f.rgb, 128), f.K.copy(), f.stamp_ns, f.frame_id)


def _unrelated(f: Frame) -> Frame:
    """A view of another scene (scikit-image's astronaut) at the same size and stamp."""
    rgb = cv2.resize(data.astronaut(), (f.width, f.height), interpolation=cv2.INTER_AREA)
    return Frame(np.ascontiguousarray(rgb), f.K.copy(), f.stamp_ns, f.frame_id)


def _true_T01(seq, pair: KeyframePair) -> np.ndarray:
    index = {f.stamp_ns: i for i, f in enumerate(seq.frames)}
    i0, i1 = index[pair.kf0.stamp_ns], index[pair.kf1.stamp_ns]
    return invert_T(seq.T_world_from_cam[i0]) @ seq.T_world_from_cam[i1]


@pytest.mark.parametrize("make_kf1", [_blank, _unrelated], ids=["blank", "unrelated_view"])
def test_broken_pair_is_lost_and_starts_a_new_segment(seq, make_kf1):
    _, kf, pairs, _ = _select(seq.frames)
    assert len(pairs) >= 4, kf
    broken = 1  # the second pair: one good pair before it, two after
    chain = list(pairs)
    real = pairs[broken]
    chain[broken] = KeyframePair(kf0=real.kf0, kf1=make_kf1(real.kf1), index=real.index)
    pipe = _pipeline()
    results = [pipe.process(p) for p in chain]

    before, lost, after = results[:broken], results[broken], results[broken + 1:]
    assert all(r.status == PoseStatus.OK and r.step.segment == 0 for r in before), [r.message for r in before]
    # the pair across the gap: LOST, identity pose with 'do not use' covariances, in the old segment
    assert lost.status == PoseStatus.LOST, lost.message
    assert np.array_equal(lost.T_cam0_from_cam1, np.eye(4))
    assert np.all(np.diag(lost.covariance) >= LOST_POSE_VARIANCE)
    assert lost.step.segment == 0 and pipe.stats.pairs_lost == 1
    # the next pair (its kf0 is the real frame at the broken kf1's stamp) starts segment 1, with its
    # placement in the world flagged unknown; the pairs after it continue that segment
    first, rest = after[0], after[1:]
    assert first.status == PoseStatus.OK and first.step.segment == 1, first.message
    assert "new segment" in first.message
    assert np.all(np.diag(first.covariance_world) >= LOST_POSE_VARIANCE)
    assert rest and all(r.status == PoseStatus.OK and r.step.segment == 1 for r in rest), [r.message for r in rest]
    for p, r in zip(chain[broken + 1:], after):  # the motion after the gap is still measured right
        assert direction_angle_deg(r.T_cam0_from_cam1[:3, 3], _true_T01(seq, p)[:3, 3]) < 5.0


def test_blank_frames_break_the_chain_into_a_new_segment(seq):
    _, kf_clean, pairs_clean, _ = _select(seq.frames)
    assert len(pairs_clean) >= 4, kf_clean
    gap0 = kf_clean[1] + 1  # blank frames from right after the second keyframe
    gap1 = gap0 + BLANK_RUN
    frames = [(_blank(f) if gap0 <= i < gap1 else f) for i, f in enumerate(seq.frames)]
    pipe, kf, pairs, decisions = _select(frames)

    # up to the gap: the clean run's keyframes; in it: skipped as blurred, then tracking lost
    assert [i for i in kf if i < gap0] == [i for i in kf_clean if i < gap0]
    assert "blurred" in decisions[gap0:gap1] and "tracking_failed_reinit" in decisions[gap0:gap1]
    index = {f.stamp_ns: i for i, f in enumerate(frames)}
    spans = [(index[p.kf0.stamp_ns], index[p.kf1.stamp_ns]) for p in pairs]
    # no pair touches the gap or spans it: a blank frame is never a paired keyframe
    assert all(b < gap0 or a >= gap1 for a, b in spans), spans
    # after the gap: a fresh keyframe 0 on the first real frame tracking can use, then pairs again,
    # as far apart as in the clean run (the same motion)
    restart = min(i for i in kf if i >= gap1)
    assert decisions[restart] == "tracking_failed_reinit" and restart <= gap1 + 4, (restart, decisions[gap1:])
    after = [(a, b) for a, b in spans if a >= gap1]
    assert len(after) >= 2 and after[0][0] == restart, spans
    clean_gaps = [b - a for a, b in ((index[p.kf0.stamp_ns], index[p.kf1.stamp_ns]) for p in pairs_clean)]
    assert all(min(clean_gaps) - 2 <= b - a <= max(clean_gaps) + 2 for a, b in after), (after, clean_gaps)

    results = [pipe.process(p) for p in pairs]
    assert all(r.status == PoseStatus.OK for r in results), [r.message for r in results]
    segments = [r.step.segment for (a, _), r in zip(spans, results)]
    assert segments == [0 if a < gap0 else 1 for a, _ in spans], (spans, segments)
    first_after = next(r for (a, _), r in zip(spans, results) if a >= gap1)
    assert "new segment" in first_after.message
    for p, r in zip(pairs, results):
        assert direction_angle_deg(r.T_cam0_from_cam1[:3, 3], _true_T01(seq, p)[:3, 3]) < 5.0
