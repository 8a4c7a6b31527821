"""MQTT uplink benchmark (prints figures; not a test), on loopback with a real mosquitto:

1. live: the daemon loop on a 640x480 clip paced at 10 fps, a snapshot and an event per frame; snapshot
   and event rate delivered, and latency from frame capture (the source's timestamp) to delivery at a
   subscriber, p50/p95; the sinks' cost in the camera loop;
2. capacity: anonymized 640x480 frames pushed into the sink as fast as the loop can, snapshots only, then
   events only: what is delivered per second, and what overflows the queue.

    python bench/mqtt_bench.py [--seconds 15] [--broker HOST:PORT]

Starts its own mosquitto on a free port unless --broker is given. Needs the sample clips (anoncam
samples fetch cap12).
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from anoncam import assets
from anoncam.config import validate
from anoncam.mqtt.topics import jpeg_comment
from anoncam.runner import Runner
from paho.mqtt.enums import CallbackAPIVersion

CAM = "bench"


def start_broker(d: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = d / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest none\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)])
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


class Subscriber:
    def __init__(self, host: str, port: int):
        self.lock = threading.Lock()
        self.snaps: list[tuple[float, float, int]] = []   # (capture ts, receive time, bytes)
        self.events: list[tuple[float, float]] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"anoncam/{CAM}/#", qos=1)
        self.c.on_message = self._msg
        self.c.connect(host, port)
        self.c.loop_start()
        time.sleep(0.5)

    def _msg(self, c, u, m) -> None:
        now = time.time()
        if m.topic.endswith("/snapshot"):
            ts = float(jpeg_comment(m.payload).split("ts=")[1])
            with self.lock:
                self.snaps.append((ts, now, len(m.payload)))
        elif m.topic.endswith("/events"):
            e = json.loads(m.payload)
            if e["type"] in ("appear", "update"):
                with self.lock:
                    self.events.append((e["ts"], now))

    def reset(self) -> None:
        with self.lock:
            self.snaps, self.events = [], []

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def make_clip(d: Path, frames: int) -> Path:
    """cap12 scaled to 640x480 (a real face clip at the benchmark's size)."""
    src = assets.fetch(assets.load_manifest("media")["cap12"])
    out = d / "cap12_640x480.avi"
    w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    cap = cv2.VideoCapture(str(src))
    n = 0
    while n < frames:
        ok, f = cap.read()
        if not ok:
            break
        w.write(cv2.resize(f, (640, 480), interpolation=cv2.INTER_CUBIC))
        n += 1
    cap.release()
    w.release()
    return out


def config(clip: Path, out: Path, host: str, port: int, fps: float | None = 10, **mqtt_cfg):
    camera = {"fps": fps} if fps else {"realtime": False}
    return validate({"camera": {"name": CAM, "source": str(clip), "loop": True, **camera},
                     "output": {"dir": str(out), "stills": {"enabled": False}, "video": {"enabled": False}},
                     "log": {"level": "WARNING"},
                     "mqtt": {"enabled": True, "host": host, "port": port, "event_update_every_s": 0,
                              "stats_every_s": 1, "snapshot": {"every_s": 0, "max_width": 640, "quality": 80},
                              **mqtt_cfg}})


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def live(clip, out, host, port, seconds: float) -> None:
    sub = Subscriber(host, port)
    runner = Runner(config(clip, out, host, port))
    frames = int(seconds * 10)
    t0 = time.time()
    runner.run(max_frames=frames)
    time.sleep(1.0)
    wall = time.time() - t0
    sub.close()
    s_lat = [(r - c) * 1000 for c, r, _ in sub.snaps]
    e_lat = [(r - c) * 1000 for c, r in sub.events]
    size = np.mean([b for _, _, b in sub.snaps]) / 1000 if sub.snaps else float("nan")
    sinks = runner.stats.stage_ms["sinks"]
    # ("decode" also holds the source's pacing sleep, so it is left out)
    pipe = [sum(v) for v in zip(*(runner.stats.stage_ms[k] for k in ("detect", "track", "landmarks", "anonymize")))]
    print(f"live, 640x480 at 10 fps for {frames} frames ({wall:.1f} s wall):")
    print(f"  snapshots delivered  {len(sub.snaps)}/{frames}  {len(sub.snaps) / (frames / 10):.1f}/s  "
          f"{size:.1f} kB each  {len(sub.snaps) * size / (frames / 10) / 1000:.2f} MB/s")
    print(f"  events delivered     {len(sub.events)}  {len(sub.events) / (frames / 10):.1f}/s")
    print(f"  capture -> subscriber, snapshot: p50 {pct(s_lat, 50):.1f} ms  p95 {pct(s_lat, 95):.1f} ms")
    print(f"  capture -> subscriber, event:    p50 {pct(e_lat, 50):.1f} ms  p95 {pct(e_lat, 95):.1f} ms")
    print(f"  of which detect..anonymize: p50 {pct(pipe, 50):.1f} ms  p95 {pct(pipe, 95):.1f} ms")
    print(f"  sinks in the camera loop: p50 {pct(sinks, 50):.2f} ms  p95 {pct(sinks, 95):.2f} ms")


def capacity(clip, out, host, port, seconds: float) -> None:
    """Push anonymized frames into the sink as fast as possible: what gets delivered per second."""
    for label, extra in (("snapshots only", {"event_update_every_s": 1e9}),
                         ("events only", {"snapshot": {"enabled": False}})):
        sub = Subscriber(host, port)
        cfg = config(clip, out, host, port, fps=None, queue_size=256, **extra)
        runner = Runner(cfg)
        sink = runner.sinks[-1]
        frames = []
        for f in runner.source:  # real frames, anonymized by the real pipeline
            frames.append(runner.loop.anonymize(f))
            if len(frames) == 50:
                break
        t0 = time.time()
        n = 0
        write_ms = []
        while time.time() - t0 < seconds:
            r = frames[n % len(frames)]
            r.index, r.timestamp = n, time.time()
            t = time.perf_counter()
            sink.write(r)
            write_ms.append((time.perf_counter() - t) * 1000)
            n += 1
            time.sleep(0.0005)  # the camera loop never spins this fast; leave the worker some CPU
        sink.close()
        runner.source.close()
        elapsed = time.time() - t0
        time.sleep(0.5)
        got = len(sub.snaps) if "snap" in label else len(sub.events)
        lat = [(r - c) * 1000 for c, r, *_ in (sub.snaps if "snap" in label else sub.events)]
        sub.close()
        print(f"capacity, {label}: {n} frames offered in {elapsed:.1f} s, {got} delivered "
              f"({got / elapsed:.0f}/s), queue overflow {dict(sink.overflow)}; write() p50 {pct(write_ms, 50):.3f} ms "
              f"p95 {pct(write_ms, 95):.3f} ms; delivery p50 {pct(lat, 50):.1f} ms p95 {pct(lat, 95):.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--broker", help="HOST:PORT of a running broker (default: start mosquitto here)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="anoncam-mqtt-bench-") as tmp:
        d = Path(tmp)
        broker = None
        if args.broker:
            host, port = args.broker.rsplit(":", 1)
            port = int(port)
        else:
            broker, port = start_broker(d)
            host = "127.0.0.1"
        try:
            clip = make_clip(d, 300)
            live(clip, d / "out", host, port, args.seconds)
            capacity(clip, d / "out", host, port, min(args.seconds, 5.0))
        finally:
            if broker:
                broker.terminate()
                broker.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
