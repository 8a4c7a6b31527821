"""`anoncam eval`: run each anonymization method over ORL, franck.mp4 and a group photo and measure.

Methods are applied exactly as the camera applies them: through a `Pipeline` built from the config
with `anonymize.method` set (its Anonymizer, mask, feathering and, on video, its detector and
tracker, through the camera's frame loop, anoncam/loop.py). On ORL each face is anonymized at the
place of the eval's own detection of the original (YuNet + FaceMesh, the same models), so a
detector miss does not blur the comparison between methods. `none` is the eval's internal baseline (no anonymization; never a camera method): it
checks the instruments and gives the ceiling of re-identification.
"""
from __future__ import annotations

import importlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .. import registry
from ..anonymize import methods as method_registry
from ..config import Config, override
from ..detect import iou
from ..loop import FrameLoop
from ..pipeline import Pipeline
from ..types import Detection, Face
from . import datasets
from .metrics import Instruments, Reading, cosine, landmark_error
from .mouth import agreement

log = logging.getLogger(__name__)

BASELINE = "none"
DEFAULT_METHODS = registry.names()
TILE = 160


@dataclass
class Options:
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    out: Path = Path("out/eval")
    orl_people: int = datasets.ORL_PEOPLE
    franck_frames: int = 600
    threads: int = 1
    config: Config = field(default_factory=Config)
    sheet_orl: int = 4     # ORL faces on the contact sheet
    sheet_group: int = 3   # group-photo faces on the contact sheet
    progress: bool = False
    keys: int = 1          # identity keys per key-dependent method (generative): rank-1 per key
    realism: bool = False  # the realism section (realism_run.py): held-out faces, face-api, clips
    consent: bool = False  # the consent section (consent.py): false exempts, misses, time to exempt


def known_methods() -> list[str]:
    from typing import get_args

    from ..config import Method
    return [BASELINE, *get_args(Method)]


def open_method(name: str, cfg: Config) -> tuple[Pipeline | None, str]:
    """A pipeline for method `name`, or (None, why it is not available)."""
    if name not in method_registry.METHODS:
        try:  # the generative method registers itself on import (anonymize/generative.py)
            importlib.import_module(f"anoncam.anonymize.{name}")
        except ImportError as e:
            if getattr(e, "name", None) != f"anoncam.anonymize.{name}":
                return None, f"its module failed to import: {e}"
        except Exception as e:  # noqa: BLE001 - whatever stops it, it is "not available"
            return None, f"{type(e).__name__}: {e}"
    if name not in method_registry.METHODS:
        return None, "not registered in anoncam.anonymize.methods.METHODS (not built yet)"
    try:
        return Pipeline.from_config(override(cfg, **{"anonymize.method": name})), ""
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"


def _face(det: Detection, landmarks: np.ndarray | None, track_id: int) -> Face:
    return Face(track_id=track_id, box=det.box.copy(), detected=True,
                landmarks=None if landmarks is None else landmarks.copy())


def tile(img: np.ndarray, box: np.ndarray, size: int = TILE, grow: float = 1.5) -> np.ndarray:
    """A square crop about a face box, `grow` times its larger side, resized to size x size."""
    c = (box[:2] + box[2:]) / 2
    side = float(max(box[2:] - box[:2])) * grow
    s = size / side
    m = np.array([[s, 0, size / 2 - s * c[0]], [0, s, size / 2 - s * c[1]]], np.float64)
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128))


class MethodRun:
    """Accumulates one method's measurements."""

    def __init__(self, name: str, pipe: Pipeline | None):
        self.name, self.pipe = name, pipe
        self.error = ""
        self.orl: list[tuple[int, int, Reading, Reading]] = []  # person, shot, original, anonymized
        self.face_ms: list[float] = []
        self.face_cpu_ms: list[float] = []  # CPU time of this thread: honest on a shared, loaded machine
        self.first_ms: list[float] = []  # a track's first face (generative picks its identity then)
        self.extra_keys: list[bytes] = []  # further identity keys (Options.keys - 1), key-dependent methods
        self.extra_orl: list[list] = []     # per extra key: (person, shot, original, anonymized)
        self.video: dict = {}

    def anonymize(self, img: np.ndarray, det: Detection, landmarks: np.ndarray | None, track_id: int
                  ) -> np.ndarray:
        """Anonymize the face as a new track; time that first sighting, then the same face again as the
        track's next frame (the steady per-face cost on video)."""
        out = img.copy()
        if self.pipe is not None:
            face = _face(det, landmarks, track_id)
            t = time.perf_counter()
            self.pipe.anonymizer.face(out, face)
            self.first_ms.append((time.perf_counter() - t) * 1000)
            again = img.copy()
            t, c = time.perf_counter(), time.thread_time()
            self.pipe.anonymizer.face(again, face)
            self.face_cpu_ms.append((time.thread_time() - c) * 1000)
            self.face_ms.append((time.perf_counter() - t) * 1000)
        return out


