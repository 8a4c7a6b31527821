"""Detection recall by face size in pixels, whatever the image size (issue 12.1), and its cost.

The six face-api group photos, scaled to a long side of 1000 px (faces ~60-180 px) and 480 px (faces
~25-85 px), are pasted 1:1 into grey canvases 1x, 2x, 4x and 8x their size at three offsets. A face
counts as found when a pipeline detection (stills: detect.min_face) holds its centre; the faces are
the reference detector's on the full-resolution photo (YuNet at 1.5x upscale) that hold a hand-counted
face centre (media.yaml `faces`), so a false reference box is not counted. Also
ms per megapixel of the still path, and the pyramid's passes.

    .venv/bin/python bench/big_stills.py [--threads 1] [--min-face 24]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from anoncam import assets  # noqa: E402
from anoncam.config import validate  # noqa: E402
from anoncam.pipeline import Pipeline  # noqa: E402
from helpers import REF_UPSCALE, reference_detector  # noqa: E402

OFFSETS = [(0.0, 0.0), (0.61, 0.43), (1.0, 1.0)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-face", type=int, default=24)
    a = ap.parse_args()
    cfg = validate({"runtime": {"threads": a.threads}, "detect": {"min_face": a.min_face}}, "bench")
    pipe = Pipeline.from_config(cfg)
    ref = reference_detector()
    rows, cost = {}, []
    centres = assets.face_centres()
    for name in [f"group{i}" for i in range(1, 7)]:
        img = cv2.imread(str(assets.media_path(name)))
        big = cv2.resize(img, None, fx=REF_UPSCALE, fy=REF_UPSCALE, interpolation=cv2.INTER_CUBIC)
        faces = [d.box / REF_UPSCALE for d in ref.detect(big, tiles="none")]
        faces = [b for b in faces if any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for x, y in centres[name])]
        for side in (1000, 480):
            s = side / max(img.shape[:2])
            ph = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            fb = [b * s for b in faces if max(b[2:] - b[:2]) * s >= a.min_face]
            for k in (1, 2, 4, 8):
                for at in (OFFSETS if k > 1 else OFFSETS[:1]):
                    H, W = ph.shape[0] * k, ph.shape[1] * k
                    canvas = np.full((H, W, 3), 128, np.uint8)
                    y, x = int((H - ph.shape[0]) * at[1]), int((W - ph.shape[1]) * at[0])
                    canvas[y:y + ph.shape[0], x:x + ph.shape[1]] = ph
                    t = time.perf_counter()
                    dets = pipe.detect(canvas, 0, still=True)
                    ms = (time.perf_counter() - t) * 1000
                    cost.append((canvas.shape[0] * canvas.shape[1] / 1e6, ms))
                    hit = sum(any(d.box[0] <= (b[0] + b[2]) / 2 + x <= d.box[2] and
                                  d.box[1] <= (b[1] + b[3]) / 2 + y <= d.box[3] for d in dets) for b in fb)
                    r = rows.setdefault((side, k), [0, 0, 0])
                    r[0] += hit
                    r[1] += len(fb)
                    r[2] += len(dets) - hit
    print(f"min_face {a.min_face} px, {a.threads} thread(s); faces found / faces (extra boxes)")
    print("| photo long side | 1x | 2x | 4x | 8x |\n|---|---|---|---|---|")
    for side in (1000, 480):
        print(f"| {side} px | " + " | ".join(f"{rows[(side, k)][0]}/{rows[(side, k)][1]} ({rows[(side, k)][2]})"
                                          for k in (1, 2, 4, 8)) + " |")
    mp = np.array([c[0] for c in cost])
    ms = np.array([c[1] for c in cost])
    big = mp >= 4
    print(f"still path: {np.median(ms[big] / mp[big]):.0f} ms per megapixel (median over canvases >= 4 MP; "
          f"{ms[big].sum() / mp[big].sum():.0f} overall), largest {mp.max():.1f} MP in {ms[mp.argmax()]:.0f} ms; "
          f"{pipe.detector.passes((8000, 12000), a.min_face)} detector passes for 12000x8000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
