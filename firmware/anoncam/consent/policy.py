"""The consent decision per face: a track stays visible only while it keeps matching one enrolled
person; anything else (coasting, lost, a size or position jump, a failed match, a gallery that cannot
be read) anonymizes it. Embeddings and crops live in memory only; only the name is kept per track.

A video track is checked with FaceRes embeddings (Embedder.embed_video), a still with SFace.

With `consent.worker` (default) the embedding runs in a worker thread beside the frame loop: the loop
cuts the 112x112 aligned crop and hands it over (one job per track at a time) and the face stays
anonymized until K results have come back matching; the continuity checks run on every frame in the
loop, and any of them failing makes the results still on their way count for nothing (each track
state has a generation number). An exempt track is matched again every `recheck_every` detected
frames; a recheck that is not back after twice that covers the face until it is.

Take-over: a tracker swaps identities only where two faces meet, and a stranger swapped into an
exempt track may pass the size and position checks. So a track whose box comes within `near` of its
long side of another face's box, in this frame or the last, starts over (no checks while near) and
needs K fresh matches once apart."""
from __future__ import annotations

import atexit
import itertools
import logging
import queue
import threading
from dataclasses import dataclass

import numpy as np

from ..types import Face
from .embed import Embedder, aligned_crop
from .gallery import Gallery, GalleryError, file_state, gallery_key

log = logging.getLogger(__name__)
_GEN = itertools.count(1)  # track-state generations, unique across tracks and reloads


@dataclass
class TrackState:
    run: int = 0               # consecutive matching checks
    name: str | None = None    # the person those checks matched
    exempt: bool = False
    size: float | None = None  # box long side at the last detected frame
    centre: np.ndarray | None = None
    since: int = 0             # detected frames since the last completed check
    gen: int = 0
    pending: bool = False      # a crop of this track is with the worker

    def clear(self) -> None:
        self.run, self.name, self.exempt, self.since, self.gen = 0, None, False, 0, next(_GEN)


