"""The consent decision per face: a track stays visible only while it keeps matching one enrolled
person; anything else (coasting, lost, a size jump, a failed match, a gallery that cannot be read)
anonymizes it. Embeddings and crops live in memory for the one call; only the name is kept per
track, and only while the track is exempt."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..types import Face
from .embed import Embedder
from .gallery import Gallery, GalleryError, file_state

log = logging.getLogger(__name__)


@dataclass
class TrackState:
    run: int = 0              # consecutive matching checks
    name: str | None = None   # the person those checks matched
    exempt: bool = False
    size: float | None = None  # box long side at the last detected frame
    since: int = 0            # detected frames since the last check (exempt tracks)

    def clear(self) -> None:
        self.run, self.name, self.exempt, self.since = 0, None, False, 0


class ConsentPolicy:
    def __init__(self, method: str, cc, path, embedder: Embedder | None = None):
        """`cc`: the consent config section; `path`: the gallery. A gallery that exists but cannot be
        used (corrupt, other model, readable by others) stops start-up with GalleryError."""
        self.method, self.cc, self.path = method, cc, path
        self.gallery = Gallery.load(path, missing_ok=True)
        self._file = file_state(path)
        self.embedder = embedder or Embedder(1)
        self.tracks: dict[int, TrackState] = {}
        self.counts = {"exempt": 0, "anonymized": 0}  # face-frames
        self.exempted: list[tuple[int, str]] = []     # (track id, name) that became exempt this frame
        if not self.gallery.people:
            log.warning("consent: the gallery is empty or absent; every face is anonymized")

    def reload_if_changed(self) -> None:
        """A cheap stat each frame; a changed file is read again and every exemption is dropped (a
        revoked person is anonymized from this frame on). A file that cannot be used leaves nobody
        exempt until it is fixed."""
        now = file_state(self.path)
        if now == self._file:
            return
        self._file = now
        self.tracks.clear()
        try:
            self.gallery = Gallery.load(self.path, missing_ok=True)
            log.info("consent: gallery reloaded (%d enrolled)", len(self.gallery.people))
        except GalleryError as e:
            self.gallery = Gallery(self.path)
            log.error("consent: %s; every face is anonymized", e)

    def decide(self, frame: np.ndarray, faces: list[Face], sidecar: dict) -> None:
        self.reload_if_changed()
        self.exempted = []
        live = {f.track_id for f in faces}
        for tid in [t for t in self.tracks if t not in live]:
            del self.tracks[tid]  # lost: a new track starts from nothing
        for f in faces:
            st = self.tracks.setdefault(f.track_id, TrackState())
            f.method = None if self._visible(frame, f, st) else self.method
            if f.method is None and self.cc.publish_names:
                f.consent_name = st.name  # for the MQTT exempt event; memory only
            self.counts["exempt" if f.method is None else "anonymized"] += 1

    def _visible(self, frame: np.ndarray, f: Face, st: TrackState) -> bool:
        cc = self.cc
        if not f.detected or f.landmarks is None or not self.gallery.people:
            st.clear()
            st.size = None
            return False
        size = float(max(f.box[2:] - f.box[:2]))
        jump = st.size is not None and abs(size / st.size - 1) > cc.max_size_change
        st.size = size
        if jump:
            st.clear()
            return False
        if st.exempt:
            st.since += 1
            if st.since < cc.recheck_every:
                return True
        st.since = 0
        k, t, m = (1, cc.still_threshold, cc.still_margin) if f.still else (cc.k, cc.threshold, cc.margin)
        name, cos, margin = self.gallery.match(self.embedder.embed(frame, f.landmarks))
        if name is None or cos < t or margin < m:
            st.clear()
            return False
        if name != st.name:
            st.clear()
            st.name = name
        st.run += 1
        if st.run >= k and not st.exempt:
            st.exempt = True
            self.exempted.append((f.track_id, name))
        return st.exempt
