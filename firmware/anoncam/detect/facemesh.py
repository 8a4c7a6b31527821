"""MediaPipe FaceMesh: 468 landmarks per face, used for a face-shaped mask and to follow a face
between detections. Input: a 192x192 RGB crop in [0, 1], 1.5x the face, rotated by the eye line."""
from __future__ import annotations

import cv2
import numpy as np

from ..backends import Backend

SIZE = 192
# Face silhouette (MediaPipe FACEMESH_FACE_OVAL), in order around the face.
FACE_OVAL = np.array([10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
                      377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109])
RIGHT_EYE, LEFT_EYE = 33, 263  # outer eye corners (subject's right, left)


class FaceMesh:
    def __init__(self, backend: Backend, score_threshold: float = 0.5):
        self.backend = backend
        self.score_threshold = score_threshold

    @staticmethod
    def region(center: np.ndarray, size: float, angle: float) -> np.ndarray:
        """2x3 affine from the frame to the 192x192 crop: a size x size square about center, rotated."""
        s = SIZE / size
        m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), np.degrees(angle), s)
        m[:, 2] += SIZE / 2 - center
        return m

    @staticmethod
    def region_from_box(box: np.ndarray, kps: np.ndarray | None) -> tuple[np.ndarray, float, float]:
        center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)
        size = 1.5 * max(box[2] - box[0], box[3] - box[1])
        angle = 0.0
        if kps is not None:
            d = kps[1] - kps[0]  # right eye -> left eye, in the image
            angle = float(np.arctan2(d[1], d[0]))
        return center, size, angle

    @staticmethod
    def region_from_landmarks(pts: np.ndarray) -> tuple[np.ndarray, float, float]:
        d = pts[LEFT_EYE] - pts[RIGHT_EYE]
        angle = float(np.arctan2(d[1], d[0]))
        lo, hi = pts.min(0), pts.max(0)
        center = (lo + hi) / 2
        size = 1.5 * float(max(hi - lo))
        return center.astype(np.float32), size, angle

    def run(self, frame: np.ndarray, center: np.ndarray, size: float, angle: float
            ) -> tuple[np.ndarray | None, float]:
        """Landmarks (468x2, frame pixels) and face score; landmarks None below the threshold."""
        return self.infer(*self.prepare(frame, center, size, angle))

    def prepare(self, frame: np.ndarray, center: np.ndarray, size: float, angle: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """The network input (1x192x192x3 RGB float) and its affine from the frame; no model state,
        so another thread may prepare it ahead."""
        m = self.region(center, size, angle)
        crop = cv2.warpAffine(frame, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255.0, m

    def infer(self, x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray | None, float]:
        outs = self.backend.run(x)
        lm, flag = (outs[0], outs[1]) if outs[0].size > outs[1].size else (outs[1], outs[0])
        score = float(1 / (1 + np.exp(-float(flag.reshape(-1)[0]))))
        if score < self.score_threshold:
            return None, score
        pts = lm.reshape(-1, 3)[:, :2]
        inv = cv2.invertAffineTransform(m)
        pts = pts @ inv[:, :2].T + inv[:, 2]
        return pts.astype(np.float32), score
