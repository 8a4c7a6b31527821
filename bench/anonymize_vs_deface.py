"""Benchmark: `anoncam anonymize --method blur` (or --method generative) at 1 and 2 threads next to
deface on the same clip.

The clip is the first N frames (--frames, default 300) of the sample franck.mp4 (360x288; --clip
cap13: 400x300), cut once into the anoncam cache. deface (PyPI, pinned) lives in its own venv in the
cache (or --deface-venv DIR), installed on first use with its default dependencies. Runs alternate (anoncam 1 thread, anoncam 2 threads, deface) for
--repeats rounds; medians are reported. fps is frames / wall time of the whole command, model loading
and video encoding included for both tools. CPU cores used is (user + sys time) / wall time.
Per-stage ms and the in-process fps come from `anoncam anonymize --stats` (its last 300 frames).
Each run first waits (up to 2 min) for other work on the machine to go quiet; runs during which
other work still used CPU are counted in a warning and in the JSON ("other_cores").

    .venv/bin/python bench/anonymize_vs_deface.py [--frames 300] [--repeats 5] [--skip-deface]

Prints Markdown tables and writes the same figures as JSON to --out. Exit code 0 whatever the
figures are; non-zero only if a tool cannot be installed or run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
from anoncam import assets

DEFACE_VERSION = "1.5.0"
THREADS = (1, 2)
STAGES = ("detect", "track", "landmarks", "anonymize")
TARGETS = {"blur": 5.0, "generative": 3.0}  # anoncam fps / deface fps (issue 14: generative >= 3x)
TARGET = TARGETS["blur"]  # main() sets the method's
METHOD = "blur"
PATIENCE = 120.0  # s to wait for a quiet machine before each run (--patience)
BUSY_LIMIT = 0.2  # cores used by other work: wait for less before each run, warn if more during one
ROOT = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------- inputs and tools

def cut_clip(frames: int, name: str = "franck") -> Path:
    """The first `frames` frames of a sample clip as an mp4 in the cache (deface has no frame limit)."""
    clip = assets.cache_dir() / "bench" / f"{name}_first{frames}.mp4"
    if clip.is_file() and count_frames(clip) == frames:
        return clip
    src = assets.media_path(name)
    clip.parent.mkdir(parents=True, exist_ok=True)
    part = clip.with_name(f"{clip.stem}.part.mp4")
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    n = 0
    while n < frames:
        ok, frame = cap.read()
        if not ok:
            break
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(part), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        writer.write(frame)
        n += 1
    cap.release()
    if writer is not None:
        writer.release()
    if n < frames:
        part.unlink(missing_ok=True)
        raise BenchError(f"{src} has only {n} frames, asked for {frames}")
    os.replace(part, clip)
    return clip


def tail(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout + proc.stderr).strip()[-1500:]


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    return n


def anoncam_cmd() -> list[str]:
    """The anoncam CLI next to the running python (the project venv), else `python -m anoncam`."""
    exe = Path(sys.executable).parent / "anoncam"  # no resolve(): the venv's python is a symlink
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "anoncam"]


def deface_venv(venv: Path | None = None) -> Path:
    """deface==DEFACE_VERSION in its own venv (under the cache unless `venv`); returns its bin dir."""
    venv = venv or assets.cache_dir() / "venvs" / f"deface-{DEFACE_VERSION}"
    bin_dir = venv / "bin"
    if (bin_dir / "deface").is_file():
        proc = subprocess.run([str(bin_dir / "deface"), "--version"], capture_output=True, text=True,
                              check=False)
        if proc.returncode == 0 and proc.stdout.strip() == DEFACE_VERSION:
            return bin_dir
        shutil.rmtree(venv)  # broken or another version: build it again
    print(f"installing deface=={DEFACE_VERSION} into {venv} ...", file=sys.stderr)
    steps = ([sys.executable, "-m", "venv", str(venv)],
             [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              f"deface=={DEFACE_VERSION}"])
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise BenchError(f"cannot install deface: `{' '.join(cmd)}` failed:\n{tail(proc)}")
    return bin_dir


def deface_backend(bin_dir: Path) -> dict:
    """What deface's default `--backend auto` picks in its venv (onnxrt if onnx and onnxruntime
    import, else OpenCV DNN), with the versions of the packages that decide its speed."""
    code = ("import json\n"
            "from importlib.metadata import version, PackageNotFoundError\n"
            "from deface.centerface import CenterFace\n"
            "c = CenterFace(backend='auto')\n"
            "v = {}\n"
            "for p in ('deface', 'opencv-python', 'numpy', 'onnxruntime', 'imageio-ffmpeg'):\n"
            "    try: v[p] = version(p)\n"
            "    except PackageNotFoundError: pass\n"
            "ep = c.sess.get_providers()[0] if c.backend == 'onnxrt' else None\n"
            "print(json.dumps({'backend': c.backend, 'provider': ep, 'packages': v}))")
    proc = subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise BenchError(f"cannot load deface's model:\n{tail(proc)}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])  # onnxrt prints "Running on ..." first
    pk = info["packages"]
    info["label"] = (f"OpenCV DNN (opencv-python {pk.get('opencv-python')})" if info["backend"] == "opencv"
                     else f"onnxruntime {pk.get('onnxruntime')} ({info['provider']})")
    return info


# ---------------------------------------------------------------- one timed run

def cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            t = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(t) - t[3] - t[4], sum(t)  # busy = all but idle and iowait


def machine_cores(a: tuple[int, int] | None, b: tuple[int, int] | None) -> float | None:
    """Cores the whole machine kept busy between two cpu_ticks() samples."""
    if a is None or b is None or b[1] <= a[1]:
        return None
    return (os.cpu_count() or 1) * (b[0] - a[0]) / (b[1] - a[1])


def wait_quiet(patience: float = 120.0) -> None:
    """On a shared machine: wait (at most `patience` s) until other work uses under BUSY_LIMIT cores."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        a = cpu_ticks()
        time.sleep(0.5)
        busy = machine_cores(a, cpu_ticks())
        if busy is None or busy < BUSY_LIMIT:
            return


