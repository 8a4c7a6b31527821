"""No face slips through on video: every frame where a strong reference detector finds a face on the
original has that face covered in the output."""
import subprocess

import cv2
import numpy as np
import pytest
from anoncam.pipeline import Pipeline
from conftest import ANONCAM, make_config
from helpers import blind, is_covered, iter_frames, uncovered_frames, video_reference

CLIPS = ["franck", "cap12", "cap13"]


@pytest.fixture(scope="module")
def refs(media):
    return {name: video_reference(media[name]) for name in CLIPS}


@pytest.mark.parametrize("method", ["solid", "blur"])
@pytest.mark.parametrize("clip", CLIPS)
def test_no_leak_on_video(media, refs, tmp_path, cli_env, clip, method):
    src, out = media[clip], tmp_path / f"{clip}_{method}.mp4"
    subprocess.run([*ANONCAM, "anonymize", str(src), "-o", str(out), "--method", method, "-q"],
                   env=cli_env, check=True, timeout=600)
    a, b = cv2.VideoCapture(str(src)), cv2.VideoCapture(str(out))
    assert b.get(cv2.CAP_PROP_FRAME_COUNT) == a.get(cv2.CAP_PROP_FRAME_COUNT)
    assert b.get(cv2.CAP_PROP_FPS) == pytest.approx(a.get(cv2.CAP_PROP_FPS), rel=1e-3)
    boxes = refs[clip]
    with_face = sum(1 for bs in boxes if bs)
    assert with_face > 0.5 * len(boxes)  # the reference does see the faces in these clips
    color = make_config().anonymize.solid_color if method == "solid" else None
    bad = uncovered_frames(src, out, boxes, color)
    assert bad == [], f"{len(bad)} of {with_face} frames with a face leak it, first {bad[:10]}"


def run_blind(media, refs, n_frames, blind_frames, **cfg):
    """Anonymize the first frames of franck in-process, the detector missing every face on
    `blind_frames`; return indices of frames that leak."""
    pipe = Pipeline.from_config(make_config(anonymize={"method": "solid"}, **cfg))
    blind(pipe, blind_frames)
    color = pipe.cfg.anonymize.solid_color
    boxes = refs["franck"]
    bad = []
    for i, frame in enumerate(iter_frames(media["franck"])):
        if i >= n_frames:
            break
        orig = frame.copy()
        pipe.process(frame, i)
        if any(not is_covered(orig, frame, b, color) for b in boxes[i]):
            bad.append(i)
    return bad


BLIND = [(20, 30), (100, 110), (200, 210), (300, 310)]  # detector off 10 frames at a time


def test_coasting_covers_frames_without_detection(media, refs, models):
    """Detector off for 10-frame runs, no landmarks to follow the face: coasting alone covers it."""
    bad = run_blind(media, refs, 320, BLIND, landmarks={"enabled": False}, track={"coast_frames": 10})
    assert bad == []


def test_check_fails_when_coasting_is_too_short(media, refs, models):
    """The same check catches leaks: with the detector off for 40 frames and nothing to follow the face,
    frames past the coasting window leak. (Shows the leak check can fail.)"""
    bad = run_blind(media, refs, 160, [(100, 140)], landmarks={"enabled": False}, track={"coast_frames": 10})
    assert bad and all(110 <= i < 140 for i in bad)


def test_landmarks_follow_the_face_between_detections(media, refs, models):
    """Detection only every 8th frame, and 60 frames on which the detector misses: FaceMesh follows the
    face, nothing leaks."""
    bad = run_blind(media, refs, 400, [(200, 260)], detect={"every_n": 8})
    assert bad == []


def test_track_ids_are_stable(media, models):
    """One person on franck: one track id for the whole first 500 frames."""
    pipe = Pipeline.from_config(make_config())
    ids = set()
    for i, frame in enumerate(iter_frames(media["franck"])):
        if i >= 500:
            break
        ids.update(f.track_id for f in pipe.process(frame, i).faces)
    assert ids == {1}
    assert np.isfinite(len(ids))
