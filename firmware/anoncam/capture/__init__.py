"""Frame sources: image files, directories, video files, OpenCV capture (device index, URL,
GStreamer) and picamera2. Each yields Frame(index, timestamp, image); image is None for a frame that
could not be decoded (the frame loop drops and counts it). Sources only read: the frame loop
(anoncam/loop.py) anonymizes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import CameraConfig

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass
class Frame:
    index: int
    timestamp: float
    image: np.ndarray | None
    error: str = ""  # why the frame could not be read (in full); the frame loop drops it
    detect_image: np.ndarray | None = None  # a smaller picture of it to detect on (picamera2 lores)
    result: object | None = None  # the frame loop's rule already ran on it in the camera's callback


class SourceError(RuntimeError):
    """A source cannot be opened or read."""


def open_source(cfg: CameraConfig):
    """Build the source named by cfg.source."""
    spec = cfg.source
    if spec.startswith("sample:"):
        from .. import assets
        name = spec.split(":", 1)[1]
        media = assets.load_manifest("media")
        if name not in media:
            raise SourceError(f"unknown sample {name!r}; samples: {', '.join(sorted(media))}")
        path = assets.fetch(media[name])
        return _file_source(path, cfg)
    if spec == "picamera2":
        from .picamera2 import Picamera2Source
        return Picamera2Source(cfg)
    if spec.isdigit() or "://" in spec or spec.startswith("gst:"):
        from .opencv import OpenCVSource
        return OpenCVSource(spec, cfg)
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"source {spec!r}: no such file, directory or device")
    return _file_source(path, cfg)


def _file_source(path: Path, cfg: CameraConfig):
    from .files import ImagesSource, VideoFileSource
    if path.is_dir() or path.suffix.lower() in IMAGE_EXT:
        return ImagesSource(path, loop=cfg.loop, fps=cfg.fps)
    return VideoFileSource(path, loop=cfg.loop, fps=cfg.fps, realtime=cfg.realtime)
