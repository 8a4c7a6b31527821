"""Consent (issue 16) with real models and real faces: enrollment checks, the gallery file, the per-face
decision on clips (K matches, lost tracks, impostors, revocation) and what reaches logs."""
from __future__ import annotations

import json
import logging
import os
import subprocess

import cv2
import numpy as np
import pytest
from anoncam.consent.embed import aligned_crop
from anoncam.consent.enroll import EnrollError, enroll
from anoncam.consent.gallery import Gallery, GalleryError
from anoncam.eval.datasets import load_orl, orl_images
from anoncam.pipeline import Pipeline
from conftest import ANONCAM, make_config
from helpers import blind, read_frames

NAME = "Franck Testperson"
K = 2  # the default


@pytest.fixture(scope="module")
def enroller(models):
    return Pipeline.from_config(make_config(runtime={"threads": 1}))


@pytest.fixture(scope="module")
def clips(media):
    return {n: read_frames(media[n]) for n in ("franck", "cap12", "cap13")}


def photos(tmp, frames, idx, tag):
    out = []
    for i in idx:
        p = tmp / f"{tag}{i}.png"
        cv2.imwrite(str(p), frames[i])
        out.append(p)
    return out


@pytest.fixture(scope="module")
def gallery_file(tmp_path_factory, enroller, clips):
    """franck enrolled from 6 frames of his first minute, the cap12/cap13 man from cap12."""
    tmp = tmp_path_factory.mktemp("consent")
    g = Gallery(tmp / "consent.json")
    enroll(enroller, g, NAME, photos(tmp, clips["franck"], range(0, 1440, 240), "f"), 0.5)
    enroll(enroller, g, "cap man", photos(tmp, clips["cap12"], range(0, 1300, 260), "c"), 0.5)
    return g.path


def consent_pipe(path, **consent):
    return Pipeline.from_config(make_config(anonymize={"method": "solid"}, runtime={"threads": 1},
                                            consent={"enabled": True, "gallery": str(path), "k": K, **consent}))


def run(pipe, frames, start=0):
    """Per frame: [(track id, detected, visible)]."""
    out = []
    for i, f in enumerate(frames):
        res = pipe.process(f.copy(), start + i)
        assert res.status == "ok"
        pipe.policy.drain()  # the worker's results are in by the next frame: a lag of one frame
        out.append([(x.track_id, x.detected, x.method is None) for x in res.faces])
    return out


def test_gallery_keeps_embeddings_only_mode_0600(gallery_file):
    assert os.stat(gallery_file).st_mode & 0o777 == 0o600
    data = json.loads(gallery_file.read_text())
    assert data["model"]["name"] == "sface" and len(data["model"]["sha256"]) == 64
    assert data["model"]["video"]["name"] == "faceres" and len(data["model"]["video"]["sha256"]) == 64
    p = data["people"][NAME]
    assert set(p) == {"consented", "embeddings", "video"} and len(p["embeddings"]) == len(p["video"]) == 6
    assert all(len(e) == 128 for e in p["embeddings"]) and all(len(e) == 1024 for e in p["video"])


