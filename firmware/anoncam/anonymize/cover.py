"""The covering methods without models; each maps a face ROI (BGR uint8) to its replacement of the
same size. Registered by name in methods.py (also generative's fallback)."""
from __future__ import annotations

import cv2
import numpy as np


def blur(roi: np.ndarray, face_px: float, sigma_frac: float = 0.22, **_) -> np.ndarray:
    """Strong Gaussian blur (sigma a fraction of the face size), done at low resolution for speed."""
    h, w = roi.shape[:2]
    sigma = max(1.0, sigma_frac * face_px)
    f = min(1.0, 3.0 / sigma)  # at this scale the blur needs sigma ~3 px
    sw, sh = max(2, round(w * f)), max(2, round(h * f))
    small = cv2.resize(roi, (sw, sh), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma * f, borderType=cv2.BORDER_REPLICATE)
    small = cv2.GaussianBlur(small, (0, 0), sigma * f, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def pixelate(roi: np.ndarray, face_px: float, blocks: int = 8, **_) -> np.ndarray:
    h, w = roi.shape[:2]
    cell = max(2.0, face_px / blocks)
    sw, sh = max(1, round(w / cell)), max(1, round(h / cell))
    small = cv2.resize(roi, (sw, sh), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def solid(roi: np.ndarray, face_px: float, color=(40, 40, 40), **_) -> np.ndarray:
    out = np.empty_like(roi)
    out[:] = color
    return out
