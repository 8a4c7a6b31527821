"""Benchmark: what `generative` costs the frame loop (issue 14, point 2, "cost"). Prints figures.

1. new tracks: the anonymize stage of a frame where 1 or 3 new tracks appear (all the frame's faces:
   what the new tracks add to it), and of the same frame once their identities are known, p50/p95
   over --repeats, 1 thread, live (a camera's `Pipeline.process`); also the whole frame's CPU time
   in the loop's thread (robust to other work on the machine; a worker's CPU is not in it); `blur`
   on the same frame is the floor (a cover's own cost). Input: franck's first frame (360x288) and three of them side by
   side (1080x288); every repeat starts new tracks (new ids, so nothing is remembered).
2. face size: per face, the generate stage (the method's own call, identity known) against the
   landmarks stage (FaceMesh), in CPU ms of the loop's thread, for faces of --sizes px (franck's first frame scaled so the detected
   box has that long side, on a frame replicated out to 1.6x the face, at least 640x360), medians.

Run it on main's code and on a branch to compare (PYTHONPATH picks the anoncam package):

    PYTHONPATH=firmware .venv/bin/python bench/generative_cost.py [--repeats 15] [--sizes 60,120,240,400]

Exit 0 whatever the figures; nothing is written.
"""
from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
from anoncam import assets
from anoncam.anonymize import generative as gen
from anoncam.config import validate
from anoncam.pipeline import Pipeline


def pipeline(method: str = "generative") -> Pipeline:
    cfg = validate({"anonymize": {"method": method}, "runtime": {"threads": 1},
                    "failsafe": {"budget_ms": 600_000}}, "bench")
    return Pipeline.from_config(cfg)


def first_frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(assets.media_path("franck")))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit("cannot read franck.mp4")
    return frame


def drain() -> None:
    """Wait for the identity-choosing worker, where there is one (not in main before it)."""
    getattr(gen.GENERATIVE, "drain", lambda: None)()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def new_tracks(frame: np.ndarray, repeats: int) -> dict:
    """{faces: {"added": [ms], "frame": [ms], "known": [ms]}} for 1 and 3 new tracks: anonymize stage
    of the frame where they appear, that whole frame, anonymize stage once they are known."""
    out = {}
    for n in (1, 3):
        img = np.hstack([frame] * n)
        pipe = pipeline()
        pipe.process(img.copy(), 0, live=True)  # warm-up: first-use costs are not the new track's
        drain()
        rec = {"added": [], "frame": [], "known": [], "cpu": []}
        for r in range(repeats):
            pipe.reset()
            t, c = time.perf_counter(), time.thread_time()
            res = pipe.process(img.copy(), 2 * r + 1, live=True)
            total = (time.perf_counter() - t) * 1000
            rec["cpu"].append((time.thread_time() - c) * 1000)
            assert len(res.faces) == n, f"{len(res.faces)} faces found, expected {n}"
            new = res.timings["anonymize"]
            drain()
            known = pipe.process(img.copy(), 2 * r + 2, live=True).timings["anonymize"]
            rec["added"].append(new)
            rec["frame"].append(total)
            rec["known"].append(known)
        blur = pipeline("blur")  # the floor: the same frame's faces blurred
        blur.process(img.copy(), 0, live=True)
        rec["blur"] = [blur.process(img.copy(), i + 1, live=True).timings["anonymize"] for i in range(repeats)]
        out[n] = rec
    return out


