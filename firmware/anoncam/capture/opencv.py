"""OpenCV capture: a V4L2/USB device index, an RTSP/HTTP URL, or a GStreamer pipeline (gst:...).
A live source that stops delivering is reopened with backoff; the failures are counted."""
from __future__ import annotations

import logging
import time

import cv2

from ..config import CameraConfig
from . import Frame, SourceError

log = logging.getLogger(__name__)


class OpenCVSource:

    def __init__(self, spec: str, cfg: CameraConfig, max_backoff_s: float = 30.0):
        self.spec, self.cfg, self.max_backoff_s = spec, cfg, max_backoff_s
        self.reconnects = 0
        self.cap = self._open()
        if self.cap is None:
            raise SourceError(f"camera {spec!r}: cannot open")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 1 <= fps <= 240 else 25.0
        self._stop = False

    def _open(self):
        spec = self.spec
        if spec.isdigit():
            cap = cv2.VideoCapture(int(spec), cv2.CAP_V4L2)
        elif spec.startswith("gst:"):
            cap = cv2.VideoCapture(spec[4:], cv2.CAP_GSTREAMER)
        else:
            cap = cv2.VideoCapture(spec, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            return None
        if self.cfg.width and self.cfg.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        return cap

    def __iter__(self):
        i, backoff = 0, 0.5
        while not self._stop:
            ok, frame = self.cap.read() if self.cap is not None else (False, None)
            if ok:
                backoff = 0.5
                yield Frame(i, time.time(), frame)
                i += 1
                continue
            self.reconnects += 1
            log.warning("camera %s stopped delivering; reopening in %.1f s", self.spec, backoff)
            if self.cap is not None:
                self.cap.release()
            time.sleep(backoff)
            backoff = min(self.max_backoff_s, backoff * 2)
            self.cap = self._open()

    def close(self) -> None:
        self._stop = True
        if self.cap is not None:
            self.cap.release()
