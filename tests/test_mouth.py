"""Expression kept (eval/mouth.py): face-api's 68-point landmark net, ported to ONNX, lands on the
same mouth and eyes FaceMesh finds; a face read against itself agrees on every face; the astronaut's
open smile with a closed, neutral mouth put in its place (another person's, aligned) disagrees."""
import json

import cv2
import numpy as np
import pytest
from anoncam import assets
from anoncam.eval import datasets
from anoncam.eval import mouth as M
from anoncam.eval.metrics import Instruments


@pytest.fixture(scope="module")
def inst(models, media):
    return Instruments(1)


@pytest.fixture(scope="module")
def faces(inst):
    """(image, detection, FaceMesh landmarks) of group6 and the astronaut: open, closed, smiling, not."""
    out = []
    for name in ("group6", "astronaut"):
        img = datasets.group_photo(name)
        out += [(img, d, inst.landmarks(img, d)) for d in inst.detect(img)]
    return out


def test_landmark_weights_are_read_whole(models):
    man = assets.load_manifest("models")
    mpath = assets.fetch(man[M.MANIFEST])
    w = M.read_tfjs(mpath, assets.fetch(man[M.WEIGHTS]))
    assert len(w) == len(json.loads(mpath.read_text())[0]["weights"])
    assert w["fc/weights"].shape == (256, 136)


def test_68_points_land_on_the_mouth_and_eyes_facemesh_finds(inst, faces):
    net = M.Landmarks68(1)
    for img, det, mesh in faces:
        p = net.run(img, det.box)
        iod = np.linalg.norm(mesh[33] - mesh[263])
        pairs = [(p[48], mesh[61]), (p[54], mesh[291]), (p[36:42].mean(0), mesh[[33, 133]].mean(0)),
                 (p[42:48].mean(0), mesh[[362, 263]].mean(0)), (p[62], mesh[13]), (p[66], mesh[14])]
        err = max(np.linalg.norm(a - b) for a, b in pairs) / iod
        assert err < 0.12, (det.box, err)


def test_a_face_against_itself_agrees_on_every_face(inst, faces):
    pairs = [(inst.mouth(img, det.box), inst.mouth(img.copy(), det.box)) for img, det, _ in faces]
    agree = M.agreement(pairs)
    assert agree["both"] == 1.0 and agree["faces"] == len(faces) >= 4
    # the set is not trivial: both open and closed mouths are in it
    assert 0 < agree["original_open"] < len(faces)


def test_an_open_smile_replaced_by_a_closed_mouth_disagrees(inst):
    img = datasets.group_photo("astronaut")
    det = inst.main_face(img)
    lm = inst.landmarks(img, det)
    before = inst.mouth(img, det.box)
    assert before.open and before.smile and M.state_mesh(lm).open
    donor = datasets.group_photo("still_clooney")
    ddet = inst.main_face(donor)
    dlm = inst.landmarks(donor, ddet)
    assert not inst.mouth(donor, ddet.box).open
    # the donor's lower face aligned onto the astronaut's (similarity over the whole mesh), pasted in
    # an ellipse about the mouth
    m, _ = cv2.estimateAffinePartial2D(dlm.astype(np.float32), lm.astype(np.float32))
    warped = cv2.warpAffine(donor, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR)
    c = lm[[61, 291, 13, 14]].mean(0)
    w = float(np.linalg.norm(lm[291] - lm[61]))
    mask = np.zeros(img.shape[:2], np.float32)
    cv2.ellipse(mask, (int(c[0]), int(c[1])), (int(0.85 * w), int(0.5 * w)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.08 * w)[..., None]
    edited = (mask * warped + (1 - mask) * img).astype(np.uint8)
    after = inst.mouth(edited, det.box)
    assert not after.open
    agree = M.agreement([(before, after)])
    assert agree["open"] == 0.0 and agree["both"] == 0.0
