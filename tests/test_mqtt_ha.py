"""Home Assistant side of the MQTT uplink: the discovery messages against Home Assistant's own MQTT
schemas (a real Home Assistant 2025.4.4 install in its own venv, Python 3.13) and against the keys
HA's current MQTT documentation lists; stats sent at every connection; faces 0 on pause and stop.
A real mosquitto and the real daemon, as in test_mqtt.py."""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
from anoncam import __version__, assets
from anoncam.mqtt.discovery import discovery_messages, entity_slug
from anoncam.mqtt.topics import Topics
from test_mqtt import BASE, CAM, STATS, Broker, Sub, daemon_config, finish, start_daemon

HERE = Path(__file__).parent
HA_VERSION = "2025.4.4"  # the newest release that installs on Python 3.13.0 (later ones need 3.13.2+)
METHODS = ["blur", "pixelate", "solid", "generative"]

# Keys of MQTT discovery configs as Home Assistant's MQTT documentation lists them (integrations
# mqtt, camera.mqtt, sensor.mqtt, binary_sensor.mqtt, switch.mqtt, select.mqtt; 2025.12), full names
# only. additionalProperties: false, so a key HA does not know (a typo) fails.
_STR, _BOOL = {"type": "string"}, {"type": "boolean"}
ORIGIN = {"type": "object", "additionalProperties": False, "required": ["name"],
          "properties": {"name": _STR, "sw_version": _STR, "support_url": _STR}}
DEVICE = {"type": "object", "additionalProperties": False, "anyOf": [{"required": ["identifiers"]},
                                                                     {"required": ["connections"]}],
          "properties": {k: _STR for k in ("manufacturer", "model", "model_id", "name", "hw_version",
                                           "serial_number", "sw_version", "suggested_area",
                                           "configuration_url", "via_device")}
          | {"identifiers": {"type": "array", "items": _STR, "minItems": 1}, "connections": {"type": "array"}}}
COMMON = {"availability": {"type": "array"}, "availability_mode": {"enum": ["all", "any", "latest"]},
          "availability_template": _STR, "availability_topic": _STR,
          "default_entity_id": {"type": "string", "pattern": r"^[a-z_]+\.[a-z0-9_]+$"},
          "device": DEVICE, "enabled_by_default": _BOOL, "encoding": _STR,
          "entity_category": {"enum": ["config", "diagnostic"]}, "entity_picture": _STR, "icon": _STR,
          "json_attributes_template": _STR, "json_attributes_topic": _STR, "name": {"type": ["string", "null"]},
          "object_id": _STR, "origin": ORIGIN, "payload_available": _STR, "payload_not_available": _STR,
          "qos": {"enum": [0, 1, 2]}, "unique_id": _STR}
BINARY_SENSOR_CLASSES = ["battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
                         "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving",
                         "occupancy", "opening", "plug", "power", "presence", "problem", "running", "safety",
                         "smoke", "sound", "tamper", "update", "vibration", "window"]
PLATFORM = {
    "camera": ({"topic"}, {"topic": _STR, "image_encoding": {"enum": ["b64"]}}),
    "sensor": ({"state_topic"}, {"state_topic": _STR, "device_class": _STR, "expire_after": {"type": "integer"},
                                 "force_update": _BOOL, "last_reset_value_template": _STR, "options": {"type": "array"},
                                 "suggested_display_precision": {"type": "integer"},
                                 "state_class": {"enum": ["measurement", "total", "total_increasing"]},
                                 "unit_of_measurement": _STR, "value_template": _STR}),
    "binary_sensor": ({"state_topic"}, {"state_topic": _STR, "device_class": {"enum": BINARY_SENSOR_CLASSES},
                                        "expire_after": {"type": "integer"}, "force_update": _BOOL,
                                        "off_delay": {"type": "integer"}, "payload_off": _STR, "payload_on": _STR,
                                        "value_template": _STR}),
    "switch": ({"command_topic"}, {"command_topic": _STR, "command_template": _STR, "state_topic": _STR,
                                   "device_class": {"enum": ["outlet", "switch"]}, "optimistic": _BOOL,
                                   "payload_off": _STR, "payload_on": _STR, "retain": _BOOL, "state_off": _STR,
                                   "state_on": _STR, "value_template": _STR}),
    "select": ({"command_topic", "options"}, {"command_topic": _STR, "command_template": _STR,
                                              "options": {"type": "array", "items": _STR, "minItems": 1},
                                              "optimistic": _BOOL, "retain": _BOOL, "state_topic": _STR,
                                              "value_template": _STR}),
}


