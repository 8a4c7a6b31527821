"""Realism measures (eval/realism.py) and the second recognizer (eval/faceapi.py) on real faces with
known answers: the original scores 1.0 against itself, a Gaussian blur far below, a pasted flat disc
fails the seam test, two halves of real crops are indistinguishable (AUC ~0.5) while real vs blurred
is not; face-api separates ORL people far above chance."""
import json
import subprocess

import cv2
import numpy as np
import pytest
from anoncam import assets
from anoncam.eval import datasets
from anoncam.eval import realism as R
from anoncam.eval.faceapi import FaceApiNet, distance, read_tfjs
from anoncam.eval.metrics import Instruments
from conftest import ANONCAM


@pytest.fixture(scope="module")
def inst(models, media):
    return Instruments(1)


@pytest.fixture(scope="module")
def faces(inst):
    """(image, detection, landmarks) of the faces of group2 and the astronaut (hand-counted: 4)."""
    out = []
    for name in ("group2", "astronaut"):
        img = datasets.group_photo(name)
        dets = inst.detect(img)
        assert len(dets) == len(assets.face_centres()[name])
        out += [(img, d, inst.landmarks(img, d)) for d in dets]
    return out


@pytest.fixture(scope="module")
def net(models):
    return FaceApiNet(1)


def _blur(img, box):
    out = img.copy()
    x0, y0, x1, y1 = (int(v) for v in R.grow(box, 1.7))  # past the ring (1.5x)
    x0, y0 = max(0, x0), max(0, y0)
    out[y0:y1, x0:x1] = cv2.GaussianBlur(img, (0, 0), 0.2 * float(box[2] - box[0]))[y0:y1, x0:x1]
    return out


def _disc(img, poly):
    out = img.copy()
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    cv2.fillPoly(out, [np.round(poly).astype(np.int32)], cv2.mean(img, mask=mask)[:3])  # its own mean colour
    return out


def test_original_against_itself_scores_one(faces):
    for img, det, _ in faces:
        assert R.detail_ratio(img, img.copy(), det.box) == (1.0, 1.0)
        assert R.seam_ratio(img, img.copy(), det.box) == (1.0, 1.0)
    img, det, _ = faces[0]
    frames = [np.roll(img, k, axis=1) for k in range(4)]
    assert R.flicker_ratio(frames, [f.copy() for f in frames], [det.box] * 4) == 1.0


def test_skin_delta_zero_for_the_original_and_large_for_a_darkened_face(faces):
    for img, d, lm in faces:
        assert R.skin_delta(img, img, lm) == 0.0
        dark = (img.astype(np.float32) * 0.6).astype(np.uint8)
        assert R.skin_delta(img, dark, lm) > R.SKIN_DELTA
        # a shift of the colour outside the inner face does not count
        far = img.copy()
        far[:, : max(1, int(d.box[0]) - 2)] = 0
        assert R.skin_delta(img, far, lm) < 0.5


def test_gaussian_blur_scores_far_below_in_detail(faces):
    for img, det, _ in faces:
        inside, ring = R.detail_ratio(img, _blur(img, det.box), det.box)
        assert inside < 0.05 and ring < 0.2, (inside, ring)


def test_pasted_flat_disc_fails_the_seam_test_and_a_feathered_paste_of_the_original_passes(faces):
    for img, det, _ in faces:
        poly = R.ellipse(det.box, 1.4)
        seam = R.seam_ratio(img, _disc(img, poly), poly)
        assert seam.colour > 1.5 and seam.gradient > 1.5, seam
        soft = cv2.GaussianBlur(_disc(img, poly), (0, 0), 2.0)  # the same disc, only its edge softened
        assert R.seam_ratio(img, soft, poly).colour < seam.colour
        same = R.seam_ratio(img, img.copy(), poly)
        assert same == (1.0, 1.0)


def test_the_box_ellipse_is_the_covered_region_edge(faces):
    img, det, _ = faces[0]
    poly = R.ellipse(det.box, 1.4)
    c = (det.box[:2] + det.box[2:]) / 2
    half = (det.box[2:] - det.box[:2]) / 2 * 1.4
    r = np.hypot(*((poly - c) / half).T)
    assert np.allclose(r, 1.0)
    # a disc pasted 20 % inside that curve leaves the strips on both sides original: no seam there
    inner = R.ellipse(det.box, 1.4 * 0.8)
    seam = R.seam_ratio(img, _disc(img, inner), det.box)
    assert seam == pytest.approx((1.0, 1.0), abs=0.05)


def test_flicker_of_noise_inside_the_face_is_above_one_and_a_frozen_face_below(faces):
    img, det, _ = faces[0]
    frames = [np.roll(img, 2 * k, axis=1) for k in range(6)]  # a slow pan
    rng = np.random.default_rng(0)
    x0, y0, x1, y1 = (int(v) for v in det.box)
    noisy = []
    for f in frames:
        g = f.copy()
        g[y0:y1, x0:x1] = np.clip(g[y0:y1, x0:x1] + rng.normal(0, 12, g[y0:y1, x0:x1].shape), 0, 255)
        noisy.append(g)
    frozen = [f.copy() for f in frames]
    for f in frozen:
        f[y0:y1, x0:x1] = frames[0][y0:y1, x0:x1]
    boxes = [det.box] * len(frames)
    assert R.flicker_ratio(frames, noisy, boxes) > 1.5
    assert R.flicker_ratio(frames, frozen, boxes) < 0.2


