"""The MQTT sink.

The camera loop calls write() and the on_frame hook: cheap, never blocking; what does not fit in the
bounded queue is dropped and counted. A worker thread encodes snapshots and publishes them with the
events, or spools them on disk while the broker is unreachable and sends the spool, in order, when it
returns. paho's own thread does the network and reconnects with backoff. Commands arrive on paho's
thread and are handed to the camera loop (runner.commands) to be applied between frames.
"""
from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import cv2
import numpy as np

from ..anonymize.methods import METHODS
from ..config import Config, Method
from ..sinks.files import encode_image
from ..stats import Stats
from ..types import FrameResult
from .client import FATAL_CONNACK, MqttError, first_connect, make_client, refused_message
from .discovery import discovery_messages
from .events import TrackEvents
from .spool import Spool
from .topics import SETTINGS, Topics, jpeg_with_comment, on_off, parse_on_off

log = logging.getLogger(__name__)
_STOP = object()
WINDOW = 20            # spooled messages in flight at once while the spool is sent
FIRST_CONNACK_S = 10.0  # how long start-up waits for the broker to answer the first connection


@dataclass
class Message:
    topic: str
    payload: bytes = b""
    retain: bool = False
    spool: bool = False               # store-and-forward while offline (events, snapshots)
    image: np.ndarray | None = None   # a snapshot to encode: a private copy of an anonymized frame
    comment: str = ""


def available_methods() -> list[str]:
    return [m for m in get_args(Method) if m in METHODS]


def cpu_temp() -> float | None:
    """CPU temperature in deg C from /sys/class/thermal, where readable."""
    found = None
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip().lower()
            value = int((zone / "temp").read_text()) / 1000
        except (OSError, ValueError):
            continue
        if any(k in kind for k in ("cpu", "x86_pkg", "soc")):
            return round(value, 1)
        found = round(value, 1) if found is None else found
    return found


