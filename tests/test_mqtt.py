"""MQTT uplink against a real mosquitto (started here on 127.0.0.1, a free port, its own config) with real
paho clients and the real daemon (`anoncam run --mqtt ...`) on a real clip."""
from __future__ import annotations

import datetime
import getpass
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from anoncam.anonymize.methods import METHODS
from anoncam.config import ConfigError, validate
from anoncam.mqtt.client import MqttError, read_password
from anoncam.mqtt.spool import Spool
from anoncam.mqtt.topics import jpeg_comment
from anoncam.mqtt.url import parse_url
from conftest import ANONCAM, TEST_BUDGET_MS, make_config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import is_hidden, iter_frames, video_reference
from paho.mqtt.enums import CallbackAPIVersion

CLIP = "cap13"
CAM = "door"
BASE = f"anoncam/{CAM}"
RAW_SMALL = 0.6  # SFace cosine to the original at or above which a small snapshot face counts as raw
DEFAULT_METHOD = make_config().anonymize.method  # what the daemon runs with no method configured
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"

# The documented payloads. additionalProperties: false keeps anything else (embeddings, identity) out.
_NUM, _INT = {"type": "number"}, {"type": "integer"}
TRACK_EVENT = {
    "type": "object", "additionalProperties": False,
    "required": ["seq", "run_id", "camera", "type", "ts", "frame", "frame_size", "track_id", "box", "method",
                 "detected"],
    "properties": {
        "seq": {"type": "integer", "minimum": 1}, "run_id": {"type": "string", "pattern": "^[0-9a-f]{8}$"},
        "camera": {"const": CAM}, "type": {"enum": ["appear", "update", "end"]}, "ts": _NUM,
        "frame": {"type": "integer", "minimum": -1},
        "frame_size": {"type": "array", "items": _INT, "minItems": 2, "maxItems": 2},
        "track_id": _INT, "box": {"type": "array", "items": _INT, "minItems": 4, "maxItems": 4},
        "method": {"enum": ["blur", "pixelate", "solid", "generative", None]}, "detected": {"type": "boolean"},
        "start_ts": _NUM, "last_seen_ts": _NUM, "duration_s": _NUM, "frames": _INT,
        "reason": {"enum": ["gone", "paused", "stopped"]}},
}
ERROR_EVENT = {
    "type": "object", "additionalProperties": False,
    "required": ["seq", "run_id", "camera", "type", "ts", "setting", "payload", "error"],
    "properties": {"seq": {"type": "integer", "minimum": 1}, "run_id": {"type": "string"}, "camera": {"const": CAM},
                   "type": {"const": "error"}, "ts": _NUM, "setting": {"type": "string"},
                   "payload": {"type": "string", "maxLength": 64}, "error": {"type": "string", "minLength": 5}},
}
EVENT = {"oneOf": [TRACK_EVENT, ERROR_EVENT]}
P50_95 = {"type": "object", "required": ["p50", "p95"],
          "properties": {"p50": {"type": ["number", "null"]}, "p95": {"type": ["number", "null"]}}}
STATS = {
    "type": "object",
    "required": ["ts", "camera", "run_id", "frames", "fps", "covered", "dropped", "faces_in_view", "stage_ms",
                 "latency_ms", "enabled", "method", "snapshots", "paused_frames", "mqtt", "cpu_temp_c"],
    "properties": {
        "camera": {"const": CAM}, "frames": {"type": "integer", "minimum": 1}, "fps": {"type": "number", "minimum": 0},
        "covered": _INT, "dropped": _INT, "faces_in_view": _INT, "latency_ms": P50_95,
        "stage_ms": {"type": "object", "additionalProperties": P50_95, "required": ["detect", "anonymize"]},
        "enabled": {"type": "boolean"}, "method": {"type": "string"}, "snapshots": {"type": "boolean"},
        "cpu_temp_c": {"type": ["number", "null"]},
        "mqtt": {"type": "object", "additionalProperties": False,
                 "required": ["connected", "queue", "queue_size", "overflow", "published", "spool_messages",
                              "spool_bytes", "spooled", "spool_dropped", "skipped"],
                 "properties": {"connected": {"type": "boolean"}, "queue": _INT, "queue_size": _INT,
                                "overflow": {"type": "object", "additionalProperties": _INT}, "published": _INT,
                                "spool_messages": _INT, "spool_bytes": _INT, "spooled": _INT,
                                "spool_dropped": _INT, "skipped": _INT}}},
}


