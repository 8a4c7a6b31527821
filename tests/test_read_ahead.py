"""Videos anonymized in two stages (decode + detect in a second thread) give the same frames as in
line, and a detector fault in that thread fails its frame closed."""
import cv2
import numpy as np
from anoncam.capture.files import MAX_MISSES, read_frames
from anoncam.offline import anonymize_video
from anoncam.pipeline import Pipeline
from anoncam.stats import Stats
from conftest import make_config
from helpers import blind, iter_frames


def short_clip(src, dst, n):
    """The first n frames of src as MJPG AVI (decodes the same every time)."""
    w = None
    for i, f in enumerate(iter_frames(src)):
        if i >= n:
            break
        if w is None:
            w = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), 25, (f.shape[1], f.shape[0]))
        w.write(f)
    w.release()
    return dst


def frames(path):
    return list(iter_frames(path))


def test_read_ahead_gives_the_same_frames_as_in_line(tmp_path, media, models):
    """cap13 (a webcam clip, the face moving), blur, detection every 2nd frame with a blind stretch:
    the threaded run writes exactly the frames of the in-line run."""
    clip = short_clip(media["cap13"], tmp_path / "in.avi", 90)
    cfg = make_config(anonymize={"method": "blur"}, runtime={"threads": 1}, detect={"every_n": 2})
    outs = {}
    for ahead in (False, True):
        outs[ahead] = tmp_path / f"out_{ahead}.avi"
        stats = Stats()
        pipe = Pipeline.from_config(cfg)
        blind(pipe, [(30, 40)])
        anonymize_video(pipe, clip, outs[ahead], stats, progress=False, read_ahead=ahead)
        assert stats.counts["frames"] == 90 and stats.counts["faces"] >= 90
    a, b, orig = frames(outs[False]), frames(outs[True]), frames(clip)
    assert len(a) == len(b) == 90
    assert max(np.abs(x.astype(int) - o).max() for x, o in zip(a, orig)) > 50  # faces were changed
    same = [np.array_equal(x, y) for x, y in zip(a, b)]
    assert all(same), f"frames differ: {[i for i, s in enumerate(same) if not s][:10]}"


class FailingDetector:
    """The real detector, raising on chosen calls (a fault injected into the read-ahead thread)."""

    def __init__(self, detector, fail_on):
        self.detector, self.fail_on, self.calls = detector, set(fail_on), 0

    def detect(self, img, **kw):
        self.calls += 1
        if self.calls - 1 in self.fail_on:
            raise RuntimeError("injected detector fault")
        return self.detector.detect(img, **kw)


def test_detector_fault_ahead_fails_that_frame_closed(tmp_path, media, models):
    clip = short_clip(media["franck"], tmp_path / "in.avi", 30)
    pipe = Pipeline.from_config(make_config(anonymize={"method": "blur"}, runtime={"threads": 1}))
    pipe.detector = FailingDetector(pipe.detector, fail_on=[7, 8])
    out, stats = tmp_path / "out.avi", Stats()
    anonymize_video(pipe, clip, out, stats, progress=False, read_ahead=True)
    got = frames(out)
    assert len(got) == 30
    color = np.array(pipe.cfg.anonymize.solid_color)
    covered = [i for i, f in enumerate(got) if np.abs(f.astype(int) - color).max() <= 8]
    assert covered == [7, 8]
    assert stats.counts["covered"] == 2 and stats.counts["ok"] == 28


def test_a_dropped_frame_keeps_its_place_covered(tmp_path, media, models):
    """on_failure: drop, in a file: the failed frames are written fully covered, the count kept."""
    clip = short_clip(media["franck"], tmp_path / "in.avi", 30)
    pipe = Pipeline.from_config(make_config(anonymize={"method": "blur"}, runtime={"threads": 1},
                                            failsafe={"on_failure": "drop"}))
    pipe.detector = FailingDetector(pipe.detector, fail_on=[7, 8])
    out, stats = tmp_path / "out.avi", Stats()
    anonymize_video(pipe, clip, out, stats, progress=False, read_ahead=False)
    got = frames(out)
    assert len(got) == 30
    color = np.array(pipe.cfg.anonymize.solid_color)
    assert [i for i, f in enumerate(got) if np.abs(f.astype(int) - color).max() <= 8] == [7, 8]
    assert stats.counts["dropped"] == 2 and stats.counts["ok"] == 28


class Capture:
    """A capture whose reads fail at chosen frames (an undecodable frame inside a stream cannot be
    made reliably with a real file: FFmpeg conceals most damage)."""

    def __init__(self, n, bad):
        self.i, self.n, self.bad = 0, n, set(bad)

    def read(self):
        i, self.i = self.i, self.i + 1
        if i >= self.n or i in self.bad:
            return False, None
        return True, np.full((8, 8, 3), i, np.uint8)


def test_undecodable_frames_keep_their_place():
    cap = Capture(10, bad={4, 5})
    ok, first = cap.read()
    got = [None if f is None else int(f[0, 0, 0]) for f in read_frames(cap, first, expected=10)]
    assert got == [0, 1, 2, 3, None, None, 6, 7, 8, 9]


def test_a_stream_that_stops_decoding_ends():
    cap = Capture(1000, bad=range(50, 1000))
    ok, first = cap.read()
    got = list(read_frames(cap, first, expected=1000))
    assert len(got) == 50 and all(f is not None for f in got)  # failed reads at the end are the end
    assert cap.i == 50 + MAX_MISSES  # after MAX_MISSES failed reads in a row
