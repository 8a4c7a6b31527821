"""Face tracking: stable ids across frames and no gap between detections.

Greedy IoU matching with a constant-velocity box. A track that loses its detection keeps being
covered at its predicted box, enlarged a little more each frame, for `coast_frames` frames. On frames
without a detector run, every track is predicted (and later refined by FaceMesh in the pipeline).
Small and dependency-free on purpose: faces are few per frame, and the rule that matters here
(coast, grow, then drop) is ours, not a general multi-object tracker's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

import numpy as np

from .detect import iou
from .types import Detection


@dataclass
class Track:
    id: int
    box: np.ndarray
    score: float
    kps: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    misses: int = 0          # frames in a row in which neither the detector nor FaceMesh saw it
    seen: bool = True        # seen in the current frame (detector or mesh)
    detection: Detection | None = None  # the detection matched in the current frame

    def cover_box(self, grow: float) -> np.ndarray:
        """The predicted box, enlarged for each missed detection."""
        if self.misses == 0:
            return self.box
        f = 1 + grow * self.misses
        c = (self.box[:2] + self.box[2:]) / 2
        half = (self.box[2:] - self.box[:2]) / 2 * f
        return np.concatenate([c - half, c + half]).astype(np.float32)


class Tracker:
    def __init__(self, iou_threshold: float = 0.2, coast_frames: int = 15, coast_grow: float = 0.08):
        self.iou_threshold = iou_threshold
        self.coast_frames = coast_frames
        self.coast_grow = coast_grow
        self.tracks: list[Track] = []
        self._ids = count(1)

    def reset(self) -> None:
        self.tracks = []

    def predict(self) -> None:
        for t in self.tracks:
            if t.misses:
                t.velocity = (t.velocity * 0.85).astype(np.float32)  # a lost face slows down
            t.box = (t.box + t.velocity).astype(np.float32)
            t.seen = False
            t.detection = None

    def update(self, dets: list[Detection] | None) -> list[Track]:
        """Advance one frame. dets=None: the detector did not run on this frame (prediction only)."""
        self.predict()
        if dets is None:
            return self.tracks
        pairs = sorted(((iou(t.box, d.box), ti, di) for ti, t in enumerate(self.tracks)
                        for di, d in enumerate(dets)), reverse=True)
        used_t, used_d = set(), set()
        for v, ti, di in pairs:
            if v < self.iou_threshold:
                break
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            self.observe(self.tracks[ti], dets[di].box, dets[di].score, dets[di].kps)
            self.tracks[ti].detection = dets[di]
        for ti, t in enumerate(self.tracks):
            if ti not in used_t:
                t.misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.coast_frames]
        for di, d in enumerate(dets):
            if di not in used_d:
                self.tracks.append(Track(id=next(self._ids), box=d.box.astype(np.float32), score=d.score,
                                         kps=d.kps, detection=d))
        return self.tracks

    @staticmethod
    def observe(t: Track, box: np.ndarray, score: float, kps: np.ndarray | None) -> None:
        """A new sighting of a track (detector or FaceMesh): update box and smoothed velocity."""
        step = box - (t.box - t.velocity)
        t.velocity = (0.5 * t.velocity + 0.5 * step).astype(np.float32)
        t.box = box.astype(np.float32)
        t.score = score
        if kps is not None:
            t.kps = kps
        t.seen = True
        t.misses = 0