class EmbedWorker:
    """One daemon thread turning aligned crops into embeddings; the frame loop collects the results."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self._jobs: queue.Queue = queue.Queue()
        self._done: list[tuple[int, int, np.ndarray | None]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="consent-embed", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def stop(self, timeout: float = 30.0) -> None:
        """End the thread at exit: waiting crops are dropped (memory only), a running embedding
        finishes (one still inside onnxruntime while the interpreter tears down aborts the process)."""
        while True:
            try:
                self._jobs.get_nowait()
                self._jobs.task_done()
            except queue.Empty:
                break
        self._jobs.put(None)
        self._thread.join(timeout)

    def submit(self, track_id: int, gen: int, crop: np.ndarray) -> None:
        self._jobs.put((track_id, gen, crop))

    def results(self) -> list[tuple[int, int, np.ndarray | None]]:
        with self._lock:
            out, self._done = self._done, []
        return out

    def drain(self) -> None:
        """Wait until every submitted crop is embedded (tests, benchmarks)."""
        self._jobs.join()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._jobs.task_done()
                return
            tid, gen, crop = job
            try:
                e = self.embedder.embed_video(crop)
            except Exception as ex:  # a failed embedding is a failed match
                log.error("consent: embedding failed: %s", type(ex).__name__)
                e = None
            del crop
            with self._lock:
                self._done.append((tid, gen, e))
            self._jobs.task_done()


class ConsentPolicy:
    def __init__(self, method: str, cc, path, embedder: Embedder | None = None):
        """`cc`: the consent config section; `path`: the gallery. A gallery that exists but cannot be
        used (corrupt, other model, readable by others, wrong key) stops start-up with GalleryError."""
        self.method, self.cc, self.path = method, cc, path
        self.key = gallery_key(cc)
        self.gallery = Gallery.load(path, missing_ok=True, key=self.key)
        self._file = file_state(path)
        self.embedder = embedder or Embedder(1)
        self.worker = EmbedWorker(self.embedder) if cc.worker else None
        self.tracks: dict[int, TrackState] = {}
        self.near = cc.near
        self._last_boxes: dict[int, np.ndarray] = {}  # track id -> box in the previous frame
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
            self.gallery = Gallery.load(self.path, missing_ok=True, key=self.key)
            log.info("consent: gallery reloaded (%d enrolled)", len(self.gallery.people))
        except GalleryError as e:
            self.gallery = Gallery(self.path)
            log.error("consent: %s; every face is anonymized", e)

    def drain(self) -> None:
        if self.worker is not None:
            self.worker.drain()

    def decide(self, frame: np.ndarray, faces: list[Face], sidecar: dict) -> None:
        self.reload_if_changed()
        self.exempted = []
        live = {f.track_id for f in faces}
        for tid in [t for t in self.tracks if t not in live]:
            del self.tracks[tid]  # lost: a new track starts from nothing
        if self.worker is not None:
            for tid, gen, e in self.worker.results():
                st = self.tracks.get(tid)
                if st is not None:
                    st.pending = False
                    if gen == st.gen:  # nothing broke the track's continuity since the crop
                        self._apply(tid, st, e, False)
        video = [f for f in faces if not f.still]  # a still has no track to swap
        crowded = near_others(video, self._last_boxes, self.near)
        self._last_boxes = {f.track_id: f.box.copy() for f in video}
        for f in faces:
            st = self.tracks.get(f.track_id)
            if st is None:
                st = self.tracks[f.track_id] = TrackState(gen=next(_GEN))
            f.method = None if self._visible(frame, f, st, f.track_id in crowded) else self.method
            if f.method is None and self.cc.publish_names:
                f.consent_name = st.name  # for the MQTT exempt event; memory only
            self.counts["exempt" if f.method is None else "anonymized"] += 1

    def _visible(self, frame: np.ndarray, f: Face, st: TrackState, crowded: bool = False) -> bool:
        cc = self.cc
        if not f.detected or f.landmarks is None or not self.gallery.people:
            st.clear()
            st.size = st.centre = None
            return False
        lo, hi = f.box[:2], f.box[2:]
        size, centre = float(max(hi - lo)), (lo + hi) / 2
        jump = st.size is not None and (abs(size / st.size - 1) > cc.max_size_change
                                        or float(np.max(np.abs(centre - st.centre))) > cc.max_move * st.size)
        st.size, st.centre = size, centre
        if jump or crowded:
            st.clear()
            return False
        if st.exempt:
            st.since += 1
            if st.since < cc.recheck_every or st.pending:
                return st.since < 2 * cc.recheck_every  # an overdue recheck covers the face
        elif st.pending:
            return False
        crop = aligned_crop(frame, f.landmarks)
        if f.still:
            self._apply(f.track_id, st, self.embedder.embed_crop(crop), True)
        elif self.worker is None:
            self._apply(f.track_id, st, self.embedder.embed_video(crop), False)
        else:
            st.pending = True
            self.worker.submit(f.track_id, st.gen, crop)
        return st.exempt and st.since < 2 * cc.recheck_every

    def _apply(self, tid: int, st: TrackState, e: np.ndarray | None, still: bool) -> None:
        """One completed check of a track: it extends the run of matches to one person, or ends it."""
        cc = self.cc
        k, t, m = (1, cc.still_threshold, cc.still_margin) if still else (cc.k, cc.threshold, cc.margin)
        name, cos, margin = self.gallery.match(e, video=not still) if e is not None else (None, 0.0, 0.0)
        if name is None or cos < t or margin < m:
            st.clear()
            return
        if name != st.name:
            st.clear()
            st.name = name
        st.run += 1
        st.since = 0
        if st.run >= k and not st.exempt:
            st.exempt = True
            self.exempted.append((tid, name))


def boxes_near(a: np.ndarray, b: np.ndarray, near: float) -> bool:
    """Do boxes a and b (x0, y0, x1, y1) come within `near` x the longer of their long sides?"""
    gap = np.maximum(np.maximum(b[:2] - a[2:], a[:2] - b[2:]), 0)
    reach = near * max(float(np.max(a[2:] - a[:2])), float(np.max(b[2:] - b[:2])))
    return bool(np.all(gap < reach))


def near_others(faces: list[Face], last: dict[int, np.ndarray], near: float) -> set[int]:
    """Track ids whose box is near another face's box in this frame (coasting ones too) or near
    another track's box in the previous frame."""
    others = [(f.track_id, f.box) for f in faces] + [(t, b) for t, b in last.items()]
    return {f.track_id for f in faces
            if any(t != f.track_id and boxes_near(f.box, b, near) for t, b in others)}