def evaluate(opts: Options) -> dict:
    cv2.setNumThreads(opts.threads)
    cfg = override(opts.config, **{"runtime.threads": opts.threads})
    for m in opts.methods:
        if m not in known_methods():
            raise ValueError(f"unknown method {m!r}; known: {', '.join(known_methods())}")
    inst = Instruments(opts.threads)

    runs: dict[str, MethodRun] = {BASELINE: MethodRun(BASELINE, None)}
    unavailable: dict[str, str] = {}
    for name in opts.methods:
        if name == BASELINE or name in runs:
            continue
        pipe, why = open_method(name, cfg)
        if pipe is None:
            unavailable[name] = why
            log.warning("method %s not available: %s", name, why)
        else:
            runs[name] = run = MethodRun(name, pipe)
            if getattr(method_registry.METHODS.get(name), "keyed", False) and opts.keys > 1:
                run.extra_keys = [secrets.token_bytes(32) for _ in range(opts.keys - 1)]
                run.extra_orl = [[] for _ in run.extra_keys]

    sheet_rows: list[dict[str, np.ndarray]] = []
    orl_info = _run_orl(inst, runs, opts, sheet_rows)
    franck_info = _run_franck(inst, runs, opts) if opts.franck_frames > 0 else {}
    _run_group(inst, runs, opts, sheet_rows)
    realism = None
    if opts.realism:
        from . import realism_run
        realism = realism_run.run(inst, runs, opts)
    consent = None
    if opts.consent:
        from . import consent as consent_eval
        consent = consent_eval.run(cfg.consent)
    return {"runs": runs, "unavailable": unavailable, "orl": orl_info, "franck": franck_info,
            "sheet": sheet_rows, "options": opts, "config": cfg, "realism": realism, "consent": consent}


def _fail(run: MethodRun, e: Exception) -> None:
    run.error = f"{type(e).__name__}: {e}"
    log.error("method %s failed: %s", run.name, run.error)


def _run_orl(inst: Instruments, runs: dict[str, MethodRun], opts: Options, sheet_rows: list) -> dict:
    images = datasets.orl_images(opts.orl_people)
    skipped, t0 = [], time.perf_counter()
    sheet_people = set(range(1, opts.sheet_orl + 1))
    for k, im in enumerate(images):
        img = datasets.load_orl(im)
        det = inst.main_face(img)
        if det is None:
            skipped.append(f"s{im.person}/{im.shot}.pgm")
            continue
        lm = inst.landmarks(img, det)
        orig = inst.read(img, det, lm)
        row = {"original": tile(img, det.box)} if im.shot == 1 and im.person in sheet_people else None
        for run in runs.values():
            if run.error:
                continue
            try:
                anon = run.anonymize(img, det, lm, track_id=k)
            except Exception as e:  # noqa: BLE001 - a failing method is reported, the others go on
                _fail(run, e)
                continue
            run.orl.append((im.person, im.shot, orig, inst.read(anon, det, lm)))
            for j, key in enumerate(run.extra_keys):  # the same face under other identity keys
                an = run.pipe.anonymizer
                own, an.key = an.key, key
                try:
                    other = img.copy()
                    an.face(other, _face(det, lm, (j + 1) * 1_000_000 + k))
                finally:
                    an.key = own
                run.extra_orl[j].append((im.person, im.shot, orig, inst.read(other, det, lm)))
            if row is not None and run.name != BASELINE:
                row[run.name] = tile(anon, det.box)
        if row is not None:
            sheet_rows.append(row)
        if opts.progress and (k + 1) % 40 == 0:
            log.info("ORL %d/%d images (%.0f s)", k + 1, len(images), time.perf_counter() - t0)
    return {"images": len(images), "people": opts.orl_people, "skipped_no_face": skipped,
            "upscale": datasets.ORL_UPSCALE, "image_size": [92 * datasets.ORL_UPSCALE, 112 * datasets.ORL_UPSCALE],
            "seconds": round(time.perf_counter() - t0, 1)}