def timed(cmd: list[str]) -> tuple[dict, subprocess.CompletedProcess]:
    """Run cmd; return wall seconds, CPU cores it used (user+sys / wall, its children included) and
    the cores other work on the machine used meanwhile, plus the finished process."""
    wait_quiet(PATIENCE)
    before, ticks = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_ticks()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after, machine = resource.getrusage(resource.RUSAGE_CHILDREN), machine_cores(ticks, cpu_ticks())
    cores = ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / wall
    other = None if machine is None else round(max(0.0, machine - cores), 2)
    return {"wall_s": wall, "cores": cores, "other_cores": other}, proc


def run_anoncam(clip: Path, frames: int, threads: int, tmp: Path) -> dict:
    out, stats_file = tmp / f"anoncam_t{threads}.mp4", tmp / f"stats_t{threads}.json"
    cmd = [*anoncam_cmd(), "anonymize", str(clip), "-o", str(out), "--method", METHOD,
           "--threads", str(threads), "-q", "--stats", str(stats_file)]
    run, proc = timed(cmd)
    if proc.returncode != 0 or not stats_file.is_file():
        raise BenchError(f"anoncam failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail(proc)}")
    stats = json.loads(stats_file.read_text())
    if stats["frames"] != frames or count_frames(out) != frames:
        raise BenchError(f"anoncam processed {stats['frames']} frames, expected {frames}")
    return {"tool": "anoncam", "threads": threads, "fps": frames / run["wall_s"], **run,
            "fps_in_process": stats["fps"], "stage_ms": stats["stage_ms"],
            "covered": stats.get("covered"), "dropped": stats.get("dropped")}


