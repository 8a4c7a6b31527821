"""Image files, directories of images, and video files (optionally looped and paced as a camera)."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from . import IMAGE_EXT, Frame, SourceError


def jpeg_end(data: bytes) -> int | None:
    """The length of the JPEG at the start of `data` up to and including its EOI marker, or None when
    it is cut off before one. Walks the marker segments (so an EXIF thumbnail's EOI is skipped) and the
    entropy-coded data after each SOS (where 0xFF is followed only by 0x00 or a restart marker), so
    trailing data after the EOI (a motion photo's video) is found and left out."""
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            return None  # not a marker where one must be: damaged
        m = data[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0xD9:
            return i + 2
        if m == 0x01 or 0xD0 <= m <= 0xD7:  # markers without a length
            i += 2
            continue
        if i + 3 >= n:
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if m == 0xDA:  # SOS: scan entropy-coded data up to the next marker
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return None
                if data[j + 1] == 0x00 or 0xD0 <= data[j + 1] <= 0xD7:
                    i = j + 2
                    continue
                i = j
                break
    return None


MAX_PIXELS = 1 << 28  # 268 MP (805 MB decoded): a still over it is refused before it is decoded
SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # JPEG start-of-frame markers (not DHT, JPG, DAC)


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame header; None for other formats or
    when the header is not found (OpenCV's own limit of 2^30 pixels still applies then)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    i, n = 2, len(data)
    while data[:2] == b"\xff\xd8" and i + 9 <= n and data[i] == 0xFF:
        m = data[i + 1]
        if m in SOF:
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if m == 0xFF or m == 0x01 or 0xD0 <= m <= 0xD9 or m == 0xDA:  # fill, no length, or the scan: stop
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to BGR uint8; raise ValueError with the reason when it cannot be. A PNG or
    JPEG declaring more than MAX_PIXELS is refused unread (a small file can declare gigabytes). A JPEG
    must be complete (libjpeg decodes a cut-off one with a warning and grey rows); data after its end
    (a motion photo's video) is left out."""
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{path}: empty file")
    size = declared_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ValueError(f"{path}: {size[0]}x{size[1]} pixels, over the {MAX_PIXELS / 1e6:.0f} MP limit for a still")
    if data[:2] == b"\xff\xd8":
        end = jpeg_end(data)
        if end is None:
            raise ValueError(f"{path}: truncated JPEG (no end marker)")
        data = data[:end]
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:  # a codec that raises instead of returning None (e.g. over the pixel limit)
        raise ValueError(f"{path}: not a readable image ({str(e).strip().splitlines()[-1][:200]})") from None
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    return img


def still(path: Path):
    """One image file as a one-frame source; an unreadable file raises ValueError (read_image)."""
    yield Frame(0, time.time(), read_image(path))


def list_images(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXT and p.is_file())
    return [path]


class ImagesSource:

    def __init__(self, path: Path, loop: bool = False, fps: float | None = None):
        self.files = list_images(path)
        if not self.files:
            raise SourceError(f"{path}: no images")
        # An unreadable image is a dropped frame in a stream that has good ones; one image, or a folder
        # with no readable image (which would loop as dropped frames forever), is an error at start.
        errors = []
        for p in self.files:
            try:
                read_image(p)
                break
            except (OSError, ValueError) as e:
                errors.append(str(e))
        else:
            if not path.is_dir():
                raise SourceError(f"source {errors[0]}")
            raise SourceError(f"source {path}: none of its {len(self.files)} image(s) can be read "
                              f"(first: {errors[0]})")
        self.loop, self.fps = loop, fps or 1.0

    def __iter__(self):
        i = 0
        while True:
            for p in self.files:
                try:
                    img, err = read_image(p), ""
                except (OSError, ValueError) as e:
                    img, err = None, str(e)
                yield Frame(i, time.time(), img, error=err)
                i += 1
            if not self.loop:
                return

    def close(self) -> None:
        pass


MAX_MISSES = 25  # undecodable frames in a row inside a stream before it counts as ended


def read_frames(cap, first: np.ndarray, expected: int):
    """The frames of an open capture, `first` already read; an undecodable frame inside the stream
    comes as None (up to MAX_MISSES in a row), but only once a later frame decodes: failed reads at
    the end are the end, so a file gives exactly the frames it decodes to, whatever the container's
    frame count estimates (a variable-frame-rate clip's guess from duration x rate can be higher).
    Reading stops at the first failure at or past `expected` (none past the container's count)."""
    yield first
    i, misses = 1, 0
    while True:
        ok, frame = cap.read()
        if ok and frame is not None:
            for _ in range(misses):
                yield None
            misses = 0
            yield frame
        elif i >= expected or misses + 1 >= MAX_MISSES:
            return
        else:
            misses += 1
        i += 1


class VideoFileSource:
    """A video file, the one reader for the daemon, `anoncam anonymize`, bench and eval. An undecodable
    frame inside the stream keeps its place as a frame without an image (see read_frames).
    `threads`: FFmpeg decoder threads (default: its own choice)."""


    def __init__(self, path: Path, loop: bool = False, fps: float | None = None, realtime: bool = False,
                 threads: int | None = None):
        self.path = path
        self.cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, threads] if threads else [])
        if not self.cap.isOpened():
            raise SourceError(f"{path}: cannot open as video")
        native = self.cap.get(cv2.CAP_PROP_FPS)
        self.native_fps = native or 25.0  # the container's rate: a file written from it keeps it
        self.fps = fps or (native if native and 1 <= native <= 240 else 25.0)
        self.frame_count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.loop, self.realtime = loop, realtime or fps is not None
        ok, first = self.cap.read()
        if not ok or first is None:
            self.cap.release()
            raise SourceError(f"{path}: no decodable video frames")
        self._first = first
        self.size = (first.shape[1], first.shape[0])
        self.waited_s = 0.0

    def __iter__(self):
        i, start, first = 0, time.monotonic(), self._first
        while first is not None:
            for img in read_frames(self.cap, first, self.frame_count):
                self.waited_s = 0.0
                if self.realtime:
                    delay = start + i / self.fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                        self.waited_s = delay  # pacing, not decoding: the frame loop leaves it out of 'decode'
                yield Frame(i, time.time(), img, error="" if img is not None else "undecodable frame")
                i += 1
            if not self.loop:
                return
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, first = self.cap.read()
            first = first if ok else None

    def close(self) -> None:
        self.cap.release()
