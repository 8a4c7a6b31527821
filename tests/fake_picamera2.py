"""A stand-in for the `picamera2` module (Raspberry Pi only) with the part of its interface anoncam's
adapter uses, fed with real frames. Buffers are laid out as libcamera's: main RGB888 (BGR bytes)
and lores YUV420 planar, each row padded to a multiple of ALIGN bytes (chroma rows: half the luma
stride). As in picamera2, pre_callback runs on each request before anything else sees it; the main
buffer after it is what an encoder or preview gets (kept in `delivered`), and capture_array returns
a copy of it. Install with monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2)."""
from __future__ import annotations

import copy

import cv2
import numpy as np

ALIGN = 64
PAD = 0xA5  # what the padding bytes hold


def _stride(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class CompletedRequest:
    def __init__(self, config: dict, buffers: dict[str, np.ndarray]):
        self.config, self.buffers = config, buffers


class MappedArray:
    """picamera2.MappedArray: `.array` is a writable view into the request's buffer (main: h x w x 3
    without the row padding; YUV420: (h * 3 / 2) x stride, padding included)."""

    def __init__(self, request: CompletedRequest, stream: str, reshape: bool = True, write: bool = True):
        self.request, self.stream, self.array = request, stream, None

    def __enter__(self) -> MappedArray:
        cfg, buf = self.request.config[self.stream], self.request.buffers[self.stream]
        (w, h), stride = cfg["size"], cfg["stride"]
        if cfg["format"] == "RGB888":
            self.array = buf.reshape(h, stride)[:, :w * 3].reshape(h, w, 3)
        elif cfg["format"] == "YUV420":
            self.array = buf.reshape(h * 3 // 2, stride)
        else:
            raise RuntimeError(f"stand-in: format {cfg['format']} not supported")
        assert np.shares_memory(self.array, buf)
        return self

    def __exit__(self, *exc) -> None:
        self.array = None


def pack_yuv420(bgr: np.ndarray, stride: int) -> np.ndarray:
    """A BGR image as a libcamera YUV420 buffer with rows `stride` bytes long."""
    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    buf = np.full(stride * h * 3 // 2, PAD, np.uint8)
    buf[:stride * h].reshape(h, stride)[:, :w] = i420[:w * h].reshape(h, w)
    q, cs = w * h // 4, stride // 2
    for k in range(2):  # U then V
        plane = buf[stride * h + k * cs * h // 2:][:cs * h // 2].reshape(h // 2, cs)
        plane[:, :w // 2] = i420[w * h + k * q:][:q].reshape(h // 2, w // 2)
    return buf


class Picamera2:
    frames: list[np.ndarray] = []  # BGR source frames (set by the test), resized to the main size

    def __init__(self):
        self.pre_callback = None
        self.camera_config: dict | None = None
        self.started = False
        self.delivered: list[np.ndarray] = []  # main buffers as an encoder or preview gets them
        self._n = 0

    def create_video_configuration(self, main: dict, lores: dict, **_kw) -> dict:
        return {"main": dict(main), "lores": dict(lores)}

    def configure(self, config: dict) -> None:
        cfg = copy.deepcopy(config)
        w = cfg["main"]["size"][0]
        cfg["main"]["stride"] = _stride(w * 3)
        cfg["lores"]["stride"] = _stride(cfg["lores"]["size"][0])
        self.camera_config = cfg

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        pass

    def _request(self) -> CompletedRequest:
        if self._n >= len(self.frames):
            raise RuntimeError("stand-in: out of frames")
        cfg = self.camera_config
        frame, self._n = self.frames[self._n], self._n + 1
        (w, h), stride = cfg["main"]["size"], cfg["main"]["stride"]
        main = np.full(stride * h, PAD, np.uint8)
        main.reshape(h, stride)[:, :w * 3] = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA).reshape(h, -1)
        (lw, lh), ls = cfg["lores"]["size"], cfg["lores"]["stride"]
        lores = pack_yuv420(cv2.resize(frame, (lw, lh), interpolation=cv2.INTER_AREA), ls)
        return CompletedRequest(cfg, {"main": main, "lores": lores})

    def capture_array(self, name: str = "main") -> np.ndarray:
        assert self.started and name == "main"
        req = self._request()
        if self.pre_callback is not None:
            self.pre_callback(req)
        with MappedArray(req, "main") as m:
            self.delivered.append(m.array.copy())
        return self.delivered[-1].copy()
