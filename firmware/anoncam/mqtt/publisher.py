"""What the camera publishes: face-track events, anonymized snapshots, stats, faces in view, the
settings' state and Home Assistant discovery. The camera loop calls frame() and on_frame(): cheap,
never blocking (snapshots are encoded on the connection's worker thread)."""
from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque

import cv2
import numpy as np

from ..config import MqttConfig
from ..control import SETTINGS, Change, Control
from ..sinks.files import encode_image
from ..stats import Stats
from ..thermal import cpu_temp
from ..types import FrameResult
from .connection import Connection, Message
from .discovery import discovery_messages
from .events import TrackEvents
from .topics import Topics, jpeg_with_comment, on_off


class Publisher:
    def __init__(self, m: MqttConfig, camera: str, topics: Topics, conn: Connection, control: Control):
        self.m, self.camera, self.topics, self.conn, self.control = m, camera, topics, conn, control
        self.run_id = secrets.token_hex(4)
        self.events = TrackEvents(m.event_update_every_s)
        self.paused_frames = 0
        self._seq = 0
        self._lock = threading.Lock()  # sequence numbers and queue order for events from both threads
        self._last_snap: float | None = None
        self._last_index = -1
        self._faces: int | None = None   # last published count; 0 while paused and after stop
        self._latency: deque[float] = deque(maxlen=300)
        self._last_stats = time.monotonic()
        self._stats_due = False          # send stats at the next frame (after a (re)connection)
        self.recipient = None            # the owner's public key (MqttSink): each snapshot's faces are sealed

    # camera loop ------------------------------------------------------------------------------
    def frame(self, result: FrameResult) -> None:
        if result.image is None:
            return
        self._last_index = result.index
        # capture (the frame's timestamp, taken after the read) to the sinks, so "decode" is not part of it
        self._latency.append(sum(v for k, v in result.timings.items() if k != "decode"))
        if result.status == "ok":  # the faces of a failed frame are not known: keep the tracks open
            for ev in self.events.frame(result):
                self.event(ev)
            if len(result.faces) != self._faces:
                self._put_faces(len(result.faces))
        snap = self.m.snapshot
        if self.control.snapshots and (self._last_snap is None or result.timestamp - self._last_snap >= snap.every_s):
            img = result.image
            h, w = img.shape[:2]
            img = (cv2.resize(img, (snap.max_width, max(1, round(h * snap.max_width / w))),
                              interpolation=cv2.INTER_AREA) if w > snap.max_width else img.copy())
            comment = f"anoncam frame={result.index} ts={result.timestamp:.3f}"
            render = lambda: jpeg_with_comment(encode_image(img, ".jpg", snap.quality), comment)  # noqa: E731
            sealed = None
            if self.recipient is not None:  # <snapshot>/sealed: its faces sealed to the owner, bound to its JPEG
                from ..seal import SealedSnapshot
                sealed = SealedSnapshot(render, result.sidecar.get("seal"), img.shape[1] / w, img.shape,
                                        f"{self.camera}_{result.index:08d}.jpg", self.recipient)
                render = sealed.jpeg
            if self.conn.put(Message(self.topics.snapshot, render=render, spool=True)):
                self._last_snap = result.timestamp
                if sealed is not None:
                    self.conn.put(Message(self.topics.snapshot + "/sealed", render=sealed.sealed, spool=True))

    def on_frame(self, result: FrameResult, stats: Stats) -> None:
        """Every frame, paused or not: stats every mqtt.stats_every_s, and soon after a connection."""
        if not self.control.enabled:
            self.paused_frames += 1
        now = time.monotonic()
        # after a connection, the first frames that give a frame rate
        due = self._stats_due and stats.counts["frames"] >= 2
        if due or now - self._last_stats >= self.m.stats_every_s:
            self._stats_due = False
            self._last_stats = now
            self.conn.put(Message(self.topics.stats, json.dumps(self.stats_payload(stats)).encode()))

    def stats_payload(self, stats: Stats) -> dict:
        lat = np.array(self._latency) if self._latency else None
        state = self.control.state()
        return {
            "ts": round(time.time(), 3), "camera": self.camera, "run_id": self.run_id, **stats.summary(),
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2) if lat is not None else None,
                           "p95": round(float(np.percentile(lat, 95)), 2) if lat is not None else None},
            "enabled": state["enabled"], "method": state["method"], "snapshots": state["snapshots"],
            "paused_frames": self.paused_frames, "mqtt": self.conn.counters(), "cpu_temp_c": cpu_temp(),
        }

    def changed(self, change: Change) -> None:
        """A Control listener (frame loop): answer with the state; a pause ends the open tracks."""
        if change.error:
            asked = change.requested
            self.error(change.setting, on_off(asked) if isinstance(asked, bool) else str(asked), change.error)
        if change.setting == "enabled" and change.old and not change.new:
            # OFF pauses all output (frames are still read and anonymized); it never turns anonymization off
            for ev in self.events.end_all(round(time.time(), 3), self._last_index, "paused"):
                self.event(ev)
            self._put_faces(0)
        self.put_state(change.setting)

    def stop(self) -> None:
        """Before the connection closes: open tracks end, no face is in view any more."""
        for ev in self.events.end_all(round(time.time(), 3), self._last_index, "stopped"):
            self.event(ev)
        self._put_faces(0)

    # any thread -------------------------------------------------------------------------------
    def event(self, ev: dict, low: bool = False) -> None:
        with self._lock:  # the number and the place in the queue are taken together
            self._seq += 1
            body = {"seq": self._seq, "run_id": self.run_id, "camera": self.camera, **ev}
            self.conn.put(Message(self.topics.events, json.dumps(body).encode(), spool=True, low=low))

    def error(self, setting: str, payload: str, error: str, dropped: int = 0) -> None:
        """An error event (low priority: never takes the queue's second half from track events);
        what it echoes is bounded. `dropped`: commands dropped unread over the rate limit."""
        ev = {"type": "error", "ts": round(time.time(), 3), "setting": setting[:64], "payload": payload[:64],
              "error": error[:200]}
        self.event({**ev, "dropped": dropped} if dropped else ev, low=True)

    def state_text(self, setting: str) -> str:
        value = self.control.state()[setting]
        return on_off(value) if isinstance(value, bool) else str(value)

    def put_state(self, setting: str, low: bool = False) -> None:
        self.conn.put(Message(self.topics.state(setting), self.state_text(setting).encode(), retain=True, low=low))

    def _put_faces(self, n: int) -> None:
        self._faces = n
        self.conn.put(Message(self.topics.faces, str(n).encode(), retain=True))

    # paho's thread ----------------------------------------------------------------------------
    def on_connect(self) -> None:
        """Everything a (re)connection sends again: discovery, the settings' state, faces in view."""
        if self.m.discovery.enabled:
            self.discovery()
            self.conn.subscribe(self.ha_status_topic)
        for s in SETTINGS:
            self.conn.publish_now(self.topics.state(s), self.state_text(s))
        faces = 0 if not self.control.enabled else self._faces
        if faces is not None:
            self.conn.publish_now(self.topics.faces, str(faces))
        self._stats_due = True

    @property
    def ha_status_topic(self) -> str:
        return f"{self.m.discovery.prefix}/status"

    def ha_online(self) -> None:
        """Home Assistant (re)started: discovery again, and stats without waiting for the interval."""
        self.discovery()
        self._stats_due = True

    def discovery(self) -> None:
        for topic, payload in discovery_messages(self.m.discovery.prefix, self.m.prefix, self.camera, self.topics,
                                                 self.control.methods, self.m.commands):
            self.conn.publish_now(topic, payload, qos=1)
