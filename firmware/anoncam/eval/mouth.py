"""Is the expression kept? Mouth open/closed and smile, read on the original and the anonymized face.

The generative method renders on FaceMesh's landmarks, so a FaceMesh reading of its output is the
method's own model reading its own geometry back (reported as `mesh_*`, not as evidence). The
independent reading is face-api.js's FaceLandmark68Net (@vladmandic/face-api@1.7.15, npm, MIT; TFJS
weights; dlib/iBUG 68-point layout), which nothing in anoncam's methods uses; and fer's `happy` class
(the eval's expression model) as a second, appearance-based read of a smile.

FaceLandmark68Net follows src/faceFeatureExtractor and src/faceLandmarkNet of that package: four
dense blocks (the first starts with a 3x3/2 conv, the others with a separable 3x3/2 conv; then three
separable 3x3 convs, each block's outputs summed, ReLU), avgpool 7/2, fc 256 -> 136 (x, y in 0..1
of the padded square input). Input: the face box padded to a square with zeros, centred, resized to
112x112, RGB, (x - [122.782, 117.001, 104.298]) / 255. Built as an ONNX graph in memory.

Readings from the 68 points, in the frame of the eye line (so a tilted head reads the same):
- open: inner-lip gap (mean of 61-67, 62-66, 63-65) over the mouth's width (48-54) >= OPEN_RATIO;
- smile: the mouth corners (48, 54) lifted above the middle of the mouth's slit (between the inner
  lip centres 62 and 66) by >= SMILE_LIFT of the mouth's width, or the mouth >= SMILE_WIDTH x the
  distance of the eye centres (a wide, closed smile lifts the corners little).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from .faceapi import read_tfjs, tfjs_session  # noqa: F401 -- read_tfjs re-exported for the tests
from .metrics import EXPRESSIONS

SIZE = 112
MEAN_RGB = np.array([122.782, 117.001, 104.298], np.float32)
MANIFEST, WEIGHTS = "faceapi_landmarks_manifest", "faceapi_landmarks"  # models/manifest.yaml
OPEN_RATIO = 0.12   # inner-lip gap / mouth width: open at or above
SMILE_LIFT = 0.06   # corner lift above the lips' mid-line / mouth width: smiling at or above
SMILE_WIDTH = 0.95  # or mouth width / eye-centre distance at or above
FER_HAPPY = EXPRESSIONS.index("happy")
# FaceMesh indices for the same reading on the method's own landmarks
MESH = {"corners": (61, 291), "upper": 13, "lower": 14, "gap": ((82, 87), (13, 14), (312, 317)),
        "eyes": ((33, 133), (362, 263))}


def _const(inits: list, a: np.ndarray, name: str) -> str:
    inits.append(numpy_helper.from_array(np.ascontiguousarray(a.astype(np.float32)), name))
    return name


def build_onnx(w: dict[str, np.ndarray]):
    """FaceLandmark68Net as an ONNX graph: x [N,3,112,112] normalized RGB -> y [N,136]."""
    nodes, inits = [], []
    n = [0]

    def op(kind, inputs, **attrs):
        n[0] += 1
        out = f"{kind}_{n[0]}"
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def sep(x, p, stride):
        dw, pw, b = w[f"{p}/depthwise_filter"], w[f"{p}/pointwise_filter"], w[f"{p}/bias"]
        c = dw.shape[2]
        y = op("Conv", [x, _const(inits, dw.transpose(2, 3, 0, 1), f"{p}/dw")], kernel_shape=[3, 3],
               strides=[stride, stride], auto_pad="SAME_UPPER", group=c)
        return op("Conv", [y, _const(inits, pw.transpose(3, 2, 0, 1), f"{p}/pw"), _const(inits, b, f"{p}/b")],
                  kernel_shape=[1, 1])

    x = "x"
    for d in range(4):
        p = f"dense{d}"
        if d == 0:
            c0 = op("Conv", [x, _const(inits, w[f"{p}/conv0/filters"].transpose(3, 2, 0, 1), f"{p}/c0"),
                             _const(inits, w[f"{p}/conv0/bias"], f"{p}/c0b")],
                    kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
        else:
            c0 = sep(x, f"{p}/conv0", 2)
        o1 = op("Relu", [c0])
        o2 = sep(o1, f"{p}/conv1", 1)
        o3 = sep(op("Relu", [op("Add", [o1, o2])]), f"{p}/conv2", 1)
        s3 = op("Add", [o1, op("Add", [o2, o3])])
        o4 = sep(op("Relu", [s3]), f"{p}/conv3", 1)
        x = op("Relu", [op("Add", [s3, o4])])
    x = op("AveragePool", [x], kernel_shape=[7, 7], strides=[2, 2])
    x = op("Flatten", [x])
    nodes.append(helper.make_node("Gemm", [x, _const(inits, w["fc/weights"], "fc"), _const(inits, w["fc/bias"], "fcb")],
                                  ["y"]))
    graph = helper.make_graph(nodes, "faceapi_landmark68", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 136])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


class Landmarks68:
    """face-api.js's 68-point landmark net; `run(img, box)` -> (68, 2) image px."""

    def __init__(self, threads: int = 1):
        self.session = tfjs_session(MANIFEST, WEIGHTS, build_onnx, threads)

    def run(self, img: np.ndarray, box: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        side = max(x1 - x0, y1 - y0)
        if side < 4:
            raise ValueError(f"face box too small for landmarks: {box}")
        # the box padded to a centred square (face-api's padToSquare, zeros), resized to 112
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        s = SIZE / side
        m = np.float32([[s, 0, SIZE / 2 - s * cx], [0, s, SIZE / 2 - s * cy]])
        # only the box itself is read (outside it: zeros, as face-api's extracted face tensor)
        bx0, by0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        bx1, by1 = min(img.shape[1], int(np.ceil(x1))), min(img.shape[0], int(np.ceil(y1)))
        inner = np.zeros(img.shape[:2], np.uint8)
        inner[by0:by1, bx0:bx1] = 1
        crop = cv2.warpAffine(img, m, (SIZE, SIZE), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        keep = cv2.warpAffine(inner, m, (SIZE, SIZE), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
        crop = crop * keep[..., None]
        x = ((crop[..., ::-1].astype(np.float32) - MEAN_RGB) / 255.0).transpose(2, 0, 1)[None]
        y = self.session.run(None, {"x": np.ascontiguousarray(x)})[0].reshape(68, 2) * SIZE
        return ((y - [m[0, 2], m[1, 2]]) / s).astype(np.float32)


@dataclass
class MouthState:
    open: bool
    smile: bool
    gap: float    # inner-lip gap / mouth width
    lift: float   # corner lift above the middle of the slit / mouth width
    width: float  # mouth width / eye-centre distance


def _state(left, right, upper, lower, gap, eye_l, eye_r) -> MouthState:
    """Mouth readings in the eye line's frame (all 2-vectors in image px)."""
    e = np.asarray(eye_r, np.float64) - np.asarray(eye_l, np.float64)
    iod = max(float(np.hypot(*e)), 1e-6)
    ex = e / iod
    ey = np.array([-ex[1], ex[0]])  # "down" in the face's frame
    width = max(abs(float(np.dot(np.asarray(right) - np.asarray(left), ex))), 1e-6)
    mid = (np.dot(upper, ey) + np.dot(lower, ey)) / 2  # the mouth's slit (inner lips), down positive
    corners = (np.dot(left, ey) + np.dot(right, ey)) / 2
    g = float(gap) / width
    lift = float(mid - corners) / width
    wr = width / iod
    return MouthState(open=g >= OPEN_RATIO, smile=lift >= SMILE_LIFT or wr >= SMILE_WIDTH,
                      gap=g, lift=lift, width=wr)


def state68(p: np.ndarray) -> MouthState:
    """From 68 points (iBUG layout, 0-based)."""
    gap = np.mean([np.linalg.norm(p[a] - p[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
    return _state(p[48], p[54], p[62], p[66], gap, p[36:42].mean(0), p[42:48].mean(0))


def state_mesh(p: np.ndarray) -> MouthState:
    """The same from FaceMesh's 468 points (the generative method's own landmarks)."""
    gap = np.mean([np.linalg.norm(p[a] - p[b]) for a, b in MESH["gap"]])
    (l0, l1), (r0, r1) = MESH["eyes"]
    a, b = MESH["corners"]
    return _state(p[a], p[b], p[MESH["upper"]], p[MESH["lower"]], gap, (p[l0] + p[l1]) / 2, (p[r0] + p[r1]) / 2)


def happy(expression: np.ndarray) -> bool:
    """fer reads `happy` as the most likely class."""
    return int(np.argmax(expression)) == FER_HAPPY


def agreement(pairs: list[tuple[MouthState, MouthState]]) -> dict:
    """Shares of faces whose original and anonymized readings agree: open, smile, both."""
    if not pairs:
        return {"open": None, "smile": None, "both": None, "faces": 0}
    op = [o.open == a.open for o, a in pairs]
    sm = [o.smile == a.smile for o, a in pairs]
    return {"open": float(np.mean(op)), "smile": float(np.mean(sm)),
            "both": float(np.mean([x and y for x, y in zip(op, sm)])), "faces": len(pairs),
            "original_open": int(sum(o.open for o, _ in pairs)), "original_smile": int(sum(o.smile for o, _ in pairs))}
