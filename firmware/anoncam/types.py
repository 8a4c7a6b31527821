"""Plain data passed between stages."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detection:
    box: np.ndarray            # x1, y1, x2, y2 in frame pixels (float32)
    score: float
    kps: np.ndarray | None = None  # 5x2: right eye, left eye, nose, right mouth, left mouth
    mesh_input: tuple | None = None  # FaceMesh input for this box, prepared ahead (memory only)

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass
class Face:
    """One face to anonymize in this frame (a live or coasting track)."""
    track_id: int
    box: np.ndarray
    detected: bool                     # the detector (or mesh) saw it in this frame
    landmarks: np.ndarray | None = None  # 468x2 FaceMesh points in frame pixels
    method: str | None = None          # set by the decision step; None = leave visible (consent)
    consent_name: str | None = None    # the enrolled name of a visible face, only with consent.publish_names
    still: bool = False                # an independent photo (no track history)


@dataclass
class FrameResult:
    """An anonymized frame (image is None when it was dropped) and what was done to it."""
    index: int
    timestamp: float
    image: np.ndarray | None
    status: str                         # ok | covered | dropped
    faces: list[Face] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # stage -> ms
    reason: str = ""
    sidecar: dict = field(default_factory=dict)  # per-frame data a sink may carry (e.g. owner-key blobs)
