"""Consent cost at 640x480 on 1 thread: the SFace embedding per face check (aligned crop + network),
the gallery match, and the stat of the gallery file each frame. Prints figures; asserts nothing.
Run: .venv/bin/python bench/consent_bench.py"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from anoncam.config import validate
from anoncam.consent.embed import Embedder
from anoncam.consent.gallery import Gallery, file_state
from anoncam.detect.facemesh import FaceMesh
from anoncam.eval.datasets import video_frames
from anoncam.pipeline import Pipeline


def ms(fn, n):
    t = []
    for _ in range(n):
        a = time.perf_counter()
        fn()
        t.append((time.perf_counter() - a) * 1000)
    return np.percentile(t, 50), np.percentile(t, 95)


def main():
    pipe = Pipeline.from_config(validate({"runtime": {"threads": 1}}))
    img = cv2.resize(next(iter(video_frames("franck", 1))), (640, 480))
    d = pipe.detect(img, 0, still=True)[0]
    pts, _ = pipe.mesh.run(img, *FaceMesh.region_from_box(d.box, d.kps))
    emb = Embedder(1)
    e = emb.embed(img, pts)
    print("embed (crop + SFace) ms p50/p95: %.1f / %.1f" % ms(lambda: emb.embed(img, pts), 50))
    g = Gallery(Path(tempfile.mkdtemp()) / "g.json")
    rng = np.random.default_rng(0)
    for i in range(40):
        v = rng.normal(size=(30, 128)).astype(np.float32)
        g.add(f"p{i}", v / np.linalg.norm(v, axis=1, keepdims=True))
    print("match against 40 people x 30 embeddings ms p50/p95: %.3f / %.3f" % ms(lambda: g.match(e), 200))
    g.save()
    print("gallery stat per frame ms p50/p95: %.4f / %.4f" % ms(lambda: file_state(g.path), 500))


if __name__ == "__main__":
    main()
