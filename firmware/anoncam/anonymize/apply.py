"""Apply a method to each face through its feathered mask, then the static privacy zones."""
from __future__ import annotations

import secrets

import cv2
import numpy as np

from .. import registry
from ..config import AnonymizeConfig
from ..types import Face
from . import methods
from .masks import face_polygon, feathered, neighbourhood, roi_for


class Anonymizer:
    def __init__(self, cfg: AnonymizeConfig, precision: str = "int8", threads: int = 1):
        self.cfg = cfg
        self.precision, self.threads = precision, threads  # runtime.* for a method's own models
        self._zones_for: tuple | None = None
        self._zones: list[np.ndarray] = []
        self._ready: dict[str, object] = {}  # methods checked and prepared once, not per face
        # `generative`: the synthetic identity is a function of (key, track id). No owner keys yet:
        # a random key per run, kept in memory only (never logged or stored).
        self.key = secrets.token_bytes(32)

    def method_fn(self, name: str):
        if name in self._ready:
            return self._ready[name]
        if name not in methods.METHODS:
            raise RuntimeError(f"anonymization method {name!r} is not available; use one of {', '.join(methods.METHODS)}")
        fn = methods.METHODS[name]
        prepare = getattr(fn, "prepare", None)
        if prepare is not None:
            # load and verify its model files now (AssetError names path and sha256)
            prepare(use_net=self.cfg.generative_net, precision=self.precision, threads=self.threads)
        self._ready[name] = fn
        return fn

    def face(self, frame: np.ndarray, face: Face, live: bool = False) -> None:
        """Cover one face in place. `live`: a camera's frame (a method must not make it wait)."""
        method = face.method or self.cfg.method
        fn = self.method_fn(method)
        scale = getattr(self.cfg, registry.spec(method).mask_scale_field)
        poly = face_polygon(face.box, face.landmarks, scale)
        face_px = float(max(poly.max(0) - poly.min(0)))
        feather = self.cfg.feather * face_px
        roi = roi_for(poly, feather + 2, frame.shape)
        if roi is None:
            return
        x0, y0, x1, y1 = roi
        region = frame[y0:y1, x0:x1]
        m = feathered(poly, roi, feather)

        def draw():
            repl = fn(region, face_px / scale, sigma_frac=self.cfg.blur_sigma,
                      blocks=self.cfg.pixelate_blocks, color=self.cfg.solid_color,
                      face=face, frame=frame, roi_box=roi, key=self.key, mask_scale=scale,
                      min_face=self.cfg.generative_min_face, use_net=self.cfg.generative_net,
                      precision=self.precision, live=live)
            region[:] = cv2.blendLinear(repl, region, m, 1.0 - m)

        # a keyed identity's guard (generative): now and then the drawn face is read against the
        # original (copies in memory only); one that reads too close is drawn again (blurred)
        due = getattr(fn, "guard_due", None)
        if due is None or not due(self.key, face):
            draw()
            return
        before, local = neighbourhood(frame, face.landmarks)
        keep = region.copy()
        draw()
        after, _ = neighbourhood(frame, face.landmarks)
        if fn.guard(self.key, face, before, after, local, scale, live):
            region[:] = keep
            draw()

    def zones(self, frame: np.ndarray) -> None:
        if not self.cfg.privacy_zones:
            return
        h, w = frame.shape[:2]
        if self._zones_for != (h, w):
            self._zones = []
            for poly in self.cfg.privacy_zones:
                p = np.array(poly, np.float32)
                if p.max() <= 1.0:
                    p = p * [w, h]
                self._zones.append(np.round(p).astype(np.int32))
            self._zones_for = (h, w)
        cv2.fillPoly(frame, self._zones, self.cfg.solid_color)

    def cover_all(self, frame: np.ndarray) -> None:
        """Fail closed: nothing of the frame survives."""
        frame[:] = self.cfg.solid_color
