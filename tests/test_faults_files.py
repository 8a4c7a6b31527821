"""Crash-safe segments at the file level (issue 17): a fragmented MP4 (a fragment per frame) cut at any
byte (what a crash or a power cut leaves) is trimmed by `recover` to its last whole fragment and
plays; nothing of a fragment that did not reach the disk is claimed."""
import shutil

import cv2
import numpy as np
from anoncam.sinks.files import VideoFile, count_frames, recover

FPS, N = 15.0, 75  # a keyframe every 15 frames, a fragment per frame


def frames():
    """Synthetic frames (a moving bar on a gradient): no scene cut, so keyframes come only every second."""
    base = np.tile(np.linspace(0, 200, 320, dtype=np.uint8), (240, 1))
    for i in range(N):
        img = cv2.merge([base, base, base])
        cv2.rectangle(img, (i * 4 % 300, 60), (i * 4 % 300 + 20, 180), (255, 255, 255), -1)
        yield img


def test_a_segment_cut_anywhere_keeps_its_whole_fragments(tmp_path):
    v = VideoFile(tmp_path / "seg.mp4", FPS, (320, 240), crash_safe=True)
    for img in frames():
        v.write(img)
    done = v.commit()
    assert count_frames(done) == N
    size = done.stat().st_size
    kept = []
    for frac in (0.05, 0.2, 0.35, 0.5, 0.61, 0.77, 0.9, 0.99):
        part = tmp_path / f"cut{frac}.part.mp4"
        shutil.copyfile(done, part)
        with open(part, "r+b") as f:
            f.truncate(int(size * frac))
        got = recover(part)
        if got is None:  # nothing whole: removed (the caller logs it)
            assert not part.exists()
            kept.append(0)
            continue
        n = count_frames(got)
        assert 0 < n <= N, (frac, n)  # 1 % short may only lose the closing index (mfra)
        cap = cv2.VideoCapture(str(got))
        decoded = sum(1 for _ in iter(lambda: cap.read()[0] or None, None))
        assert decoded == n and cap.get(cv2.CAP_PROP_FRAME_COUNT) == n
        kept.append(n)
    assert kept == sorted(kept) and len(set(kept)) >= 6, kept  # more bytes, more frames
    assert kept[-1] >= N - 2, kept  # 1 % short of the end: all but the torn last frames


def test_an_unfinished_plain_mp4_is_not_claimed(tmp_path):
    """A non-fragmented MP4 without its index (what the old writer left after a crash) plays nothing:
    recover removes it rather than keeping an undecodable file."""
    v = VideoFile(tmp_path / "plain.mp4", FPS, (320, 240))
    for img in frames():
        v.write(img)
    done = v.commit()
    part = tmp_path / "old.part.mp4"
    data = done.read_bytes()
    moov = data.find(b"moov") - 4
    part.write_bytes(data[:moov] if moov > 0 else data[: len(data) // 2])
    assert recover(part) is None and not part.exists()
