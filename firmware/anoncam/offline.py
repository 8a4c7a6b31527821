"""`anoncam anonymize`: images, directories and videos to anonymized files.

One input file and an output path with an extension: exactly that file is written, of the same kind.
Otherwise the output is a folder and each input keeps its name. A video keeps its frame count and
frame rate: a frame that fails is written fully covered, never skipped and never raw. Nothing is
left under an output name unless it was completely written.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .capture import IMAGE_EXT, VIDEO_EXT
from .capture.files import read_image
from .pipeline import AUTO, Pipeline
from .sinks.files import VideoFile, encode_image, write_atomic
from .stats import Stats

log = logging.getLogger(__name__)


class InputError(ValueError):
    pass


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)


def kind_of(path: Path) -> str | None:
    ext = path.suffix.lower()
    return "image" if ext in IMAGE_EXT else "video" if ext in VIDEO_EXT else None


def plan(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """Pair every input file with its output path."""
    for p in inputs:
        if not p.exists():
            raise InputError(f"{p}: no such file or directory")
    if len(inputs) == 1 and inputs[0].is_file() and output.suffix and not output.is_dir():
        src = inputs[0]
        if kind_of(src) is None:
            raise InputError(f"{src}: not an image or video file")
        if kind_of(output) != kind_of(src):
            raise InputError(f"{output}: output must be a {kind_of(src)} file like the input")
        return [(src, output)]
    pairs = []
    for p in inputs:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and kind_of(f):
                    pairs.append((f, output / p.name / f.relative_to(p)))
        elif kind_of(p):
            pairs.append((p, output / p.name))
        else:
            raise InputError(f"{p}: not an image or video file")
    if not pairs:
        raise InputError("no image or video files in the inputs")
    return pairs


def anonymize_image(pipe: Pipeline, src: Path, dst: Path, stats: Stats, quality: int = 92) -> None:
    img = read_image(src)
    res = pipe.process(img, 0, still=True, live=False)
    stats.frame(res.status, res.timings, len(res.faces))
    if res.image is None:
        raise ValueError(f"{src}: dropped ({res.reason})")
    write_atomic(dst, encode_image(res.image, dst.suffix, quality))


MAX_MISSES = 25  # undecodable frames in a row inside a stream before it counts as ended


@dataclass
class Ahead:
    """One decoded frame (None: undecodable, keep its place covered) and, when read ahead, its
    detections (or the exception the detector raised), the detector's ms and the ms spent cutting
    FaceMesh's inputs (counted under landmarks)."""
    frame: np.ndarray | None
    detections: object = AUTO
    detect_ms: float | None = None
    prepare_ms: float = 0.0


def read_frames(cap, first: np.ndarray, expected: int):
    """The frames of an open capture, `first` already read; an undecodable frame inside the stream
    comes as None (up to MAX_MISSES in a row; none past the container's frame count)."""
    yield first
    i, misses = 1, 0
    while True:
        ok, frame = cap.read()
        if ok and frame is not None:
            misses = 0
            yield frame
        elif i >= expected or misses >= MAX_MISSES:
            return
        else:
            misses += 1
            yield None
        i += 1


class ReadAhead:
    """Decode, detect and cut FaceMesh's inputs in a second thread, a few frames ahead of landmarks/
    anonymize/encode in the caller's. Raw frames and crops stay in memory in a short queue."""

    DEPTH = 4

    def __init__(self, frames, pipe: Pipeline):
        self.q: queue.Queue = queue.Queue(self.DEPTH)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(frames, pipe), name="read-ahead", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, frames, pipe: Pipeline) -> None:
        try:
            for i, frame in enumerate(frames):
                item = Ahead(frame)
                if frame is not None:
                    t = time.perf_counter()
                    try:
                        item.detections = pipe.detect(frame, i)
                        item.detect_ms = (time.perf_counter() - t) * 1000
                        pipe.prepare_landmarks(frame, item.detections)
                        item.prepare_ms = (time.perf_counter() - t) * 1000 - item.detect_ms
                    except Exception as e:  # process() fails this frame closed
                        item.detections = e
                if not self._put(item):
                    return
            self._put(None)
        except BaseException as e:  # a decoder fault ends the file as an error in the caller
            self._put(e)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise ValueError(f"decoding failed: {item}") from item
            yield item

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def anonymize_video(pipe: Pipeline, src: Path, dst: Path, stats: Stats, progress: bool = True,
                    read_ahead: bool = False) -> None:
    """`read_ahead`: decode and detect in a second thread, a few frames ahead."""
    # with read-ahead both cores are busy already: one decoder thread costs less CPU than FFmpeg's pool
    params = [cv2.CAP_PROP_N_THREADS, 1] if read_ahead else []
    cap = cv2.VideoCapture(str(src), cv2.CAP_ANY, params)
    ahead = None
    try:
        if not cap.isOpened():
            raise ValueError(f"{src}: cannot open as video")
        ok, first = cap.read()
        if not ok or first is None:
            raise ValueError(f"{src}: no decodable video frames")
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        h, w = first.shape[:2]
        out = VideoFile(dst, fps, (w, h))
        pipe.reset()
        frames = read_frames(cap, first, expected)
        if read_ahead:
            items = ahead = ReadAhead(frames, pipe)
        else:
            items = (Ahead(f) for f in frames)
        bar = tqdm(total=expected or None, desc=src.name, unit="f", disable=not progress, leave=False)
        try:
            for i, item in enumerate(items):
                frame = item.frame
                if frame is None:  # undecodable: keep its place, covered
                    frame = np.zeros((h, w, 3), np.uint8)
                    pipe.anonymizer.cover_all(frame)
                    stats.frame("dropped", {}, 0)
                else:
                    res = pipe.process(frame, i, live=False, detections=item.detections)
                    if res.image is None:  # dropped by the failsafe: write it covered to keep the timing
                        pipe.anonymizer.cover_all(frame)
                    if item.detect_ms is not None:
                        res.timings["detect"] = item.detect_ms
                        res.timings["landmarks"] = res.timings.get("landmarks", 0.0) + item.prepare_ms
                    stats.frame(res.status, res.timings, len(res.faces))
                out.write(frame)
                bar.update()
        except BaseException:
            out.abort()
            raise
        finally:
            bar.close()
        out.commit()
    finally:
        if ahead is not None:
            ahead.close()
        cap.release()


def anonymize_paths(pipe: Pipeline, inputs: list[Path], output: Path, progress: bool = True,
                    read_ahead: bool = False) -> Report:
    report = Report()
    pairs = plan(inputs, output)
    for src, dst in tqdm(pairs, desc="files", unit="file", disable=not progress or len(pairs) < 2):
        try:
            if kind_of(src) == "image":
                anonymize_image(pipe, src, dst, report.stats)
            else:
                anonymize_video(pipe, src, dst, report.stats, progress, read_ahead)
            report.written.append(dst)
        except (OSError, ValueError) as e:
            log.error("%s", e)
            report.failed.append((src, str(e)))
    return report
