"""Raspberry Pi camera through picamera2 (installed from apt as python3-picamera2; it cannot be
installed on x86, so this adapter is kept thin and is not exercised by the tests here).

The main stream is anonymized inside picamera2's pre_callback, i.e. before any encoder, preview or
capture sees the buffer; detection runs on the lores stream (YUV420) scaled to main. The frames this
source yields are therefore already anonymized and carry their FrameResult.
"""
from __future__ import annotations

import logging
import time

import cv2

from ..config import CameraConfig
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
        """Install the pipeline as pre_callback: every main buffer is anonymized in place."""
        self.pipeline = pipeline
        self._i = 0

        def pre_callback(request):
            with self._mapped(request, "main") as main, self._mapped(request, "lores") as lores:
                try:
                    small = cv2.cvtColor(lores.array, cv2.COLOR_YUV420p2BGR)
                    res = pipeline.process(main.array, self._i, detect_frame=small)
                except Exception as e:  # fail closed: nothing raw leaves the callback
                    log.error("pre_callback failed closed: %s", type(e).__name__)
                    main.array[:] = 0
                    res = None
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
            # the result is the latest callback's; its face list may be one frame off the pixels
            yield Frame(i, time.time(), img, result=self._last)
            i += 1

    def close(self) -> None:
        self.cam.stop()
        self.cam.close()
