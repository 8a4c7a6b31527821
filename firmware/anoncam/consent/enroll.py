"""`anoncam enroll`: embeddings of one person from photos or clips, each face checked first."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..detect.facemesh import FaceMesh
from .embed import Embedder, aligned_crop, sharpness
from .gallery import Gallery

MIN_FACE = 64       # px, box long side
MIN_SHARPNESS = 20  # Laplacian variance inside the aligned crop: sharp faces 34-1400 (webcam to ORL), ORL blurred sigma 5: 18
# SFace cosine at which new faces count as an enrolled person's: the video threshold SFace had (the
# tuning rule's: the 99.9 % ORL tuning impostor + 0.05), stricter than the still threshold
DUPLICATE = 0.44
VIDEO_SAMPLES = 30  # embeddings taken from a clip, evenly spread
VIDEO_EXT = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v"}


class EnrollError(ValueError):
    """A photo or clip cannot be enrolled; the message names it and why."""


def face_embedding(pipe, emb: Embedder, img: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The SFace and FaceRes embeddings of the one clear face in `img`, or EnrollError."""
    dets = pipe.detect(img, 0, still=True)
    if not dets:
        raise EnrollError(f"{where}: no face found")
    if len(dets) > 1:
        raise EnrollError(f"{where}: {len(dets)} faces; a photo for enrollment shows one person")
    d = dets[0]
    if d.size < MIN_FACE:
        raise EnrollError(f"{where}: the face is {d.size:.0f} px, too small (at least {MIN_FACE} px)")
    pts, _ = pipe.mesh.run(img, *FaceMesh.region_from_box(d.box, d.kps))
    if pts is None:
        raise EnrollError(f"{where}: the face's landmarks were not found")
    crop = aligned_crop(img, pts)
    if sharpness(crop) < MIN_SHARPNESS:
        raise EnrollError(f"{where}: the face is too blurry (sharpness {sharpness(crop):.0f} < {MIN_SHARPNESS})")
    return emb.embed_crop(crop), emb.embed_video(crop)


def video_embeddings(pipe, emb: Embedder, path: Path) -> tuple[list[tuple], list[str]]:
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    want = set(np.linspace(0, max(n - 1, 0), min(VIDEO_SAMPLES, max(n, 1))).astype(int).tolist())
    out, problems, i = [], [], 0
    try:
        while True:
            ok, f = cap.read()
            if not ok:
                break
            if i in want:
                try:
                    out.append(face_embedding(pipe, emb, f, f"{path} frame {i}"))
                except EnrollError as e:
                    problems.append(str(e))
            i += 1
    finally:
        cap.release()
    return out, problems


def collect(pipe, emb: Embedder, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """SFace and FaceRes embeddings from every photo (each must pass) and clip (at least 3 good frames)."""
    out = []
    for p in paths:
        if not p.is_file():
            raise EnrollError(f"{p}: no such file")
        if p.suffix.lower() in VIDEO_EXT:
            es, problems = video_embeddings(pipe, emb, p)
            if len(es) < 3:
                raise EnrollError(f"{p}: only {len(es)} usable frames (need 3): "
                                  + "; ".join(problems[:3]))
            out += es
        else:
            img = cv2.imread(str(p))
            if img is None:
                raise EnrollError(f"{p}: not an image or video file")
            out.append(face_embedding(pipe, emb, img, str(p)))
    return np.array([e for e, _ in out], np.float32), np.array([v for _, v in out], np.float32)


def check_unlike_others(g: Gallery, name: str, embs: np.ndarray, threshold: float) -> None:
    """SFace embeddings `embs` against everyone else's, at `threshold` (SFace cosine)."""
    for other, p in g.people.items():
        if other == name:
            continue
        best = float(np.max(embs @ p.embeddings.T))
        if best >= threshold:
            raise EnrollError(f"these faces match the already enrolled person {other!r} (cosine {best:.2f} "
                              f">= {threshold}); not enrolled")


def enroll(pipe, g: Gallery, name: str, paths: list[Path], threshold: float = DUPLICATE,
           emb: Embedder | None = None) -> int:
    """Add (or replace) `name`; returns the number of faces kept. Nothing is saved on error.
    `threshold`: the SFace cosine at which the faces count as another enrolled person's."""
    if not name or len(name) > 100 or not name.isprintable():
        raise EnrollError("NAME must be 1-100 printable characters")
    embs, video = collect(pipe, emb or Embedder(pipe.cfg.runtime.threads), paths)
    check_unlike_others(g, name, embs, threshold)
    g.add(name, embs, video)
    g.save()
    return len(embs)