# --- a real broker and real clients ----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1 with its own config file and persistence folder; never the system one."""

    def __init__(self, root: Path, extra: str = ""):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = root / "mosquitto.conf"
        anonymous = "" if "allow_anonymous" in extra else "allow_anonymous true\n"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nuser {getpass.getuser()}\npersistence true\n"
                             f"persistence_location {root}/\nlog_dest stderr\n{anonymous}{extra}\n")
        self.proc = None

    def start(self) -> Broker:
        self.log = open(self.root / "mosquitto.log", "ab")  # noqa: SIM115 (lives as long as the broker)
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=self.log, stderr=self.log)
        deadline = time.time() + 10
        while time.time() < deadline:
            assert self.proc.poll() is None, (self.root / "mosquitto.log").read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@dataclass
class Msg:
    topic: str
    payload: bytes
    retain: bool
    t: float


class Sub:
    """A real paho subscriber that records everything it gets."""

    def __init__(self, port: int, topics=("anoncam/#", "homeassistant/#"), client_id: str = "",
                 persistent: bool = False, tls: dict | None = None, login: tuple | None = None):
        self.msgs: list[Msg] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        if tls:
            self.c.tls_set(**tls)
        if login:
            self.c.username_pw_set(*login)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.c.on_message = lambda c, u, m: self.msgs.append(Msg(m.topic, m.payload, m.retain, time.time()))
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        assert self.wait(lambda: self.c.is_connected(), 10)
        time.sleep(0.2)  # SUBACK

    def on(self, topic: str) -> list[Msg]:
        return [m for m in list(self.msgs) if m.topic == topic]

    def events(self) -> list[dict]:
        return [json.loads(m.payload) for m in self.on(f"{BASE}/events")]

    def last(self, topic: str) -> str | None:
        got = self.on(topic)
        return got[-1].payload.decode() if got else None

    @staticmethod
    def wait(pred, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return bool(pred())

    def publish(self, topic: str, payload: str) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def daemon_config(tmp_path: Path, fps: float | None = 20, **mqtt_cfg) -> Path:
    m = {"stats_every_s": 1.0, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "keepalive": 5,
         "snapshot": {"every_s": 0.25}, "spool": {"dir": str(tmp_path / "spool")}}
    for k, v in mqtt_cfg.items():
        m[k] = {**m[k], **v} if isinstance(v, dict) and isinstance(m.get(k), dict) else v
    cfg = {"camera": {"name": CAM, "loop": False, **({"fps": fps} if fps else {})},
           "output": {"stills": {"enabled": False}, "video": {"enabled": False}},
           "log": {"summary_every_s": 1.0}, "mqtt": m, "failsafe": {"budget_ms": TEST_BUDGET_MS}}
    path = tmp_path / "anoncam.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_daemon(media, tmp_path, env, url: str, cfg: Path, max_frames: int, *extra) -> subprocess.Popen:
    cmd = [*ANONCAM, "run", "--config", str(cfg), "--source", str(media[CLIP]), "--output", str(tmp_path / "out"),
           "--mqtt", url, "--max-frames", str(max_frames), *extra]
    return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return err


def check_snapshot(jpeg: bytes, originals: list, boxes: list, solid_color=None) -> int:
    """Decode an anonymized snapshot and check it against the original frame; returns the faces checked."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "snapshot is not a JPEG"
    meta = dict(kv.split("=") for kv in jpeg_comment(jpeg).split()[1:])
    i = int(meta["frame"])
    orig = originals[i]
    scale = img.shape[1] / orig.shape[1]
    if scale != 1:
        orig = cv2.resize(orig, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)
    for b in boxes[i]:
        # snapshots are small (320 px wide here), where SFace tells people apart less well: an
        # unchanged face scores >= 0.97 after JPEG, a generated one 0.14-0.40 depending on the key
        # (identity privacy is checked at full size in test_generative, at SFace's 0.363)
        assert is_hidden(orig, img, b * scale, solid_color, same_person=RAW_SMALL), \
            f"snapshot of frame {i}: face {b} is not covered"
    return len(boxes[i])


# --- tests ------------------------------------------------------------------------------------------
def test_every_topic_payload_and_discovery(media, tmp_path, cli_env, broker):
    sub = Sub(broker.port)
    cfg = daemon_config(tmp_path, fps=20, snapshot={"every_s": 0.2, "max_width": 320})
    proc = start_daemon(media, tmp_path, cli_env, f"mqtt://127.0.0.1:{broker.port}", cfg, 120)
    err = finish(proc)
    assert sub.wait(lambda: sub.last(f"{BASE}/available") == "offline", 10), err[-2000:]
    sub.close()

    topics = {m.topic for m in sub.msgs}
    ours = {t for t in topics if t.startswith(BASE + "/")}
    assert ours == {f"{BASE}/{t}" for t in ("available", "events", "snapshot", "stats", "faces", "enabled/state",
                                             "method/state", "snapshots/state")}, ours
    assert [m.payload for m in sub.on(f"{BASE}/available")] == [b"online", b"offline"]

    events = sub.events()
    for e in events:
        jsonschema.validate(e, EVENT)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["run_id"] for e in events}) == 1
    opened = {}
    for e in events:
        tid = e["track_id"]
        if e["type"] == "appear":
            assert tid not in opened
            opened[tid] = e
        else:
            assert tid in opened, f"{e['type']} before appear"
            if e["type"] == "end":
                del opened[tid]
        assert e["method"] == DEFAULT_METHOD and e["frame_size"] == [400, 300]
    assert opened == {}, "every track ends (the daemon stopped cleanly)"
    assert {e["type"] for e in events} >= {"appear", "update", "end"}

    originals, boxes = list(iter_frames(media[CLIP])), video_reference(media[CLIP])
    snaps = sub.on(f"{BASE}/snapshot")
    assert len(snaps) >= 15
    assert sum(check_snapshot(s.payload, originals, boxes) for s in snaps) >= 10, "too few faces to check"
    assert cv2.imdecode(np.frombuffer(snaps[0].payload, np.uint8), cv2.IMREAD_COLOR).shape[1] == 320

    stats = [json.loads(m.payload) for m in sub.on(f"{BASE}/stats")]
    assert len(stats) >= 3
    for s in stats:
        jsonschema.validate(s, STATS)
    assert stats[-1]["fps"] > 5 and stats[-1]["mqtt"]["connected"] and stats[-1]["mqtt"]["published"] > 0
    assert sub.last(f"{BASE}/enabled/state") == "ON" and sub.last(f"{BASE}/snapshots/state") == "ON"
    assert sub.last(f"{BASE}/method/state") == DEFAULT_METHOD
    faces = [m.payload.decode() for m in sub.on(f"{BASE}/faces")]
    assert all(f.isdigit() for f in faces) and "1" in faces
    assert faces[-1] == "0", "no face is in view once the camera has stopped"

    # Home Assistant discovery: retained, right topics, unique ids, tied to availability
    disc = {m.topic: json.loads(m.payload) for m in sub.msgs if m.topic.startswith("homeassistant/")}
    kinds = {t.split("/")[1] for t in disc}
    assert kinds == {"camera", "sensor", "binary_sensor", "switch", "select"}
    ids = [c["unique_id"] for c in disc.values()]
    assert len(ids) == len(set(ids)) == 8
    published = topics
    for topic, c in disc.items():
        _, _, node, obj, last = topic.split("/")
        assert last == "config" and node == f"anoncam_{CAM}" and c["unique_id"] == f"{node}_{obj}"
        assert c["availability_topic"] == f"{BASE}/available"
        assert c["payload_available"] == "online" and c["payload_not_available"] == "offline"
        assert c["device"]["identifiers"] == [node]
        # the entity id for Home Assistant 2025.10+ and for older releases, and where the config comes from
        assert c["default_entity_id"] == f"{topic.split('/')[1]}.{c['object_id']}" == f"{topic.split('/')[1]}.{node}_{obj}"
        assert c["origin"]["name"] == "anoncam" and c["origin"]["sw_version"]
        for key in ("topic", "state_topic"):
            if key in c:
                assert c[key] in published, f"{topic}: {key} {c[key]} is never published"
        if "command_topic" in c:
            assert c["command_topic"] == c["state_topic"].replace("/state", "/set")
    assert disc[f"homeassistant/camera/anoncam_{CAM}/snapshot/config"]["topic"] == f"{BASE}/snapshot"
    assert disc[f"homeassistant/switch/anoncam_{CAM}/enabled/config"]["command_topic"] == f"{BASE}/enabled/set"
    assert disc[f"homeassistant/binary_sensor/anoncam_{CAM}/face/config"]["state_topic"] == f"{BASE}/faces"
    assert disc[f"homeassistant/binary_sensor/anoncam_{CAM}/face/config"]["device_class"] == "occupancy"
    assert set(disc[f"homeassistant/select/anoncam_{CAM}/method/config"]["options"]) == \
        {m for m in ("blur", "pixelate", "solid", "generative") if m in METHODS}
    retained = Sub(broker.port, topics=("homeassistant/#",))
    assert retained.wait(lambda: len(retained.msgs) == 8, 5) and all(m.retain for m in retained.msgs)
    retained.close()


def test_last_will_on_kill(media, tmp_path, cli_env, broker):
    sub = Sub(broker.port, topics=(f"{BASE}/available",))
    proc = start_daemon(media, tmp_path, cli_env, f"mqtt://127.0.0.1:{broker.port}",
                        daemon_config(tmp_path, fps=10), 100000)
    try:
        assert sub.wait(lambda: sub.last(f"{BASE}/available") == "online", 30)
        proc.kill()  # SIGKILL: no clean shutdown, only the broker's last will
        proc.communicate(timeout=10)
        assert sub.wait(lambda: sub.last(f"{BASE}/available") == "offline", 15)
    finally:
        if proc.poll() is None:
            proc.kill()
    sub.close()
    late = Sub(broker.port, topics=(f"{BASE}/available",))
    assert late.wait(lambda: late.last(f"{BASE}/available") == "offline", 5)
    assert late.on(f"{BASE}/available")[-1].retain
    late.close()


def test_broker_restart_loses_no_event(media, tmp_path, cli_env, broker):
    """The broker goes away for 3 s mid-run: events and snapshots are spooled on disk, sent in order when
    it is back; sequence numbers stay contiguous. The subscriber keeps a persistent session."""
    sub = Sub(broker.port, client_id="restart-watcher", persistent=True)
    cfg = daemon_config(tmp_path, fps=20, event_update_every_s=0.2, snapshot={"every_s": 0.5})
    proc = start_daemon(media, tmp_path, cli_env, f"mqtt://127.0.0.1:{broker.port}", cfg, 220)
    try:
        assert sub.wait(lambda: len(sub.events()) >= 5, 30)
        broker.stop()
        down = time.time()
        time.sleep(3.0)
        broker.start()
        up = time.time()
        err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sub.wait(lambda: sub.last(f"{BASE}/available") == "offline", 20), err[-2000:]
    sub.close()

    events = sub.events()
    for e in events:
        jsonschema.validate(e, EVENT)
    first = list(dict.fromkeys(e["seq"] for e in events))  # duplicates are allowed (QoS 1), loss is not
    assert first == list(range(1, len(first) + 1)), "events lost or out of order"
    assert len(first) >= 40
    assert any(down < e["ts"] < up for e in events), "no event from the outage reached the subscriber"
    assert {e["type"] for e in events if e["type"] == "end"} and not [
        t for t in {e["track_id"] for e in events} if not any(x["type"] == "end" and x["track_id"] == t for x in events)]
    shots = [float(dict(kv.split("=") for kv in jpeg_comment(m.payload).split()[1:])["ts"])
             for m in sub.on(f"{BASE}/snapshot")]
    assert shots == sorted(shots) and any(down < t < up for t in shots)
    stats = [json.loads(m.payload) for m in sub.on(f"{BASE}/stats")]
    assert max(s["mqtt"]["spooled"] for s in stats) > 0 and all(s["mqtt"]["spool_dropped"] == 0 for s in stats)
    assert list((tmp_path / "spool").glob("*.msg")) == [], "the spool is drained"
    assert "spool sent" in err and "disconnected" in err


def test_commands_and_bad_payloads(media, tmp_path, cli_env, broker):
    sub = Sub(broker.port)
    cfg = daemon_config(tmp_path, fps=15, event_update_every_s=0.2, snapshot={"every_s": 0.2}, stats_every_s=0.5)
    proc = start_daemon(media, tmp_path, cli_env, f"mqtt://127.0.0.1:{broker.port}", cfg, 100000)
    originals, boxes = list(iter_frames(media[CLIP])), video_reference(media[CLIP])

    def errors():
        return [e for e in sub.events() if e["type"] == "error"]

    def state(s):
        return sub.last(f"{BASE}/{s}/state")

    try:
        assert sub.wait(lambda: len(sub.on(f"{BASE}/snapshot")) >= 2 and state("method") == DEFAULT_METHOD, 30)
        bad = [("method", "sparkle"), ("method", "BLUR; rm -rf /"), ("enabled", "maybe"), ("enabled", ""),
               ("snapshots", "2"), ("volume", "11")]
        if "generative" not in METHODS:
            bad.append(("method", "generative"))
        for i, (setting, payload) in enumerate(bad, 1):
            n_state = len(sub.on(f"{BASE}/{setting}/state"))
            sub.publish(f"{BASE}/{setting}/set", payload)
            assert sub.wait(lambda i=i: len(errors()) == i, 10), (setting, payload)
            e = errors()[-1]
            assert e["setting"] == setting and e["payload"] == payload.strip()
            if setting != "volume":  # the unchanged state is published again
                topic = f"{BASE}/{setting}/state"
                assert sub.wait(lambda t=topic, n=n_state: len(sub.on(t)) > n, 5)
        assert (state("method"), state("enabled"), state("snapshots")) == (DEFAULT_METHOD, "ON", "ON")
        t = time.time()
        assert sub.wait(lambda: any(json.loads(m.payload)["ts"] > t + 0.3 for m in sub.on(f"{BASE}/stats")), 5)
        last = json.loads(sub.on(f"{BASE}/stats")[-1].payload)
        assert (last["method"], last["enabled"], last["snapshots"]) == (DEFAULT_METHOD, True, True)
        assert [e["method"] for e in sub.events() if e["type"] != "error"][-1] == DEFAULT_METHOD

        # a good method command switches the anonymization; snapshots stay covered
        sub.publish(f"{BASE}/method/set", "solid")
        assert sub.wait(lambda: state("method") == "solid", 10)
        t = time.time()
        assert sub.wait(lambda: [e for e in sub.events() if e["type"] == "update" and e["ts"] > t + 0.2], 10)
        assert {e["method"] for e in sub.events() if e["type"] == "update" and e["ts"] > t + 0.2} == {"solid"}
        assert sub.wait(lambda: len([m for m in sub.on(f"{BASE}/snapshot") if m.t > t + 0.5]) >= 3, 10)
        later = [m.payload for m in sub.on(f"{BASE}/snapshot") if m.t > t + 0.5]
        assert sum(check_snapshot(p, originals, boxes, solid_color=(40, 40, 40)) for p in later) >= 2

        # enabled OFF pauses output (no snapshot, no track event), frames are still consumed
        sub.publish(f"{BASE}/enabled/set", "OFF")
        assert sub.wait(lambda: state("enabled") == "OFF", 10)
        assert [e for e in sub.events() if e.get("reason") == "paused"], "open tracks end on pause"
        time.sleep(0.5)  # what was queued before the pause
        n_snap, n_ev = len(sub.on(f"{BASE}/snapshot")), len(sub.events())
        time.sleep(1.5)
        assert (len(sub.on(f"{BASE}/snapshot")), len(sub.events())) == (n_snap, n_ev)
        paused = json.loads(sub.on(f"{BASE}/stats")[-1].payload)
        assert paused["enabled"] is False and paused["paused_frames"] > 10
        sub.publish(f"{BASE}/enabled/set", "on")
        assert sub.wait(lambda: state("enabled") == "ON", 10)
        assert sub.wait(lambda: len(sub.on(f"{BASE}/snapshot")) > n_snap + 2, 10)

        sub.publish(f"{BASE}/snapshots/set", "OFF")
        assert sub.wait(lambda: state("snapshots") == "OFF", 10)
        time.sleep(0.5)
        n_snap, n_ev = len(sub.on(f"{BASE}/snapshot")), len(sub.events())
        time.sleep(1.0)
        assert len(sub.on(f"{BASE}/snapshot")) == n_snap and len(sub.events()) > n_ev
    finally:
        proc.send_signal(signal.SIGTERM)
    finish(proc)
    for e in sub.events():
        jsonschema.validate(e, EVENT)
    seqs = [e["seq"] for e in sub.events()]
    assert seqs == list(range(1, len(seqs) + 1))
    sub.close()


def test_no_queue_blocking_overflow_is_counted(media, tmp_path, broker):
    """The camera loop never waits on the network: with a tiny queue, every snapshot is either delivered
    or counted as overflow (real anonymized frame from the real pipeline)."""
    from anoncam.runner import Runner
    cfg = validate({"failsafe": {"budget_ms": TEST_BUDGET_MS},  # counts must not hinge on the load
                    "camera": {"name": CAM, "source": str(media[CLIP]), "loop": False, "realtime": False},
                    "output": {"dir": str(tmp_path / "out"), "stills": {"enabled": False},
                               "video": {"enabled": False}},
                    "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker.port, "queue_size": 8,
                             "event_update_every_s": 1e6, "stats_every_s": 1e6, "snapshot": {"every_s": 0}}})
    sub = Sub(broker.port, topics=(f"{BASE}/snapshot",))
    runner = Runner(cfg)
    sink = runner.sinks[-1]
    frame = next(iter(runner.source))
    result = runner.pipeline.process(frame.image, 0, time.time())
    assert result.status == "ok" and result.faces
    n = 300
    for i in range(n):
        result.index, result.timestamp = i, time.time()
        sink.write(result)
    sink.close()
    runner.source.close()
    dropped = sink.overflow["snapshot"]
    assert dropped > 0
    assert sub.wait(lambda: len(sub.msgs) == n - dropped, 10), (len(sub.msgs), n, dropped)
    time.sleep(0.3)
    assert len(sub.msgs) == n - dropped
    sub.close()


def test_broker_down_at_start_spool_survives_restart(media, tmp_path):
    """No broker at start: the camera runs anyway and spools; the spool outlives the process and is sent,
    oldest first, by the next run once the broker is there."""
    from anoncam.runner import Runner
    b = Broker(tmp_path / "broker")  # its port is free, nothing listens yet

    def run(frames: int) -> str:
        cfg = validate({"failsafe": {"budget_ms": TEST_BUDGET_MS},  # counts must not hinge on the load
                        "camera": {"name": CAM, "source": str(media[CLIP]), "loop": False, "realtime": False},
                        "output": {"dir": str(tmp_path / "out"), "stills": {"enabled": False},
                                   "video": {"enabled": False}},
                        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": b.port, "close_timeout_s": 5,
                                 "event_update_every_s": 0, "snapshot": {"every_s": 0}}})
        runner = Runner(cfg)
        runner.run(max_frames=frames)
        return runner.sinks[-1].run_id

    first = run(15)
    spool = tmp_path / "out" / CAM / "mqtt-spool"
    left = sorted(spool.glob("*.msg"))
    assert len(left) >= 30  # 15 snapshots, 15+ events
    b.start()
    try:
        sub = Sub(b.port, topics=(f"{BASE}/events", f"{BASE}/snapshot"))
        second = run(5)
        assert sub.wait(lambda: any(e["run_id"] == second and e["type"] == "end" for e in sub.events()), 10)
        runs = [e["run_id"] for e in sub.events()]
        assert runs == [first] * runs.count(first) + [second] * runs.count(second), "earlier run first"
        old = [e["seq"] for e in sub.events() if e["run_id"] == first]
        assert old == list(range(1, len(old) + 1)) and len(old) >= 16
        assert len(sub.on(f"{BASE}/snapshot")) == 20
        assert list(spool.glob("*.msg")) == []
        sub.close()
    finally:
        b.stop()


# --- TLS and logins ---------------------------------------------------------------------------------
def _cert(subject: str, key, issuer=None, issuer_key=None, ca=False, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def make_pki(d: Path, name: str) -> dict:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all PEM files."""
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(f"{name} test CA", ca_key, ca=True)
    for what, key, cert in [("ca", ca_key, ca)] + [
            (w, k, _cert(f"{name} {w}", k, ca.subject, ca_key,
                         san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]))
            for w, k in (("server", ec.generate_private_key(ec.SECP256R1())),
                         ("client", ec.generate_private_key(ec.SECP256R1())))]:
        (d / f"{what}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{what}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        os.chmod(d / f"{what}.key", 0o600)
        out[what] = d / f"{what}.crt"
        out[what + "_key"] = d / f"{what}.key"
    return out


def test_tls_and_logins(media, tmp_path, cli_env):
    pki, other = make_pki(tmp_path / "pki", "anoncam"), make_pki(tmp_path / "other", "rogue")
    passwd = tmp_path / "broker" / "passwd"
    passwd.parent.mkdir()
    for i, (user, pw) in enumerate((("cam", "s3cret-pw"), ("reader", "reader-pw"))):
        subprocess.run([MOSQUITTO_PASSWD, *(["-c"] if i == 0 else []), "-b", str(passwd), user, pw], check=True)
    b = Broker(tmp_path / "broker", extra=(
        f"cafile {pki['ca']}\ncertfile {pki['server']}\nkeyfile {pki['server_key']}\nrequire_certificate true\n"
        f"allow_anonymous false\npassword_file {passwd}\n")).start()
    url = f"mqtts://cam@127.0.0.1:{b.port}"
    tls = {"enabled": True, "ca": str(pki["ca"]), "cert": str(pki["client"]), "key": str(pki["client_key"])}
    try:
        # wrong password (from the environment): a clear error naming the keys, the password not echoed
        env = {**cli_env, "ANONCAM_MQTT_PASSWORD": "wrong-pw"}
        proc = start_daemon(media, tmp_path, env, url, daemon_config(tmp_path, fps=None, tls=tls), 20,
                            "--no-realtime")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err[-2000:]
        assert "refused the connection as 'cam'" in err and ("Not authorized" in err or "Bad user name" in err)
        assert "mqtt.password_file" in err and "ANONCAM_MQTT_PASSWORD" in err and "wrong-pw" not in err

        # a broker certificate from another CA: a clear TLS error
        bad_tls = {**tls, "ca": str(other["ca"])}
        proc = start_daemon(media, tmp_path, env, url, daemon_config(tmp_path, fps=None, tls=bad_tls), 20,
                            "--no-realtime")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "certificate verify failed" in err and "mqtt.tls.ca" in err, err[-2000:]

        # right password from a file, client certificate: everything flows over TLS
        pw_file = tmp_path / "mqtt-password"
        pw_file.write_text("s3cret-pw\n")
        sub = Sub(b.port, tls={"ca_certs": str(pki["ca"]), "certfile": str(pki["client"]),
                               "keyfile": str(pki["client_key"])}, login=("reader", "reader-pw"))
        cfg = daemon_config(tmp_path, fps=None, tls=tls, password_file=str(pw_file), snapshot={"every_s": 0})
        proc = start_daemon(media, tmp_path, cli_env, url, cfg, 40, "--no-realtime")
        err = finish(proc)
        assert sub.wait(lambda: sub.last(f"{BASE}/available") == "offline", 10)
        assert len(sub.on(f"{BASE}/snapshot")) >= 30 and sub.events() and "s3cret" not in err
        sub.close()
    finally:
        b.stop()


# --- config, URL and spool --------------------------------------------------------------------------
def test_config_and_url_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown key 'mqtt.hots'"):
        validate({"mqtt": {"hots": "x"}}, "cam.yaml")
    with pytest.raises(ConfigError, match=r"'mqtt'.*reconnect_min_s"):
        validate({"mqtt": {"reconnect_min_s": 5, "reconnect_max_s": 1}}, "cam.yaml")
    with pytest.raises(ConfigError, match=r"'mqtt.tls'.*cert and key"):
        validate({"mqtt": {"tls": {"cert": "/x"}}}, "cam.yaml")
    with pytest.raises(ConfigError, match=r"'mqtt.prefix'"):
        validate({"mqtt": {"prefix": "a/#"}}, "cam.yaml")
    with pytest.raises(ConfigError, match="no password on the command line"):
        parse_url("mqtt://cam:pw@127.0.0.1:1883")
    with pytest.raises(ConfigError, match="--mqtt"):
        parse_url("http://127.0.0.1")
    assert parse_url("mqtts://cam@broker.lan") == {"mqtt.enabled": True, "mqtt.host": "broker.lan",
                                                   "mqtt.port": 8883, "mqtt.tls.enabled": True,
                                                   "mqtt.username": "cam"}
    assert validate({}).mqtt.enabled is False
    monkeypatch.delenv("ANONCAM_MQTT_PASSWORD", raising=False)
    with pytest.raises(MqttError, match="mqtt.password_file is set but mqtt.username is not"):
        read_password(validate({"mqtt": {"password_file": "/x"}}).mqtt)
    with pytest.raises(MqttError, match="mqtt.username is set but there is no password"):
        read_password(validate({"mqtt": {"username": "cam"}}).mqtt)
    monkeypatch.setenv("ANONCAM_MQTT_PASSWORD", "from-env")
    assert read_password(validate({"mqtt": {"username": "cam"}}).mqtt) == "from-env"
    f = tmp_path / "pw"
    f.write_text("from-file\nignored\n")
    assert read_password(validate({"mqtt": {"username": "cam", "password_file": str(f)}}).mqtt) == "from-file"
    from anoncam import cli
    assert cli.main(["run", "--mqtt", "mqtt://cam:pw@127.0.0.1:1"]) == 2


def test_spool_is_bounded_ordered_and_persistent(tmp_path):
    s = Spool(tmp_path / "spool", max_bytes=1000)
    for i in range(12):
        s.put(f"t/{i}", bytes([i]) * 150, retain=i == 3)
    assert s.dropped > 0 and s.bytes <= 1000 and s.spooled == 12
    kept = len(s)
    assert kept == 12 - s.dropped
    again = Spool(tmp_path / "spool", max_bytes=1000)  # after a restart
    got = []
    while (item := again.next_unsent()) is not None:
        name, topic, payload, _ = item
        got.append(topic)
        assert payload == bytes([int(topic[2:])]) * 150
        again.done(name)
    assert got == [f"t/{i}" for i in range(12 - kept, 12)]
    assert len(again) == 0 and list((tmp_path / "spool").iterdir()) == []
