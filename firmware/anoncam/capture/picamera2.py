"""Raspberry Pi camera through picamera2 (installed from apt as python3-picamera2; it cannot be
installed on x86: tests/test_picamera2.py runs this adapter on a stand-in with picamera2's interface).

The main stream is anonymized inside picamera2's pre_callback, i.e. before any encoder, preview or
capture sees the buffer, by the frame loop's own per-frame rule (FrameLoop.anonymize, handed over by
`attach`); detection runs on the lores stream (YUV420) scaled to main. A frame that fails is covered
(or blanked) in the buffer itself. The frames this source yields are copies of those buffers and
carry the rule's result, so the loop does not process them again.
"""
from __future__ import annotations

import time
from dataclasses import replace

import cv2

from ..config import CameraConfig
from ..types import FrameResult
from . import Frame, SourceError


class Picamera2Source:

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
        self._anonymize = None
        self._last = None

    def attach(self, anonymize) -> None:
        """Run `anonymize(frame) -> FrameResult` (the frame loop's rule) on every main buffer in
        pre_callback; it anonymizes the buffer in place, or covers or blanks it."""
        self._anonymize = anonymize
        self._i = 0
        lores_w = self.cam.camera_config["lores"]["size"][0]

        def pre_callback(request):
            with self._mapped(request, "main") as main:
                frame = Frame(self._i, time.time(), main.array)
                self._i += 1
                try:
                    with self._mapped(request, "lores") as lores:
                        # libcamera's YUV420 is I420 (U before V; OpenCV's YUV420p is YV12). Rows
                        # are `stride` >= width bytes, chroma rows stride/2: converting at the
                        # stride's width keeps the planes aligned, then the padding is cut off
                        frame.detect_image = cv2.cvtColor(lores.array, cv2.COLOR_YUV2BGR_I420)[:, :lores_w]
                except Exception as e:
                    frame.error = f"lores stream: {type(e).__name__}"  # the rule blanks and drops it
                try:
                    self._last = anonymize(frame)
                except BaseException:  # the rule itself failed: nothing raw leaves the callback
                    main.array[:] = 0
                    self._last = FrameResult(frame.index, frame.timestamp, None, "dropped", reason="error")
                    raise

        self.cam.pre_callback = pre_callback

    def __iter__(self):
        if self._anonymize is None:
            raise SourceError("picamera2 source used outside a frame loop (nothing anonymizes pre_callback)")
        self.cam.start()
        i = 0
        while True:
            img = self.cam.capture_array("main")  # already anonymized by pre_callback
            # the result is the latest callback's and may be one frame off the pixels; the pixels
            # are anonymized, covered or blanked either way
            res = self._last or FrameResult(i, time.time(), None, "dropped", reason="no pre_callback ran")
            yield Frame(i, time.time(), img, result=replace(res, image=None if res.image is None else img,
                                                             timings=dict(res.timings)))
            i += 1

    def close(self) -> None:
        self.cam.stop()
        self.cam.close()
