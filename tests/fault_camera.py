"""A real HTTP MJPEG camera on 127.0.0.1 for fault tests and the soak run: frames of a real clip
(JPEG-encoded once; `originals` are those JPEGs decoded, what the daemon receives), sent as
multipart/x-mixed-replace at `fps`. Its faults: `stall()` keeps connections open and sends nothing
(also to new ones: a camera that accepts and never answers), `drop()` closes every connection and
refuses new ones (the camera went away), `resume()` brings it back on the same port."""
from __future__ import annotations

import socket
import threading
import time

import cv2
import numpy as np

FLOWING, STALLED, DOWN = "flowing", "stalled", "down"


class MjpegCamera:
    def __init__(self, clip, fps: float = 15.0, n: int = 30, state: str = FLOWING):
        cap = cv2.VideoCapture(str(clip))
        self.jpegs: list[bytes] = []
        while len(self.jpegs) < n:
            ok, img = cap.read()
            if not ok:
                break
            self.jpegs.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
        cap.release()
        self.originals = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in self.jpegs]
        self.fps, self.state, self.sent, self.connections = fps, state, 0, 0
        self._lock = threading.Lock()
        self._clients: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = self._listen(0)
        self.url = f"http://127.0.0.1:{self.port}/cam.mjpg"
        self._closed = False
        if state == DOWN:
            self._unlisten()

    # states ---------------------------------------------------------------------------------
    def stall(self) -> None:
        self.state = STALLED

    def drop(self) -> None:
        self.state = DOWN
        self._unlisten()
        with self._lock:
            for c in self._clients:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._clients.clear()

    def resume(self) -> None:
        if self._listener is None:
            self._listen(self.port)
        self.state = FLOWING

    def answer_nothing(self) -> None:
        """Back on its port, accepting connections and sending nothing (a camera hung at boot)."""
        self.state = STALLED
        if self._listener is None:
            self._listen(self.port)

    def close(self) -> None:
        self._closed = True
        self.drop()

    # serving --------------------------------------------------------------------------------
    def _listen(self, port: int) -> int:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(8)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        return s.getsockname()[1]

    def _unlisten(self) -> None:
        s, self._listener = self._listener, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            with self._lock:
                self._clients.append(c)
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        try:
            c.settimeout(5)
            c.recv(4096)  # the request; whatever it asks, it gets the stream
            headers_sent, i = False, 0
            while self.state != DOWN and not self._closed:
                if self.state == STALLED:
                    time.sleep(0.02)
                    continue
                if not headers_sent:
                    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n"
                              b"Cache-Control: no-cache\r\n\r\n")
                    headers_sent = True
                j = self.jpegs[i % len(self.jpegs)]
                c.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(j) + j + b"\r\n")
                self.sent += 1
                i += 1
                time.sleep(1 / self.fps)
        except OSError:
            pass
        finally:
            with self._lock:
                if c in self._clients:
                    self._clients.remove(c)
            c.close()
