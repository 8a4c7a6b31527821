"""`generative` on a live camera: a new track's identity is chosen by a worker beside the frame loop;
the face is blurred (never raw) until the choice is back, then drawn exactly as a file's in-line
choice draws it. Files keep choosing in line (identity-key determinism: test_owner_keys)."""
import logging
import queue
import threading
from itertools import islice

import cv2
import numpy as np
import pytest
from anoncam.anonymize import generative as gen
from anoncam.anonymize.masks import neighbourhood
from anoncam.pipeline import Pipeline
from anoncam.types import Face
from conftest import make_config
from helpers import SAME_PERSON, core, iter_frames, sface_cosine

SCALES = {"mask_scale": 1.4, "generative_mask_scale": 1.4}  # blur and generative cover the same oval


def run(method: str, frames, live: bool, key: bytes = b"live" * 8, drain_after: int | None = None):
    """frames through a fresh pipeline: (outputs, faces per frame); the worker's choices waited for
    after frame `drain_after` (-1: after every frame)."""
    pipe = Pipeline.from_config(make_config(anonymize={"method": method, **SCALES}))
    pipe.anonymizer.key = key
    outs, faces = [], []
    for i, f in enumerate(frames):
        f = f.copy()
        res = pipe.process(f, i, live=live)
        assert res.status == "ok"
        outs.append(f)
        faces.append(res.faces)
        if drain_after in (i, -1):
            gen.GENERATIVE.drain()
    return outs, faces


@pytest.fixture(scope="module")
def franck(models, media):
    return list(islice(iter_frames(media["franck"]), 4))


def test_new_track_blurred_until_chosen_then_as_in_line(franck):
    gen.GENERATIVE.forget()
    inline, faces = run("generative", franck, live=False)
    blurred, _ = run("blur", franck[:2], live=True)
    gen.GENERATIVE.forget()  # the live run chooses again, in the worker
    live, live_faces = run("generative", franck, live=True, drain_after=1)
    assert [[f.track_id for f in fs] for fs in live_faces] == [[f.track_id for f in fs] for fs in faces]
    # the first frame never waits: the face is blurred, exactly as `blur` covers it, not raw
    assert np.array_equal(live[0], blurred[0])
    assert not np.array_equal(live[0], franck[0]) and not np.array_equal(live[0], inline[0])
    box = faces[0][0].box
    ys, xs = core(box, franck[0].shape, 0.5)
    assert np.abs(live[0][ys, xs].astype(int) - franck[0][ys, xs]).mean() > 8
    cos = sface_cosine(franck[0], live[0], box)
    assert cos is None or cos < SAME_PERSON
    # until the choice is back each frame is blurred; after it, byte-identical to the in-line choice
    assert np.array_equal(live[1], blurred[1]) or np.array_equal(live[1], inline[1])
    for i in range(2, len(franck)):
        assert np.array_equal(live[i], inline[i]), i


def test_many_new_tracks_at_once(franck):
    """Four faces appear at once (a 2x2 mosaic of franck's frames): all are blurred while they wait
    for the worker, and once chosen each is drawn as in line."""
    tiles = [cv2.resize(f, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA) for f in franck[:2]]
    frames = [np.vstack([np.hstack([t] * 2)] * 2) for t in tiles]
    gen.GENERATIVE.forget()
    inline, faces = run("generative", frames, live=False, key=b"many" * 8)
    assert len([f for f in faces[0] if f.landmarks is not None]) == 4
    blurred, _ = run("blur", frames[:1], live=True)
    gen.GENERATIVE.forget()
    live, _ = run("generative", frames, live=True, key=b"many" * 8, drain_after=-1)
    assert np.array_equal(live[0], blurred[0])  # all new: all blurred, none raw
    assert all(np.array_equal(a, b) for a, b in zip(live[1:], inline[1:]))


def test_failing_choice_fails_closed(models, media, caplog):
    """A worker whose choice raises: logged by type only, the track stays blurred, the next works."""
    frame = next(iter_frames(media["franck"]))
    pipe = Pipeline.from_config(make_config(anonymize={"method": "blur"}))  # for the landmarks
    res = pipe.process(frame.copy(), 0, live=False)
    lm, box = res.faces[0].landmarks, res.faces[0].box
    g = gen.Generative()
    g.prepare()
    likeness, g.likeness = g.likeness, None  # the recognizer is gone: every choice raises
    poly_px = float(np.ptp(lm, axis=0).max())
    h, w = frame.shape[:2]

    def draw(track: int) -> np.ndarray:
        face = Face(track_id=track, box=box, detected=True, landmarks=lm)
        return g(frame.copy(), poly_px, face=face, frame=frame, roi_box=(0, 0, w, h), key=b"f" * 32, live=True)

    with caplog.at_level(logging.ERROR):
        cover = draw(1)
        g.drain()
    assert g.failures == 1
    msgs = [r.getMessage() for r in caplog.records if r.name == gen.__name__]
    assert msgs == ["generative: choosing a track's identity failed: AttributeError"]
    assert np.array_equal(draw(1), cover)  # stays covered, asked no more
    g.drain()
    assert g.failures == 1
    ys, xs = core(box, frame.shape, 0.5)
    assert np.abs(cover[ys, xs].astype(int) - frame[ys, xs]).mean() > 8
    g.likeness = likeness  # a new track once the fault is gone
    draw(2)
    g.drain()
    drawn = draw(2)
    assert not np.array_equal(drawn, cover)
    face = Face(track_id=2, box=box, detected=True, landmarks=lm)
    assert np.array_equal(drawn, g(frame.copy(), poly_px, face=face, frame=frame, roi_box=(0, 0, w, h),
                                   key=b"f" * 32, live=False))
    g.stop()