def at_size(frame: np.ndarray, size: int) -> np.ndarray:
    """franck's first frame scaled so its face's long side is `size` px, reflected out to a frame
    of at least 640x360 and 1.6x the face (edge pixels replicated: no mirrored faces)."""
    pipe = pipeline()
    box = pipe.process(frame.copy(), 0, live=False).faces[0].box
    s = size / float(max(box[2:] - box[:2]))
    img = cv2.resize(frame, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    h, w = img.shape[:2]
    need_w, need_h = max(640, int(1.6 * size), w), max(360, int(1.6 * size), h)
    px, py = (need_w - w) // 2, (need_h - h) // 2
    return cv2.copyMakeBorder(img, py, need_h - h - py, px, need_w - w - px, cv2.BORDER_REPLICATE)


def face_sizes(frame: np.ndarray, sizes: list[int], repeats: int) -> dict:
    """{size: {variant: {"landmarks": ms, "generate": ms}, "box": px, "frame": WxH}}: per face, CPU
    ms of the calling thread (medians; robust to other work on the machine), identity known. Where
    the code has WORK_MAX, frames alternate between it and no cap ("uncapped")."""
    variants = {"as is": None}
    if hasattr(gen, "WORK_MAX"):
        variants = {"capped": gen.WORK_MAX, "uncapped": float("inf")}
    out = {}
    for size in sizes:
        img = at_size(frame, size)
        pipe = pipeline()
        fn = pipe.anonymizer.method_fn("generative")
        spent = {"generate": 0.0, "landmarks": 0.0}

        def timed(part, f):
            def run(*a, **k):
                t = time.thread_time()
                try:
                    return f(*a, **k)
                finally:
                    spent[part] += (time.thread_time() - t) * 1000
            return run
        pipe.anonymizer.method_fn = lambda name, g=timed("generate", fn): g
        pipe._landmarks = timed("landmarks", pipe._landmarks)
        rec = {v: {"landmarks": [], "generate": []} for v in variants}
        boxes = []
        for i in range(2 * repeats + 2):
            v = list(variants)[i % len(variants)]
            if variants[v] is not None:
                gen.WORK_MAX = variants[v]
            spent["generate"] = spent["landmarks"] = 0.0
            res = pipe.process(img.copy(), i, live=False)
            faces = [f for f in res.faces if f.landmarks is not None]
            if len(faces) != 1 or i < 2:  # the first frames choose the identity
                continue
            rec[v]["landmarks"].append(spent["landmarks"])
            rec[v]["generate"].append(spent["generate"])
            boxes.append(float(max(faces[0].box[2:] - faces[0].box[:2])))
        if "capped" in variants:
            gen.WORK_MAX = variants["capped"]
        if not boxes:
            print(f"  {size} px: no face with landmarks found")
            continue
        out[size] = {v: {k: statistics.median(x) for k, x in r.items()} for v, r in rec.items()}
        out[size].update(box=statistics.median(boxes), frame=f"{img.shape[1]}x{img.shape[0]}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--sizes", default="60,120,240,400")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: tracks, sizes")
    a = p.parse_args()
    cv2.setNumThreads(1)
    frame = first_frame()
    skip = set(a.skip.split(","))
    print(f"anoncam from {gen.__file__}")
    if "tracks" not in skip:
        print("\n| new tracks in the frame | their frame: anonymize ms p50 | p95 | whole frame ms p50 | p95 "
              "| whole frame, loop thread's CPU ms p50 | p95 | anonymize once known, ms p50 | p95 "
              "| `blur`'s anonymize, ms p50 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for n, r in new_tracks(frame, a.repeats).items():
            print(f"| {n} | {pct(r['added'], 50):.1f} | {pct(r['added'], 95):.1f} | {pct(r['frame'], 50):.1f} "
                  f"| {pct(r['frame'], 95):.1f} | {pct(r['cpu'], 50):.1f} | {pct(r['cpu'], 95):.1f} "
                  f"| {pct(r['known'], 50):.1f} | {pct(r['known'], 95):.1f} "
                  f"| {pct(r['blur'], 50):.1f} |")
    if "sizes" not in skip:
        print("\n| face (box px) | frame | variant | landmarks, CPU ms | generate, CPU ms | generate / landmarks |")
        print("|---|---|---|---|---|---|")
        for size, r in face_sizes(frame, [int(s) for s in a.sizes.split(",")], a.repeats).items():
            for v, m in r.items():
                if isinstance(m, dict):
                    print(f"| {size} ({r['box']:.0f}) | {r['frame']} | {v} | {m['landmarks']:.1f} "
                          f"| {m['generate']:.1f} | {m['generate'] / m['landmarks']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
