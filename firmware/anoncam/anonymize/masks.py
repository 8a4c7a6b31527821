"""Face masks: the FaceMesh face oval, or an ellipse from the box; grown and feathered."""
from __future__ import annotations

import cv2
import numpy as np

from ..detect.facemesh import FACE_OVAL
from ..geometry import grown


def face_polygon(box: np.ndarray, landmarks: np.ndarray | None, scale: float) -> np.ndarray:
    """Outline of the area to cover, in frame pixels, grown by `scale` about its centre."""
    if landmarks is not None:
        return grown(landmarks[FACE_OVAL], scale)
    c = (box[:2] + box[2:]) / 2
    ax = (box[2:] - box[:2]) / 2 * scale * 1.1  # the ellipse must hold the box's corners' face area
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    return np.stack([c[0] + ax[0] * np.cos(t), c[1] + ax[1] * np.sin(t)], 1).astype(np.float32)


def roi_for(poly: np.ndarray, margin: float, shape: tuple) -> tuple[int, int, int, int] | None:
    h, w = shape[:2]
    x0, y0 = np.floor(poly.min(0) - margin).astype(int)
    x1, y1 = np.ceil(poly.max(0) + margin).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


def feathered(poly: np.ndarray, roi: tuple[int, int, int, int], feather_px: float) -> np.ndarray:
    """Float mask in the ROI, 1 inside the polygon; the soft edge lies outside it, so the polygon
    itself stays fully covered. Drawn at low resolution (a soft mask loses nothing) and scaled up."""
    x0, y0, x1, y1 = roi
    w, h = x1 - x0, y1 - y0
    f = min(1.0, 48.0 / max(w, h))
    sw, sh = max(2, round(w * f)), max(2, round(h * f))
    small = np.zeros((sh, sw), np.uint8)
    cv2.fillPoly(small, [np.round((poly - [x0, y0]) * [sw / w, sh / h] * 16).astype(np.int32)], 255,
                 shift=4)
    k = feather_px * f
    if k >= 1:
        grown = cv2.dilate(small, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * round(k / 2) + 1,) * 2))
        small = np.maximum(small, cv2.GaussianBlur(grown, (0, 0), max(0.5, k / 3)))
    mask = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    inside = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inside, [np.round(poly - [x0, y0]).astype(np.int32)], 1)
    np.maximum(mask, inside, out=mask)  # full cover inside the polygon, at full resolution
    return mask


def neighbourhood(img: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A copy of the face's surroundings out to one face size beyond its landmarks (what choosing
    its identity reads) and the landmarks in it."""
    x0, y0 = np.floor(pts.min(0) - (pts.max(0) - pts.min(0))).astype(int).clip(0)
    x1, y1 = np.ceil(pts.max(0) + (pts.max(0) - pts.min(0))).astype(int)
    return img[y0:y1, x0:x1].copy(), pts - np.float32([x0, y0])