def doc_schema(component: str) -> dict:
    required, props = PLATFORM[component]
    return {"type": "object", "additionalProperties": False, "required": sorted(required | {"unique_id"}),
            "properties": {**COMMON, **props}}


def messages(camera: str = CAM, commands: bool = True) -> list[tuple[str, dict]]:
    return [(t, json.loads(p)) for t, p in discovery_messages("homeassistant", "anoncam", camera,
                                                               Topics("anoncam", camera), METHODS, commands)]


# --- discovery payloads -----------------------------------------------------------------------------
def check_payloads(msgs: list[tuple[str, dict]]) -> None:
    """What HA needs of every config: the documented keys only, both entity-id keys, an origin."""
    for topic, c in msgs:
        component = topic.split("/")[1]
        jsonschema.validate(c, doc_schema(component))
        assert c["default_entity_id"] == f"{component}.{entity_slug(c['object_id'])}", topic
        assert c["origin"] == {"name": "anoncam", "sw_version": __version__}
    face = [c for t, c in msgs if t.split("/")[1] == "binary_sensor"]
    assert [c["device_class"] for c in face] == ["occupancy"]


def test_discovery_payloads_follow_the_documented_keys():
    """Validated with a JSON schema written from Home Assistant's MQTT documentation (keys, required
    ones, binary_sensor device classes); the real HA schemas follow in the next test."""
    msgs = messages()
    check_payloads(msgs)
    ids = {c["default_entity_id"] for _, c in msgs}
    assert ids == {"camera.anoncam_door_snapshot", "sensor.anoncam_door_faces", "sensor.anoncam_door_fps",
                   "sensor.anoncam_door_latency", "binary_sensor.anoncam_door_face",
                   "switch.anoncam_door_enabled", "switch.anoncam_door_snapshots", "select.anoncam_door_method"}
    assert len(messages(commands=False)) == 5
    odd = messages(camera="Front-Door_2")
    check_payloads(odd)
    assert {c["default_entity_id"] for _, c in odd} >= {"sensor.anoncam_front_door_2_fps"}
    # the schema is not a rubber stamp
    bad = dict(msgs[1][1], state_topik="x")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, doc_schema("sensor"))