class MqttSink:
    def __init__(self, cfg: Config, runner):
        """`runner` gives stats, on_frame, commands, output_enabled, set_method (anoncam.runner.Runner)."""
        self.cfg, self.m, self.runner = cfg, cfg.mqtt, runner
        m = self.m
        self.camera = cfg.camera.name
        self.topics = Topics(m.prefix, self.camera)
        self.run_id = secrets.token_hex(4)
        self.q: queue.Queue = queue.Queue(m.queue_size)
        self.events = TrackEvents(m.event_update_every_s)
        self.snapshots_on = m.snapshot.enabled
        self.overflow: Counter[str] = Counter()  # dropped because the queue was full, by topic name
        self.published = self.skipped = self.paused_frames = 0
        self._seq = 0
        self._lock = threading.RLock()  # sequence numbers and queue order for events from both threads
        self._last_snap: float | None = None
        self._last_index = -1
        self._faces: int | None = None
        self._latency: deque[float] = deque(maxlen=300)
        self._last_stats = time.monotonic()
        self.spool = Spool(m.spool.dir or Path(cfg.output.dir) / self.camera / "mqtt-spool", m.spool.max_bytes)
        self._sent: deque = deque()  # (spool name or None, epoch, MQTTMessageInfo) handed to paho, unacked
        self._epoch = 0              # +1 per connection; paho resends older unacked messages itself
        self._connected = threading.Event()
        self._answered = threading.Event()
        self._refused = None
        self._closed = False

        self.client = make_client(m, m.client_id or f"anoncam-{self.camera}", self.topics.available)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        if first_connect(self.client, m):
            self._answered.wait(FIRST_CONNACK_S)
            if self._refused is not None and self._refused.value in FATAL_CONNACK:
                self.client.loop_stop()
                raise MqttError(refused_message(m, self._refused))
        self._worker = threading.Thread(target=self._work, name="anoncam-mqtt", daemon=True)
        self._worker.start()
        runner.on_frame.append(self._on_frame)

    # camera loop side -------------------------------------------------------------------------
    def write(self, result: FrameResult) -> None:
        if result.image is None:
            return
        self._last_index = result.index
        # capture (the frame's timestamp, taken after the read) to the sinks, so "decode" is not part of it
        self._latency.append(sum(v for k, v in result.timings.items() if k != "decode"))
        if result.status == "ok":  # the faces of a failed frame are not known: keep the tracks open
            for ev in self.events.frame(result):
                self._event(ev)
            if len(result.faces) != self._faces:
                self._faces = len(result.faces)
                self._put(Message(self.topics.faces, str(self._faces).encode(), retain=True))
        snap = self.m.snapshot
        if self.snapshots_on and (self._last_snap is None or result.timestamp - self._last_snap >= snap.every_s):
            img = result.image
            h, w = img.shape[:2]
            img = (cv2.resize(img, (snap.max_width, max(1, round(h * snap.max_width / w))),
                              interpolation=cv2.INTER_AREA) if w > snap.max_width else img.copy())
            comment = f"anoncam frame={result.index} ts={result.timestamp:.3f}"
            if self._put(Message(self.topics.snapshot, image=img, comment=comment, spool=True)):
                self._last_snap = result.timestamp

    def _on_frame(self, result: FrameResult, stats: Stats) -> None:
        if not self.runner.output_enabled:
            self.paused_frames += 1
        now = time.monotonic()
        if now - self._last_stats >= self.m.stats_every_s:
            self._last_stats = now
            self._put(Message(self.topics.stats, json.dumps(self.stats_payload(stats)).encode()))

    def stats_payload(self, stats: Stats) -> dict:
        lat = np.array(self._latency) if self._latency else None
        return {
            "ts": round(time.time(), 3), "camera": self.camera, "run_id": self.run_id, **stats.summary(),
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2) if lat is not None else None,
                           "p95": round(float(np.percentile(lat, 95)), 2) if lat is not None else None},
            "enabled": self.runner.output_enabled, "method": self.runner.cfg.anonymize.method,
            "snapshots": self.snapshots_on, "paused_frames": self.paused_frames,
            "mqtt": {"connected": self._connected.is_set(), "queue": self.q.qsize(), "queue_size": self.m.queue_size,
                     "overflow": dict(self.overflow), "published": self.published, "spool_messages": len(self.spool),
                     "spool_bytes": self.spool.bytes, "spooled": self.spool.spooled,
                     "spool_dropped": self.spool.dropped, "skipped": self.skipped},
            "cpu_temp_c": cpu_temp(),
        }

    def _put(self, msg: Message) -> bool:
        try:
            self.q.put_nowait(msg)
            return True
        except queue.Full:
            with self._lock:
                self.overflow[msg.topic.rsplit("/", 1)[-1]] += 1
                total = sum(self.overflow.values())
            if total == 1 or total % 100 == 0:
                log.warning("mqtt queue full (mqtt.queue_size=%d): %d message(s) dropped so far",
                            self.m.queue_size, total)
            return False

    def _event(self, ev: dict) -> None:
        with self._lock:  # the number and the place in the queue are taken together
            self._seq += 1
            body = {"seq": self._seq, "run_id": self.run_id, "camera": self.camera, **ev}
            self._put(Message(self.topics.events, json.dumps(body).encode(), spool=True))

    # commands ---------------------------------------------------------------------------------
    def _state(self, setting: str) -> str:
        return {"enabled": lambda: on_off(self.runner.output_enabled),
                "method": lambda: self.runner.cfg.anonymize.method,
                "snapshots": lambda: on_off(self.snapshots_on)}[setting]()

    def _put_state(self, setting: str) -> None:
        self._put(Message(self.topics.state(setting), self._state(setting).encode(), retain=True))

    def _error(self, setting: str, payload: str, error: str) -> None:
        log.warning("mqtt command %s=%r refused: %s", setting, payload[:64], error)
        self._event({"type": "error", "ts": round(time.time(), 3), "setting": setting,
                     "payload": payload[:64], "error": error})

    def _command(self, setting: str, text: str):
        """Check a command on paho's thread; return what the camera loop runs to apply it."""
        if setting in ("enabled", "snapshots"):
            value = parse_on_off(text)
            return lambda: self._set_switch(setting, value)
        if setting == "method":
            if text not in available_methods():
                raise ValueError(f"unknown method {text[:40]!r}; available: {', '.join(available_methods())}")
            return lambda: self._set_method(text)
        raise ValueError(f"unknown setting {setting!r}; settings: {', '.join(SETTINGS)}")

    def _set_switch(self, setting: str, value: bool) -> None:
        if setting == "snapshots":
            self.snapshots_on = value
        else:
            # OFF pauses all output (frames are still read and anonymized); it never turns anonymization off
            if self.runner.output_enabled and not value:
                for ev in self.events.end_all(round(time.time(), 3), self._last_index, "paused"):
                    self._event(ev)
                self._faces = None
            self.runner.output_enabled = value
        log.info("mqtt command: %s=%s", setting, on_off(value))
        self._put_state(setting)

    def _set_method(self, name: str) -> None:
        try:
            self.runner.set_method(name)
            log.info("mqtt command: method=%s", name)
        except Exception as e:
            self._error("method", name, str(e))
        self._put_state("method")

    # paho's thread ----------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._refused = reason
            self._answered.set()
            log.error("%s", refused_message(self.m, reason))
            return
        self._refused = None
        self._epoch += 1
        self._connected.set()
        self._answered.set()
        log.info("mqtt: connected to %s:%d", self.m.host, self.m.port)
        qos, t = self.m.qos, self.topics
        client.publish(t.available, "online", qos=1, retain=True)
        if self.m.discovery.enabled:
            for topic, payload in self._discovery():
                client.publish(topic, payload, qos=1, retain=True)
            client.subscribe(f"{self.m.discovery.prefix}/status", qos=1)
        for s in SETTINGS:
            client.publish(t.state(s), self._state(s), qos=qos, retain=True)
        if self._faces is not None:
            client.publish(t.faces, str(self._faces), qos=qos, retain=True)
        if self.m.commands:
            client.subscribe(t.commands, qos=1)

    def _discovery(self) -> list[tuple[str, bytes]]:
        return discovery_messages(self.m.discovery.prefix, self.m.prefix, self.camera, self.topics,
                                  available_methods(), self.m.commands)

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self._connected.clear()
        if not self._closed:
            log.warning("mqtt: disconnected from %s:%d (%s); spooling and reconnecting",
                        self.m.host, self.m.port, reason)

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic == f"{self.m.discovery.prefix}/status":
            if msg.payload == b"online" and self._connected.is_set():  # Home Assistant restarted
                for topic, payload in self._discovery():
                    client.publish(topic, payload, qos=1, retain=True)
            return
        setting = self.topics.setting_of(msg.topic)
        if setting is None or not self.m.commands:
            return
        text = msg.payload.decode("utf-8", "replace").strip()
        try:
            apply = self._command(setting, text)
        except ValueError as e:
            self._error(setting, text, str(e))
            if setting in SETTINGS:
                self._put_state(setting)  # answer with the unchanged state
            return
        self.runner.commands.put(apply)

    # worker thread ----------------------------------------------------------------------------
    def _work(self) -> None:
        stop_at = None
        while True:
            busy = len(self.spool) or self._sent
            try:
                msg = self.q.get(timeout=0.02 if busy else 0.2)
            except queue.Empty:
                msg = None
            if msg is _STOP:
                stop_at = time.monotonic() + self.m.close_timeout_s
            elif msg is not None:
                try:
                    self._handle(msg)
                except Exception as e:  # e.g. a full disk while spooling: count it, keep going
                    self.skipped += 1
                    log.error("mqtt: message to %s lost: %s: %s", msg.topic, type(e).__name__, e)
            try:
                self._ack()
                self._drain()
            except Exception as e:
                log.error("mqtt: sending the spool failed: %s: %s", type(e).__name__, e)
            if stop_at is not None and self.q.empty() and (
                    not self._sent and (not len(self.spool) or not self._connected.is_set())  # all sent or on disk
                    or time.monotonic() > stop_at):
                return

    def _stale(self) -> bool:
        """Messages from before the last reconnect are not acknowledged yet (paho resends them)."""
        return bool(self._sent) and self._sent[0][1] < self._epoch

    def _handle(self, msg: Message) -> None:
        if msg.image is not None:
            msg.payload = jpeg_with_comment(encode_image(msg.image, ".jpg", self.m.snapshot.quality), msg.comment)
            msg.image = None
        if not msg.spool:  # stats, state, faces: sent again on reconnect or superseded
            if self._connected.is_set():
                self.client.publish(msg.topic, msg.payload, qos=self.m.qos, retain=msg.retain)
            else:
                self.skipped += 1
            return
        direct = (self._connected.is_set() and not self.spool.unsent and not self._stale()
                  and len(self._sent) < self.m.queue_size)
        if direct:
            self._publish(None, msg.topic, msg.payload, msg.retain)
        else:
            self.spool.put(msg.topic, msg.payload, msg.retain)

    def _publish(self, name: str | None, topic: str, payload: bytes, retain: bool) -> None:
        info = self.client.publish(topic, payload, qos=self.m.qos, retain=retain)
        if self.m.qos:
            self._sent.append((name, self._epoch, info))
        else:
            self.published += 1
            if name:
                self.spool.done(name)

    def _ack(self) -> None:
        while self._sent and self._sent[0][2].is_published():
            name = self._sent.popleft()[0]
            self.published += 1
            if name:
                self.spool.done(name)
                if not len(self.spool):
                    log.info("mqtt: spool sent (%d spooled, %d dropped since start)", self.spool.spooled,
                             self.spool.dropped)

    def _drain(self) -> None:
        if not self._connected.is_set() or self._stale():
            return
        while len(self._sent) < WINDOW:
            item = self.spool.next_unsent()
            if item is None:
                return
            self._publish(*item)

    # shutdown ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        for ev in self.events.end_all(round(time.time(), 3), self._last_index, "stopped"):
            self._event(ev)
        try:
            self.q.put(_STOP, timeout=self.m.close_timeout_s + 1)
        except queue.Full:
            log.error("mqtt: queue stuck at close; %d message(s) not sent", self.q.qsize())
        self._worker.join(self.m.close_timeout_s + 5)
        self._closed = True
        if len(self.spool):
            log.warning("mqtt: %d message(s) stay in the spool %s and are sent at the next start",
                        len(self.spool), self.spool.dir)
        if self._connected.is_set():
            info = self.client.publish(self.topics.available, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disable_logger()  # paho logs a harmless race of its loop thread with disconnect()
        self.client.disconnect()
        self.client.loop_stop()
        log.info("mqtt: closed; %d published, %d dropped (queue full), %d spooled, %d dropped from the spool",
                 self.published, sum(self.overflow.values()), self.spool.spooled, self.spool.dropped)
