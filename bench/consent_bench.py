"""Consent cost at 640x480 on 1 thread, and the enrolled person's figure with the worker running live.

1. The embedding per check, thread CPU time and wall time: aligned crop + FaceRes (a video track's
   check: what the worker thread spends per check), and aligned crop + SFace (a still's check).
2. The frame loop's share (thread CPU time) per face per frame with consent.worker (the default): ConsentPolicy.decide
   (continuity checks, the crop handed to the worker, results matched against the gallery), timed on
   franck's last minute through the real pipeline; and its first frame of each new track.
3. The worker's CPU per new track (K FaceRes checks) and per face per frame (one check every
   recheck_every detected frames of an exempt track), from 1.
4. franck enrolled from 30 frames of his first minute, measured on his last (not enrolled from):
   shown share of detected face-frames after each track's first second, frames to the first shown
   frame, with the worker's real lag (nothing waits for it).
The match against 40 people x 30 embeddings and the gallery stat each frame are timed too.
Prints figures; asserts nothing. Run: .venv/bin/python bench/consent_bench.py [--frames N]"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from anoncam.config import validate
from anoncam.consent.embed import Embedder, aligned_crop
from anoncam.consent.enroll import face_embedding
from anoncam.consent.gallery import Gallery, file_state
from anoncam.detect.facemesh import FaceMesh
from anoncam.eval.datasets import video_frames
from anoncam.pipeline import Pipeline

SIZE = (640, 480)


def ms(fn, n, clock=time.perf_counter):
    t = []
    for _ in range(n):
        a = clock()
        fn()
        t.append((clock() - a) * 1000)
    return np.percentile(t, 50), np.percentile(t, 95)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1440, help="frames of franck's last minute to run")
    args = ap.parse_args()
    start = 4800 - 24 * 60
    enrol = np.linspace(0, 24 * 60 - 1, 30).astype(int)
    need = {0, *enrol.tolist(), *range(start, start + args.frames)}  # not all 4,800 frames (4.4 GB)
    frames = {i: cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA)
              for i, f in enumerate(video_frames("franck", 4800)) if i in need}
    pipe = Pipeline.from_config(validate({"runtime": {"threads": 1}}))
    img = frames[0]
    d = pipe.detect(img, 0, still=True)[0]
    pts, _ = pipe.mesh.run(img, *FaceMesh.region_from_box(d.box, d.kps))
    emb = Embedder(1)

    def video():
        return emb.embed_video(aligned_crop(img, pts))
    e = video()
    for what, fn in (("FaceRes, a video track's check: the worker's share", video),
                     ("SFace, a still's check", lambda: emb.embed(img, pts))):
        n = 200 if fn is video else 50  # p95 of the check from 200 runs
        wall = ms(fn, n)
        cpu = ms(fn, n, time.thread_time)  # CPU: less hostage to the load
        print("1. embed (crop + %s) ms p50/p95: CPU %.1f / %.1f, wall %.1f / %.1f" % (what, *cpu, *wall))
        if fn is video:
            embed_p50 = cpu[0]

    tmp = Path(tempfile.mkdtemp())
    g = Gallery(tmp / "g.json")
    rng = np.random.default_rng(0)
    for i in range(40):
        v = rng.normal(size=(30, 128 + 1024)).astype(np.float32)
        g.add(f"p{i}", v[:, :128] / np.linalg.norm(v[:, :128], axis=1, keepdims=True),
              v[:, 128:] / np.linalg.norm(v[:, 128:], axis=1, keepdims=True))
    print("   video match against 40 people x 30 embeddings ms p50/p95: %.3f / %.3f"
          % ms(lambda: g.match(e, video=True), 200))
    g.save()
    print("   gallery stat per frame ms p50/p95: %.4f / %.4f" % ms(lambda: file_state(g.path), 500))

    # franck from 30 frames of his first minute (24 fps)
    g = Gallery(tmp / "franck.json")
    both = [face_embedding(pipe, emb, frames[i], f"frame {i}") for i in enrol]
    g.add("franck", np.array([a for a, _ in both]), np.array([b for _, b in both]))
    g.save()
    cfg = validate({"runtime": {"threads": 1}, "anonymize": {"method": "solid"},
                    "consent": {"enabled": True, "gallery": str(g.path)}})
    cc = cfg.consent
    cpipe = Pipeline.from_config(cfg)
    pol = cpipe.policy
    decide = pol.decide
    per_face, first_of_track = [], []
    seen: set[int] = set()

    def timed(frame, faces, sidecar):
        a = time.thread_time()
        decide(frame, faces, sidecar)
        dt = (time.thread_time() - a) * 1000
        if faces:
            per_face.append(dt / len(faces))
        if any(f.track_id not in seen for f in faces):
            first_of_track.append(dt)
            seen.update(f.track_id for f in faces)
    pol.decide = timed
    rows = []
    t0 = time.perf_counter()
    for i, f in enumerate(frames[j] for j in range(start, start + args.frames)):
        res = cpipe.process(f.copy(), start + i, live=False)
        rows += [(i, x.track_id, x.detected and x.landmarks is not None, x.method is None) for x in res.faces]
    wall = time.perf_counter() - t0
    p50, p95 = np.percentile(per_face, 50), np.percentile(per_face, 95)
    print(f"2. frame loop, consent per face per frame (worker on), CPU ms p50/p95: {p50:.2f} / {p95:.2f} "
          f"over {len(per_face)} frames; first frame of a new track: "
          + ", ".join(f"{x:.2f}" for x in first_of_track) + " ms")
    print(f"3. worker CPU per new track (K={cc.k} checks): {cc.k * embed_p50:.0f} ms; per face per frame of an "
          f"exempt track (a check every {cc.recheck_every} detected frames): {embed_p50 / cc.recheck_every:.2f} ms")
    first: dict[int, int] = {}
    tte: dict[int, int] = {}
    after = []
    for i, tid, det, shown in rows:
        first.setdefault(tid, i)
        if shown and tid not in tte:
            tte[tid] = i - first[tid]
        if det and i - first[tid] >= 24:
            after.append(shown)
    print(f"4. franck's last minute ({args.frames} frames, {len(first)} track(s), {wall / max(args.frames, 1) * 1000:.0f} ms "
          f"a frame): shown {100 * np.mean(after):.1f} % of {len(after)} detected face-frames after the first "
          f"second; frames to the first shown frame per track: {list(tte.values())}")


if __name__ == "__main__":
    main()