def ha_python() -> Path:
    """Python of a Home Assistant HA_VERSION venv under the cache (made once, ~600 MB, several
    minutes); ANONCAM_HA_PYTHON names another. Python 3.13 ships with this machine kind (pyenv)."""
    if os.environ.get("ANONCAM_HA_PYTHON"):
        return Path(os.environ["ANONCAM_HA_PYTHON"])
    venv = assets.cache_dir() / "tools" / f"homeassistant-{HA_VERSION}"
    py, done = venv / "bin" / "python", venv / ".installed"
    if done.exists():
        return py
    # a pyenv shim named python3.13 exists even where 3.13 is installed but not selected (it then
    # fails with "command not found"): take the first candidate that actually runs
    found = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.13*/bin/python3.13")), reverse=True)
    base = next((c for c in [*found, shutil.which("python3.13")] if c and subprocess.run(
        [c, "-c", "import venv, ensurepip"], capture_output=True).returncode == 0), None)
    if base is None:
        pytest.fail(f"Home Assistant {HA_VERSION} needs Python 3.13; none found (python3.13, ~/.pyenv)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"homeassistant=={HA_VERSION}", "paho-mqtt==2.1.0"], check=True, timeout=1800)
    done.write_text(HA_VERSION + "\n")
    return py


def ha_check(msgs: list[tuple[str, dict]]) -> dict:
    data = json.dumps([[t, json.dumps(c)] for t, c in msgs])
    r = subprocess.run([str(ha_python()), str(HERE / "ha_discovery_check.py")], input=data, text=True,
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_discovery_against_home_assistant():
    """Each config through Home Assistant's own MQTT discovery code (topic matcher, origin schema, the
    platform's DISCOVERY_SCHEMA, entity id from object_id) in a real HA install. This release predates
    default_entity_id (2025.10): it must drop that key and nothing else, and make from object_id the
    entity id that default_entity_id names for newer releases."""
    msgs = messages() + messages(camera="Front-Door_2")
    out = ha_check(msgs)
    assert out["ha_version"] == HA_VERSION
    for (topic, c), r in zip(msgs, out["results"]):
        assert r["error"] is None and r["origin"] and r["origin_error"] is None, (topic, r)
        assert r["parts"]["component"] == topic.split("/")[1], r
        assert r["dropped"] == ["default_entity_id"], (topic, r["dropped"])
        assert r["entity_id"] == c["default_entity_id"] and r["default_entity_id_valid"], (topic, r)
    assert [r["device_class"] for r in out["results"][:8] if "binary_sensor" in r["topic"]] == ["occupancy"]
    # and HA refuses what it should: an unknown device class, a missing state topic, a bad origin
    face = next(c for t, c in msgs if "/binary_sensor/" in t)
    topic = next(t for t, _ in msgs if "/binary_sensor/" in t)
    bad = [(topic, dict(face, device_class="face")), (topic, {k: v for k, v in face.items() if k != "state_topic"}),
           (topic, dict(face, origin={"sw_version": "1"}))]
    res = ha_check(bad)["results"]
    assert res[0]["error"] and res[1]["error"] and res[2]["origin_error"], res


# --- stats at connect, faces on pause and stop ------------------------------------------------------
@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def test_stats_at_every_connection(media, tmp_path, cli_env, broker):
    """mqtt.stats_every_s is a day here, so every stats message comes from a connection or from Home
    Assistant announcing itself: after the start, after a broker restart, after homeassistant/status."""
    sub = Sub(broker.port, client_id="stats-watcher", persistent=True)
    proc = start_daemon(media, tmp_path, cli_env, f"mqtt://127.0.0.1:{broker.port}",
                        daemon_config(tmp_path, fps=10, stats_every_s=86400), 100000)

    def stats():
        return [json.loads(m.payload) for m in sub.on(f"{BASE}/stats")]

    def discovery():
        return [m for m in sub.msgs if m.topic.startswith("homeassistant/") and not m.retain]

    try:
        assert sub.wait(lambda: len(stats()) == 1, 30)
        first = stats()[0]
        jsonschema.validate(first, STATS)
        assert first["fps"] > 0 and first["latency_ms"]["p50"] is not None and first["frames"] < 20
        broker.stop()
        time.sleep(1.0)
        broker.start()
        assert sub.wait(lambda: len(stats()) == 2, 30), "no stats after the reconnection"
        assert stats()[1]["run_id"] == first["run_id"] and stats()[1]["frames"] > first["frames"]
        n_disc = len(discovery())
        sub.publish("homeassistant/status", "online")
        assert sub.wait(lambda: len(stats()) == 3 and len(discovery()) >= n_disc + 8, 15)
        time.sleep(1.0)
        assert len(stats()) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
    finish(proc)
    sub.close()


def test_faces_zero_on_pause_and_on_stop(media, tmp_path, cli_env, broker):
    sub = Sub(broker.port)
    proc = start_daemon(media, tmp_path, cli_env, f"mqtt://127.0.0.1:{broker.port}",
                        daemon_config(tmp_path, fps=15), 100000)
    faces = f"{BASE}/faces"
    try:
        assert sub.wait(lambda: sub.last(faces) == "1", 30)
        sub.publish(f"{BASE}/enabled/set", "OFF")
        assert sub.wait(lambda: sub.last(f"{BASE}/enabled/state") == "OFF", 10)
        assert sub.wait(lambda: sub.last(faces) == "0", 10), "faces stays at 1 while paused"
        n = len(sub.on(faces))
        time.sleep(1.0)
        assert len(sub.on(faces)) == n and sub.last(faces) == "0"
        late = Sub(broker.port, topics=(faces,))
        assert late.wait(lambda: late.last(faces) == "0", 5) and late.on(faces)[-1].retain
        late.close()
        sub.publish(f"{BASE}/enabled/set", "ON")
        assert sub.wait(lambda: sub.last(faces) == "1", 15)
    finally:
        proc.send_signal(signal.SIGTERM)
    finish(proc)
    assert sub.wait(lambda: sub.last(f"{BASE}/available") == "offline", 10)
    assert sub.last(faces) == "0", "faces stays at 1 after the camera stopped"
    sub.close()
    late = Sub(broker.port, topics=(faces,))
    assert late.wait(lambda: late.last(faces) == "0", 5) and late.on(faces)[-1].retain
    late.close()