def test_lost_track_choice_dropped_unmade(models, media):
    """A track not drawn in the last STALE live draws (lost) before the worker reaches its choice
    has it dropped unmade, while one still in view is chosen; drawn again, the lost one is asked
    for again."""
    frame = next(iter_frames(media["franck"]))
    pipe = Pipeline.from_config(make_config(anonymize={"method": "blur"}))  # for the landmarks
    lm = pipe.process(frame.copy(), 0, live=False).faces[0].landmarks
    g, key = gen.Generative(), b"lost" * 8
    g.prepare()
    g._jobs = queue.Queue(gen.QUEUE)  # the worker starts only below: the choices wait in its queue
    assert g.chosen(key, 1, frame, lm, 1.4) is None  # track 1 appears, then is lost
    for _ in range(gen.STALE + 1):  # track 2 stays in view, waiting
        assert g.chosen(key, 2, frame, lm, 1.4) is None
    g._thread = threading.Thread(target=g._run, args=(g._jobs,), daemon=True)
    g._thread.start()
    g.drain()
    assert g.chosen(key, 2, frame, lm, 1.4) is not None and g.failures == 0
    assert g.chosen(key, 1, frame, lm, 1.4) is None  # asked again
    g.stop()  # the waiting choice is dropped, the worker ends



def test_guard_blurs_a_track_that_reads_close(franck, monkeypatch):
    """Along a video track the guard reads the drawn face against the original; from GUARD_MAX on
    the track is blurred (a file's frame just read is drawn again) and keeps its identity, until a
    reading falls below GUARD_COOL. With GUARD_MAX below any cosine every reading is too close."""
    key = b"grd" * 11 + b"x"
    blurred, _ = run("blur", franck[:2], live=False)
    gen.GENERATIVE.forget()
    kept, faces = run("generative", franck[:2], live=False, key=key)
    tag = gen.GENERATIVE._tag(key, faces[0][0].track_id)
    idx = gen.GENERATIVE._tracks[tag]
    assert not np.array_equal(kept[1], blurred[1])
    monkeypatch.setattr(gen, "GUARD_MAX", -1.0)
    gen.GENERATIVE.forget()
    hot, _ = run("generative", franck[:2], live=False, key=key)
    assert np.array_equal(hot[0], kept[0])  # the choice's own frame is not read again
    assert np.array_equal(hot[1], blurred[1])  # read, too close: drawn again, blurred
    assert gen.GENERATIVE.hot_reads == 1 and gen.GENERATIVE._tracks[tag] == idx
    monkeypatch.undo()
    # live (the worker's reading, made here in line): the original against itself reads 1.0: hot,
    # blurred; the identity drawn into the face reads low: drawn again; a late reading: blurred
    g, lm, tid = gen.Generative(), faces[1][0].landmarks, faces[1][0].track_id
    g.prepare()
    # the same identity from the track's first sighting (the choice depends on that frame)
    assert g.identity(key, tid, franck[0], faces[0][0].landmarks) == idx
    before, local = neighbourhood(franck[1], lm)
    poly_px = float(np.ptp(lm, axis=0).max())
    h, w = franck[1].shape[:2]

    def draw() -> np.ndarray:
        face = Face(track_id=tid, box=faces[1][0].box, detected=True, landmarks=lm)
        return g(franck[1].copy(), poly_px, face=face, frame=franck[1], roi_box=(0, 0, w, h), key=key, live=True)

    drawn = draw()
    assert g._read(tag, idx, before, before.copy(), local, 1.4)
    cover = draw()
    assert not np.array_equal(cover, drawn)
    ys, xs = core(faces[1][0].box, franck[1].shape, 0.5)
    assert np.abs(cover[ys, xs].astype(int) - franck[1][ys, xs]).mean() > 8
    assert not g._read(tag, idx, before, None, local, 1.4) and np.array_equal(draw(), drawn)
    g._wait[tag] = gen.GUARD_LATE + 1
    assert np.array_equal(draw(), cover)
    g.stop()
