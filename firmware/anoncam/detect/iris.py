"""MediaPipe Iris: eyelids and iris per eye, from a 64x64 crop about the eye's corners (models/iris).
Used by `generative` for one number of expression per eye: how far it is open (shut eyes are drawn
shut). Where the iris looks is not used: drawing it made the faces easier to re-identify (README,
Realism, tenth round)."""
from __future__ import annotations

import threading
from typing import NamedTuple

import cv2
import numpy as np

from ..backends import Backend

SIZE = 64
ROI_SCALE = 2.3  # the crop's side over the corners' larger extent (MediaPipe's IrisLandmarkLandmarksToRoi)
# per eye: FaceMesh's outer and inner corner, and whether the model sees it mirrored
EYES = (((33, 133), False), ((263, 362), True))
LOWER, UPPER = slice(0, 9), slice(9, 16)  # the model's eyelid points: corner to corner, then the upper lid


class Eye(NamedTuple):
    opening: float  # widest gap between the lids over the eye's width (0: closed)


class Iris:
    def __init__(self, backend: Backend):
        self.backend = backend
        self._lock = threading.Lock()  # one interpreter, used by the frame loop and the choosing worker

    @staticmethod
    def region(outer: np.ndarray, inner: np.ndarray, mirror: bool) -> np.ndarray:
        """2x3 affine from the image to the 64x64 input about an eye's corners (mirrored if asked)."""
        c = (outer + inner) / 2
        d = inner - outer if not mirror else outer - inner
        side = ROI_SCALE * float(max(abs(d[0]), abs(d[1])))
        m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), float(np.degrees(np.arctan2(d[1], d[0]))),
                                    SIZE / max(side, 1e-3))
        m[:, 2] += SIZE / 2 - c
        if mirror:
            m = np.float64([[-1, 0, SIZE - 1], [0, 1, 0]]) @ np.vstack([m, [0, 0, 1]])
        return m

    def eye(self, img: np.ndarray, outer: np.ndarray, inner: np.ndarray, mirror: bool) -> np.ndarray:
        """The 16 eyelid points in image pixels of the eye with these corners."""
        m = self.region(outer.astype(np.float64), inner.astype(np.float64), mirror)
        crop = cv2.warpAffine(img, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        x = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255.0
        with self._lock:
            outs = self.backend.run(x)
        lids = max(outs, key=lambda o: o.size)  # 71 eye-region points; the 5 iris points are not used
        inv = cv2.invertAffineTransform(m)
        return (lids[..., :16 * 3].reshape(-1, 3)[:, :2] @ inv[:, :2].T + inv[:, 2]).astype(np.float32)

    def eyes(self, img: np.ndarray, pts: np.ndarray) -> tuple[Eye, Eye]:
        """Both eyes (FaceMesh's order: the image-left eye first) of the face whose 468 landmarks
        `pts` are in `img`'s pixels."""
        out = [state(self.eye(img, pts[o], pts[i], mirror), pts[o], pts[i]) for (o, i), mirror in EYES]
        return out[0], out[1]


def state(lids: np.ndarray, outer: np.ndarray, inner: np.ndarray) -> Eye:
    """An eye's opening from its 16 eyelid points (the model's order) and its corners."""
    ax = inner - outer
    w = max(float(np.linalg.norm(ax)), 1e-3)
    ax = ax / w
    up = np.float32([ax[1], -ax[0]])
    if up[1] > 0:
        up = -up
    lower, upper = lids[LOWER][1:-1], lids[UPPER]
    # the gap over the eye's length: the upper lid's height over the lower lid's at the same place
    t = lambda p: (p - outer) @ ax  # noqa: E731
    h = lambda p: (p - outer) @ up  # noqa: E731
    xs = np.linspace(0.2, 0.8, 7) * w
    lo = np.interp(xs, *_sorted(t(lower), h(lower)))
    hi = np.interp(xs, *_sorted(t(upper), h(upper)))
    return Eye(float(max(0.0, (hi - lo).max()) / w))


def _sorted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    o = np.argsort(x)
    return x[o], y[o]
