"""OpenCV capture: a V4L2/USB device index, an RTSP/HTTP URL, or a GStreamer pipeline (gst:...).

A reader thread opens and reads the camera and hands frames over a short queue; the frame loop's
thread only waits on that queue, so `interrupt()` (SIGTERM) ends the iteration at once whatever the
camera does: connecting, stalled (a server that accepts and sends nothing) or gone. FFmpeg's open
and read are bounded by camera.read_timeout_s; a source that stops delivering is reopened with
backoff and the failures are counted. Raw frames stay in memory (the queue holds two)."""
from __future__ import annotations

import logging
import queue
import threading
import time

import cv2

from ..config import CameraConfig
from . import Frame, SourceError

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often a waiting frame loop looks at the stop flag


class OpenCVSource:

    def __init__(self, spec: str, cfg: CameraConfig, max_backoff_s: float = 8.0):
        self.spec, self.cfg, self.max_backoff_s = spec, cfg, max_backoff_s
        self.reconnects = 0
        self._stop = threading.Event()
        self._q: queue.Queue = queue.Queue(2)
        self._thread: threading.Thread | None = None
        cap = self._open()
        if cap is None:
            raise SourceError(f"camera {spec!r}: cannot open (within camera.read_timeout_s "
                              f"{cfg.read_timeout_s:g} s)")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        # a stream's own rate when it states one; camera.fps says what an MJPEG/HTTP camera sends
        self.fps = cfg.fps or (fps if fps and 1 <= fps <= 240 else 25.0)

    def _open(self):
        spec, ms = self.spec, int(self.cfg.read_timeout_s * 1000)
        if spec.isdigit():
            cap = cv2.VideoCapture(int(spec), cv2.CAP_V4L2)
        elif spec.startswith("gst:"):
            cap = cv2.VideoCapture(spec[4:], cv2.CAP_GSTREAMER)
        else:
            cap = cv2.VideoCapture(spec, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        if not cap.isOpened():
            cap.release()
            return None
        if self.cfg.width and self.cfg.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        return cap

    def _read(self) -> None:
        """The reader thread: read, hand over, reopen with backoff; the capture is only touched here."""
        cap, i, backoff = self._cap, 0, 0.5
        try:
            while not self._stop.is_set():
                ok, img = cap.read() if cap is not None else (False, None)
                if self._stop.is_set():
                    return
                if ok:
                    backoff = 0.5
                    item = Frame(i, time.time(), img)
                    i += 1
                    while not self._stop.is_set():
                        try:
                            self._q.put(item, timeout=POLL_S)
                            break
                        except queue.Full:
                            continue
                    continue
                self.reconnects += 1
                log.warning("camera %s stopped delivering; reopening in %.1f s", self.spec, backoff)
                if cap is not None:
                    cap.release()
                    cap = None
                if self._stop.wait(backoff):
                    return
                backoff = min(self.max_backoff_s, backoff * 2)
                cap = self._open()
        finally:
            if cap is not None:
                cap.release()

    def __iter__(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._read, name="camera-read", daemon=True)
            self._thread.start()
        while not self._stop.is_set():
            try:
                yield self._q.get(timeout=POLL_S)
            except queue.Empty:
                continue

    def interrupt(self) -> None:
        """Stop: the iteration ends within POLL_S; safe from a signal handler."""
        self._stop.set()

    def close(self, timeout: float = 1.0) -> None:
        """Stop and give the reader `timeout` s to release the camera; a read blocked in FFmpeg is left
        to its read timeout (the thread is a daemon, the process may exit before)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        elif self._cap is not None:
            self._cap.release()
        while not self._q.empty():  # raw frames do not outlive the source
            self._q.get_nowait()