def run_deface(bin_dir: Path, clip: Path, frames: int, tmp: Path) -> dict:
    out = tmp / "deface.mp4"
    out.unlink(missing_ok=True)
    # Defaults: --replacewith blur, no --preview, libx264 output, --backend auto.
    cmd = [str(bin_dir / "deface"), str(clip), "-o", str(out)]
    run, proc = timed(cmd)
    # deface exits 0 even when it skips a file, so check the output too
    if proc.returncode != 0 or count_frames(out) != frames:
        raise BenchError(f"deface failed (exit {proc.returncode}, {count_frames(out)} of {frames} frames "
                         f"written): {' '.join(cmd)}\n{tail(proc)}")
    return {"tool": "deface", "threads": None, "fps": frames / run["wall_s"], **run}


# ---------------------------------------------------------------- summary and tables

def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarize(runs: list[dict]) -> dict:
    rows = []
    groups = [("anoncam", t) for t in THREADS] + [("deface", None)]
    for tool, threads in groups:
        rs = [r for r in runs if r["tool"] == tool and r["threads"] == threads]
        if not rs:
            continue
        fps = median_of(rs, "fps")
        row = {"tool": tool, "threads": threads, "runs": len(rs), "fps": round(fps, 2),
               "ms_per_frame": round(1000 / fps, 2), "wall_s": round(median_of(rs, "wall_s"), 3),
               "cores": round(median_of(rs, "cores"), 2)}
        if tool == "anoncam":
            row["fps_in_process"] = round(median_of(rs, "fps_in_process"), 2)
            names = list(STAGES) + sorted({k for r in rs for k in r["stage_ms"]} - set(STAGES))
            row["stage_ms"] = {  # median over the runs of each run's p50 and p95
                name: {q: round(statistics.median(r["stage_ms"][name][q] for r in rs), 2)
                       for q in ("p50", "p95")}
                for name in names if all(name in r["stage_ms"] for r in rs)}
        rows.append(row)
    deface = next((r for r in rows if r["tool"] == "deface"), None)
    for row in rows:
        if row["tool"] == "anoncam" and deface:
            row["x_deface"] = round(row["fps"] / deface["fps"], 2)
    best = max((r for r in rows if r["tool"] == "anoncam"), key=lambda r: r["fps"])
    target = {"x": TARGET, "ratio": best.get("x_deface"), "threads": best["threads"],
              "met": None if deface is None else best["x_deface"] >= TARGET}
    return {"rows": rows, "target": target}


