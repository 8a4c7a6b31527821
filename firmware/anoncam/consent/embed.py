"""Embeddings of one face on its 112x112 crop aligned on FaceMesh points (as attributes.Likeness
aligns): SFace for stills and enrollment checks, FaceRes (faceres.py, about a fifth of the cost) for
video tracks. The crop exists in memory only."""
from __future__ import annotations

import cv2
import numpy as np

from ..attributes import MESH_FOR_SFACE, SFACE_TEMPLATE, Likeness
from ..geometry import similarity

# MESH_FOR_SFACE's five points as pairs of mesh indices (a single point twice: its mean is itself)
_PAIRS = np.array([(g * 2)[:2] for g in MESH_FOR_SFACE])


def aligned_crop(img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    kps = landmarks[_PAIRS].mean(1).astype(np.float64)  # one gather (a check's crop runs in the loop)
    return cv2.warpAffine(img, similarity(kps, SFACE_TEMPLATE), (112, 112))


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian inside the aligned grey crop (eyes to mouth; low: blurred)."""
    g = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[36:100, 24:88]
    return float(cv2.Laplacian(g, cv2.CV_64F).var())


class Embedder:
    def __init__(self, threads: int = 1):
        from .faceres import FaceRes
        self.likeness = Likeness(threads)
        self.faceres = FaceRes(threads)

    def embed_video(self, crop: np.ndarray) -> np.ndarray:
        """FaceRes (1024-d, unit length): the check of a video track."""
        return self.faceres.embed_crop(crop)

    def embed_crop(self, crop: np.ndarray) -> np.ndarray:
        """SFace (128-d, unit length): stills, enrollment."""
        return self.likeness.embed_crop(crop)

    def embed(self, img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.embed_crop(aligned_crop(img, landmarks))
