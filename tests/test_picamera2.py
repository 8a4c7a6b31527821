"""The picamera2 adapter without a Pi: a stand-in with picamera2's interface (fake_picamera2.py:
pre_callback, mapped buffers with padded rows, YUV420 lores, capture_array) fed with a real face
clip, through the Runner. Whatever fails, every main buffer that leaves pre_callback (what the
encoder and preview get) and every image a sink receives is anonymized or blank, and a dropped frame
reaches no sink with pixels."""
import sys

import cv2
import fake_picamera2
import numpy as np
import pytest
from anoncam.pipeline import Pipeline
from anoncam.runner import Runner
from conftest import make_config
from helpers import is_covered, iter_frames, reference_boxes, reference_detector

N = 24
MAIN = (630, 472)  # RGB888 rows of 1890 bytes, padded to 1920
LORES_W = 200      # YUV420 lores 200 x 150, rows padded to 256 bytes
FAIL = {3, 4, 11, 18}  # frames on which the injected fault fires (the face is in each)


@pytest.fixture(scope="module")
def clip(media, models):
    """The first N frames of cap13 (a webcam clip) at the main size, and the reference's face boxes."""
    frames = [cv2.resize(f, MAIN, interpolation=cv2.INTER_AREA) for _, f in zip(range(N), iter_frames(media["cap13"]))]
    det = reference_detector()
    return frames, [reference_boxes(det, f) for f in frames]


class ListSink:
    def __init__(self):
        self.got = []  # (index, status, image or None, face boxes)

    def write(self, result):
        img = None if result.image is None else result.image.copy()
        self.got.append((result.index, result.status, img, [f.box for f in result.faces]))

    def close(self):
        pass


def run(monkeypatch, frames, inject=None, on_failure="cover"):
    """Run the Runner on the stand-in camera; return the delivered main buffers, the sink and stats."""
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2)
    monkeypatch.setattr(fake_picamera2.Picamera2, "frames", frames)
    cfg = make_config(camera={"source": "picamera2", "width": MAIN[0], "height": MAIN[1], "lores_width": LORES_W},
                      anonymize={"method": "blur"}, failsafe={"budget_ms": 1e9, "on_failure": on_failure})
    pipe = Pipeline.from_config(cfg)
    if inject is not None:
        inject(pipe)
    sink = ListSink()
    runner = Runner(cfg, pipe, sinks=[sink])
    stats = runner.run(max_frames=len(frames))
    cam = runner.source.cam
    assert cam.camera_config["lores"]["stride"] > LORES_W and cam.camera_config["main"]["stride"] > MAIN[0] * 3
    return cam.delivered, sink, stats


def iou(a, b):
    ix = np.maximum(0, np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2])).prod()
    return ix / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - ix)


def record_detect_frames(pipe, seen):
    process = pipe.process

    def recorded(frame, index, detect_frame=None, **kw):
        seen[index] = detect_frame.copy()
        return process(frame, index, detect_frame=detect_frame, **kw)

    pipe.process = recorded


def test_faces_are_anonymized_in_pre_callback(monkeypatch, clip):
    frames, boxes = clip
    assert sum(1 for b in boxes if b) >= N - 2  # the reference sees the face
    seen = {}
    delivered, sink, stats = run(monkeypatch, frames, lambda p: record_detect_frames(p, seen))
    assert len(delivered) == N and stats.counts["ok"] == N
    # the detector gets the lores picture: I420 (not YV12) colours, no row padding
    for i, small in seen.items():
        want = cv2.resize(frames[i], (LORES_W, small.shape[0]), interpolation=cv2.INTER_AREA)
        assert small.shape == want.shape and np.abs(small.astype(int) - want).mean() < 4
    for i, (orig, out) in enumerate(zip(frames, delivered)):
        assert not np.array_equal(orig, out)
        assert all(is_covered(orig, out, b) for b in boxes[i]), f"frame {i}: a face is not covered"
    assert [g[0] for g in sink.got] == list(range(N))
    for i, status, img, faces in sink.got:
        assert status == "ok" and np.array_equal(img, delivered[i])
        # detected on the padded YUV420 lores, placed right on main
        for b in boxes[i]:
            assert max((iou(b, f) for f in faces), default=0) >= 0.5, f"frame {i}: face box off"


