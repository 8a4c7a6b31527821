"""Faces are found by their size in pixels, whatever the image size and wherever they sit (issue 12.1).

Real group photos (face-api samples) are pasted 1:1 into larger grey canvases at several offsets; every
face the reference detector finds on the photo itself (1x) must come out covered on every canvas.
"""
import subprocess

import cv2
import numpy as np
import pytest
from anoncam.pipeline import Pipeline
from conftest import ANONCAM, make_config
from helpers import is_covered, is_hidden, reference_boxes, reference_detector

RED = (0, 0, 255)


@pytest.fixture(scope="module")
def ref_det(models):
    return reference_detector()


@pytest.fixture(scope="module")
def solid(models):
    return Pipeline.from_config(make_config(anonymize={"method": "solid", "solid_color": list(RED)}))


def photo(media, ref_det, name: str, long_side: int):
    """The photo scaled to `long_side` px and its faces (reference boxes at that scale)."""
    img = cv2.imread(str(media[name]))
    s = long_side / max(img.shape[:2])
    small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    return small, [b * s for b in reference_boxes(ref_det, img)]


def paste(img: np.ndarray, k: float, at: tuple[float, float]):
    """`img` 1:1 inside a grey canvas k times its size, its top-left at fraction `at` of the free room."""
    h, w = img.shape[:2]
    H, W = int(h * k), int(w * k)
    canvas = np.full((H, W, 3), 128, np.uint8)
    y, x = int((H - h) * at[1]), int((W - w) * at[0])
    canvas[y:y + h, x:x + w] = img
    return canvas, np.array([x, y, x, y], np.float32)


def covered(pipe, canvas, boxes, still=True) -> list[bool]:
    frame = canvas.copy()
    res = pipe.process(frame, 0, still=still, live=False)
    assert res.status == "ok"
    return [is_covered(canvas, frame, b, RED) for b in boxes]


@pytest.mark.parametrize("name", ["group3", "group5", "group6"])  # no false box in their reference
def test_no_face_lost_on_larger_canvases(solid, media, ref_det, name):
    img, faces = photo(media, ref_det, name, 1000)
    faces = [b for b in faces if max(b[2:] - b[:2]) >= solid.cfg.detect.min_face]
    assert len(faces) >= 3
    assert all(covered(solid, img, faces)), "a face is missed on the photo itself (1x)"
    for k, at in [(2, (0.5, 0.5)), (4, (0.37, 0.71)), (4, (1.0, 0.0))]:
        canvas, off = paste(img, k, at)
        got = covered(solid, canvas, [b + off for b in faces])
        assert all(got), f"{name} at {k}x canvas, offset {at}: {got.count(False)} of {len(got)} faces raw"


def test_small_faces_in_an_8x_canvas(solid, media, ref_det):
    """Faces of 25-80 px (the photo at 480 px) in a 3840x2560-class canvas, away from the corner."""
    img, faces = photo(media, ref_det, "group5", 480)
    faces = [b for b in faces if max(b[2:] - b[:2]) >= solid.cfg.detect.min_face]
    assert len(faces) == 5
    canvas, off = paste(img, 8, (0.61, 0.43))
    got = covered(solid, canvas, [b + off for b in faces])
    assert all(got), f"{got.count(False)} of {len(got)} small faces raw"


def test_12000x8000_still_with_many_faces(solid, media, ref_det):
    canvas = np.full((8000, 12000, 3), 128, np.uint8)
    boxes = []
    for name, (x, y), side in [("group5", (700, 5200), 1000), ("group6", (6100, 900), 1400),
                               ("group4", (9300, 6100), 1200)]:
        img, faces = photo(media, ref_det, name, side)
        canvas[y:y + img.shape[0], x:x + img.shape[1]] = img
        boxes += [b + [x, y, x, y] for b in faces]
    assert len(boxes) >= 10
    got = covered(solid, canvas, boxes)
    assert all(got), f"{got.count(False)} of {len(got)} faces raw"


def test_video_frame_1080p_faces_anywhere(solid, media, ref_det):
    """A video frame (no tracking history, detector on): faces of video_min_face (40 px) and up are
    covered wherever they sit in a 1920x1080 frame, on the first frame already."""
    img, faces = photo(media, ref_det, "group5", 640)
    faces = [b for b in faces if max(b[2:] - b[:2]) >= solid.cfg.detect.video_min_face]
    assert len(faces) >= 4
    for at in [(0.0, 0.0), (1.0, 1.0), (0.55, 0.2)]:
        frame = np.full((1080, 1920, 3), 128, np.uint8)
        y, x = int((1080 - img.shape[0]) * at[1]), int((1920 - img.shape[1]) * at[0])
        frame[y:y + img.shape[0], x:x + img.shape[1]] = img
        solid.reset()
        got = covered(solid, frame, [b + [x, y, x, y] for b in faces], still=False)
        assert all(got), f"offset {at}: {got.count(False)} of {len(got)} faces raw"


def test_cli_big_still_covers_every_face(media, ref_det, tmp_path, cli_env):
    """The issue's repro: a ~1000 px group photo pasted 1:1 into a 6000x4000 canvas away from the
    corner, through the real CLI with the default method: exit 0 and all five faces hidden."""
    img, faces = photo(media, ref_det, "group5", 1000)
    canvas, off = paste(img, 6000 / img.shape[1], (0.55, 0.6))
    canvas = canvas[:4000, :6000]
    src, out = tmp_path / "big.png", tmp_path / "big_anon.png"
    cv2.imwrite(str(src), canvas)
    p = subprocess.run([*ANONCAM, "anonymize", str(src), "-o", str(out)], env=cli_env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    anon = cv2.imread(str(out))
    assert anon.shape == canvas.shape
    raw = [i for i, b in enumerate(faces) if not is_hidden(canvas, anon, b + off)]
    assert raw == [], f"faces {raw} of {len(faces)} left raw"
