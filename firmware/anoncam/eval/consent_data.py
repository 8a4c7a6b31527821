"""Embeddings of the evaluation faces for the consent section (`anoncam eval --consent`), computed
once and cached: ORL's 400 photos and the group photos as stills, and every frame of franck, cap12
and cap13 through the pipeline's detect -> track -> landmarks (per face: frame, track id, detected,
box size, embedding; the boxes apart). Each embedding is the camera's two side by side: SFace (128,
stills) then FaceRes (1024, video tracks); `dims` says where they split. Public dataset faces only;
the camera itself never stores an embedding."""
from __future__ import annotations

import numpy as np

from .. import assets
from ..config import validate
from ..consent.embed import Embedder, aligned_crop
from ..pipeline import Pipeline
from .datasets import group_photo, load_orl, orl_images, video_frames

CLIPS = ("franck", "cap12", "cap13")
GROUPS = tuple(f"group{i}" for i in range(1, 7))
# A small subset for tests: 10 ORL people, one group photo, 72 frames of each clip's stretches
# (franck: from his first minute and his last), with the frame numbers of the full clips.
SUBSET = {"orl_people": 10, "groups": GROUPS[:1],
          "clips": {"franck": [(0, 72), (3600, 3672)], "cap12": [(0, 72)], "cap13": [(0, 72)]}}
FULL = {"orl_people": 40, "groups": GROUPS, "clips": dict.fromkeys(CLIPS)}


class Both:
    """SFace then FaceRes of one face, side by side (what the camera computes for stills and video)."""
    dims = (128, 1024)

    def __init__(self):
        self.emb = Embedder(1)

    def embed_crop(self, crop: np.ndarray) -> np.ndarray:
        return np.concatenate([self.emb.embed_crop(crop), self.emb.embed_video(crop)])

    def embed(self, img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.embed_crop(aligned_crop(img, landmarks))


def _pipe() -> Pipeline:
    return Pipeline.from_config(validate({"runtime": {"threads": 1}, "anonymize": {"method": "solid"}}))


def still_faces(pipe, emb, img) -> list[np.ndarray]:
    pipe.reset()
    faces = pipe._faces(img, 0, None, True, {}, pipe.detect(img, 0, None, True))
    return [emb.embed(img, f.landmarks) for f in faces if f.landmarks is not None]


def clip_faces(pipe, emb, name: str, ranges=None, dim: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Rows: frame, track id, detected (with landmarks), box long side, then 128 embedding values
    (zeros when not detected); and the boxes (x0, y0, x1, y1) of the same rows. `ranges`: [start,
    end) frame ranges to run (each from a fresh tracker); None: the whole clip."""
    pipe.reset()
    rows, boxes = [], []
    end = max(b for _, b in ranges) if ranges else 10 ** 6
    for i, img in enumerate(video_frames(name, end)):
        if ranges:
            if not any(a <= i < b for a, b in ranges):
                continue
            if any(a == i for a, _ in ranges):
                pipe.reset()
        for f in pipe._faces(img, i, None, False, {}, pipe.detect(img, i)):
            ok = f.detected and f.landmarks is not None
            e = emb.embed(img, f.landmarks) if ok else np.zeros(dim, np.float32)
            rows.append([i, f.track_id, float(ok), float(max(f.box[2:] - f.box[:2])), *e])
            boxes.append(f.box)
    return np.array(rows, np.float32), np.array(boxes, np.float32).reshape(-1, 4)


def load(progress=print, subset: bool = False, embedder=None, name: str = "") -> dict:
    """The embeddings (cached); `subset`: the small SUBSET instead of every face (tests);
    `embedder` (with `name`, the cache's): other recognizers (bench/consent_recognizers.py); its
    `dims` (one recognizer: the embedding's length) split the embedding into the still and video parts."""
    what = SUBSET if subset else FULL
    tag = ("-subset" if subset else "") + (f"-{name}" if name else "")
    path = assets.cache_dir() / "eval-consent" / f"embeddings-v3{tag}.npz"
    if path.is_file():
        return dict(np.load(path, allow_pickle=False))
    pipe, emb = _pipe(), embedder or Both()
    dim = len(emb.embed_crop(np.zeros((112, 112, 3), np.uint8)))
    out = {"dims": np.array(getattr(emb, "dims", (dim,)), np.int64)}
    orl = np.zeros((what["orl_people"], 10, dim), np.float32)
    orl_ok = np.zeros((what["orl_people"], 10), bool)
    for im in orl_images(what["orl_people"]):
        es = still_faces(pipe, emb, load_orl(im))
        if len(es) == 1:
            orl[im.person - 1, im.shot - 1], orl_ok[im.person - 1, im.shot - 1] = es[0], True
    out["orl"], out["orl_ok"] = orl, orl_ok
    progress(f"consent: ORL {orl_ok.sum()} of 400 photos with one face")
    groups = [e for g in what["groups"] for e in still_faces(pipe, emb, group_photo(g))]
    out["groups"] = np.array(groups, np.float32).reshape(-1, dim)
    progress(f"consent: {len(groups)} group-photo faces")
    for name in CLIPS:
        out[name], out[name + "_boxes"] = clip_faces(pipe, emb, name, what["clips"][name], dim)
        progress(f"consent: {name} {len(out[name])} face-frames")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out