def faulty(pipe, stage, fired):
    """Make one stage of `pipe` raise on the FAIL frames (the real stage runs on the others)."""
    current = {}
    process = pipe.process

    def tracked(frame, index, **kw):
        current["i"] = index
        if stage == "callback" and index in FAIL:  # a fault outside the pipeline's own guard
            fired.add(index)
            raise RuntimeError("injected fault")
        return process(frame, index, **kw)

    def wrap(fn):
        def w(*a, **kw):
            if current["i"] in FAIL:
                fired.add(current["i"])
                raise RuntimeError(f"injected {stage} fault")
            return fn(*a, **kw)
        return w

    pipe.process = tracked
    targets = {"detect": [(pipe.detector, "detect")], "landmarks": [(pipe.mesh, "run"), (pipe.mesh, "infer")],
               "anonymize": [(pipe.anonymizer, "face")], "callback": []}[stage]
    for obj, name in targets:
        setattr(obj, name, wrap(getattr(obj, name)))


@pytest.mark.parametrize("on_failure", ["cover", "drop"])
@pytest.mark.parametrize("stage", ["detect", "landmarks", "anonymize", "callback"])
def test_a_fault_leaves_nothing_raw(monkeypatch, clip, stage, on_failure):
    frames, boxes = clip
    fired = set()
    delivered, sink, stats = run(monkeypatch, frames, lambda p: faulty(p, stage, fired), on_failure)
    assert fired == FAIL
    assert len(delivered) == N
    for i, (orig, out) in enumerate(zip(frames, delivered)):
        if i in FAIL:  # what the encoder and preview got: blank
            assert (out == out[0, 0]).all(), f"frame {i} failed but was not blanked"
        else:
            assert all(is_covered(orig, out, b) for b in boxes[i]), f"frame {i}: a face is not covered"
    failed = "dropped" if on_failure == "drop" else "covered"
    assert stats.counts[failed] == len(FAIL) and stats.counts["ok"] == N - len(FAIL)
    assert [g[0] for g in sink.got] == list(range(N))
    for i, status, img, _ in sink.got:
        if i not in FAIL:
            assert status == "ok" and np.array_equal(img, delivered[i])
        elif on_failure == "drop":
            assert status == "dropped" and img is None, f"dropped frame {i} reached a sink with pixels"
        else:
            assert status == "covered" and (img == img[0, 0]).all()


def test_a_lores_fault_blanks_and_drops(monkeypatch, clip):
    """The lores stream cannot be read on some frames: the frame loop's rule blanks those main
    buffers and drops them (no detection on main instead)."""
    frames, boxes = clip
    enter, mapped = fake_picamera2.MappedArray.__enter__, []

    def failing(self):
        if self.stream == "lores":
            mapped.append(1)
            if len(mapped) - 1 in FAIL:
                raise RuntimeError("injected lores fault")
        return enter(self)

    monkeypatch.setattr(fake_picamera2.MappedArray, "__enter__", failing)
    delivered, sink, stats = run(monkeypatch, frames)
    assert len(mapped) == N and stats.counts["dropped"] == len(FAIL) and stats.counts["ok"] == N - len(FAIL)
    for i, (orig, out) in enumerate(zip(frames, delivered)):
        if i in FAIL:
            assert not out.any(), f"frame {i}: lores failed but main was not blanked"
        else:
            assert all(is_covered(orig, out, b) for b in boxes[i]), f"frame {i}: a face is not covered"
    for i, status, img, _ in sink.got:
        assert (status, img is None) == (("dropped", True) if i in FAIL else ("ok", False))