def tables(summary: dict, frames: int) -> str:
    rows = summary["rows"]
    out = ["| tool | threads | fps (median) | ms/frame | CPU cores used | x deface fps |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        threads = r["threads"] if r["threads"] is not None else "default"
        ratio = f"{r['x_deface']:.2f}x" if "x_deface" in r else "1.00x" if r["tool"] == "deface" else "n/a"
        name = f"anoncam {METHOD}" if r["tool"] == "anoncam" else f"deface {DEFACE_VERSION}"
        out.append(f"| {name} | {threads} | {r['fps']:.1f} | {r['ms_per_frame']:.1f} | {r['cores']:.2f} "
                   f"| {ratio} |")
    out.append("")
    out.append(f"fps = {frames} frames / wall time of the whole command (model load and encoding "
               f"included); CPU cores used = (user + sys) / wall.")
    out.append("")
    anon = [r for r in rows if r["tool"] == "anoncam"]
    heads = [f"{r['threads']} thread(s) p50 / p95" for r in anon]
    out.append("| anoncam stage (ms) | " + " | ".join(heads) + " |")
    out.append("|---|" + "---|" * len(anon))
    names = list(dict.fromkeys(n for r in anon for n in r["stage_ms"]))
    for name in names:
        cells = [f"{r['stage_ms'][name]['p50']:.2f} / {r['stage_ms'][name]['p95']:.2f}"
                 if name in r["stage_ms"] else "-" for r in anon]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("| in-process fps | " + " | ".join(f"{r['fps_in_process']:.1f}" for r in anon) + " |")
    return "\n".join(out)


def target_line(target: dict) -> str:
    if target["met"] is None:
        return f"target {TARGET:g}x deface: not measured (--skip-deface)"
    verdict = "met" if target["met"] else "not met"
    return (f"target {TARGET:g}x deface: {verdict} (ratio {target['ratio']:.2f}, "
            f"anoncam at {target['threads']} thread(s))")


def git_commit() -> str | None:
    """The commit the bench ran from ("-dirty" if the tree has changes), if this is a git checkout."""
    proc = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                          text=True, check=False)
    return proc.stdout.strip() or None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------- main

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=300, help="first N frames of the clip (default 300)")
    p.add_argument("--repeats", type=int, default=5, help="alternating rounds; medians reported (default 5)")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "anonymize_vs_deface.json",
                   help="JSON results file (default out/bench/anonymize_vs_deface.json)")
    p.add_argument("--skip-deface", action="store_true", help="only run anoncam")
    p.add_argument("--method", choices=sorted(TARGETS), default="blur", help="anoncam's method (default blur)")
    p.add_argument("--clip", choices=("franck", "cap13"), default="franck", help="sample clip (default franck)")
    p.add_argument("--deface-venv", type=Path, help="deface's venv (default: under the anoncam cache)")
    p.add_argument("--patience", type=float, default=120.0,
                   help="s to wait for other work to go quiet before each run (default 120)")
    args = p.parse_args()
    global METHOD, TARGET, PATIENCE
    METHOD, TARGET, PATIENCE = args.method, TARGETS[args.method], args.patience
    if args.frames < 1 or args.repeats < 1:
        p.error("--frames and --repeats must be at least 1")

    try:
        clip = cut_clip(args.frames, args.clip)
        bin_dir = backend = None
        if not args.skip_deface:
            bin_dir = deface_venv(args.deface_venv)
            backend = deface_backend(bin_dir)
        print(f"clip {clip} ({args.frames} frames); anoncam: {' '.join(anoncam_cmd())}", file=sys.stderr)
        if bin_dir:
            print(f"deface {DEFACE_VERSION}: {bin_dir / 'deface'}, backend {backend['label']}",
                  file=sys.stderr)

        runs = []
        with tempfile.TemporaryDirectory(prefix="anoncam-bench-") as tmp:
            for i in range(args.repeats):
                for threads in THREADS:
                    runs.append(run_anoncam(clip, args.frames, threads, Path(tmp)))
                    print(f"round {i + 1}/{args.repeats} anoncam {threads} thread(s): "
                          f"{runs[-1]['fps']:.1f} fps", file=sys.stderr)
                if bin_dir:
                    runs.append(run_deface(bin_dir, clip, args.frames, Path(tmp)))
                    print(f"round {i + 1}/{args.repeats} deface: {runs[-1]['fps']:.1f} fps", file=sys.stderr)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1

    summary = summarize(runs)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; clip: {args.clip}, first {args.frames} frames; "
          f"medians of {args.repeats} alternating runs")
    if backend:
        print(f"deface {DEFACE_VERSION} backend: {backend['label']}")
    print()
    print(tables(summary, args.frames))
    print()
    other = [r["other_cores"] for r in runs if r["other_cores"] is not None]
    disturbed = sum(o > BUSY_LIMIT for o in other)
    summary["target"]["disturbed_runs"] = disturbed
    print(target_line(summary["target"]) + (" UNRELIABLE, see warning" if disturbed else ""))
    if disturbed:
        print(f"warning: other work used up to {max(other):.2f} cores during {disturbed} of {len(runs)} "
              f"runs; the figures and ratios are skewed, rerun on an idle machine")

    result = {
        "clip": {"source": f"{args.clip} (sample media, firmware/anoncam/media.yaml)", "path": str(clip),
                 "frames": args.frames},
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "anoncam": {"git": git_commit(),
                    "command": [*anoncam_cmd(), "anonymize", "CLIP", "-o", "OUT.mp4", "--method", METHOD,
                                "--threads", "T", "-q", "--stats", "STATS.json"]},
        "deface": backend and {**backend, "command": "deface CLIP -o OUT.mp4"},
        "repeats": args.repeats,
        "summary": summary["rows"],
        "target": summary["target"],
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"results written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
