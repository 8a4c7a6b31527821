"""Fault injection on the real daemon (issue 17): a real HTTP MJPEG camera on 127.0.0.1 (tests/
fault_camera.py, frames of a real face clip) that stalls, goes away and comes back; SIGTERM and
SIGKILL of the real `anoncam run` subprocess; a full disk (an 8 MB tmpfs). After each fault: no raw
face in any file written (each output frame is matched to the camera frame it came from and its
reference faces must be covered), recordings kept as README "Faults" says, and the daemon stops
within runtime.stop_timeout_s or recovers.

Stop-time assertions are the subject here: they allow the documented bound plus a margin for a
loaded machine (STOP_MARGIN_S)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from anoncam.sinks.files import count_frames
from conftest import ANONCAM, TEST_BUDGET_MS
from fault_camera import MjpegCamera
from helpers import is_covered, video_reference
from test_mqtt import Broker, Sub

CLIP = "cap13"
STOP_TIMEOUT_S = 5.0
STOP_MARGIN_S = 3.0  # process teardown on a loaded 2-core machine


@pytest.fixture
def camera(media):
    cam = MjpegCamera(media[CLIP], fps=15, n=30)
    yield cam
    cam.close()


def write_config(tmp_path: Path, out: Path, **over) -> Path:
    cfg = {"camera": {"name": "door", "fps": 15, "read_timeout_s": 30.0},
           "output": {"dir": str(out), "stills": {"every_s": 1.0}, "video": {"segment_s": 60.0}},
           "runtime": {"stop_timeout_s": STOP_TIMEOUT_S},
           "log": {"format": "json", "summary_every_s": 0.5}, "failsafe": {"budget_ms": TEST_BUDGET_MS}}
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    path = tmp_path / "cam.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Daemon:
    """`anoncam run` in a subprocess; its JSON log lines are kept as they come."""

    def __init__(self, cfg: Path, source: str, env: dict):
        self.err = open(cfg.parent / f"daemon-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen([*ANONCAM, "run", "--config", str(cfg), "--source", source],
                                     env=env, stderr=self.err, stdout=subprocess.DEVNULL)

    def log(self) -> list[dict]:
        if not self.err.closed:
            self.err.flush()
        out = []
        for line in Path(self.err.name).read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"msg": line})
        return out

    def frames(self) -> int:
        return max([r["frames"] for r in self.log() if isinstance(r.get("frames"), int)], default=0)

    def wait(self, pred, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            assert self.proc.poll() is None, f"daemon exited ({self.proc.returncode}) before {what}:\n" + self.text()
            time.sleep(0.1)
        raise AssertionError(f"no {what} within {timeout} s:\n{self.text()[-3000:]}")

    def text(self) -> str:
        return "\n".join(r.get("msg", "") for r in self.log())

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> float:
        """Send `sig`; seconds until the process ended."""
        t = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout)
        return time.monotonic() - t

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def mqtt_section(port: int, tmp_path: Path) -> dict:
    return {"enabled": True, "host": "127.0.0.1", "port": port, "snapshot": {"every_s": 0.25},
            "spool": {"dir": str(tmp_path / "spool")}, "close_timeout_s": 2.0}


@pytest.fixture
def daemons():
    made = []
    yield lambda *a: made.append(Daemon(*a)) or made[-1]
    for d in made:
        d.close()


# --- the leak check -------------------------------------------------------------------------------
def small(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (80, 60), interpolation=cv2.INTER_AREA).astype(np.float32)


class LeakCheck:
    """Every output frame is matched to the camera frame it came from (nearest at 80x60: blur leaves
    the scene around the face) and each reference face of that frame must be covered in it."""

    def __init__(self, cam: MjpegCamera | None, media, originals: list | None = None):
        self.originals = originals if originals is not None else cam.originals
        ref = video_reference(media[CLIP])  # the clip's frames; the camera sends its first ones
        self.boxes = ref[:len(self.originals)]
        self.thumbs = [small(o) for o in self.originals]
        assert sum(1 for b in self.boxes if b) >= len(self.boxes) // 2  # faces to check

    def frame(self, img: np.ndarray) -> int:
        """The faces checked in one output frame (asserts each is covered)."""
        t = small(img)
        i = int(np.argmin([np.mean((t - o) ** 2) for o in self.thumbs]))
        for b in self.boxes[i]:
            assert is_covered(self.originals[i], img, b), f"raw face of camera frame {i} in the output"
        return len(self.boxes[i])

    @staticmethod
    def clip_frames(media, n: int) -> list:
        cap = cv2.VideoCapture(str(media[CLIP]))
        frames = [cap.read()[1] for _ in range(n)]
        cap.release()
        return frames

    def snapshots(self, sub: Sub) -> int:
        """Every snapshot received (the camera's frames are 400 px wide: sent at full size)."""
        n = 0
        for m in sub.on("anoncam/door/snapshot"):
            img = cv2.imdecode(np.frombuffer(m.payload, np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and img.shape == self.originals[0].shape
            self.frame(img)
            n += 1
        return n

    def folder(self, root: Path) -> dict:
        """Every file under `root`: videos frame by frame, stills; anything else is an error."""
        n = {"video_frames": 0, "stills": 0, "faces": 0, "videos": 0}
        for p in sorted(root.rglob("*")):
            if not p.is_file():
                continue
            if p.suffix == ".mp4":
                cap = cv2.VideoCapture(str(p))
                n["videos"] += 1
                while True:
                    ok, img = cap.read()
                    if not ok:
                        break
                    n["faces"] += self.frame(img)
                    n["video_frames"] += 1
                cap.release()
            elif p.suffix == ".jpg":
                n["faces"] += self.frame(cv2.imread(str(p)))
                n["stills"] += 1
            else:
                raise AssertionError(f"unexpected file written: {p}")
        return n


def outputs(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*") if p.is_file())


def segment_written(d: Daemon):
    return lambda: any(re.search(r"segment written", r.get("msg", "")) for r in d.log())


# --- stop is bounded -------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["stalled", "gone", "reconnecting to a silent camera"])
def test_sigterm_ends_the_run_within_stop_timeout(fault, camera, media, tmp_path, cli_env, daemons):
    """The camera stalls (connection open, nothing sent), goes away (connection refused), or goes
    away and comes back accepting without answering (FFmpeg's open blocks; its own timeout is 30 s
    here): SIGTERM ends the daemon within stop_timeout_s and the open segment is finished."""
    out = tmp_path / "out"
    d = daemons(write_config(tmp_path, out), camera.url, cli_env)
    d.wait(lambda: d.frames() >= 30, 180, "30 frames")
    if fault == "stalled":
        camera.stall()
    else:
        camera.drop()
        if fault != "gone":
            time.sleep(0.5)
            camera.answer_nothing()
            d.wait(lambda: camera.connections >= 2, 30, "a reconnection attempt")
    time.sleep(1.5)
    frames = d.frames()
    took = d.stop()
    print(f"stop while {fault}: {took:.2f} s")
    assert d.proc.returncode == 0, d.text()[-3000:]
    assert took < STOP_TIMEOUT_S + STOP_MARGIN_S, f"stop took {took:.1f} s"
    assert "stop took longer" not in d.text()  # the graceful path, not the timer
    names = outputs(out)
    assert not [n for n in names if ".part" in n or n.endswith(".tmp")], names
    got = LeakCheck(camera, media).folder(out)
    assert got["videos"] == 1 and got["video_frames"] >= frames, (got, frames)  # nothing lost at stop
    assert got["faces"] > 0


def test_sigterm_while_connecting_at_start(camera, media, tmp_path, cli_env, daemons):
    """The camera accepts and never answers from the start: the daemon is still opening it (FFmpeg's
    open timeout is 30 s here) when SIGTERM comes; it ends at once and has written nothing."""
    camera.stall()
    out = tmp_path / "out"
    d = daemons(write_config(tmp_path, out), camera.url, cli_env)
    d.wait(lambda: camera.connections >= 1, 180, "a connection")
    time.sleep(0.5)
    took = d.stop()
    print(f"stop while connecting: {took:.2f} s")
    assert took < STOP_TIMEOUT_S + STOP_MARGIN_S, f"stop took {took:.1f} s"
    assert d.proc.returncode in (0, -signal.SIGTERM)
    assert [n for n in outputs(out)] == []


HUNG_CAMERA = """
import sys, threading, time
sys.path.insert(0, {tests!r})
import cv2
import fake_picamera2
cap = cv2.VideoCapture({clip!r})
fake_picamera2.Picamera2.frames = [cap.read()[1] for _ in range(30)]
real = fake_picamera2.Picamera2.capture_array
def capture_array(self, name="main"):
    if self._n >= 30:
        open({hung!r}, "w").close()  # tells the test the camera hangs now
        threading.Event().wait()  # the camera hangs: this call never returns
    time.sleep(1 / 15)  # a camera's pace (summary lines come every 0.5 s)
    return real(self, name)
fake_picamera2.Picamera2.capture_array = capture_array
sys.modules["picamera2"] = fake_picamera2
from anoncam.cli import main
sys.exit(main(["run", "--config", {cfg!r}, "--source", "picamera2"]))
"""


def test_stop_timer_ends_a_hung_camera(media, tmp_path, cli_env):
    """A source that cannot be interrupted (picamera2's capture_array, here the stand-in hung after 30
    frames): SIGTERM arms the stop timer, which ends the process at stop_timeout_s with a log line;
    the open segment is left as after a crash and plays."""
    out = tmp_path / "out"
    cfg = write_config(tmp_path, out, camera={"width": 400, "height": 300})
    script = tmp_path / "hung.py"
    hung = tmp_path / "hung"
    script.write_text(HUNG_CAMERA.format(tests=str(Path(__file__).parent), clip=str(media[CLIP]), cfg=str(cfg),
                                         hung=str(hung)))
    d = Daemon.__new__(Daemon)
    d.err = open(tmp_path / "daemon.log", "w+")  # noqa: SIM115
    d.proc = subprocess.Popen([sys.executable, str(script)], env=cli_env, stderr=d.err)
    try:
        d.wait(hung.exists, 300, "the stand-in to hang at its 31st frame")  # not a fixed sleep: a loaded
        time.sleep(0.5)  # machine may take longer than 2 s for 15 frames
        took = d.stop()
        print(f"stop with a hung camera: {took:.2f} s")
    finally:
        d.close()
    assert STOP_TIMEOUT_S - 0.5 < took < STOP_TIMEOUT_S + STOP_MARGIN_S, f"stop took {took:.1f} s"
    assert "stop took longer than runtime.stop_timeout_s" in d.text()
    part = list(out.rglob("*.part.mp4"))
    assert len(part) == 1
    assert count_frames(part[0]) >= 29  # every frame but the last of the 30
    originals = [cv2.resize(f, (400, 300)) for f in LeakCheck.clip_frames(media, 30)]
    cap = cv2.VideoCapture(str(part[0]))
    check, n = LeakCheck(None, media, originals), 0
    while (img := cap.read()[1]) is not None:
        check.frame(img)
        n += 1
    assert n >= 29


# --- the camera goes away and comes back ---------------------------------------------------------------
def test_camera_gone_and_back_recovers(camera, media, tmp_path, cli_env, daemons, broker):
    """The camera goes away for 3 s: the daemon reconnects (backoff 0.5, 1, 2 s) and goes on writing
    and publishing; nothing raw on disk or in the MQTT snapshots."""
    out = tmp_path / "out"
    sub = Sub(broker.port, topics=("anoncam/#",))
    cfg = write_config(tmp_path, out, camera={"read_timeout_s": 2.0}, mqtt=mqtt_section(broker.port, tmp_path))
    d = daemons(cfg, camera.url, cli_env)
    d.wait(lambda: d.frames() >= 30, 180, "30 frames")
    camera.drop()
    time.sleep(3.0)
    before = d.frames()
    camera.resume()
    d.wait(lambda: d.frames() >= before + 30, 60, "30 frames after the camera came back")
    assert "stopped delivering" in d.text()
    took = d.stop()
    assert d.proc.returncode == 0 and took < STOP_TIMEOUT_S + STOP_MARGIN_S
    check = LeakCheck(camera, media)
    got = check.folder(out)
    assert got["video_frames"] >= before + 30 and got["stills"] >= 3, got
    sub.close()
    assert check.snapshots(sub) >= 10


# --- crashes: SIGKILL ----------------------------------------------------------------------------------
def test_sigkill_keeps_the_open_segment(camera, media, tmp_path, cli_env, daemons, broker):
    """SIGKILL mid-segment: the next start keeps the segment (fragmented MP4, a fragment per frame,
    trimmed to its last whole one) and says so in the log; every frame counted before the kill but
    the last is in it."""
    out = tmp_path / "out"
    sub = Sub(broker.port, topics=("anoncam/#",))
    cfg = write_config(tmp_path, out, mqtt=mqtt_section(broker.port, tmp_path))
    d = daemons(cfg, camera.url, cli_env)
    d.wait(lambda: d.frames() >= 75, 180, "75 frames")
    time.sleep(1.0)  # frames counted by the last summary line are on their way to the file
    logged = d.frames()
    d.stop(signal.SIGKILL)
    part = [p for p in out.rglob("*.part.mp4")]
    assert len(part) == 1, outputs(out)
    d2 = daemons(cfg, camera.url, cli_env)  # the next start keeps it
    d2.wait(lambda: d2.frames() >= 15, 180, "frames after the restart")
    assert d2.stop() < STOP_TIMEOUT_S + STOP_MARGIN_S and d2.proc.returncode == 0
    assert "recovery: kept " + part[0].name.replace(".part", "") in d2.text(), d2.text()[-3000:]
    kept = part[0].with_name(part[0].name.replace(".part", ""))
    n = count_frames(kept)
    print(f"SIGKILL: {n} frames kept, {logged} counted before the kill")
    assert n >= logged - 1, f"{n} frames kept of at least {logged} written"
    assert cv2.VideoCapture(str(kept)).get(cv2.CAP_PROP_FRAME_COUNT) == n
    assert len(list(out.rglob("*.mp4"))) == 2 and not list(out.rglob("*.part.*"))
    check = LeakCheck(camera, media)
    check.folder(out)
    sub.close()
    assert check.snapshots(sub) >= 10


# --- a full disk ------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs (root; CI runs as root). Not root: the test fails, it does not skip."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs for the disk-full test (needs root): {r.stderr}"
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_frees_space_and_recovers(camera, media, tmp_path, cli_env, daemons, small_disk):
    """retention.min_free_bytes 0 and the disk fills (another file takes all but 200 KB): writes fail
    verified (no 'segment written' for an undecodable file), retention deletes the oldest output,
    the errors come once per retry (not per frame), and when space returns segments are written again.
    Every video left decodes in full; nothing raw."""
    out = small_disk / "out"
    cfg = write_config(tmp_path, out, output={"dir": str(out), "stills": {"every_s": 1.0},
                                              "video": {"segment_s": 2.0},
                                              "retention": {"min_free_bytes": 0}})
    d = daemons(cfg, camera.url, cli_env)
    d.wait(lambda: segment_written(d)(), 180, "a first segment")
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * max(0, free - 200_000))
    d.wait(lambda: "retention (free space)" in d.text(), 30, "a deletion for space")
    time.sleep(3.0)
    filler.unlink()
    n_written = d.text().count("segment written")
    d.wait(lambda: d.text().count("segment written") >= n_written + 2, 60, "two segments after space returned")
    took = d.stop()
    assert d.proc.returncode == 0 and took < STOP_TIMEOUT_S + STOP_MARGIN_S
    text = d.text()
    errors = len(re.findall(r"sink DiskSink failed", text))
    print(f"disk full: {errors} write errors, {text.count('retention (free space)')} deletions for space, "
          f"{text.count('segment written')} segments written, {text.count('cut short')} cut short")
    assert 1 <= errors <= 20, f"{errors} write errors logged"
    names = outputs(out)
    assert not [n for n in names if ".part" in n or n.endswith(".tmp")], names
    for p in out.rglob("*.mp4"):
        n = count_frames(p)
        assert n > 0 and cv2.VideoCapture(str(p)).get(cv2.CAP_PROP_FRAME_COUNT) == n, p.name
    got = LeakCheck(camera, media).folder(out)
    assert got["videos"] >= 2, got
