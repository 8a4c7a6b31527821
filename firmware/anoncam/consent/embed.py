"""SFace embedding of one face, aligned on its FaceMesh points as attributes.Likeness aligns; the
crop exists in memory only."""
from __future__ import annotations

import cv2
import numpy as np

from ..attributes import MESH_FOR_SFACE, SFACE_TEMPLATE, Likeness
from ..geometry import similarity


def aligned_crop(img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    kps = np.array([landmarks[list(i)].mean(0) for i in MESH_FOR_SFACE], np.float64)
    return cv2.warpAffine(img, similarity(kps, SFACE_TEMPLATE), (112, 112))


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian inside the aligned grey crop (eyes to mouth; low: blurred)."""
    g = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[36:100, 24:88]
    return float(cv2.Laplacian(g, cv2.CV_64F).var())


class Embedder:
    def __init__(self, threads: int = 1):
        self.net = Likeness(threads).net

    def embed_crop(self, crop: np.ndarray) -> np.ndarray:
        x = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32).transpose(2, 0, 1)[None]
        f = self.net.run(np.ascontiguousarray(x))[0].reshape(-1)
        return f / (np.linalg.norm(f) + 1e-12)

    def embed(self, img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.embed_crop(aligned_crop(img, landmarks))
