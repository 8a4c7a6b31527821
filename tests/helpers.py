"""Test helpers: a strong reference detector and the 'is this face covered' check."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
from anoncam import assets
from anoncam.detect.yunet import YuNet

REF_UPSCALE = 1.5
REF_SIZE = 960


def reference_detector() -> YuNet:
    """YuNet on the original frame at higher resolution than the pipeline (upscaled 1.5x, all tiles)."""
    return YuNet.from_file(assets.model_path("yunet"), threads=2, size=REF_SIZE, score_threshold=0.6, tiles=0)


def reference_boxes(det: YuNet, frame: np.ndarray) -> list[np.ndarray]:
    big = cv2.resize(frame, None, fx=REF_UPSCALE, fy=REF_UPSCALE, interpolation=cv2.INTER_CUBIC)
    return [d.box / REF_UPSCALE for d in det.detect(big, tiles="none")]


def video_reference(path: Path) -> list[list[np.ndarray]]:
    """Reference face boxes for every frame of a clip, cached by the clip's sha256."""
    key = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cache = assets.cache_dir() / "test-reference" / f"{key}_x{REF_UPSCALE}_{REF_SIZE}.npz"
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        counts, flat = data["counts"], data["boxes"]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return [list(flat[offsets[i]:offsets[i + 1]]) for i in range(len(counts))]
    det = reference_detector()
    boxes = [reference_boxes(det, f) for f in iter_frames(path)]
    cache.parent.mkdir(parents=True, exist_ok=True)
    flat = np.array([b for bs in boxes for b in bs], np.float32).reshape(-1, 4)
    tmp = cache.with_name(cache.stem + ".part.npz")
    np.savez(tmp, counts=np.array([len(b) for b in boxes]), boxes=flat)
    tmp.replace(cache)
    return boxes


def iter_frames(path: Path):
    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, f = cap.read()
            if not ok:
                return
            yield f
    finally:
        cap.release()


def uncovered_frames(original: Path, output: Path, boxes, solid_color=None) -> list[int]:
    """Indices of output frames in which a reference face is not covered."""
    bad = []
    for i, (a, b) in enumerate(zip(iter_frames(original), iter_frames(output))):
        if any(not is_covered(a, b, box, solid_color) for box in boxes[i]):
            bad.append(i)
    return bad


def read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def core(box: np.ndarray, shape, frac: float = 0.6) -> tuple[slice, slice]:
    """The inner part of a face box (eyes, nose, mouth)."""
    c = (box[:2] + box[2:]) / 2
    half = (box[2:] - box[:2]) / 2 * frac
    x0, y0 = np.maximum(0, np.floor(c - half)).astype(int)
    x1, y1 = np.minimum([shape[1], shape[0]], np.ceil(c + half)).astype(int)
    return slice(y0, y1), slice(x0, x1)


def detail(gray: np.ndarray) -> float:
    g = gray.astype(np.float32)
    hf = g - cv2.GaussianBlur(g, (0, 0), 1.5)
    return float(np.mean(hf * hf))


def is_covered(orig: np.ndarray, out: np.ndarray, box: np.ndarray, solid_color=None) -> bool:
    """True when the face's inner region in `out` has lost its detail (blur, solid, or a covered frame)."""
    ys, xs = core(box, orig.shape)
    a, b = orig[ys, xs], out[ys, xs]
    if a.size == 0:
        return True
    if solid_color is not None:
        close = np.all(np.abs(b.astype(int) - np.array(solid_color)) <= 16, axis=2)
        return float(close.mean()) >= 0.9
    ga = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)
    gb = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)
    return detail(gb) <= 0.2 * detail(ga) + 0.5
