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
    dets = pipe.detector.detect(img, tiles="all")
    hits = match([d.box for d in dets], FACES[name])
    assert hits.sum(axis=0).tolist() == [1] * len(FACES[name]), f"missed or doubled faces in {name}"
    assert hits.sum(axis=1).tolist() == [1] * len(dets), f"a box on no face in {name}"


def test_no_box_on_face_free_image(pipe, media):
    img = cv2.imread(str(media["coffee"]))
    assert pipe.detector.detect(img, tiles="all") == []


def test_small_faces_need_the_tile_pass(models, media):
    """At a 160 px detection size the group faces shrink to 10-20 px: the full-frame pass alone misses
    some, the tile pass finds all 22 with no false box."""
    det = YuNet.from_file(models["yunet"], size=160, tiles=2)
    found_full = found_tiles = 0
    for name in [f"group{i}" for i in range(1, 7)]:
        img = cv2.imread(str(media[name]))
        full = match([d.box for d in det.detect(img, tiles="none")], FACES[name])
        tiles = match([d.box for d in det.detect(img, tiles="all")], FACES[name])
        assert tiles.sum(axis=1).tolist() == [1] * len(tiles), f"a box on no face in {name}"
        found_full += int((full.sum(axis=0) > 0).sum())
        found_tiles += int((tiles.sum(axis=0) > 0).sum())
    assert found_tiles == 22
    assert found_full < 22


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
