"""Plane geometry shared by the face mask, the generator's crop and the attribute models' chips."""
from __future__ import annotations

import numpy as np


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift; never a reflection) taking src
    points to dst, in float64 (Umeyama's solution, in closed form for the plane)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    var = (a * a).sum()
    sxx = (a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1]).sum() / var
    sxy = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum() / var
    r = np.array([[sxx, -sxy], [sxy, sxx]])
    return np.concatenate([r, (md - r @ ms)[:, None]], 1)


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


def grown(poly: np.ndarray, scale: float) -> np.ndarray:
    """A polygon grown by `scale` about its centroid (the covered face oval, the identity's skin)."""
    poly = np.asarray(poly, np.float32)
    c = poly.mean(0)
    return c + (poly - c) * scale