def test_auc_is_half_for_two_halves_of_real_faces_and_one_for_blurred(inst):
    feats, people, shots, blurred = [], [], [], []
    for im in datasets.orl_images(40):
        if im.shot > 4:
            continue
        img = datasets.load_orl(im)
        det = inst.main_face(img)
        feats.append(R.stat_features(img, det.box))
        blurred.append(R.stat_features(_blur(img, det.box), det.box))
        people.append(im.person)
        shots.append(im.shot)
    feats, people, shots, blurred = map(np.array, (feats, people, shots, blurred))
    odd = shots % 2 == 1  # the same 40 people in both halves: nothing to tell them apart
    halves = R.two_sample_auc(feats[odd], feats[~odd], np.r_[people[odd], people[~odd]])
    assert abs(halves - 0.5) < 0.12, halves
    assert R.two_sample_auc(feats, feats.copy()) == 0.5
    assert R.two_sample_auc(feats, blurred) > 0.95


def test_auc_matches_mann_whitney_on_a_known_case():
    assert R.auc(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1])) == 1.0
    assert R.auc(np.array([0.1, 0.4, 0.3, 0.2]), np.array([0, 0, 1, 1])) == 0.5
    assert R.auc(np.array([1.0, 1.0]), np.array([0, 1])) == 0.5


def test_faceapi_weights_are_read_whole_and_a_short_file_is_refused(tmp_path, models):
    man = assets.load_manifest("models")
    mpath, wpath = assets.fetch(man["faceapi_manifest"]), assets.fetch(man["faceapi"])
    w = read_tfjs(mpath, wpath)
    assert len(w) == len(json.loads(mpath.read_text())[0]["weights"]) == 117
    assert w["conv32_down/conv/filters"].shape == (7, 7, 3, 32) and w["fc"].shape == (256, 128)
    extra = tmp_path / "w.bin"
    extra.write_bytes(wpath.read_bytes() + b"\0\0\0\0")
    with pytest.raises(ValueError):
        read_tfjs(mpath, extra)


def test_faceapi_identical_input_gives_distance_zero_and_separates_orl_people(inst, net):
    gallery, probes, same, diff = {}, [], [], []
    for im in datasets.orl_images(12):
        img = datasets.load_orl(im)
        det = inst.main_face(img)
        e = net.embed(img, inst.landmarks(img, det))
        if im.shot == 1:
            gallery[im.person] = e
            assert distance(e, net.embed(img.copy(), inst.landmarks(img, det))) == 0.0
        else:
            probes.append((im.person, e))
    names = sorted(gallery)
    g = np.stack([gallery[p] for p in names])
    hits = sum(names[int(np.argmin(np.linalg.norm(g - e, axis=1)))] == p for p, e in probes)
    assert hits / len(probes) > 0.9  # chance 1/12
    for p, e in probes:
        for q, ge in gallery.items():
            (same if p == q else diff).append(distance(e, ge))
    assert np.median(same) < 0.5 < np.median(diff)  # face-api's threshold is 0.6
    # a blurred face is no longer the same person to it
    img = datasets.load_orl(datasets.orl_images(2)[0])
    det = inst.main_face(img)
    lm = inst.landmarks(img, det)
    assert distance(net.embed(img, lm), net.embed(_blur(img, det.box), lm)) > 0.6


def test_eval_realism_writes_its_section_and_sheets_only_into_out(tmp_path, cli_env, models, media):
    out = tmp_path / "out"
    p = subprocess.run([*ANONCAM, "eval", "--orl-people", "2", "--franck-frames", "0", "--keys", "1",
                        "--methods", "blur,generative", "--realism", "--out", str(out)],
                       env=cli_env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert {q.name for q in out.iterdir()} == {"report.md", "report.json", "privacy_utility.png",
                                               "contact_sheet.png", "realism_faces.png", "realism_clips.png"}
    assert list((tmp_path / "tmp").iterdir()) == []
    rep = json.loads((out / "report.json").read_text())["realism"]
    assert rep["faces"] >= 24 and rep["by_kind"]["photo"] == 23 and rep["by_kind"]["still"] == 14
    blur, gen = rep["methods"]["blur"], rep["methods"]["generative"]
    assert blur["detail_inside"] < 0.1 and blur["auc_stats"] > 0.9
    assert 0 < gen["detail_inside"] and gen["seam_colour"] > 0 and 0.5 <= gen["auc_faceapi"] <= 1
    assert len(gen["faces"]) == rep["faces"]
    assert rep["faceapi_orl"]["none"]["rank1"] == 1.0
    assert rep["flicker"]["dance"]["frames_with_face"] == 20 and rep["flicker"]["dance"]["blur"] < 1
    sheet = cv2.imread(str(out / "realism_faces.png"))
    assert sheet is not None and sheet.shape[0] > 15 * 128  # >= 45 cells, 3 a row
    md = (out / "report.md").read_text()
    assert "## Realism (held-out faces)" in md and "| generative |" in md.split("## Realism")[1]
    # expression kept, read by the independent landmark net on the same faces
    assert gen["mouth"]["faces"] == rep["faces"] and 0 <= gen["mouth"]["both"] <= 1
    assert 0 < gen["mouth"]["original_open"] < rep["faces"] and 0 < gen["mouth"]["original_smile"] < rep["faces"]
    assert "Expression kept" in md
