"""Detection with the default settings on real photos: every hand-counted face, no false box."""
import cv2
import numpy as np
import pytest
from anoncam.assets import face_centres
from anoncam.backends import open_model
from anoncam.detect.facemesh import FaceMesh
from anoncam.detect.yunet import YuNet

FACES = face_centres()  # hand-counted face centres (22 + the astronaut), firmware/anoncam/media.yaml


def match(boxes, centres):
    """Each centre inside exactly one box and each box holding exactly one centre."""
    hits = np.array([[b[0] <= x <= b[2] and b[1] <= y <= b[3] for (x, y) in centres] for b in boxes])
    return hits.reshape(len(boxes), len(centres))


@pytest.fixture(scope="module")
def pipe(models):
    from anoncam.pipeline import Pipeline
    from conftest import make_config
    return Pipeline.from_config(make_config())


@pytest.mark.parametrize("name", sorted(FACES))
def test_default_detection_finds_every_face(pipe, media, name):
    img = cv2.imread(str(media[name]))
    dets = pipe.detect(img, 0, still=True)
    hits = match([d.box for d in dets], FACES[name])
    assert hits.sum(axis=0).tolist() == [1] * len(FACES[name]), f"missed or doubled faces in {name}"
    assert hits.sum(axis=1).tolist() == [1] * len(dets), f"a box on no face in {name}"


def test_no_box_on_face_free_image(pipe, media):
    img = cv2.imread(str(media["coffee"]))
    assert pipe.detect(img, 0, still=True) == []


def test_small_faces_need_the_pyramid(models, media):
    """The group photos scaled so their faces are 24-68 px, in a 1600x1200 frame: one pass at 320 px
    misses most, the pyramid for min_face 24 finds all 22 with no false box."""
    det = YuNet.from_file(models["yunet"])
    found_single = found_pyramid = 0
    for name in [f"group{i}" for i in range(1, 7)]:
        img = cv2.imread(str(media[name]))
        s = 0.2  # faces of 120-340 px become 24-68 px; the photo 384 px wide
        small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        centres = [(x * s, y * s) for x, y in FACES[name]]
        canvas = np.full((1200, 1600, 3), 128, np.uint8)  # the photo in a larger frame
        canvas[400:400 + small.shape[0], 700:700 + small.shape[1]] = small
        centres = [(x + 700, y + 400) for x, y in centres]
        single = match([d.box for d in det.detect(canvas, tiles="none")], centres)
        pyr = match([d.box for d in det.detect(canvas, min_face=24)], centres)
        assert pyr.sum(axis=1).tolist() == [1] * len(pyr), f"a box on no face in {name}"
        found_single += int((single.sum(axis=0) > 0).sum())
        found_pyramid += int((pyr.sum(axis=0) > 0).sum())
    assert found_pyramid == 22
    assert found_single < 11


def test_pyramid_levels_cover_the_image():
    """Every level's tiles cover the whole image and overlap enough to hold a face that the next
    coarser level sees below DETECT_PX; the last level is one pass."""
    from anoncam.detect import yunet as Y
    det = Y.YuNet(backend=None)
    for shape in [(480, 640), (1080, 1920), (2160, 3840), (8000, 12000), (300, 20000)]:
        levels = det.pyramid(shape, 24)
        assert len(levels[-1][1]) == 1 and max(shape) * levels[-1][0] <= det.tile
        for scale, rects in levels:
            cover = np.zeros(shape[:2], bool)
            for x0, y0, x1, y1 in rects:
                assert (x1 - x0) * scale <= det.tile + 1 and (y1 - y0) * scale <= det.tile + 1
                cover[y0:y1, x0:x1] = True
            assert cover.all()
        for (s1, r1), (s2, _) in zip(levels, levels[1:]):
            # a face just too big to lie whole in some tile of this level is >= DETECT_PX on the next
            xs = sorted({r[0] for r in r1})
            widths = {r[2] - r[0] for r in r1}
            overlap = min(widths) - max(np.diff(xs)) if len(xs) > 1 else min(widths)
            assert overlap * s2 >= Y.DETECT_PX


def test_detection_maps_back_to_full_resolution(models, media):
    """Boxes found at 320 px and at native resolution agree in full-frame pixels."""
    img = cv2.imread(str(media["astronaut"]))
    small = YuNet.from_file(models["yunet"], size=320, tiles=0).detect(img)
    full = YuNet.from_file(models["yunet"], size=1024, tiles=0).detect(img)
    assert len(small) == len(full) == 1
    assert np.abs(small[0].box - full[0].box).max() < 0.08 * full[0].size


def test_facemesh_landmarks_lie_on_the_face(models, media):
    img = cv2.imread(str(media["group4"]))
    det = YuNet.from_file(models["yunet"])
    mesh = FaceMesh(open_model(models["facemesh"], "tflite", threads=1))
    for d in det.detect(img):
        pts, score = mesh.run(img, *FaceMesh.region_from_box(d.box, d.kps))
        assert score > 0.9 and pts is not None and pts.shape == (468, 2)
        inside = ((pts[:, 0] >= d.box[0] - 0.15 * d.size) & (pts[:, 0] <= d.box[2] + 0.15 * d.size) &
                  (pts[:, 1] >= d.box[1] - 0.15 * d.size) & (pts[:, 1] <= d.box[3] + 0.15 * d.size))
        assert inside.mean() > 0.95
    # on a face-free crop FaceMesh says so
    coffee = cv2.imread(str(media["coffee"]))
    _, score = mesh.run(coffee, np.array([100.0, 100.0]), 150.0, 0.0)
    assert score < 0.5
