"""Raspberry Pi camera through picamera2 (installed from apt as python3-picamera2; it cannot be
installed on x86: tests/test_picamera2.py runs this adapter on a stand-in with picamera2's interface).

The main stream is anonymized inside picamera2's pre_callback, i.e. before any encoder, preview or
capture sees the buffer; detection runs on the lores stream (YUV420) scaled to main. A frame that
fails in any way (covered, dropped, an exception) leaves the callback blanked. The frames this
source yields are therefore already anonymized and carry their FrameResult.
"""
from __future__ import annotations

import logging
import time

import cv2

from ..config import CameraConfig
from ..types import FrameResult
from . import Frame, SourceError

log = logging.getLogger(__name__)


class Picamera2Source:
    kind = "picamera2"
    anonymizes = True  # the runner must not process these frames again

    def __init__(self, cfg: CameraConfig):
        try:
            from picamera2 import MappedArray, Picamera2
        except ImportError as e:
            raise SourceError("picamera2 is not installed: on Raspberry Pi OS `apt install python3-picamera2` "
                              "and create the venv with --system-site-packages") from e
        self._mapped = MappedArray
        self.cam = Picamera2()
        w, h = cfg.width or 1280, cfg.height or 720
        lw = cfg.lores_width
        lh = int(round(lw * h / w / 2)) * 2
        self.config = self.cam.create_video_configuration(
            main={"size": (w, h), "format": "RGB888"}, lores={"size": (lw, lh), "format": "YUV420"})
        self.cam.configure(self.config)
        self.fps = cfg.fps or 30.0
        self.pipeline = None
        self._last = None

    def attach(self, pipeline) -> None:
        """Install the pipeline as pre_callback: every main buffer is anonymized in place, or blanked."""
        self.pipeline = pipeline
        self._i = 0
        lores_w = self.cam.camera_config["lores"]["size"][0]
        failed = "dropped" if pipeline.cfg.failsafe.on_failure == "drop" else "covered"

        def pre_callback(request):
            with self._mapped(request, "main") as main:
                ok = False
                try:
                    with self._mapped(request, "lores") as lores:
                        # libcamera's YUV420 is I420 (U before V; OpenCV's YUV420p is YV12). Rows
                        # are `stride` >= width bytes, chroma rows stride/2: converting at the
                        # stride's width keeps the planes aligned, then the padding is cut off
                        small = cv2.cvtColor(lores.array, cv2.COLOR_YUV2BGR_I420)[:, :lores_w]
                    res = pipeline.process(main.array, self._i, detect_frame=small)
                    ok = res.status == "ok"
                except Exception as e:
                    log.error("pre_callback failed closed: %s", type(e).__name__)
                    res = FrameResult(self._i, time.time(), None, failed, reason=f"error: {type(e).__name__}")
                finally:
                    if not ok:  # fail closed: nothing raw leaves the callback
                        main.array[:] = 0
                self._i += 1
                self._last = res

        self.cam.pre_callback = pre_callback

    def __iter__(self):
        if self.pipeline is None:
            raise SourceError("picamera2 source used without a pipeline attached")
        self.cam.start()
        i = 0
        while True:
            img = self.cam.capture_array("main")  # already anonymized by pre_callback
            # the result is the latest callback's and may be one frame off the pixels; the pixels
            # are anonymized or blanked either way
            yield Frame(i, time.time(), img, result=self._last)
            i += 1

    def close(self) -> None:
        self.cam.stop()
        self.cam.close()
