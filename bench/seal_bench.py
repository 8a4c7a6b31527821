"""Owner-key sealing cost and size (issue 15). Prints figures; asserts nothing.

Per clip at 640x480, 1 thread, blur: the frame loop's share of sealing (SealPolicy's copy of each
face region + VideoSeal.add, live: it never waits) per face, p50/p95, and the frames it dropped; the
segment's hand-off to SealWriter on the loop against the flush + age + write done by the worker; the
face stream's encode per frame (CPU beside the loop) and its share of a 25 fps frame (40 ms). Frames
come at --fps (25: the camera's pace; the frames the live encoder dropped are sealed again, waiting,
for the figures below);
sealed bytes against the anonymized segment's bytes (as the DiskSink writes it); PSNR of each
restored region (the ROI, what reveal pastes) against the captured pixels; reveal throughput.

    .venv/bin/python bench/seal_bench.py [--frames 240] [--crf 17] [--codec libx264] [--preset medium] [--fps 25]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyrage
from anoncam import assets, reveal, seal
from anoncam.config import validate
from anoncam.pipeline import Pipeline
from anoncam.policy import AnonymizeAll
from anoncam.sinks.files import VideoFile, encode_image, write_atomic

W, H = 640, 480


def frames_of(name: str, n: int):
    media = {k: assets.fetch(a) for k, a in assets.load_manifest("media").items() if k in (name, "group1")}
    if name == "group3pan":  # three faces: a group photo panning
        img = cv2.resize(cv2.imread(str(media["group1"])), (760, 560), interpolation=cv2.INTER_AREA)
        for i in range(n):
            j = i % 120
            yield np.ascontiguousarray(img[40 + j // 3: 40 + j // 3 + H, j: j + W])
        return
    cap = cv2.VideoCapture(str(media[name]))
    for _ in range(n):
        ok, f = cap.read()
        if not ok:
            return
        yield cv2.resize(f, (W, H), interpolation=cv2.INTER_LINEAR)


class Timed(seal.SealPolicy):
    def __init__(self, cfg):
        super().__init__(AnonymizeAll(cfg.method), cfg)
        self.ms: list[float] = []
        self.cpu: list[float] = []  # this thread's CPU (without waits for the core or the GIL)

    def decide(self, frame, faces, sidecar):
        self.inner.decide(frame, faces, sidecar)
        t, c = time.perf_counter(), time.thread_time()
        inner, self.inner = self.inner, _Noop()
        try:
            super().decide(frame, faces, sidecar)
        finally:
            self.inner = inner
        if faces:
            self.ms.append((time.perf_counter() - t) * 1000 / len(faces))
            self.cpu.append((time.thread_time() - c) * 1000 / len(faces))


class _Noop:
    def decide(self, *a):
        pass


def run(name: str, n: int, crf: int, recipient, identity, tmp: Path, fps: float) -> None:
    cfg = validate({"anonymize": {"method": "blur"}, "runtime": {"threads": 1}}, "bench")
    policy = Timed(cfg.anonymize)
    pipe = Pipeline.from_config(cfg, policy)
    cv2.setNumThreads(1)
    media = tmp / f"{name}.mp4"
    video = VideoFile(media, 25.0, (W, H))
    vs = seal.VideoSeal(25.0, (W, H), crf, live=True)
    add_ms, add_cpu, crops, faces = [], [], [], 0
    start = time.perf_counter()
    for i, frame in enumerate(frames_of(name, n)):
        if fps:  # frames come at the camera's rate, as in the daemon
            time.sleep(max(0.0, start + i / fps - time.perf_counter()))
        res = pipe.process(frame, i, live=False)
        video.write(res.image)
        c = res.sidecar.get("seal")
        t, tc = time.perf_counter(), time.thread_time()
        vs.add(c)
        if c is not None and c.items:
            add_ms.append((time.perf_counter() - t) * 1000 / len(c.items))
            add_cpu.append((time.thread_time() - tc) * 1000 / len(c.items))
            crops.append((i, c))
            faces += len(c.items)
    video.commit()
    dropped, per_frame = vs.dropped, faces / max(1, len(crops))
    writer = seal.SealWriter(recipient)
    t = time.perf_counter()
    writer.segment(vs, media)
    handoff_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    writer.close()
    close_ms = (time.perf_counter() - t) * 1000
    if dropped or not fps:  # sizes and PSNR of every frame's faces: seal them all again, waiting
        full = seal.VideoSeal(25.0, (W, H), crf)
        by_frame = dict(crops)
        for j in range(i + 1):
            full.add(by_frame.get(j))
        write_atomic(seal.sidecar_path(media), seal.encrypt(full.finish(media), recipient))
    sealed = seal.sidecar_path(media).read_bytes()
    # the worker's encode, timed again in this thread on the same regions (1 thread)
    enc = seal.VideoSeal(25.0, (W, H), crf)
    enc.worker.join(0)
    enc.q.put(None)
    enc.worker.join()
    import av
    per = []
    for _, c in crops:
        t = time.process_time()
        img = np.zeros((H, W, 3), np.uint8)
        for _, (x0, y0, x1, y1), px, _ in c.items:
            img[y0:y1, x0:x1] = px
        for pk in enc.stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
            enc.out.mux(pk)
        per.append((time.process_time() - t) * 1000)
    loop = np.array(policy.ms) + np.array(add_ms[:len(policy.ms)])
    loop_cpu = np.array(policy.cpu) + np.array(add_cpu[:len(policy.cpu)])
    vbytes, sbytes = media.stat().st_size, len(sealed)
    secs = i / 25.0 + 1 / 25.0
    t = time.perf_counter()
    reveal.reveal_video(media, tmp / f"{name}_r.mkv", identity)
    rv = (time.perf_counter() - t)
    header, _ = seal.open_sidecar(media, identity)
    back = cv2.VideoCapture(str(tmp / f"{name}_r.mkv"))
    restored = []
    while True:
        ok, f = back.read()
        if not ok:
            break
        restored.append(f)
    assert [fr for fr, _ in crops] == header["stream_frames"]
    ps = []
    for fr, c in crops:
        for _, (x0, y0, x1, y1), px, _ in c.items:
            mse = np.mean((restored[fr][y0:y1, x0:x1].astype(np.float64) - px) ** 2)
            ps.append(99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse))
    print(f"{name}: {i + 1} frames, {per_frame:.1f} faces/frame | in the loop per face "
          f"p50 {np.percentile(loop, 50):.3f} p95 {np.percentile(loop, 95):.3f} ms (thread CPU p50 "
          f"{np.percentile(loop_cpu, 50):.3f} p95 {np.percentile(loop_cpu, 95):.3f} ms), {dropped} frames dropped | "
          f"encode beside it p50 {np.percentile(per, 50):.2f} p95 {np.percentile(per, 95):.2f} ms/frame = "
          f"{np.percentile(per, 50) / 40 * 100:.1f} % of a 25 fps frame | segment close: {handoff_ms:.2f} ms "
          f"on the loop, {close_ms:.0f} ms in the worker | "
          f"sealed {sbytes / secs * 60 / 1e6:.2f} MB/min vs video {vbytes / secs * 60 / 1e6:.2f} MB/min "
          f"= {100 * sbytes / vbytes:.0f} % | PSNR min {min(ps):.1f} p5 {np.percentile(ps, 5):.1f} "
          f"median {np.median(ps):.1f} dB | reveal {(i + 1) / rv:.0f} frames/s")


def still(recipient, identity, tmp: Path) -> None:
    cfg = validate({"anonymize": {"method": "blur"}, "runtime": {"threads": 1}}, "bench")
    pipe = Pipeline.from_config(cfg, seal.SealPolicy(AnonymizeAll("blur"), cfg.anonymize))
    img = cv2.imread(str(assets.fetch(assets.load_manifest("media")["group1"])))
    res = pipe.process(img, 0, still=True, live=False)
    data = encode_image(res.image, ".jpg", 90)
    write_atomic(tmp / "g.jpg", data)
    writer = seal.SealWriter(recipient)
    t = time.perf_counter()
    writer.still(res.sidecar["seal"], tmp / "g.jpg", data, img.shape)
    loop_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    writer.close()
    ms = (time.perf_counter() - t) * 1000
    sealed = (tmp / "g.jpg.age").read_bytes()
    t = time.perf_counter()
    reveal.reveal_still(tmp / "g.jpg", tmp / "g.png", identity)
    print(f"still {img.shape[1]}x{img.shape[0]} {len(res.faces)} faces: seal {loop_ms:.2f} ms on the loop, "
          f"{ms:.0f} ms in the worker (lossless WebP + age + write), sealed {len(sealed) / 1e3:.0f} kB vs JPEG q90 {len(data) / 1e3:.0f} kB = "
          f"{100 * len(sealed) / len(data):.0f} %; reveal {(time.perf_counter() - t) * 1000:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--crf", type=int, default=validate({}, "bench").privacy.video_crf)
    ap.add_argument("--codec", default=seal.VIDEO_CODEC, help="the face stream's encoder (libx264, libx265)")
    ap.add_argument("--preset", default=seal.VIDEO_OPTIONS["preset"], help="its preset")
    ap.add_argument("--clips", default="franck,cap12,group3pan")
    ap.add_argument("--fps", type=float, default=25.0, help="pace the frames (0: as fast as they come)")
    a = ap.parse_args()
    seal.VIDEO_CODEC = a.codec
    seal.VIDEO_OPTIONS = {"preset": a.preset}
    if a.codec == "libx265":  # one thread, quiet
        seal.VIDEO_OPTIONS["x265-params"] = "pools=none:frame-threads=1:log-level=error"
    print(f"face stream: {a.codec} 4:4:4 crf {a.crf} {seal.VIDEO_OPTIONS}")
    identity = pyrage.x25519.Identity.generate()
    with tempfile.TemporaryDirectory() as d:
        for name in a.clips.split(","):
            run(name, a.frames, a.crf, identity.to_public(), identity, Path(d), a.fps)
        still(identity.to_public(), identity, Path(d))


if __name__ == "__main__":
    main()