def test_bad_gallery_files_are_refused(gallery_file, tmp_path):
    bad = tmp_path / "g.json"
    bad.write_bytes(gallery_file.read_bytes())
    os.chmod(bad, 0o644)
    with pytest.raises(GalleryError, match="lets others read it"):
        Gallery.load(bad)
    os.chmod(bad, 0o600)
    data = json.loads(bad.read_text())
    data["model"]["sha256"] = "0" * 64
    bad.write_text(json.dumps(data))
    with pytest.raises(GalleryError, match="another embedding model"):
        Gallery.load(bad)
    data = json.loads(gallery_file.read_text())  # SFace only, as galleries were before FaceRes
    del data["model"]["video"]
    for p in data["people"].values():
        del p["video"]
    bad.write_text(json.dumps(data))
    with pytest.raises(GalleryError, match="another embedding model .*no video model.*enroll the people again"):
        Gallery.load(bad)
    bad.write_text(gallery_file.read_text()[:500])
    with pytest.raises(GalleryError, match="corrupt"):
        Gallery.load(bad)
    with pytest.raises(GalleryError, match="corrupt"):
        consent_pipe(bad)  # the camera does not start on it
    r = subprocess.run([*ANONCAM, "consent", "list", "--gallery", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "corrupt consent gallery" in r.stderr


def test_enrollment_rejects_unusable_photos(enroller, media, tmp_path, gallery_file, clips):
    g = Gallery(tmp_path / "g.json")
    orl = load_orl(orl_images(2)[0])
    cases = {"no face found": np.full((300, 300, 3), 128, np.uint8),
             "faces; a photo for enrollment shows one person": cv2.imread(str(media["group1"])),
             "too small": cv2.resize(orl, None, fx=0.2, fy=0.2, interpolation=cv2.INTER_AREA),
             "too blurry": cv2.GaussianBlur(orl, (0, 0), 6)}
    for msg, img in cases.items():
        p = tmp_path / "x.png"
        cv2.imwrite(str(p), img)
        with pytest.raises(EnrollError, match=msg):
            enroll(enroller, g, "someone", [p], 0.5)
    assert not g.path.exists()  # nothing saved
    known = Gallery.load(gallery_file)
    p = photos(tmp_path, clips["franck"], [3000], "f")
    with pytest.raises(EnrollError, match="already enrolled person"):
        enroll(enroller, known, "another name", p, 0.5)


def test_enrolled_person_visible_after_k_frames_and_anonymized_when_lost(gallery_file, clips):
    pipe = consent_pipe(gallery_file)
    start = 3600  # his last minute: not enrolled from
    frames = list(clips["franck"][start:start + 80])
    frames[40:60] = [np.full_like(frames[0], 128)] * 20  # he is gone for 20 frames: the track is lost
    blind(pipe, [(start + 25, start + 26)])  # one missed detection: FaceMesh keeps him (still detected)
    out = run(pipe, frames, start)
    assert all(not v for fr in out[:K - 1] for _, _, v in fr)  # not before K matches
    visible = [any(v for _, _, v in fr) for fr in out]
    assert sum(visible[K:40]) >= 0.9 * (40 - K)
    assert sum(len(fr) for fr in out[40:60]) > 0 and not any(visible[40:60])  # coasting: anonymized
    assert out[60] and out[60][0][0] != out[39][0][0]  # he comes back as a new track ...
    assert not any(visible[60:60 + K - 1])  # ... which starts over
    assert sum(visible[60 + K:80]) >= 0.9 * (20 - K)


def test_impostors_never_shown(gallery_file, tmp_path, enroller, clips):
    """Only franck enrolled; every frame of the cap12/cap13 test stretches is an impostor."""
    g = Gallery.load(gallery_file)
    del g.people["cap man"]
    g.path = tmp_path / "franck.json"
    g.save()
    pipe = consent_pipe(g.path)
    shown = total = 0
    for name in ("cap12", "cap13"):
        pipe.reset()
        for fr in run(pipe, clips[name][:150]):
            total += len(fr)
            shown += sum(v for _, _, v in fr)
    assert total >= 250 and shown == 0
    assert pipe.policy.counts["exempt"] == 0 and pipe.policy.counts["anonymized"] == total


def test_still_one_match(gallery_file, tmp_path, enroller):
    g = Gallery(tmp_path / "orl.json")
    imgs = orl_images(3)
    enroll(enroller, g, "s1", photos(tmp_path, [load_orl(i) for i in imgs[:3]], range(3), "o"), 0.5)
    pipe = consent_pipe(g.path)
    seen = {}
    for im in (imgs[5], imgs[8], imgs[15], imgs[25]):
        res = pipe.process(load_orl(im), 0, still=True, live=False)
        seen[im.person, im.shot] = [f.method is None for f in res.faces]
    assert seen[2, 6] == [False] and seen[3, 6] == [False]  # other people
    assert seen[1, 6] == [True] or seen[1, 9] == [True]


def test_revocation_during_a_run(gallery_file, tmp_path, clips, caplog):
    path = tmp_path / "live.json"
    path.write_bytes(gallery_file.read_bytes())
    os.chmod(path, 0o600)
    pipe = consent_pipe(path)
    frames = clips["franck"][3000:3030]
    with caplog.at_level(logging.DEBUG):
        out = run(pipe, frames[:15], 3000)
        assert any(v for _, _, v in out[-1])
        r = subprocess.run([*ANONCAM, "consent", "revoke", NAME, "--gallery", str(path)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out = run(pipe, frames[15:], 3015)
    assert not any(v for fr in out for _, _, v in fr)  # from the very next frame
    assert NAME not in caplog.text and "Franck" not in caplog.text
    r = subprocess.run([*ANONCAM, "consent", "list", "--gallery", str(path)], capture_output=True, text=True)
    assert NAME not in r.stdout and "cap man" in r.stdout


def test_encrypted_gallery(gallery_file, tmp_path, monkeypatch):
    """keygen -> encrypt -> the file is age ciphertext; the key from a file or a systemd credential opens
    it; no key, another key or one altered byte is a clear error."""
    def cli(*a, cfg=None):
        extra = ["--config", str(cfg)] if cfg else []
        return subprocess.run([*ANONCAM, "consent", *a, "--gallery", str(g), *extra], capture_output=True, text=True)
    g = tmp_path / "g.json"
    g.write_bytes(gallery_file.read_bytes())
    os.chmod(g, 0o600)
    key, other = tmp_path / "consent.key", tmp_path / "other.key"
    for k in (key, other):
        r = cli("keygen", str(k))
        assert r.returncode == 0, r.stderr
        assert os.stat(k).st_mode & 0o777 == 0o600 and k.read_text().startswith("AGE-SECRET-KEY-1")
    assert cli("keygen", str(key)).returncode == 2  # never overwritten
    cfgs = {}
    for n, k in (("key", key), ("other", other)):
        cfgs[n] = tmp_path / f"{n}.yaml"
        cfgs[n].write_text(f"consent:\n  key_file: {k}\n")
    r = cli("list", cfg=cfgs["key"])
    assert r.returncode == 2 and "not encrypted but a key is configured" in r.stderr
    assert cli("encrypt", cfg=cfgs["key"]).returncode == 0
    blob = g.read_bytes()
    assert blob.startswith(b"age-encryption.org/") and b"Franck" not in blob and b"embeddings" not in blob
    assert os.stat(g).st_mode & 0o777 == 0o600
    r = cli("list", cfg=cfgs["key"])
    assert r.returncode == 0 and NAME in r.stdout
    r = cli("list")
    assert r.returncode == 2 and "encrypted and no key is configured" in r.stderr
    r = cli("list", cfg=cfgs["other"])
    assert r.returncode == 2 and "wrong key, or the file was altered" in r.stderr
    # the camera takes the key from a systemd credential ($CREDENTIALS_DIRECTORY/<name>)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "anoncam-consent").write_bytes(key.read_bytes())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    pipe = consent_pipe(g, key_credential="anoncam-consent")
    assert set(pipe.policy.gallery.people) == {NAME, "cap man"}
    # enrollment and revocation keep it encrypted
    r = cli("revoke", "cap man", cfg=cfgs["key"])
    assert r.returncode == 0 and g.read_bytes().startswith(b"age-encryption.org/")
    bad = bytearray(g.read_bytes())
    bad[-20] ^= 1
    g.write_bytes(bytes(bad))
    with pytest.raises(GalleryError, match="wrong key, or the file was altered"):
        consent_pipe(g, key_credential="anoncam-consent")
    (creds / "anoncam-consent").write_text("not a key\n")
    with pytest.raises(GalleryError, match="not an age identity"):
        consent_pipe(g, key_credential="anoncam-consent")


def test_worker_results_voided_by_a_break_and_a_jump_covers(gallery_file, clips):
    """The worker's results only count while the track's continuity holds since the crop: a coasting
    frame between the crop and its result voids it (K fresh results needed). An exempt face whose box
    jumps by more than max_move of its size is covered on that very frame."""
    pipe = consent_pipe(gallery_file)
    pol = pipe.policy
    assert pol.worker is not None
    start = 3600
    faces = []
    for i in range(start, start + 12):
        img = clips["franck"][i]
        fs = pipe._faces(img, i, None, False, {}, pipe.detect(img, i))
        assert len(fs) == 1 and fs[0].landmarks is not None
        faces.append((img, fs[0]))

    def step(j, detected=True, shift=0.0, drain=True):
        img, f = faces[j]
        f.detected, f.method = detected, None
        f.box = f.box.copy()
        f.box[[0, 2]] += shift * float(f.box[2] - f.box[0])
        pol.decide(img, [f], {})
        if drain:
            pol.drain()
        return f.method is None

    step(0, drain=False)  # a crop goes to the worker ...
    assert not step(1, detected=False)  # ... the track coasts before its result is in
    shown = [step(j) for j in range(2, 2 + K + 1)]
    assert shown == [False] * K + [True]  # the result in flight counted for nothing
    assert step(K + 3) and not step(K + 4, shift=0.8)  # a jump: covered at once, and starts over
    assert not any(step(j) for j in range(K + 5, K + 5 + K))


def camera_and_replay(pipe, frames):
    """Per face-frame: what ConsentPolicy shows (checks in the loop) and what eval/consent.py's
    replay shows on the same faces' embeddings and boxes."""
    from anoncam.eval.consent import replay
    pol = pipe.policy
    rows, boxes, camera = [], [], []
    for i, img in enumerate(frames):
        fs = pipe._faces(img, i, None, False, {}, pipe.detect(img, i))
        for f in fs:
            ok = f.detected and f.landmarks is not None
            e = pol.embedder.embed_video(aligned_crop(img, f.landmarks)) if ok else np.zeros(1024, np.float32)
            rows.append([i, f.track_id, float(ok), float(max(f.box[2:] - f.box[:2])), *e])
            boxes.append(f.box.copy())
        pol.decide(img, fs, {})
        camera += [f.method is None for f in fs]
    gal = {n: p.video for n, p in pol.gallery.people.items()}
    cc = pol.cc
    shown = replay(np.array(rows, np.float32), gal, cc.k, cc.threshold, cc.margin, cc.recheck_every, 0,
                   np.array(boxes, np.float32), cc.max_move, pol.near)
    return camera, shown.tolist()


def test_eval_replay_is_the_camera_rule(gallery_file, clips):
    """`anoncam eval --consent` replays the policy's rule on cached embeddings (eval/consent.py): on
    the same real faces it shows exactly what ConsentPolicy shows (checks in the loop, a recheck every
    5 frames, a 20-frame gap in the middle: coasting, then a new track)."""
    pipe = consent_pipe(gallery_file, worker=False, recheck_every=5)
    frames = list(clips["franck"][3600:3670])
    frames[30:50] = [np.full_like(frames[0], 128)] * 20
    camera, shown = camera_and_replay(pipe, frames)
    assert sum(camera) >= 40 and not all(camera)
    assert shown == camera


def crossing(clips, n=56):
    """640x480 frames of two real people: franck (enrolled; his last minute) standing still, and the
    cap13 man (not enrolled) passing in front of him from the right to the left, 8 px a frame, so
    that their boxes meet, overlap and cross. Per frame: the image and the x range of the stranger's
    patch (anything shown there is the stranger: he is in front)."""
    out = []
    for i in range(n):
        img = np.full((480, 640, 3), 110, np.uint8)
        img[100:360, 40:280] = clips["franck"][3600 + i][20:280, 90:330]
        patch = cv2.resize(clips["cap13"][i], None, fx=1.45, fy=1.45)[110:370, 170:410]
        x = 420 - 8 * i
        lo, hi = max(x, 0), min(x + 240, 640)
        img[100:360, lo:hi] = patch[:, lo - x:hi - x]
        out.append((img, (lo, hi)))
    return out


def test_a_stranger_crossing_an_exempt_face_is_never_shown(gallery_file, tmp_path, clips):
    """Take-over: where two faces cross, the tracker may hand the exempt track to the stranger, and
    his box can pass the size and position checks. A track near another face's box starts over, so
    the stranger is never shown. The same frames with the rule off (near 0) show him: the test
    exercises a real swap."""
    g = Gallery.load(gallery_file)
    del g.people["cap man"]
    g.path = tmp_path / "franck.json"
    g.save()
    frames = crossing(clips)
    stranger = {}
    for near in (None, 0.0):
        pipe = consent_pipe(g.path)
        if near is not None:
            pipe.policy.near = near
        franck = stranger[near] = 0
        for i, (img, (lo, hi)) in enumerate(frames):
            res = pipe.process(img.copy(), i)
            pipe.policy.drain()
            for f in res.faces:
                if f.method is None:
                    cx = float(f.box[0] + f.box[2]) / 2
                    stranger[near] += lo <= cx < hi
                    franck += not lo <= cx < hi
        assert franck >= 10  # he was shown before the stranger came near
    assert stranger[0.0] > 0, "no take-over in these frames: the test would not catch one"
    assert stranger[None] == 0


def test_eval_replay_is_the_camera_rule_where_faces_cross(gallery_file, clips):
    """The replay applies the take-over and position checks as the camera does: the crossing frames,
    two tracks, both enrolled people, checks in the loop."""
    pipe = consent_pipe(gallery_file, worker=False, recheck_every=5)
    camera, shown = camera_and_replay(pipe, [img for img, _ in crossing(clips, 50)])
    assert sum(camera) >= 10 and not all(camera)
    assert shown == camera


def test_the_name_reaches_a_face_only_with_publish_names(gallery_file, clips):
    frames = clips["franck"][3600:3600 + K + 3]
    for publish, want in ((False, None), (True, NAME)):
        pipe = consent_pipe(gallery_file, publish_names=publish)
        names = []
        for i, f in enumerate(frames):
            res = pipe.process(f.copy(), 3600 + i)
            pipe.policy.drain()
            names += [x.consent_name for x in res.faces if x.method is None]
        assert names and set(names) == {want}


def test_faceres_relu6_as_clip_keeps_the_embedding(enroller, clips):
    """The camera's FaceRes graph (ReLU6 as one Clip, fused into the convolutions) gives the embedding
    of the plain op-by-op translation of the TFJS graph, on real faces."""
    from anoncam import assets
    from anoncam.backends import open_model
    from anoncam.consent import faceres
    from anoncam.detect.facemesh import FaceMesh

    graph = faceres.read_graph_model(assets.model_path("faceres_graph"), assets.model_path("faceres"))
    plain = open_model(faceres.build_onnx(*graph, faceres.OUTPUT, faceres.SIZE, clip=False).SerializeToString(),
                       "onnx", threads=1)
    camera = faceres.FaceRes(1)
    ops = [n.op_type for n in faceres.build_onnx(*graph, faceres.OUTPUT, faceres.SIZE).graph.node]
    assert "Clip" in ops and "Min" not in ops and "Max" not in ops and "Relu" not in ops
    for img in (clips["franck"][0], clips["cap12"][0], load_orl(orl_images(2)[10])):
        d = enroller.detect(img, 0, still=True)[0]
        pts, _ = enroller.mesh.run(img, *FaceMesh.region_from_box(d.box, d.kps))
        crop = aligned_crop(img, pts)
        x = cv2.cvtColor(cv2.resize(crop, (faceres.SIZE,) * 2), cv2.COLOR_BGR2RGB).astype(np.float32)[None]
        ref = plain.run(np.ascontiguousarray(x))[0].reshape(-1)
        assert float(camera.embed_crop(crop) @ (ref / np.linalg.norm(ref))) > 0.99999
