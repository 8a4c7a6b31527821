"""The one frame loop: source -> Pipeline.process -> sinks, for the daemon, `anoncam anonymize`,
`anoncam bench` and `anoncam eval`.

`FrameLoop.anonymize` is the per-frame rule and the only caller of `Pipeline.process`: a frame the
source could not read is blanked and dropped; a fault outside the pipeline's own guard fails the
frame closed like one inside it. A dropped frame reaches the sinks without pixels (image None); what
a sink does with it is the sink's (the disk sink skips it, a video file keeps its place, covered).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable

from .capture import Frame
from .pipeline import AUTO, Pipeline
from .stats import Stats
from .types import FrameResult

log = logging.getLogger(__name__)


class FrameLoop:
    """`live`: the time budget applies (a camera). `still`: every frame is an independent photo.
    `read_ahead`: decode, detect and cut FaceMesh's inputs in a second thread (`ReadAhead`).
    `keep_going`: a failing sink is logged and counted and the loop goes on (a camera); otherwise its
    error ends the loop (a file)."""

    def __init__(self, pipeline: Pipeline, sinks: list | None = None, live: bool = True, still: bool = False,
                 read_ahead: bool = False, keep_going: bool = False, stats: Stats | None = None):
        self.pipeline = pipeline
        self.sinks = sinks if sinks is not None else []
        self.live, self.still, self.read_ahead, self.keep_going = live, still, read_ahead, keep_going
        self.stats = stats if stats is not None else Stats()
        self.on_frame: list[Callable[[FrameResult, Stats], None]] = []  # after the sinks, e.g. the watchdog
        self.before_frame: Callable[[], None] | None = None  # e.g. the daemon's commands
        self.output_on: Callable[[], bool] = lambda: True  # False: frames are anonymized, no sink gets them
        self.sink_errors = 0

    def anonymize(self, frame: Frame, detections: object = AUTO) -> FrameResult:
        """The per-frame rule: `frame.image` anonymized in place (or covered, or blanked), and what
        was done. picamera2 calls it from its pre_callback, before any encoder or preview."""
        if frame.image is None or frame.error:
            if frame.image is not None and frame.image.flags.writeable:
                frame.image[...] = 0  # read only in part: nothing of it survives
            log.warning("frame %d dropped: %s", frame.index, frame.error or "unreadable")
            return FrameResult(frame.index, frame.timestamp, None, "dropped", reason=frame.error or "unreadable")
        try:
            return self.pipeline.process(frame.image, frame.index, timestamp=frame.timestamp,
                                         detect_frame=frame.detect_image, still=self.still, live=self.live,
                                         detections=detections)
        except Exception as e:  # outside the pipeline's own guard: fail closed all the same
            log.error("frame %d failed closed: %s", frame.index, type(e).__name__)
            res = FrameResult(frame.index, frame.timestamp, frame.image, "ok")
            return self.pipeline.fail(res, f"error: {type(e).__name__}")

    def step(self, frame: Frame, detections: object = AUTO, timings: dict | None = None) -> FrameResult:
        """One frame: the rule (unless the source applied it already), the sinks, the counts.
        `timings`: the reader's share (decode; detect and landmarks when read ahead)."""
        result = frame.result if frame.result is not None else self.anonymize(frame, detections)
        for k, v in (timings or {}).items():
            result.timings[k] = v + (result.timings.get(k, 0.0) if k == "landmarks" else 0.0)
        t = time.perf_counter()
        try:
            if self.output_on():
                self._write(result)
        finally:  # a frame is counted even when a sink's error ends the loop
            result.timings["sinks"] = (time.perf_counter() - t) * 1000
            self.stats.frame(result.status, result.timings, len(result.faces),
                             sum(f.method is None for f in result.faces))
        for cb in self.on_frame:
            cb(result, self.stats)
        return result

    def _write(self, result: FrameResult) -> None:
        for sink in self.sinks:
            try:
                sink.write(result)
            except Exception as e:
                if not self.keep_going:
                    raise
                self.sink_errors += 1  # a failing sink must not stop the camera
                log.error("sink %s failed: %s: %s", type(sink).__name__, type(e).__name__, e)

    def run(self, source: Iterable[Frame], max_frames: int | None = None,
            stop: threading.Event | None = None) -> Stats:
        """Until the source ends, `max_frames` or `stop`. Starts with no tracks. Sinks stay open."""
        attach = getattr(source, "attach", None)
        if attach is not None:
            attach(self.anonymize)  # picamera2: the rule runs in its pre_callback
        self.pipeline.reset()
        ahead = ReadAhead(source, self.pipeline, self.still) if self.read_ahead else None
        items = iter(ahead if ahead is not None else in_line(source))
        n = 0
        try:
            while stop is None or not stop.is_set():
                if self.before_frame is not None:
                    self.before_frame()
                if max_frames is not None and n >= max_frames:
                    break
                item = next(items, None)
                if item is None:
                    break
                self.step(*item)
                n += 1
        finally:
            if ahead is not None:
                ahead.close()
        return self.stats


def in_line(source: Iterable[Frame]):
    """(frame, AUTO, {"decode": ms}) for each frame; a source's pacing (`waited_s`) is not decoding."""
    it = iter(source)
    while True:
        t = time.perf_counter()
        frame = next(it, None)
        if frame is None:
            return
        yield frame, AUTO, {"decode": (time.perf_counter() - t - getattr(source, "waited_s", 0.0)) * 1000}


class ReadAhead:
    """Decode, detect and cut FaceMesh's inputs in a second thread, a few frames ahead of landmarks/
    anonymize/sinks in the caller's; gives the frames in order with their detections (or the
    exception the detector raised: `process` fails that frame closed). Raw frames and crops stay in
    memory in a short queue."""

    DEPTH = 4

    def __init__(self, source: Iterable[Frame], pipe: Pipeline, still: bool = False):
        self.q: queue.Queue = queue.Queue(self.DEPTH)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(source, pipe, still), name="read-ahead", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source, pipe: Pipeline, still: bool) -> None:
        try:
            for frame, detections, timings in in_line(source):
                if frame.image is not None and frame.result is None:
                    t = time.perf_counter()
                    try:
                        detections = pipe.detect(frame.image, frame.index, frame.detect_image, still)
                        timings["detect"] = (time.perf_counter() - t) * 1000
                        pipe.prepare_landmarks(frame.image, detections)
                        timings["landmarks"] = (time.perf_counter() - t) * 1000 - timings["detect"]
                    except Exception as e:
                        detections = e
                if not self._put((frame, detections, timings)):
                    return
            self._put(None)
        except BaseException as e:  # a decoder fault ends the run as an error in the caller
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
