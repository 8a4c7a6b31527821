"""The systemd watchdog end to end: a real `anoncam run` with NOTIFY_SOCKET set to a datagram socket this
test owns (as systemd would). READY=1 comes once, after the first frame; WATCHDOG=1 keeps coming while
frames flow; it stops while the camera stalls (an HTTP MJPEG camera that stops sending) and comes back
when frames do. STATUS= carries fps and faces."""
import itertools
import re
import signal
import socket
import socketserver
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler

import cv2
import pytest
from conftest import ANONCAM


class NotifyListener:
    """systemd's side: an abstract datagram socket; every message is kept with its arrival time."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.name = f"anoncam-test-{time.monotonic_ns()}"
        self.sock.bind("\0" + self.name)
        self.sock.settimeout(0.1)
        self.msgs: list[tuple[float, str]] = []
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    @property
    def address(self) -> str:
        return "@" + self.name

    def _loop(self):
        while not self._stop:
            try:
                self.msgs.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                pass

    def wait_for(self, key: str, timeout: float) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, m in list(self.msgs):
                if key in m.split("\n"):
                    return t
            time.sleep(0.05)
        raise AssertionError(f"no {key} within {timeout} s; got {self.msgs}")

    def pings(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [t for t, m in list(self.msgs) if "WATCHDOG=1" in m.split("\n") and since <= t < until]

    def statuses(self) -> list[dict]:
        out = []
        for _, m in list(self.msgs):
            for line in m.split("\n"):
                if line.startswith("STATUS="):
                    out.append(dict(kv.split("=", 1) for kv in line[len("STATUS="):].split()))
        return out

    def close(self):
        self._stop = True
        self._t.join()
        self.sock.close()


@pytest.fixture
def listener():
    lst = NotifyListener()
    yield lst
    lst.close()


def start(args, env, notify_addr, watchdog_usec):
    env = dict(env, NOTIFY_SOCKET=notify_addr, WATCHDOG_USEC=str(watchdog_usec))
    return subprocess.Popen([*ANONCAM, "run", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_ready_once_pings_and_status_on_a_clip(listener, media, cli_env, tmp_path):
    cfg = tmp_path / "cam.yaml"
    cfg.write_text("camera: {fps: 20}\nlog: {summary_every_s: 60}\n")  # the clip paced as a 20 fps camera
    proc = start(["--config", str(cfg), "--source", str(media["cap13"]), "--output", str(tmp_path / "out"),
                  "--max-frames", "80"], cli_env, listener.address, 400_000)  # WatchdogSec=0.4s
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    msgs = [m for _, m in listener.msgs]
    assert sum("READY=1" in m.split("\n") for m in msgs) == 1
    assert msgs[0].startswith("READY=1\n")  # nothing before READY
    assert re.search(r"frames=1 ", msgs[0])  # READY after the first processed frame
    pings = listener.pings()
    assert len(pings) >= 12, msgs  # 80 frames at 20 fps = 4 s; a ping every 0.2 s
    assert max(b - a for a, b in itertools.pairwise(pings)) < 1.5  # no long silence while frames flow
    st = listener.statuses()
    assert all({"fps", "faces", "frames", "covered", "dropped"} <= s.keys() for s in st)
    assert 10 <= float(st[-1]["fps"]) <= 25 and max(int(s["faces"]) for s in st) == 1  # one man in the clip
    assert msgs[-1] == "STOPPING=1"


class MjpegCamera:
    """An HTTP camera (multipart MJPEG, as many IP cameras serve) made of a real clip's frames; `stall()`
    stops sending while keeping the connection open, as a hung camera does; `resume()` sends again."""

    def __init__(self, clip, fps=15.0, n=60):
        cap = cv2.VideoCapture(str(clip))
        self.jpegs = []
        while len(self.jpegs) < n:
            ok, img = cap.read()
            if not ok:
                break
            self.jpegs.append(cv2.imencode(".jpg", img)[1].tobytes())
        cap.release()
        self.flowing = threading.Event()
        self.flowing.set()
        self.sent = 0
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while True:
                        cam.flowing.wait()
                        j = cam.jpegs[i % len(cam.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(j) + j + b"\r\n")
                        self.wfile.flush()
                        cam.sent += 1
                        i += 1
                        time.sleep(1 / fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cam.mjpg"

    def stall(self):
        self.flowing.clear()

    def resume(self):
        self.flowing.set()

    def close(self):
        self.resume()
        self.server.shutdown()
        self.server.server_close()


def test_pings_stop_while_the_camera_stalls(listener, media, cli_env, tmp_path):
    cam = MjpegCamera(media["cap13"])
    proc = start(["--source", cam.url, "--output", str(tmp_path / "out")], cli_env, listener.address, 500_000)
    try:
        listener.wait_for("READY=1", timeout=120)
        time.sleep(2.5)
        flowing = listener.pings(since=time.monotonic() - 2.0)
        assert len(flowing) >= 5, listener.msgs  # a ping every 0.25 s while frames flow

        cam.stall()
        t_stall = time.monotonic()
        time.sleep(5.0)
        # Frames already in the pipe may still arrive for a moment; after that, silence.
        stalled = listener.pings(since=t_stall + 1.0, until=time.monotonic())
        assert stalled == [], f"pings while the camera sent nothing: {stalled}"
        assert proc.poll() is None  # alive, blocked in the read: exactly what WatchdogSec= catches

        frames_before = int(listener.statuses()[-1]["frames"])
        cam.resume()
        t_resume = time.monotonic()
        time.sleep(2.5)
        resumed = listener.pings(since=t_resume)
        assert len(resumed) >= 3, listener.msgs
        assert int(listener.statuses()[-1]["frames"]) > frames_before
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        finally:
            cam.close()
    assert proc.returncode == 0
    assert listener.msgs[-1][1] == "STOPPING=1"
