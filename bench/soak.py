"""Soak run (not CI): the real daemon (`anoncam run`) for N minutes at 15 fps with MQTT (a real
mosquitto started here on 127.0.0.1) and disk retention active (a small size cap, so segments are
deleted all along). Every minute: the daemon's RSS, open file descriptors, threads and fps (frames
counted over the minute), and the MQTT messages received. Writes CSV, JSON figures and a PNG plot.

    nice -n 10 .venv/bin/python bench/soak.py --minutes 60 --out bench/reference/soak

Flat means: RSS, fds and threads of the last quarter within a few percent of the second quarter
(the first minutes load models and fill caches)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(root: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = root / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(root / "mosquitto.log", "wb"))  # noqa: SIM115
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def proc_figures(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    field = {ln.split(":")[0]: ln.split(":", 1)[1].strip() for ln in status.splitlines()}
    return {"rss_mb": int(field["VmRSS"].split()[0]) / 1024, "threads": int(field["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


class Counter:
    """MQTT messages under the camera's prefix (a real subscriber)."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt
        self.n = 0
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-counter")
        self.c.on_connect = lambda c, *_: c.subscribe("anoncam/#")
        self.c.on_message = self._msg
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _msg(self, *_):
        self.n += 1

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--fps", type=float, default=15)
    ap.add_argument("--method", default="blur")
    ap.add_argument("--source", default="mjpeg:franck", help="mjpeg:SAMPLE: an HTTP MJPEG camera served here "
                    "on 127.0.0.1 from the sample's first 150 frames (the OpenCV URL source); or any "
                    "camera.source, e.g. sample:franck (a file paced at --fps)")
    ap.add_argument("--segment-s", type=float, default=60)
    ap.add_argument("--max-mb", type=float, default=10, help="retention.max_bytes (deletes all along)")
    ap.add_argument("--every-s", type=float, default=60, help="sampling period")
    ap.add_argument("--out", type=Path, default=Path("bench/reference/soak"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="anoncam-soak-"))
    broker, port = start_broker(work)
    source = a.source
    if source.startswith("mjpeg:"):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from anoncam import assets
        from fault_camera import MjpegCamera
        camera = MjpegCamera(assets.fetch(assets.load_manifest("media")[source[6:]]), fps=a.fps, n=150)
        source = camera.url
    cfg = work / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "camera": {"name": "soak", "source": source, "fps": a.fps, "realtime": True, "loop": True},
        "anonymize": {"method": a.method},
        "output": {"dir": str(work / "out"), "video": {"segment_s": a.segment_s},
                   "retention": {"max_bytes": int(a.max_mb * 1e6), "min_free_bytes": 0, "max_age_h": None}},
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": port},
        "log": {"format": "json", "summary_every_s": 5},
    }))
    counter = Counter(port)
    log = open(work / "daemon.log", "w")  # noqa: SIM115
    daemon = subprocess.Popen([sys.executable, "-m", "anoncam", "run", "--config", str(cfg)],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    last = {"frames": 0}

    def read_log():
        for line in daemon.stderr:
            log.write(line)
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("frames"), int):
                last["frames"] = rec["frames"]  # the daemon's summary line (counts at top level)
    threading.Thread(target=read_log, daemon=True).start()

    rows, t0 = [], time.monotonic()
    frames0, msgs0, tprev = 0, 0, t0
    print(f"soak: {a.minutes:g} min at {a.fps:g} fps, {a.method}, pid {daemon.pid}, work {work}", flush=True)
    try:
        while time.monotonic() - t0 < a.minutes * 60:
            time.sleep(a.every_s - ((time.monotonic() - t0) % a.every_s))
            if daemon.poll() is not None:
                print(f"soak: the daemon exited ({daemon.returncode})", flush=True)
                break
            now = time.monotonic()
            f = proc_figures(daemon.pid)
            deleted = sum(1 for ln in open(work / "daemon.log") if "retention" in ln)
            out_mb = sum(p.stat().st_size for p in (work / "out").rglob("*") if p.is_file()) / 1e6
            row = {"minute": round((now - t0) / 60, 2), **f,
                   "fps": round((last["frames"] - frames0) / (now - tprev), 2),
                   "mqtt_msgs": counter.n - msgs0, "frames": last["frames"], "out_mb": round(out_mb, 1),
                   "retention_deletions": deleted}
            frames0, msgs0, tprev = last["frames"], counter.n, now
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        t = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        try:
            rc = daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            rc = "killed after 60 s"
        stop_s = time.monotonic() - t
        counter.stop()
        broker.terminate()
        broker.wait(10)
        log.close()
    summary = report(rows, a, stop_s, rc)
    (a.out / "soak.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()},
                                                  "summary": summary, "rows": rows}, indent=1))
    with open(a.out / "soak.csv", "w") as f:
        f.write(",".join(rows[0]) + "\n" if rows else "")
        for r in rows:
            f.write(",".join(str(v) for v in r.values()) + "\n")
    plot(rows, a.out / "soak.png", a)
    print(json.dumps(summary, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report(rows: list[dict], a, stop_s: float, rc) -> dict:
    s = {"minutes": len(rows), "stop_s": round(stop_s, 2), "exit": rc}
    if len(rows) >= 4:
        q = len(rows) // 4
        early, late = rows[q:2 * q], rows[-q:]
        for k in ("rss_mb", "fds", "threads", "fps"):
            e = sum(r[k] for r in early) / len(early)
            lt = sum(r[k] for r in late) / len(late)
            s[k] = {"second_quarter": round(e, 2), "last_quarter": round(lt, 2),
                    "change_pct": round(100 * (lt - e) / e, 1) if e else None,
                    "min": min(r[k] for r in rows), "max": max(r[k] for r in rows)}
    return s


def plot(rows: list[dict], path: Path, a) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak: matplotlib not installed (pip install -e .[dev]): no plot", file=sys.stderr)
        return
    if not rows:
        return
    m = [r["minute"] for r in rows]
    fig, ax = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    for axis, key, label in zip(ax, ("rss_mb", "fds", "threads", "fps"),
                                ("RSS (MB)", "open fds", "threads", "fps (per minute)")):
        axis.plot(m, [r[key] for r in rows], marker=".")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        lo, hi = min(r[key] for r in rows), max(r[key] for r in rows)
        axis.set_ylim(0, hi * 1.2 + 1e-9 if lo >= 0 else None)
    ax[-1].set_xlabel("minutes")
    ax[0].set_title(f"anoncam run soak: {a.source} at {a.fps:g} fps, {a.method}, MQTT + retention")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    sys.exit(main())
