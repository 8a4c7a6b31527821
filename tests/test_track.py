"""Tracker rules on plain boxes."""
import numpy as np
from anoncam.track import Tracker
from anoncam.types import Detection


def det(x, y, s=40):
    return Detection(box=np.array([x, y, x + s, y + s], np.float32), score=0.9)


def test_ids_stay_with_moving_faces():
    t = Tracker()
    ids = []
    for i in range(20):
        tracks = t.update([det(10 + 3 * i, 50), det(200 - 3 * i, 60)])
        ids.append(sorted((tr.id, round(float(tr.box[0]))) for tr in tracks))
    first = [i for i, _ in ids[0]]
    assert all([i for i, _ in row] == first for row in ids)


def test_lost_face_coasts_grows_then_ends():
    t = Tracker(coast_frames=10, coast_grow=0.1)
    for i in range(5):
        t.update([det(100 + 4 * i, 100)])
    sizes, centres = [], []
    for k in range(10):
        (tr,) = t.update([])
        b = tr.cover_box(0.1)
        sizes.append(float(b[2] - b[0]))
        centres.append(float(b[0] + b[2]) / 2)
    assert all(b > a for a, b in zip(sizes, sizes[1:]))  # grows every missed frame
    assert all(b > a for a, b in zip(centres, centres[1:]))  # keeps moving the way it went
    assert t.update([]) == []  # past coast_frames: gone


def test_frames_without_detector_run_do_not_count_as_misses():
    t = Tracker(coast_frames=10)
    t.update([det(0, 0)])
    for _ in range(30):
        (tr,) = t.update(None)
    assert tr.misses == 0
