"""detect -> track -> landmarks -> decide -> anonymize, one frame at a time, failing closed.

The frame is anonymized in place: after `process` returns, the caller's array holds only anonymized
pixels, or the whole frame is covered (on_failure: drop covers it too, and the result's image is None).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from . import assets, precision
from .anonymize import Anonymizer
from .backends import open_model
from .config import Config
from .detect.facemesh import FaceMesh
from .detect.yunet import YuNet
from .policy import Policy, default_policy
from .track import Tracker
from .types import Detection, Face, FrameResult

log = logging.getLogger(__name__)

AUTO = object()  # process(): run the detector in line


def valid_frame(frame) -> bool:
    return (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3
            and frame.shape[2] == 3 and frame.shape[0] >= 8 and frame.shape[1] >= 8)


class Pipeline:
    def __init__(self, cfg: Config, detector: YuNet, mesh: FaceMesh | None, policy: Policy | None = None):
        self.cfg = cfg
        self.detector = detector
        self.mesh = mesh
        self.policy = policy or default_policy(cfg)
        self.anonymizer = Anonymizer(cfg.anonymize, cfg.runtime.precision, cfg.runtime.threads)
        self.anonymizer.method_fn(cfg.anonymize.method)  # an unavailable method stops start-up
        self.tracker = Tracker(cfg.track.iou_threshold, cfg.track.coast_frames, cfg.track.coast_grow)

    @classmethod
    def from_config(cls, cfg: Config, policy: Policy | None = None) -> Pipeline:
        """Load and verify the models; a missing or corrupt file raises AssetError (path, sha256)."""
        rt = cfg.runtime
        det = precision.detector(cfg)  # int8/fp32 ONNX (providers) or a TFLite on LiteRT (Edge TPU)
        mesh = None
        if cfg.landmarks.enabled:
            backend = open_model(assets.model_path(cfg.landmarks.model), "tflite", threads=rt.threads,
                                 delegate=rt.litert_delegate)
            mesh = FaceMesh(backend, cfg.landmarks.score_threshold)
        return cls(cfg, det, mesh, policy)

    def reset(self) -> None:
        """Forget all tracks (the next frame is unrelated to the last, e.g. another photo)."""
        self.tracker.reset()

    def process(self, frame: np.ndarray, index: int, timestamp: float | None = None,
                detect_frame: np.ndarray | None = None, still: bool = False, live: bool = True,
                detections: object = AUTO) -> FrameResult:
        """Anonymize `frame` in place. `detect_frame`: a smaller view of the same frame to detect on
        (picamera2 lores). `still`: an independent photo (all tiles, no tracking history). `live`: the
        time budget applies (a camera) and no frame waits for a method's slow work (generative's
        choice of a new track's identity); files anonymized offline have no deadline. `detections`: what
        `detect` returned for this frame, run ahead in another thread (an exception it raised fails
        the frame closed); by default the detector runs here."""
        ts = time.time() if timestamp is None else timestamp
        res = FrameResult(index=index, timestamp=ts, image=frame, status="ok")
        if not valid_frame(frame):
            if isinstance(frame, np.ndarray) and frame.flags.writeable:
                frame[...] = 0  # whatever it holds, nothing of it survives
            res.image, res.status, res.reason = None, "dropped", "corrupt frame"
            return res
        t0 = time.perf_counter()
        try:
            if isinstance(detections, BaseException):
                raise detections
            res.faces = self._faces(frame, index, detect_frame, still, res.timings, detections)
            t = time.perf_counter()
            self.policy.decide(frame, res.faces, res.sidecar)
            for f in res.faces:
                if f.method is not None:
                    self.anonymizer.face(frame, f, live=live)
            self.anonymizer.zones(frame)
            res.timings["anonymize"] = (time.perf_counter() - t) * 1000
        except Exception as e:  # fail closed on any fault, whatever it is
            log.error("frame %d failed closed: %s: %s", index, type(e).__name__, e)
            return self.fail(res, f"error: {type(e).__name__}")
        total = (time.perf_counter() - t0) * 1000
        if live and total > self.cfg.failsafe.budget_ms:
            log.warning("frame %d over budget (%.0f ms > %.0f ms); failed closed", index, total,
                        self.cfg.failsafe.budget_ms)
            return self.fail(res, "over budget")
        return res

    def fail(self, res: FrameResult, reason: str) -> FrameResult:
        """Cover the whole frame (res.image) in place, whatever on_failure says (a camera's encoder
        and preview still get this buffer); `drop` then also keeps it from every sink (image None)."""
        res.reason = reason
        res.sidecar = {}
        try:
            self.anonymizer.cover_all(res.image)
        except Exception:
            res.image[...] = 0
        if self.cfg.failsafe.on_failure == "drop":
            res.image, res.status = None, "dropped"
        else:
            res.status = "covered"
        return res

    def detect(self, frame: np.ndarray, index: int, detect_frame: np.ndarray | None = None,
               still: bool = False) -> list[Detection] | None:
        """The detector's share of `process`: this frame's detections in full-frame coordinates, or
        None on a frame between detections (`detect.every_n`). Call it for the frames in order, from
        one thread; it may run ahead of `process`."""
        if not (still or index % self.cfg.detect.every_n == 0):
            return None
        src = frame if detect_frame is None else detect_frame
        min_face = self.cfg.detect.min_face if still else self.cfg.detect.video_min_face
        dets = self.detector.detect(src, min_face=min_face * src.shape[1] / frame.shape[1])
        if detect_frame is not None:
            s = np.array([frame.shape[1] / src.shape[1], frame.shape[0] / src.shape[0]] * 2, np.float32)
            for d in dets:
                d.box = d.box * s
                d.kps = d.kps * s[:2] if d.kps is not None else None
        return dets

    def prepare_landmarks(self, frame: np.ndarray, dets: list[Detection] | None) -> None:
        """Cut FaceMesh's input for each detection now (`Detection.mesh_input`), so the thread that
        runs `process` only runs the network on it. The region is the one `process` would take for
        a face detected in this frame, so the landmarks come out the same."""
        if self.mesh is None or not dets:
            return
        for d in dets:
            if d.kps is not None and d.size >= self.cfg.landmarks.min_face:
                d.mesh_input = self.mesh.prepare(frame, *FaceMesh.region_from_box(d.box, d.kps))

    def _faces(self, frame, index, detect_frame, still, timings, dets) -> list[Face]:
        cfg = self.cfg
        if still:
            self.tracker.reset()
        t = time.perf_counter()
        if dets is AUTO:
            dets = self.detect(frame, index, detect_frame, still)
        run_det = dets is not None
        timings["detect"] = (time.perf_counter() - t) * 1000

        t = time.perf_counter()
        tracks = self.tracker.update(dets)
        timings["track"] = (time.perf_counter() - t) * 1000

        t = time.perf_counter()
        faces = []
        for tr in tracks:
            if self.mesh is not None and max(tr.box[2:] - tr.box[:2]) >= cfg.landmarks.min_face:
                self._landmarks(frame, tr, detected_now=run_det and tr.misses == 0)
            else:
                tr.landmarks = None
            faces.append(Face(track_id=tr.id, box=tr.cover_box(cfg.track.coast_grow), detected=tr.seen,
                              landmarks=tr.landmarks if tr.misses == 0 else None, still=still))
        timings["landmarks"] = (time.perf_counter() - t) * 1000
        return faces

    def _landmarks(self, frame, tr, detected_now: bool) -> None:
        """Run FaceMesh for a track. Where the detector did not see the face in this frame, FaceMesh
        follows it from its last landmarks and keeps the track alive while it finds a face there."""
        ready = tr.detection.mesh_input if detected_now and tr.detection is not None else None
        if ready is not None:
            pts, score = self.mesh.infer(*ready)
        else:
            if not detected_now and tr.landmarks is not None:
                c, size, angle = FaceMesh.region_from_landmarks(tr.landmarks + tr.velocity[:2])
            else:
                c, size, angle = FaceMesh.region_from_box(tr.box, tr.kps)
            pts, score = self.mesh.run(frame, c, size, angle)
        tr.landmarks = pts
        if pts is not None and not detected_now:
            # FaceMesh still sees the face: follow it, and count it as seen so it is not dropped
            lo, hi = pts.min(0), pts.max(0)
            Tracker.observe(tr, np.concatenate([lo, hi]), tr.score, None)