def _run_franck(inst: Instruments, runs: dict[str, MethodRun], opts: Options) -> dict:
    t0 = time.perf_counter()
    fps = datasets.video_fps("franck")
    refs: list[tuple[Detection | None, np.ndarray | None]] = []
    for frame in datasets.video_frames("franck", opts.franck_frames):
        det = inst.main_face(frame)
        refs.append((det, inst.embed(frame, det) if det is not None else None))
    orig_consec = [cosine(refs[i - 1][1], refs[i][1]) for i in range(1, len(refs))
                   if refs[i - 1][1] is not None and refs[i][1] is not None]
    for run in runs.values():
        if run.error:
            continue
        try:
            run.video = _franck_method(inst, run, refs)
        except Exception as e:  # noqa: BLE001
            _fail(run, e)
    return {"frames": len(refs), "frames_with_face": sum(d is not None for d, _ in refs), "fps": fps,
            "original_consecutive_cos_median": _median(orig_consec), "seconds": round(time.perf_counter() - t0, 1)}


def _franck_method(inst: Instruments, run: MethodRun, refs) -> dict:
    """The clip through the camera's frame loop (FrameLoop), measured as a sink; `none` unchanged."""
    m = FranckSink(inst, refs)
    if run.pipe is None:
        for i, frame in enumerate(datasets.video_frames("franck", len(refs))):
            m.measure(i, frame, track=0)  # `none`: one face, one track
    else:
        source = datasets.video_source("franck")
        try:
            FrameLoop(run.pipe, [m]).run(source, max_frames=len(refs))
        finally:
            source.close()
    return m.summary()


class FranckSink:
    """Per-frame measurements of franck as the frame loop delivers it (anonymized, or dropped)."""

    def __init__(self, inst: Instruments, refs):
        self.inst, self.refs = inst, refs
        self.consec, self.to_orig, self.found, self.ious, self.frame_ms, self.anon_ms = [], [], [], [], [], []
        self.covered = self.dropped = self.missed = 0
        self.prev = None  # (track id, anonymized embedding) of the previous frame

    def write(self, res) -> None:
        self.frame_ms.append(sum(v for k, v in res.timings.items() if k != "decode"))
        self.anon_ms.append(res.timings.get("anonymize", 0.0))
        self.covered += res.status == "covered"
        if res.image is None:
            self.dropped += 1
            self.prev = None
            return
        det = self.refs[res.index][0]
        track = -1  # the pipeline did not see the face: it stays raw, and counts as such
        if det is not None and res.faces:
            best = max(res.faces, key=lambda f: iou(f.box, det.box))
            track = best.track_id if iou(best.box, det.box) > 0 else -1
        self.missed += det is not None and track < 0
        self.measure(res.index, res.image, track)

    def measure(self, i: int, frame: np.ndarray, track: int) -> None:
        det, emb_orig = self.refs[i]
        if det is None:
            self.prev = None
            return
        own = self.inst.face_at(frame, det.box)
        self.found.append(own is not None)
        if own is not None:
            self.ious.append(iou(own.box, det.box))
        emb = self.inst.embed(frame, own if own is not None else det)
        self.to_orig.append(cosine(emb, emb_orig))
        if self.prev is not None and self.prev[0] == track and track >= 0:
            self.consec.append(cosine(emb, self.prev[1]))
        self.prev = (track, emb)

    def close(self) -> None:
        pass

    def summary(self) -> dict:
        return {"faces": len(self.to_orig), "consecutive_cos_median": _median(self.consec),
                "consecutive_pairs": len(self.consec), "anon_orig_cos_median": _median(self.to_orig),
                "yunet_found": _mean(self.found), "iou_mean": _mean(self.ious), "covered_frames": self.covered,
                "dropped_frames": self.dropped, "faces_missed_by_pipeline": self.missed,
                "pipeline_ms_per_frame_p50": _median(self.frame_ms),
                "anonymize_ms_per_frame_p50": _median(self.anon_ms)}


