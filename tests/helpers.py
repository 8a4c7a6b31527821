"""Test helpers: a strong reference detector and the 'is this face covered' check."""
from __future__ import annotations

import hashlib
import os
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


def reference_rows(det: YuNet, frame: np.ndarray) -> list[np.ndarray]:
    """The reference faces as SFace alignment rows: x, y, w, h, five landmarks (x, y), score."""
    big = cv2.resize(frame, None, fx=REF_UPSCALE, fy=REF_UPSCALE, interpolation=cv2.INTER_CUBIC)
    rows = []
    for d in det.detect(big, tiles="none"):
        bx, kps = d.box / REF_UPSCALE, d.kps / REF_UPSCALE
        rows.append(np.array([bx[0], bx[1], bx[2] - bx[0], bx[3] - bx[1], *kps.reshape(-1), d.score], np.float32))
    return rows


def _per_frame(path: Path, name: str, width: int, compute) -> list[list[np.ndarray]]:
    """compute(reference detector, frame) -> that frame's rows (each `width` floats) for every frame
    of a clip, cached under the cache's test-reference/ by the clip's sha256 and `name`."""
    key = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cache = assets.cache_dir() / "test-reference" / f"{key}_{name}.npz"
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        counts, flat = data["counts"], data["boxes"]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return [list(flat[offsets[i]:offsets[i + 1]]) for i in range(len(counts))]
    det = reference_detector()
    rows = [compute(det, f) for f in iter_frames(path)]
    cache.parent.mkdir(parents=True, exist_ok=True)
    flat = np.array([r for rs in rows for r in rs], np.float32).reshape(-1, width)
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.part.npz")
    np.savez(tmp, counts=np.array([len(r) for r in rows]), boxes=flat)
    tmp.replace(cache)
    return [[r.astype(np.float32) for r in rs] for rs in rows]


def video_reference(path: Path) -> list[list[np.ndarray]]:
    """Reference face boxes for every frame of a clip, cached by the clip's sha256."""
    return _per_frame(path, f"x{REF_UPSCALE}_{REF_SIZE}", 4, reference_boxes)


def video_reference_rows(path: Path) -> list[list[np.ndarray]]:
    """The same reference faces for every frame of a clip, each as its SFace alignment row
    (reference_rows) followed by SFace's feature of that face in the original (128 floats), cached
    likewise (and by the SFace model's sha256): sface_cosine takes a frame's rows instead of
    detecting and reading the original's faces again."""
    rec = _sface_models()[1]

    def compute(det, frame):
        return [np.concatenate([r, rec.feature(rec.alignCrop(frame, r)).reshape(-1)])
                for r in reference_rows(det, frame)]
    sface = assets.load_manifest("models")["sface"].sha256[:8]
    return _per_frame(path, f"x{REF_UPSCALE}_{REF_SIZE}_sface{sface}", 15 + 128, compute)


def row_box(row: np.ndarray) -> np.ndarray:
    """x0, y0, x1, y1 of an alignment row."""
    return np.array([row[0], row[1], row[0] + row[2], row[1] + row[3]], np.float32)


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


# SFace's own same-person threshold (OpenCV zoo): cosine 0.363
SAME_PERSON = 0.363
_sface = {}


def _sface_models():
    if not _sface:
        _sface["det"] = reference_detector()
        _sface["rec"] = cv2.FaceRecognizerSF.create(str(assets.model_path("sface")), "")
    return _sface["det"], _sface["rec"]


def sface_cosine(orig: np.ndarray, out: np.ndarray, box: np.ndarray, rows: list | None = None
                 ) -> float | None:
    """SFace cosine between the face at `box` in the original and the same place in the output,
    both aligned with the reference detector's landmarks on the original (None: no reference face
    there to align with). `rows`: the original's reference faces if known (video_reference_rows,
    with the original's features), else the reference detector runs on it here."""
    det, rec = _sface_models()
    if rows is None:
        rows = reference_rows(det, orig)
    best, row = 0.3, None
    for r in rows:
        bx = row_box(r)
        ix = np.maximum(0, np.minimum(bx[2:], box[2:]) - np.maximum(bx[:2], box[:2])).prod()
        iou = ix / ((bx[2:] - bx[:2]).prod() + (box[2:] - box[:2]).prod() - ix)
        if iou > best:
            best, row = iou, r
    if row is None:
        return None
    row, known = row[:15], row[15:]  # known: the original's feature (video_reference_rows)
    fa = known if len(known) else rec.feature(rec.alignCrop(orig, row)).reshape(-1)
    fb = rec.feature(rec.alignCrop(out, row)).reshape(-1)
    return float(fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb) + 1e-12))


def is_hidden(orig: np.ndarray, out: np.ndarray, box: np.ndarray, solid_color=None,
              same_person: float = SAME_PERSON) -> bool:
    """Covered (detail gone: blur, pixelate, solid, a covered frame) or replaced (a synthetic face
    that SFace no longer matches to the original person, cosine below `same_person`). A raw face
    passes neither."""
    if is_covered(orig, out, box, solid_color):
        return True
    cos = sface_cosine(orig, out, box)
    return cos is not None and cos < same_person


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


def blind(pipe, ranges) -> None:
    """Test hook: on detection frames in the [start, end) `ranges` the detector of `pipe` is not run
    and returns no face, as if it had missed every face (tracking and FaceMesh still run)."""
    real = pipe.detect

    def detect(frame, index, detect_frame=None, still=False):
        if (still or index % pipe.cfg.detect.every_n == 0) and any(a <= index < b for a, b in ranges):
            return []
        return real(frame, index, detect_frame, still)

    pipe.detect = detect