def _run_group(inst: Instruments, runs: dict[str, MethodRun], opts: Options, sheet_rows: list) -> None:
    if opts.sheet_group <= 0:
        return
    img = datasets.group_photo("group1")
    dets = sorted(inst.detect(img), key=lambda d: -d.size)[:opts.sheet_group]
    marks = [inst.landmarks(img, d) for d in dets]
    outs = {}
    for run in runs.values():
        if run.error or run.pipe is None:
            continue
        out = img.copy()
        try:
            for k, (d, lm) in enumerate(zip(dets, marks)):
                run.pipe.anonymizer.face(out, _face(d, lm, 10_000 + k))
        except Exception as e:  # noqa: BLE001
            _fail(run, e)
            continue
        outs[run.name] = out
    for d in dets:
        row = {"original": tile(img, d.box)}
        row.update({name: tile(out, d.box) for name, out in outs.items()})
        sheet_rows.append(row)


def _median(xs) -> float | None:
    return float(np.median(xs)) if len(xs) else None


def _mean(xs) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def _rank1(records: list) -> tuple[int, int, int]:
    """(hits, probes, gallery size): gallery = shot 1 originals, probes = the other shots anonymized."""
    gallery = {p: o.embedding for p, s, o, _ in records if s == 1}
    names = sorted(gallery)
    g = np.stack([gallery[p] for p in names]) if names else np.zeros((0, 128), np.float32)
    probes = [(p, a) for p, s, _, a in records if s != 1]
    hits = sum(1 for p, a in probes if len(names) and names[int(np.argmax(g @ a.embedding))] == p)
    return hits, len(probes), len(names)


def summarize_orl(run: MethodRun, people: int) -> dict:
    """ORL metrics of one method (see report.METRICS for their meaning)."""
    if not run.orl:
        return {}
    gallery = {p: o.embedding for p, s, o, _ in run.orl if s == 1}
    names = sorted(gallery)
    probes = [(p, a) for p, s, _, a in run.orl if s != 1]
    ranked = [_rank1(rec) for rec in [run.orl, *run.extra_orl]]
    hits = ranked[0][0]
    per_key = [h / n for h, n, _ in ranked if n]
    cos = [cosine(o.embedding, a.embedding) for _, _, o, a in run.orl]
    found = [a.det is not None for _, _, _, a in run.orl]
    ious = [iou(a.det.box, o.det.box) for _, _, o, a in run.orl if a.det is not None and o.det is not None]
    lm_err = [landmark_error(o.landmarks, a.landmarks) for _, _, o, a in run.orl]
    expr = [int(np.argmax(o.expression)) == int(np.argmax(a.expression)) for _, _, o, a in run.orl]
    gender = [(o.p_male >= 0.5) == (a.p_male >= 0.5) for _, _, o, a in run.orl]
    mouth = agreement([(o.mouth, a.mouth) for _, _, o, a in run.orl])
    age = [abs(o.age - a.age) for _, _, o, a in run.orl]
    ms = run.face_ms
    return {
        "faces": len(run.orl), "gallery": len(names), "probes": len(probes),
        "rank1": hits / len(probes) if probes else None, "chance": 1 / max(1, len(names)),
        "rank1_per_key": per_key, "rank1_key_mean": _mean(per_key),
        "probes_aligned_by_original_detection": sum(not a.aligned_by_own_detection for p, a in probes),
        "cos_orig_anon_mean": _mean(cos), "cos_orig_anon_median": _median(cos),
        "yunet_found": _mean(found), "iou_mean": _mean(ious),
        "landmark_error_mean": _mean(lm_err), "landmark_error_median": _median(lm_err),
        "expression_agreement": _mean(expr), "mouth_agreement": mouth["both"],
        "mouth_open_agreement": mouth["open"], "smile_agreement": mouth["smile"], "gender_agreement": _mean(gender), "age_mae": _mean(age),
        "ms_per_face_p50": _median(ms), "ms_per_face_p95": float(np.percentile(ms, 95)) if ms else None,
        "cpu_ms_per_face_p50": _median(run.face_cpu_ms), "first_face_ms_p50": _median(run.first_ms),
        "original_male_share": _mean([o.p_male >= 0.5 for _, _, o, _ in run.orl]),
        "original_age_mean": _mean([o.age for _, _, o, _ in run.orl]),
    }

